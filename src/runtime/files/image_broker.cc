#include "runtime/files/image_broker.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "common/clock.h"
#include "crypto/primitives.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"

namespace scone::runtime {
namespace {

constexpr char kHello[16] = "scone-image-v2";
constexpr size_t kNonce = 32;
constexpr int kAskSeconds = 2;          // one holder's answer
constexpr int64_t kFetchLimitNs = 10'000'000'000;  // all holders' answers, retried
constexpr int64_t kHandshakeNs = 2'000'000'000;    // a holder drops a connection that stalls
constexpr size_t kMaxHandshakes = 256;            // in progress at one holder

Status Failed(const std::string& what, long r) { return IoError(what, static_cast<int>(-r)); }

ByteSpan Text(const char* s) { return ByteSpan(reinterpret_cast<const uint8_t*>(s), std::strlen(s)); }

// A listener's name: the file's prefix, a random suffix, and a MAC of the suffix under the
// file's sharing key. Anyone may bind names; only a holder of the key makes ones that verify,
// so an asker never waits for (or falls back because of) a listener without the key.
std::string SuffixMac(const SecretBytes& key, const std::string& suffix) {
  crypto::Hash mac = crypto::HmacSha256(key, {Text("listener "), Text(suffix.c_str())});
  return ToHex(ByteSpan(mac.data(), 12));
}

std::string NewName(const std::string& prefix, const SecretBytes& key) {
  uint8_t bytes[8];
  crypto::RandomBytes(MutableByteSpan(bytes, sizeof(bytes)));
  std::string suffix = ToHex(ByteSpan(bytes, sizeof(bytes)));
  return prefix + suffix + "-" + SuffixMac(key, suffix);
}

bool NameVerifies(const std::string& name, const std::string& prefix, const SecretBytes& key) {
  size_t dash = name.rfind('-');
  if (dash == std::string::npos || dash < prefix.size()) return false;
  std::string suffix = name.substr(prefix.size(), dash - prefix.size());
  std::string expected = SuffixMac(key, suffix);
  std::string mac = name.substr(dash + 1);
  return mac.size() == expected.size() &&
         crypto::ConstantTimeEquals(Text(mac.c_str()), Text(expected.c_str()));
}

// An abstract address: sun_path[0] is NUL, the name follows (not NUL-terminated).
socklen_t AbstractAddress(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(addr->sun_path) - 1);
  std::memcpy(addr->sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

// The process at the other end of a connection, as the kernel says (never the peer's word).
uint64_t PeerPid(int fd) {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, Arg(&cred), Arg(&len)) != 0) return 0;
  return static_cast<uint64_t>(cred.pid);
}

// The proofs: HMAC(key, role || asker's nonce || holder's nonce || holder's pid || asker's pid),
// each side putting in the pids it knows from the kernel (its own, its peer's). A program in
// the middle, relaying both sides' messages, is the peer of each: the pids differ, the proofs
// fail (a relay of the proof of key possession is no proof).
crypto::Hash Proof(const SecretBytes& key, const char* role, const uint8_t* asker_nonce, const uint8_t* holder_nonce,
                   uint64_t holder_pid, uint64_t asker_pid) {
  uint8_t pids[16];
  for (int i = 0; i < 8; ++i) {
    pids[i] = static_cast<uint8_t>(holder_pid >> (8 * i));
    pids[8 + i] = static_cast<uint8_t>(asker_pid >> (8 * i));
  }
  return crypto::HmacSha256(key, {Text(role), ByteSpan(asker_nonce, kNonce), ByteSpan(holder_nonce, kNonce),
                                  ByteSpan(pids, sizeof(pids))});
}

bool ProofMatches(const crypto::Hash& expected, const uint8_t* given) {
  return crypto::ConstantTimeEquals(ByteSpan(expected.data(), expected.size()), ByteSpan(given, crypto::kHashSize));
}

bool SendAll(int fd, ByteSpan data) {
  return RawSyscall6(SYS_sendto, fd, Arg(data.data()), static_cast<long>(data.size()), MSG_NOSIGNAL | MSG_DONTWAIT, 0, 0) ==
         static_cast<long>(data.size());
}

long Receive(int fd, MutableByteSpan out, int flags) {
  return RawSyscall6(SYS_recvfrom, fd, Arg(out.data()), static_cast<long>(out.size()), flags, 0, 0);
}

// Names of listening abstract sockets that start with `prefix` (from /proc/net/unix).
std::vector<std::string> ListenersNamed(const std::string& prefix) {
  std::vector<std::string> names;
  long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg("/proc/net/unix"), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return names;
  std::string text;
  char buffer[16384];
  for (;;) {
    long n = RawSyscall(SYS_read, fd, Arg(buffer), sizeof(buffer));
    if (n == -EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  RawSyscall(SYS_close, fd);
  const std::string needle = " @" + prefix;
  std::set<std::string> seen;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    size_t end = text.find('\n', at);
    std::string name = text.substr(at + 2, (end == std::string::npos ? text.size() : end) - at - 2);
    if (seen.insert(name).second) names.push_back(name);
  }
  std::sort(names.begin(), names.end());  // asked in a fixed order
  return names;
}

// A memory file, nothing else (a holder hands over what memfd_create made): else closed, -1.
int MemoryFileOnly(int fd) {
  if (fd >= 0 && RawSyscall(SYS_fcntl, fd, F_GET_SEALS) < 0) {
    RawSyscall(SYS_close, fd);
    return -1;
  }
  return fd;
}

// Asks the holder listening at `name`; its image and base (-1 where it gave none).
ImageBroker::Fetched Ask(const std::string& name, const SecretBytes& key) {
  ImageBroker::Fetched got;
  long fd = RawSyscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return got;
  int s = static_cast<int>(fd);
  struct timeval tv = {kAskSeconds, 0};
  RawSyscall(SYS_setsockopt, s, SOL_SOCKET, SO_RCVTIMEO, Arg(&tv), sizeof(tv));
  sockaddr_un addr;
  socklen_t len = AbstractAddress(name, &addr);
  uint8_t hello[sizeof(kHello) + kNonce];
  std::memcpy(hello, kHello, sizeof(kHello));
  crypto::RandomBytes(MutableByteSpan(hello + sizeof(kHello), kNonce));
  const uint8_t* my_nonce = hello + sizeof(kHello);
  uint8_t answer[kNonce + crypto::kHashSize];
  if (RawSyscall(SYS_connect, s, Arg(&addr), len) == 0 && SendAll(s, ByteSpan(hello, sizeof(hello))) &&
      Receive(s, MutableByteSpan(answer, sizeof(answer)), 0) == static_cast<long>(sizeof(answer))) {
    const uint64_t holder = PeerPid(s), me = static_cast<uint64_t>(RawSyscall(SYS_getpid));
    if (holder != 0 && ProofMatches(Proof(key, "holder", my_nonce, answer, holder, me), answer + kNonce)) {
      crypto::Hash mine = Proof(key, "asker", my_nonce, answer, holder, me);
      if (SendAll(s, ByteSpan(mine.data(), mine.size()))) {
        char byte;
        iovec iov = {&byte, 1};
        alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
        msghdr msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        if (RawSyscall(SYS_recvmsg, s, Arg(&msg), MSG_CMSG_CLOEXEC) == 1) {
          cmsghdr* c = CMSG_FIRSTHDR(&msg);
          if (c != nullptr && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            if (count >= 1) std::memcpy(&got.memfd, CMSG_DATA(c), sizeof(int));
            if (count >= 2) std::memcpy(&got.basefd, CMSG_DATA(c) + sizeof(int), sizeof(int));
          }
        }
      }
    }
  }
  RawSyscall(SYS_close, s);
  got.memfd = MemoryFileOnly(got.memfd);
  got.basefd = MemoryFileOnly(got.basefd);
  if (got.memfd < 0 && got.basefd >= 0) {
    RawSyscall(SYS_close, got.basefd);
    got.basefd = -1;
  }
  return got;
}

void SendDescriptors(int s, int memfd, int basefd) {
  char byte = 1;
  iovec iov = {&byte, 1};
  const int fds[2] = {memfd, basefd};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(fds))] = {};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(cm), fds, sizeof(fds));
  RawSyscall(SYS_sendmsg, s, Arg(&msg), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

// A handshake in progress at a holder: driven by the thread's epoll, never blocking it (a peer
// that stalls holds only its own connection, until its deadline).
struct ImageBroker::Handshake {
  int listener;
  int64_t deadline_ns;
  bool answered = false;
  uint8_t asker_nonce[kNonce] = {};
  uint8_t holder_nonce[kNonce] = {};
};

ImageBroker& ImageBroker::Get() {
  static ImageBroker* broker = new ImageBroker();  // never destroyed: its thread may outlive exit handlers
  return *broker;
}

constexpr char kNamesStart[] = "scone-image-";
constexpr size_t kTagHex = 24;

std::string ImageBroker::NamePrefix(const SecretBytes& key) {
  crypto::Hash tag = crypto::HmacSha256(key, {Text("name")});
  return kNamesStart + ToHex(ByteSpan(tag.data(), kTagHex / 2)) + "-";
}

std::set<std::string> ImageBroker::ServedPrefixes() {
  constexpr size_t kPrefix = sizeof(kNamesStart) - 1 + kTagHex + 1;
  std::set<std::string> prefixes;
  for (const std::string& name : ListenersNamed(kNamesStart)) {
    if (name.size() > kPrefix) prefixes.insert(name.substr(0, kPrefix));
  }
  return prefixes;
}

Result<int> ImageBroker::Listen(const std::string& prefix, const SecretBytes& key, bool now) {
  long fd = RawSyscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Failed("socket for a shared image", fd);
  sockaddr_un addr;
  socklen_t len = AbstractAddress(NewName(prefix, key), &addr);
  long r = RawSyscall(SYS_bind, fd, Arg(&addr), len);
  if (r == 0 && now) r = RawSyscall(SYS_listen, fd, 64);
  if (r < 0) {
    RawSyscall(SYS_close, fd);
    return Failed("listen for a shared image", r);
  }
  return files::KeepOwn(static_cast<int>(fd));
}

Result<ImageBroker::Fetched> ImageBroker::Fetch(const SecretBytes& key) {
  const std::string prefix = NamePrefix(key);
  const int64_t give_up = MonotonicNs() + kFetchLimitNs;
  for (;;) {
    bool holders = false;
    for (const std::string& name : ListenersNamed(prefix)) {
      if (!NameVerifies(name, prefix, key)) continue;  // not a holder's: never waited for
      holders = true;
      Fetched got = Ask(name, key);
      if (got.memfd >= 0) {
        got.memfd = files::KeepOwn(got.memfd);
        if (got.basefd >= 0) got.basefd = files::KeepOwn(got.basefd);
        return got;
      }
    }
    // No holder: this process makes the image. A holder that does not answer (stopped, or
    // letting go right now) is asked again; a second image beside its own would split the
    // file's content between processes, so in the end the mapping fails instead.
    if (!holders) return Fetched{};
    if (MonotonicNs() >= give_up) {
      return Status(Code::kIoError, "a process that maps this file shared does not hand over its image", EAGAIN);
    }
    struct timespec pause = {0, 20'000'000};
    RawSyscall(SYS_nanosleep, Arg(&pause), 0);
  }
}

Result<uint64_t> ImageBroker::Serve(const SecretBytes& key, int memfd, int basefd) {
  std::string prefix = NamePrefix(key);
  SCONE_ASSIGN_OR_RETURN(int listener, Listen(prefix, key, /*now=*/true));
  std::lock_guard lock(mu_);
  uint64_t handle = next_handle_++;
  served_.push_back(Served{handle, key.Clone(), prefix, memfd, basefd, listener});
  EnsureThread();
  uint64_t one = 1;
  RawSyscall(SYS_write, wake_fd_, Arg(&one), sizeof(one));
  return handle;
}

void ImageBroker::Withdraw(uint64_t handle) {
  std::lock_guard lock(mu_);
  auto it = std::find_if(served_.begin(), served_.end(), [&](const Served& s) { return s.handle == handle; });
  if (it == served_.end()) return;
  files::CloseOwn(it->listener);  // the thread's epoll forgets a closed descriptor by itself
  served_.erase(it);
}

void ImageBroker::EnsureThread() {
  if (thread_) return;
  if (wake_fd_ < 0) wake_fd_ = files::KeepOwn(static_cast<int>(RawSyscall(SYS_eventfd2, 0, EFD_CLOEXEC)));
  thread_ = StartRuntimeThread([this] { Run(); });
}

void ImageBroker::Run() {
  long made = RawSyscall(SYS_epoll_create1, EPOLL_CLOEXEC);
  if (made < 0) return;
  const int epoll = files::KeepOwn(static_cast<int>(made));  // out of the program's reach
  // Listening descriptor -> the served image's handle (0: the wake-up). By handle, not by number
  // alone: a listener closed (its image withdrawn) leaves epoll, and the next image's listener
  // often gets the same number; watched by number, it was never added, and askers waited 10 s.
  std::map<int, uint64_t> watched;
  std::map<int, Handshake> handshakes;  // by connection
  auto drop = [&](int fd) {
    handshakes.erase(fd);
    RawSyscall(SYS_close, fd);  // leaves epoll with it
  };
  for (;;) {
    {
      // Every listener served now (a closed one left epoll with its last descriptor).
      std::lock_guard lock(mu_);
      std::map<int, uint64_t> now = {{wake_fd_, 0}};
      for (const Served& s : served_) now[s.listener] = s.handle;
      for (const auto& [fd, handle] : now) {
        if (auto it = watched.find(fd); it != watched.end() && it->second == handle) continue;
        epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (RawSyscall(SYS_epoll_ctl, epoll, EPOLL_CTL_ADD, fd, Arg(&ev)) == -EEXIST) {
          RawSyscall(SYS_epoll_ctl, epoll, EPOLL_CTL_MOD, fd, Arg(&ev));
        }
      }
      watched = std::move(now);
    }
    epoll_event events[32];
    long n = RawSyscall(SYS_epoll_wait, epoll, Arg(events), 32, handshakes.empty() ? -1 : 250);
    for (long i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        RawSyscall(SYS_read, wake_fd_, Arg(&count), sizeof(count));
      } else if (handshakes.count(fd) != 0) {
        if (!Step(fd, handshakes.at(fd))) drop(fd);
      } else if (watched.count(fd) != 0) {
        long c = RawSyscall(SYS_accept4, fd, 0, 0, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) continue;
        if (handshakes.size() >= kMaxHandshakes) {  // a flood: the newest waits its turn again
          RawSyscall(SYS_close, c);
          continue;
        }
        handshakes.emplace(static_cast<int>(c), Handshake{fd, MonotonicNs() + kHandshakeNs});
        epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.fd = static_cast<int>(c);
        RawSyscall(SYS_epoll_ctl, epoll, EPOLL_CTL_ADD, c, Arg(&ev));
      }
    }
    const int64_t now = MonotonicNs();
    std::vector<int> late;
    for (auto& [fd, h] : handshakes) {
      if (h.deadline_ns <= now) late.push_back(fd);
    }
    for (int fd : late) drop(fd);
  }
}

bool ImageBroker::Step(int s, Handshake& h) {
  SecretBytes key;
  int memfd = -1, basefd = -1;
  {
    std::lock_guard lock(mu_);
    for (const Served& served : served_) {
      if (served.listener == h.listener) {
        key = served.key.Clone();
        memfd = served.memfd;
        basefd = served.basefd;
      }
    }
  }
  if (memfd < 0) return false;  // withdrawn meanwhile
  const uint64_t me = static_cast<uint64_t>(RawSyscall(SYS_getpid)), asker = PeerPid(s);
  if (asker == 0) return false;
  if (!h.answered) {
    uint8_t hello[sizeof(kHello) + kNonce];
    if (Receive(s, MutableByteSpan(hello, sizeof(hello)), MSG_DONTWAIT) != static_cast<long>(sizeof(hello)) ||
        std::memcmp(hello, kHello, sizeof(kHello)) != 0) {
      return false;
    }
    std::memcpy(h.asker_nonce, hello + sizeof(kHello), kNonce);
    crypto::RandomBytes(MutableByteSpan(h.holder_nonce, kNonce));
    uint8_t answer[kNonce + crypto::kHashSize];
    std::memcpy(answer, h.holder_nonce, kNonce);
    crypto::Hash proof = Proof(key, "holder", h.asker_nonce, h.holder_nonce, me, asker);
    std::memcpy(answer + kNonce, proof.data(), proof.size());
    h.answered = true;
    return SendAll(s, ByteSpan(answer, sizeof(answer)));
  }
  uint8_t theirs[crypto::kHashSize];
  if (Receive(s, MutableByteSpan(theirs, sizeof(theirs)), MSG_DONTWAIT) == static_cast<long>(sizeof(theirs)) &&
      ProofMatches(Proof(key, "asker", h.asker_nonce, h.holder_nonce, me, asker), theirs)) {
    SendDescriptors(s, memfd, basefd);
  }
  return false;  // done either way
}

void ImageBroker::BeforeFork() {
  mu_.lock();
  for (Served& s : served_) {
    // Bound here, listening in the child: the kernel records who listens, and that is the
    // process id an asker's proof names.
    auto listener = Listen(s.name_prefix, s.key, /*now=*/false);
    s.child_listener = listener.ok() ? *listener : -1;
  }
}

void ImageBroker::AfterForkInParent() {
  for (Served& s : served_) {
    files::CloseOwn(s.child_listener);
    s.child_listener = -1;
  }
  mu_.unlock();
}

void ImageBroker::AfterForkInChild() {
  // No allocation, no lock of the C library's yet: descriptors are only swapped here.
  for (Served& s : served_) {
    s.parent_listener = s.listener;
    s.listener = s.child_listener;
    s.child_listener = -1;
  }
  (void)thread_.release();  // the parent's: not in this process
  parent_wake_fd_ = wake_fd_;
  wake_fd_ = -1;
  mu_.unlock();
}

void ImageBroker::CompleteForkInChild() {
  std::lock_guard lock(mu_);
  for (Served& s : served_) {
    files::CloseOwn(s.parent_listener);
    s.parent_listener = -1;
    if (s.listener >= 0) RawSyscall(SYS_listen, s.listener, 64);
  }
  files::CloseOwn(parent_wake_fd_);
  parent_wake_fd_ = -1;
  if (!served_.empty()) EnsureThread();
}

}  // namespace scone::runtime
