#include "runtime/files/image_broker.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "crypto/primitives.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"

namespace scone::runtime {
namespace {

constexpr char kHello[16] = "scone-image-v1";
constexpr size_t kNonce = 32;
constexpr int kHandshakeSeconds = 2;  // a holder answers at once; a stalled peer is dropped

Status Failed(const std::string& what, long r) { return IoError(what, static_cast<int>(-r)); }

std::string RandomSuffix() {
  uint8_t bytes[8];
  crypto::RandomBytes(MutableByteSpan(bytes, sizeof(bytes)));
  return ToHex(ByteSpan(bytes, sizeof(bytes)));
}

// An abstract address: sun_path[0] is NUL, the name follows (not NUL-terminated).
socklen_t AbstractAddress(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(addr->sun_path) - 1);
  std::memcpy(addr->sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

void SetDeadline(int fd) {
  struct timeval tv = {kHandshakeSeconds, 0};
  RawSyscall(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, Arg(&tv), sizeof(tv));
  RawSyscall(SYS_setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, Arg(&tv), sizeof(tv));
}

bool SendAll(int fd, ByteSpan data) {
  return RawSyscall6(SYS_sendto, fd, Arg(data.data()), static_cast<long>(data.size()), MSG_NOSIGNAL, 0, 0) ==
         static_cast<long>(data.size());
}

bool ReceiveExactly(int fd, MutableByteSpan out) {
  return RawSyscall6(SYS_recvfrom, fd, Arg(out.data()), static_cast<long>(out.size()), 0, 0, 0) ==
         static_cast<long>(out.size());
}

// The proofs: HMAC(key, role || client nonce || server nonce).
crypto::Hash Proof(const SecretBytes& key, const char* role, const uint8_t* client_nonce, const uint8_t* server_nonce) {
  return crypto::HmacSha256(key, {ByteSpan(reinterpret_cast<const uint8_t*>(role), std::strlen(role)),
                                  ByteSpan(client_nonce, kNonce), ByteSpan(server_nonce, kNonce)});
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
  return names;
}

// Asks the holder listening at `name`; the memory file, or -1 if it did not give one.
int Ask(const std::string& name, const SecretBytes& key) {
  long fd = RawSyscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int s = static_cast<int>(fd);
  int memfd = -1;
  sockaddr_un addr;
  socklen_t len = AbstractAddress(name, &addr);
  SetDeadline(s);
  uint8_t hello[sizeof(kHello) + kNonce];
  std::memcpy(hello, kHello, sizeof(kHello));
  crypto::RandomBytes(MutableByteSpan(hello + sizeof(kHello), kNonce));
  const uint8_t* client_nonce = hello + sizeof(kHello);
  uint8_t answer[kNonce + crypto::kHashSize];
  if (RawSyscall(SYS_connect, s, Arg(&addr), len) == 0 && SendAll(s, ByteSpan(hello, sizeof(hello))) &&
      ReceiveExactly(s, MutableByteSpan(answer, sizeof(answer)))) {
    crypto::Hash expected = Proof(key, "holder", client_nonce, answer);
    if (crypto::ConstantTimeEquals(ByteSpan(expected.data(), expected.size()), ByteSpan(answer + kNonce, crypto::kHashSize))) {
      crypto::Hash mine = Proof(key, "asker", client_nonce, answer);
      if (SendAll(s, ByteSpan(mine.data(), mine.size()))) {
        char byte;
        iovec iov = {&byte, 1};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        msghdr msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        if (RawSyscall(SYS_recvmsg, s, Arg(&msg), MSG_CMSG_CLOEXEC) == 1) {
          cmsghdr* c = CMSG_FIRSTHDR(&msg);
          if (c != nullptr && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            std::memcpy(&memfd, CMSG_DATA(c), sizeof(int));
          }
        }
      }
    }
  }
  RawSyscall(SYS_close, s);
  return memfd;
}

}  // namespace

ImageBroker& ImageBroker::Get() {
  static ImageBroker* broker = new ImageBroker();  // never destroyed: its thread may outlive exit handlers
  return *broker;
}

std::string ImageBroker::NamePrefix(const SecretBytes& key) {
  static constexpr char kName[] = "name";
  crypto::Hash tag = crypto::HmacSha256(key, {ByteSpan(reinterpret_cast<const uint8_t*>(kName), 4)});
  return "scone-image-" + ToHex(ByteSpan(tag.data(), 12)) + "-";
}

Result<int> ImageBroker::Listen(const std::string& prefix) {
  long fd = RawSyscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Failed("socket for a shared image", fd);
  sockaddr_un addr;
  socklen_t len = AbstractAddress(prefix + RandomSuffix(), &addr);
  long r = RawSyscall(SYS_bind, fd, Arg(&addr), len);
  if (r == 0) r = RawSyscall(SYS_listen, fd, 64);
  if (r < 0) {
    RawSyscall(SYS_close, fd);
    return Failed("listen for a shared image", r);
  }
  return files::KeepOwn(static_cast<int>(fd));
}

Result<int> ImageBroker::Fetch(const SecretBytes& key) {
  for (const std::string& name : ListenersNamed(NamePrefix(key))) {
    int memfd = Ask(name, key);
    if (memfd >= 0) return files::KeepOwn(memfd);
  }
  return -1;
}

Result<uint64_t> ImageBroker::Serve(const SecretBytes& key, int memfd) {
  std::string prefix = NamePrefix(key);
  SCONE_ASSIGN_OR_RETURN(int listener, Listen(prefix));
  std::lock_guard lock(mu_);
  uint64_t handle = next_handle_++;
  served_.push_back(Served{handle, key.Clone(), prefix, memfd, listener});
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
  thread_ = std::make_unique<std::thread>([this] { Run(); });
}

void ImageBroker::Run() {
  BecomeRuntimeThread();
  int epoll = static_cast<int>(RawSyscall(SYS_epoll_create1, EPOLL_CLOEXEC));
  if (epoll < 0) return;
  std::set<int> watched;
  for (;;) {
    {
      // Every listener served now (a closed one left epoll with its last descriptor).
      std::lock_guard lock(mu_);
      std::set<int> now = {wake_fd_};
      for (const Served& s : served_) now.insert(s.listener);
      for (int fd : now) {
        if (watched.count(fd) != 0) continue;
        epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        RawSyscall(SYS_epoll_ctl, epoll, EPOLL_CTL_ADD, fd, Arg(&ev));
      }
      watched = std::move(now);
    }
    epoll_event events[16];
    long n = RawSyscall(SYS_epoll_wait, epoll, Arg(events), 16, -1);
    for (long i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        uint64_t count;
        RawSyscall(SYS_read, wake_fd_, Arg(&count), sizeof(count));
      } else {
        Answer(events[i].data.fd);
      }
    }
  }
}

void ImageBroker::Answer(int listener) {
  long c = RawSyscall(SYS_accept4, listener, 0, 0, SOCK_CLOEXEC);
  if (c < 0) return;
  int s = static_cast<int>(c);
  SetDeadline(s);
  SecretBytes key;
  int memfd = -1;
  {
    std::lock_guard lock(mu_);
    for (const Served& served : served_) {
      if (served.listener == listener) {
        key = served.key.Clone();
        memfd = served.memfd;
      }
    }
  }
  uint8_t hello[sizeof(kHello) + kNonce];
  if (memfd >= 0 && ReceiveExactly(s, MutableByteSpan(hello, sizeof(hello))) &&
      std::memcmp(hello, kHello, sizeof(kHello)) == 0) {
    const uint8_t* client_nonce = hello + sizeof(kHello);
    uint8_t answer[kNonce + crypto::kHashSize];
    crypto::RandomBytes(MutableByteSpan(answer, kNonce));
    crypto::Hash proof = Proof(key, "holder", client_nonce, answer);
    std::memcpy(answer + kNonce, proof.data(), proof.size());
    uint8_t theirs[crypto::kHashSize];
    if (SendAll(s, ByteSpan(answer, sizeof(answer))) && ReceiveExactly(s, MutableByteSpan(theirs, sizeof(theirs)))) {
      crypto::Hash expected = Proof(key, "asker", client_nonce, answer);
      if (crypto::ConstantTimeEquals(ByteSpan(expected.data(), expected.size()), ByteSpan(theirs, sizeof(theirs)))) {
        char byte = 1;
        iovec iov = {&byte, 1};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        msghdr msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
        RawSyscall(SYS_sendmsg, s, Arg(&msg), MSG_NOSIGNAL);
      }
    }
  }
  RawSyscall(SYS_close, s);
}

void ImageBroker::BeforeFork() {
  mu_.lock();
  for (Served& s : served_) {
    auto listener = Listen(s.name_prefix);
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
  }
  files::CloseOwn(parent_wake_fd_);
  parent_wake_fd_ = -1;
  if (!served_.empty()) EnsureThread();
}

}  // namespace scone::runtime
