#include "runtime/net/tls_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include "common/clock.h"
#include "net/log_limit.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/process/fork.h"
#include "runtime/process/signal_calls.h"
#include "runtime/runtime.h"

namespace scone::runtime::sockets {
namespace {

// Ciphertext read from the kernel at a time: a little more than one full record.
constexpr size_t kReceiveSize = 17 * 1024;
// Plaintext encrypted per step: four full records.
constexpr size_t kWriteSize = 64 * 1024;
// The output buffer a connection keeps between writes (a write's records fit; more was a burst).
constexpr size_t kKeptOutputCapacity = 256 * 1024;

}  // namespace

TlsSocketFd::TlsSocketFd(std::unique_ptr<net::TlsConnection> connection, std::string rule, std::string peer,
                         bool server)
    : connection_(std::move(connection)), rule_(std::move(rule)), peer_(std::move(peer)), server_(server) {}

TlsSocketFd::~TlsSocketFd() { (void)LastClose(); }

long TlsSocketFd::LastClose() {
  OwnerSlot* slot = owner_.load(std::memory_order_acquire);
  if (slot != nullptr && !released_.exchange(true)) ReleaseOwnerSlot(slot);
  return 0;
}

bool TlsSocketFd::BeforeFork(uint64_t generation) {
  if (prepared_generation_ == generation) return false;  // another descriptor of the connection
  rd_mu_.lock();
  wr_mu_.lock();
  ssl_mu_.lock();
  prepared_generation_ = generation;
  OwnerSlot* slot = owner_.load(std::memory_order_acquire);
  if (slot == nullptr && !released_.load()) {
    slot = AllocateOwnerSlot();
    if (slot == nullptr) {
      // No shared page: nobody can tell the processes apart, so none of them may use it.
      Log("network shield: " + rule_ + ": no memory to share the connection's owner with a child process; "
          "no process may use the connection after the fork");
      foreign_.store(true);
      return true;
    }
    owner_.store(slot, std::memory_order_release);
  }
  if (slot != nullptr && !released_.load()) {
    HoldOwnerSlot(slot);
    if (calls_in_flight_.load(std::memory_order_acquire) > 0) {
      int32_t nobody = 0;
      slot->owner.compare_exchange_strong(nobody, static_cast<int32_t>(RawSyscall(SYS_getpid)),
                                          std::memory_order_acq_rel);
    }
  }
  return true;
}

void TlsSocketFd::AfterFork(bool in_child) {
  if (in_child) calls_in_flight_.store(0, std::memory_order_release);  // the parent's threads' calls
  ssl_mu_.unlock();
  wr_mu_.unlock();
  rd_mu_.unlock();
}

int32_t TlsSocketFd::Owner() const {
  OwnerSlot* slot = owner_.load(std::memory_order_acquire);
  return slot == nullptr ? 0 : slot->owner.load(std::memory_order_acquire);
}

bool TlsSocketFd::Owned() {
  if (foreign_.load(std::memory_order_acquire)) return false;
  OwnerSlot* slot = owner_.load(std::memory_order_acquire);
  if (slot == nullptr) return true;
  const uint64_t generation = process::ForkGeneration();
  if (owned_generation_.load(std::memory_order_acquire) == generation && !released_.load()) return true;
  const auto me = static_cast<int32_t>(RawSyscall(SYS_getpid));
  int32_t owner = 0;
  if (!released_.load() &&
      (slot->owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel) || owner == me)) {
    owned_generation_.store(generation, std::memory_order_release);
    return true;
  }
  if (!foreign_.exchange(true)) {
    Log("network shield: " + rule_ + ": connection " + (peer_.empty() ? "" : "with " + peer_ + " ") +
        (released_.load() ? "was let go by this process"
                          : "belongs to process " + std::to_string(owner) + ", which used it after a fork") +
        "; this process may not read or write it (one TLS state used by two processes would reuse its nonces)");
  }
  return false;
}

bool TlsSocketFd::NonBlocking(int fd, int flags) {
  if (flags & MSG_DONTWAIT) return true;
  long kernel = RawSyscall(SYS_fcntl, fd, F_GETFL);
  return kernel >= 0 && (kernel & O_NONBLOCK);
}

int64_t TlsSocketFd::Deadline(int fd, int option) {
  if (option == 0) return 0;
  struct timeval tv = {};
  socklen_t size = sizeof(tv);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, option, Arg(&tv), Arg(&size)) != 0) return 0;
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return 0;
  return MonotonicNs() + int64_t{tv.tv_sec} * 1'000'000'000 + int64_t{tv.tv_usec} * 1000;
}

long TlsSocketFd::Wait(int fd, short events, int64_t deadline) {
  struct pollfd p = {fd, events, 0};
  struct timespec left = {};
  if (deadline > 0) {
    const int64_t ns = std::max<int64_t>(0, deadline - MonotonicNs());
    left = {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  }
  long r = RawSyscall(SYS_ppoll, Arg(&p), 1, deadline > 0 ? Arg(&left) : 0, 0, sizeof(uint64_t));
  if (r == 0) return -EAGAIN;  // the socket's timeout (SO_RCVTIMEO, SO_SNDTIMEO) passed
  return r < 0 ? r : 0;
}

long TlsSocketFd::Failed(bool reading) {
  // A peer that connected and closed without a byte (a port probe, a health check) is no failure
  // worth a line.
  if (!failure_logged_.exchange(true) && !connection_->PeerSentNothing()) LogFailure();
  // A client that failed a server's handshake is, to the server, one that went away: the end of
  // the stream, which servers handle quietly. Everything else is a reset connection.
  return reading && server_ && !HandshakeDone() ? 0 : -ECONNRESET;
}

namespace {
// Lines about failed connections, per rule, in each second (net/log_limit.h): a scan or a flood
// of bad clients would make one a connection.
constexpr uint32_t kFailureLinesPerSecond = 10;
}  // namespace

void TlsSocketFd::LogFailure() {
  static std::mutex mu;
  static auto* limit = new net::LogLimit(kFailureLinesPerSecond);  // never destroyed: used until exit
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(mu);
    if (!limit->Allow(rule_, MonotonicNs(), &suppressed)) return;
  }
  if (suppressed > 0) {
    Log("network shield: " + rule_ + ": " + std::to_string(suppressed) + " more failed connection(s) not logged (at most " +
        std::to_string(kFailureLinesPerSecond) + " lines a second per rule)");
  }
  Log("network shield: " + rule_ + ": connection " + (peer_.empty() ? "" : "with " + peer_ + " ") +
      "failed: " + connection_->failure());
}

long TlsSocketFd::Fill(int fd) {
  if (deferred_fill_error_ != 0) return std::exchange(deferred_fill_error_, 0);
  uint8_t buf[kReceiveSize];
  long n = RawSyscall6(SYS_recvfrom, fd, Arg(buf), sizeof(buf), MSG_DONTWAIT, 0, 0);
  last_fill_full_ = n == static_cast<long>(sizeof(buf));
  if (n < 0) return n;
  std::lock_guard s(ssl_mu_);
  if (n == 0) {
    connection_->PutEndOfStream();
  } else {
    connection_->PutCiphertext(buf, static_cast<size_t>(n));
  }
  maybe_readable_.store(true, std::memory_order_release);
  return n;
}

long TlsSocketFd::Flush(int fd, bool nosignal, bool more) {
  {
    std::lock_guard s(ssl_mu_);
    connection_->TakeCiphertext(&pending_);
  }
  long r = 0;
  while (pending_sent_ < pending_.size()) {
    r = RawSyscall6(SYS_sendto, fd, Arg(pending_.data() + pending_sent_), static_cast<long>(pending_.size() - pending_sent_),
                    MSG_DONTWAIT | (nosignal ? MSG_NOSIGNAL : 0) | (more ? MSG_MORE : 0), 0, 0);
    if (r < 0) break;
    pending_sent_ += static_cast<size_t>(r);
  }
  if (pending_sent_ == pending_.size()) {
    pending_.clear();
    pending_sent_ = 0;
    if (pending_.capacity() > kKeptOutputCapacity) std::vector<uint8_t>().swap(pending_);  // a burst's buffer
  } else if (pending_sent_ > pending_.size() / 2) {
    // What the kernel took is dropped once it is most of the buffer: each byte moves at most once.
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(pending_sent_));
    pending_sent_ = 0;
  }
  output_waiting_.store(!pending_.empty(), std::memory_order_release);
  if (pending_.empty()) return 0;
  return r < 0 ? r : -EAGAIN;
}

template <typename Step>
long TlsSocketFd::Run(int fd, int flags, int timeout_option, Step step) {
  // Counted for BeforeFork: a call begun before a fork claims the connection for this process.
  struct InFlight {
    std::atomic<int>& n;
    explicit InFlight(std::atomic<int>& count) : n(count) { n.fetch_add(1, std::memory_order_acq_rel); }
    ~InFlight() { n.fetch_sub(1, std::memory_order_acq_rel); }
  } in_flight(calls_in_flight_);
  int64_t deadline = -1;  // CLOCK_MONOTONIC ns; 0: none; -1: not read yet
  for (;;) {
    short wait = 0;
    uint64_t held = 0;
    {
      RuntimeSection section;
      long r = step(&wait);
      if (r != kAgain) return r;
      if (NonBlocking(fd, flags)) return -EAGAIN;
      if (deadline < 0) deadline = Deadline(fd, timeout_option);
      // A blocking call waits for the kernel here, in the section: a signal arriving meanwhile
      // ends the wait (EINTR), and is delivered when the section ends.
      long w = Wait(fd, wait, deadline);
      if (w == -EINTR) held = HeldSignals();
      if (w < 0 && (w != -EINTR || deadline != 0 || held == 0 || ThisThread().depth > 1)) return w;
    }
    // Interrupted: the section's end ran the program's handlers. As the kernel does, a call
    // without a timeout restarts after handlers installed with SA_RESTART, else fails with EINTR.
    if (held != 0 && !process::RestartsAfter(held)) return -EINTR;
  }
}

long TlsSocketFd::HandshakeStep(int fd, short* wait) {
  for (;;) {
    long h;
    {
      std::lock_guard s(ssl_mu_);
      h = connection_->Handshake();
    }
    long f;
    {
      std::lock_guard w(wr_mu_);
      f = Flush(fd);
    }
    if (f < 0 && f != -EAGAIN) return NoteSocketError(f);
    if (h == net::TlsConnection::kFailed) return Failed();
    if (h == 1) {
      if (f == -EAGAIN) {  // the last flight must leave before the handshake counts as done
        *wait = POLLOUT;
        return kAgain;
      }
      handshake_done_.store(true, std::memory_order_release);
      return 0;
    }
    long got = Fill(fd);
    if (got >= 0) continue;
    if (got != -EAGAIN) return NoteSocketError(got);
    *wait = static_cast<short>(POLLIN | (f == -EAGAIN ? POLLOUT : 0));
    return kAgain;
  }
}

long TlsSocketFd::NoteSocketError(long r) {
  int none = 0;
  if (r < 0 && r > -4096) socket_error_.compare_exchange_strong(none, static_cast<int>(-r), std::memory_order_acq_rel);
  return r;
}

long TlsSocketFd::ReceiveStep(int fd, void* buf, size_t count, bool peek, short* wait) {
  for (;;) {
    long r;
    {
      std::lock_guard s(ssl_mu_);
      r = peek ? connection_->Peek(buf, count) : connection_->Read(buf, count);
      if (connection_->HandshakeDone()) handshake_done_.store(true, std::memory_order_release);
      if (r > 0) maybe_readable_.store(true, std::memory_order_release);  // more may be buffered
    }
    if (r > 0 && !peek) r += static_cast<long>(ReadMore(fd, static_cast<uint8_t*>(buf) + r, count - static_cast<size_t>(r)));
    bool output;
    {
      std::lock_guard s(ssl_mu_);
      output = connection_->PendingCiphertext() > 0;
    }
    long f = 0;
    {
      std::lock_guard w(wr_mu_);
      if (output || !pending_.empty()) f = Flush(fd);
    }
    if (r > 0) {
      ReturnNoDelay(fd);  // the peer answered: what this side sent is acknowledged
      return r;
    }
    if (r == net::TlsConnection::kClosed) return 0;
    if (r == net::TlsConnection::kFailed) return Failed(/*reading=*/true);
    if (f < 0 && f != -EAGAIN) return f;
    long got = Fill(fd);
    if (got >= 0) continue;
    if (got != -EAGAIN) return got;
    if (plaintext_held_.load(std::memory_order_acquire)) {
      // The program waits for its peer, which cannot answer what it was not sent.
      std::lock_guard w(wr_mu_);
      f = PushHeld(fd);
      if (f < 0 && f != -EAGAIN) return f;
    }
    *wait = static_cast<short>(POLLIN | (f == -EAGAIN ? POLLOUT : 0));
    return kAgain;
  }
}

size_t TlsSocketFd::ReadMore(int fd, uint8_t* buf, size_t count) {
  size_t more = 0;
  while (more < count) {
    long r;
    {
      std::lock_guard s(ssl_mu_);
      r = connection_->Read(buf + more, count - more);
    }
    if (r > 0) {
      more += static_cast<size_t>(r);
      continue;
    }
    // The end of the stream or a failure: the next call reports it, as the kernel's recv does.
    if (r != net::TlsConnection::kWantInput || !last_fill_full_) break;
    const long got = Fill(fd);
    if (got < 0 && got != -EAGAIN) deferred_fill_error_ = got;
    if (got <= 0) break;
  }
  return more;
}

long TlsSocketFd::Receive(int fd, void* buf, size_t count, int flags) {
  if (int error = TakeSocketError()) return -error;
  if (count == 0 && HandshakeDone()) return 0;
  auto* out = static_cast<uint8_t*>(buf);
  size_t done = 0;
  const bool peek = flags & MSG_PEEK;
  const bool all = (flags & MSG_WAITALL) && !peek && !(flags & MSG_DONTWAIT);
  do {
    long r = Run(fd, flags, SO_RCVTIMEO, [&](short* wait) -> long {
      std::lock_guard rd(rd_mu_);
      if (!Owned()) return -EIO;
      return ReceiveStep(fd, out + done, count - done, peek, wait);
    });
    if (r <= 0) return done > 0 ? static_cast<long>(done) : r;
    done += static_cast<size_t>(r);
  } while (all && done < count);
  return static_cast<long>(done);
}

long TlsSocketFd::ReadableBytes(int fd) {
  RuntimeSection section;
  std::lock_guard rd(rd_mu_);
  if (!Owned()) return -EIO;
  if (!HandshakeDone()) return 0;
  // Ciphertext in until a record's data is at hand or the kernel holds no more; the rest stays
  // in the kernel, under TCP's flow control (all of it came in before: a fast peer filled the
  // shield's memory).
  for (;;) {
    {
      std::lock_guard s(ssl_mu_);
      if (connection_->Readable()) break;
    }
    if (Fill(fd) <= 0) break;
  }
  size_t now, behind;
  {
    std::lock_guard s(ssl_mu_);
    now = connection_->ReadableBytes();
    behind = connection_->BufferedInput();
  }
  if (now == 0) return 0;  // no whole record yet: the rest of it is on its way, an edge to come
  // What a read returns now, and at most what the records behind it and the kernel's queue hold
  // (their headers and tags counted as data). An upper bound, as a program that reads until the
  // count is used up needs: nginx took the current record's rest for all, read that, and waited
  // for an edge that never came (the shield had the rest).
  int queued = 0;
  if (RawSyscall(SYS_ioctl, fd, FIONREAD, Arg(&queued)) < 0) queued = 0;
  return static_cast<long>(std::min<size_t>(now + behind + static_cast<size_t>(queued), INT_MAX));
}

long TlsSocketFd::CompleteHandshake(int fd) {
  return Run(fd, 0, SO_SNDTIMEO, [&](short* wait) -> long {
    std::lock_guard rd(rd_mu_);
    if (!Owned()) return -EIO;
    return HandshakeStep(fd, wait);
  });
}

long TlsSocketFd::Send(int fd, const void* buf, size_t count, int flags) {
  if (int error = TakeSocketError()) return -error;
  // After shutdown(SHUT_WR): the kernel's own answer to a send on its shut socket (EPIPE, and
  // SIGPIPE unless MSG_NOSIGNAL), not a failed TLS write (ECONNRESET and a false scone: line).
  if (write_shut_.load(std::memory_order_acquire)) {
    return RawSyscall6(SYS_sendto, fd, Arg(buf), 0, flags & MSG_NOSIGNAL, 0, 0);
  }
  if (!HandshakeDone()) {
    // The handshake needs the peer's messages: it takes the reader's lock, which a blocked
    // reader holds until the handshake completes (it drives the handshake itself).
    long r = Run(fd, flags, SO_SNDTIMEO, [&](short* wait) -> long {
      for (;;) {
        if (HandshakeDone()) return 0;
        if (rd_mu_.try_lock()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::lock_guard rd(rd_mu_, std::adopt_lock);
      if (!Owned()) return -EIO;
      return HandshakeStep(fd, wait);
    });
    if (r < 0) return r;
  }
  const auto* in = static_cast<const uint8_t*>(buf);
  const bool nosignal = flags & MSG_NOSIGNAL;
  // Decided under wr_mu_: an uncork on another thread pushes what a write saw corked.
  auto more = [&] { return (flags & MSG_MORE) || corked_.load(std::memory_order_acquire); };
  size_t done = 0;
  while (done < count || count == 0) {
    long r = Run(fd, flags, SO_SNDTIMEO, [&](short* wait) -> long {
      std::lock_guard w(wr_mu_);
      if (!Owned()) return -EIO;
      const bool hold = more();
      long f = Flush(fd, nosignal, hold);  // what a non-blocking write left goes first
      if (f == -EAGAIN) {
        *wait = POLLOUT;
        return kAgain;
      }
      if (f < 0) return f;
      if (count == 0) return 0;
      long n;
      bool sealed;
      {
        std::lock_guard s(ssl_mu_);
        n = connection_->Write(in + done, std::min(count - done, kWriteSize), hold);
        sealed = connection_->PendingCiphertext() > 0;
        plaintext_held_.store(connection_->HeldPlaintext() > 0, std::memory_order_release);
      }
      if (n == net::TlsConnection::kFailed) return Failed();
      if (n < 0) return -EIO;  // the handshake is done: a write never waits for input
      f = Flush(fd, nosignal, hold);
      if (f < 0 && f != -EAGAIN) return f;
      // The first data left with the handshake's flight unacknowledged (data held back, or
      // held by the kernel's cork, has not left).
      if (f == 0 && sealed && !hold) ReturnNoDelay(fd);
      return n;  // what the kernel did not take yet goes at the next call (or poll)
    });
    if (r < 0) return done > 0 ? static_cast<long>(done) : r;
    if (count == 0) return 0;
    done += static_cast<size_t>(r);
    if (done < count && NonBlocking(fd, flags)) break;  // one step: the rest would have to wait
  }
  // A blocking write returns once the kernel holds all its ciphertext (asked only when some
  // is still waiting: the common write costs no fcntl).
  if (output_waiting_.load(std::memory_order_acquire) && !NonBlocking(fd, flags)) {
    long r = Run(fd, flags, SO_SNDTIMEO, [&](short* wait) -> long {
      std::lock_guard w(wr_mu_);
      if (!Owned()) return -EIO;
      long f = Flush(fd, nosignal, more());
      if (f == -EAGAIN) {
        *wait = POLLOUT;
        return kAgain;
      }
      return f;
    });
    if (r < 0 && r != -EINTR) return done > 0 ? static_cast<long>(done) : r;
  }
  return static_cast<long>(done);
}

long TlsSocketFd::PushHeld(int fd) {
  long r;
  {
    std::lock_guard s(ssl_mu_);
    r = connection_->Push();
    plaintext_held_.store(false, std::memory_order_release);
  }
  if (r == net::TlsConnection::kFailed) return Failed();
  return Flush(fd);
}

void TlsSocketFd::Push(int fd) {
  if (!plaintext_held_.load(std::memory_order_acquire)) return;
  long r = Run(fd, 0, SO_SNDTIMEO, [&](short* wait) -> long {
    std::lock_guard w(wr_mu_);
    if (!Owned()) return -EIO;
    long f = PushHeld(fd);
    if (f == -EAGAIN) {
      *wait = POLLOUT;
      return kAgain;
    }
    return f;
  });
  // As a write's: the record left (the kernel's cork is off), so Nagle is the program's again.
  // A failure is the next call's to report, as natively (the bytes were accepted).
  if (r == 0) ReturnNoDelay(fd);
}

long TlsSocketFd::SetCork(int fd, const void* value, socklen_t size) {
  // The kernel checks the value (its size, its address) and applies it: its cork is the
  // program's, and its getsockopt answers for the shield.
  long r = RawSyscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_CORK, Arg(value), size);
  if (r != 0) return r;
  const bool on = *static_cast<const int*>(value) != 0;  // the kernel read an int there
  corked_.store(on, std::memory_order_release);
  if (!on) Push(fd);
  return 0;
}

bool TlsSocketFd::OwnedWithoutClaim() const {
  if (foreign_.load(std::memory_order_acquire)) return false;
  return owner_.load(std::memory_order_acquire) == nullptr || Owner() == static_cast<int32_t>(RawSyscall(SYS_getpid));
}

void TlsSocketFd::SendHeld(int fd) {
  if (!plaintext_held_.load(std::memory_order_acquire) || !OwnedWithoutClaim()) return;
  RuntimeSection section;
  std::unique_lock w(wr_mu_, std::try_to_lock);  // a writer at work: it sends what it holds
  if (w.owns_lock()) (void)PushHeld(fd);
}

long TlsSocketFd::Shutdown(int fd, int how) {
  if (how == SHUT_WR || how == SHUT_RDWR) {
    // Plaintext held back is data the program wrote (natively in the kernel's queue, sent
    // before the FIN): a blocking socket waits until the kernel holds its record.
    const bool held = plaintext_held_.load(std::memory_order_acquire);
    long r = Run(fd, 0, SO_SNDTIMEO, [&](short* wait) -> long {
      std::lock_guard w(wr_mu_);
      if (!Owned()) return -EIO;  // the owner's peer must not see an end it did not make
      {
        std::lock_guard s(ssl_mu_);
        connection_->Shutdown();  // seals what is held back, then close_notify
        plaintext_held_.store(false, std::memory_order_release);
      }
      if (Flush(fd) != -EAGAIN || !held) return 0;
      *wait = POLLOUT;
      return kAgain;
    });
    if (r == -EIO) return r;
  }
  long r = RawSyscall(SYS_shutdown, fd, how);
  if (r == 0 && (how == SHUT_WR || how == SHUT_RDWR)) write_shut_.store(true, std::memory_order_release);
  return r;
}

short TlsSocketFd::ShieldEvents(short wanted) {
  if (!(wanted & POLLIN)) return 0;
  RuntimeSection section;
  std::unique_lock s(ssl_mu_, std::try_to_lock);  // a reader at work: the kernel's answer stands
  if (!s.owns_lock()) return 0;
  if (!Owned()) return static_cast<short>(wanted & (POLLIN | POLLOUT));  // the call then fails with EIO
  if (!connection_->HandshakeDone()) return 0;
  if (connection_->Readable()) return POLLIN;
  maybe_readable_.store(false, std::memory_order_release);
  return 0;
}

short TlsSocketFd::KernelEvents(short wanted) {
  short events = wanted;
  if (!HandshakeDone() && (wanted & (POLLIN | POLLOUT))) events = static_cast<short>((events & ~POLLOUT) | POLLIN);
  RuntimeSection section;
  std::unique_lock w(wr_mu_, std::try_to_lock);
  if (w.owns_lock() && !pending_.empty() && Owned()) events |= POLLOUT;
  return events;
}

namespace {

// The kernel's TCP_NODELAY of `fd`: 0 or 1, or -1 (not TCP).
int KernelNoDelay(int fd) {
  int on = 0;
  socklen_t size = sizeof(on);
  return RawSyscall(SYS_getsockopt, fd, IPPROTO_TCP, TCP_NODELAY, Arg(&on), Arg(&size)) == 0 ? on != 0 : -1;
}

bool SetKernelNoDelay(int fd, int on) {
  return RawSyscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_NODELAY, Arg(&on), sizeof(on)) == 0;
}

}  // namespace

void TlsSocketFd::LendNoDelay(int fd) {
  std::lock_guard lock(nodelay_mu_);
  if (KernelNoDelay(fd) != 0) return;  // not TCP, or set
  if (SetKernelNoDelay(fd, 1)) nodelay_lent_.store(true, std::memory_order_release);
}

void TlsSocketFd::ReturnNoDelaySlow(int fd) {
  std::lock_guard lock(nodelay_mu_);
  if (nodelay_lent_.exchange(false, std::memory_order_acq_rel)) (void)SetKernelNoDelay(fd, 0);
}

long TlsSocketFd::SetNoDelay(int fd, const void* value, socklen_t size) {
  {
    std::lock_guard lock(nodelay_mu_);
    // The kernel checks the value (its size, its address) and applies it.
    long r = RawSyscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_NODELAY, Arg(value), size);
    if (r != 0) return r;
    if (nodelay_lent_.load(std::memory_order_acquire)) {
      if (KernelNoDelay(fd) == 0) {
        // The program asked for Nagle, the setting it had: lent on until its first data, as before.
        (void)SetKernelNoDelay(fd, 1);
      } else {
        nodelay_lent_.store(false, std::memory_order_release);  // its own TCP_NODELAY from now on
      }
    }
  }
  // Setting TCP_NODELAY pushes what a cork holds (tcp(7)): so does the shield with its own.
  if (*static_cast<const int*>(value) != 0) Push(fd);  // the kernel read an int there
  return 0;
}

long TlsSocketFd::GetNoDelay(int fd, void* value, socklen_t* size) {
  std::lock_guard lock(nodelay_mu_);
  long r = RawSyscall(SYS_getsockopt, fd, IPPROTO_TCP, TCP_NODELAY, Arg(value), Arg(size));
  if (r == 0 && nodelay_lent_.load(std::memory_order_acquire)) {
    std::memset(value, 0, *size);  // the program's own setting (the kernel wrote *size bytes of its own)
  }
  return r;
}

void TlsSocketFd::FlushWithoutWaiting(int fd) {
  RuntimeSection section;
  std::unique_lock w(wr_mu_, std::try_to_lock);
  if (!w.owns_lock() || !Owned()) return;
  (void)(plaintext_held_.load(std::memory_order_acquire) ? PushHeld(fd) : Flush(fd));
}

void TlsSocketFd::AdvanceHandshake(int fd) {
  if (HandshakeDone()) return;
  RuntimeSection section;
  std::unique_lock rd(rd_mu_, std::try_to_lock);
  if (!rd.owns_lock() || !Owned()) return;
  short wait = 0;
  (void)HandshakeStep(fd, &wait);
}

void TlsSocketFd::Closing(int fd) {
  // A connection shared by fork ends with close_notify only from its owner: another process
  // may still use it, and one that does not own it must not touch its TLS state.
  if (owner_.load(std::memory_order_acquire) != nullptr && !OwnedWithoutClaim()) return;
  RuntimeSection section;
  std::unique_lock w(wr_mu_, std::try_to_lock);  // a writer at work: the peer sees the end of stream
  if (!w.owns_lock()) return;
  {
    std::lock_guard s(ssl_mu_);
    connection_->Shutdown();  // what the program held back (TCP_CORK, MSG_MORE) first
    plaintext_held_.store(false, std::memory_order_release);
  }
  (void)Flush(fd);  // without waiting: a peer that does not read gets no close_notify
}

bool TlsSocketFd::Describe(int fd, InheritedFd*) {
  long flags = RawSyscall(SYS_fcntl, fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC)) {
    RawSyscall(SYS_fcntl, fd, F_SETFD, flags | FD_CLOEXEC);
    Log("network shield: descriptor " + std::to_string(fd) + " (" + rule_ +
        "): a TLS connection cannot follow exec; the new program does not get it");
  }
  return false;
}

}  // namespace scone::runtime::sockets
