#include "runtime/net/socket_calls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory_resource>
#include <mutex>
#include <vector>

#include "common/clock.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/file_calls.h"
#include "runtime/net/network_shield.h"
#include "runtime/net/tls_socket.h"
#include "runtime/runtime.h"

namespace scone::runtime::sockets {
namespace {

constexpr uint64_t kSigsysBit = uint64_t{1} << (SIGSYS - 1);

std::shared_ptr<ShieldedFd> Tls(Runtime& rt, int fd) {
  if (!rt.fds().Has(fd)) return nullptr;
  auto d = rt.fds().Get(fd);
  return d != nullptr && d->AsTlsSocket() != nullptr ? d : nullptr;
}

int SocketType(int fd) {
  int type = 0;
  socklen_t size = sizeof(type);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, Arg(&type), Arg(&size)) != 0) return -1;
  return type;
}

int Family(int fd) {
  int family = 0;
  socklen_t size = sizeof(family);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, SO_DOMAIN, Arg(&family), Arg(&size)) != 0) return -1;
  return family;
}

// The name a client checks the server's certificate against: the rule's DNS name, else the
// destination's IP literal.
std::string ServerName(const Decision& d) {
  if (d.client == nullptr) return "";
  if (!d.client->server_dns_name.empty()) return d.client->server_dns_name;
  return d.client->destination.unix_socket ? "" : d.client->destination.host;
}

// A protected connection on `fd`: its TlsSocketFd in the table. REQUIRES: a RuntimeSection.
Result<std::shared_ptr<TlsSocketFd>> Protect(Runtime& rt, NetworkShield& shield, int fd, const Decision& d,
                                             const std::string& peer) {
  SCONE_ASSIGN_OR_RETURN(auto context, shield.Context(d));
  SCONE_ASSIGN_OR_RETURN(auto connection, net::TlsConnection::Create(std::move(context), ServerName(d)));
  auto socket = std::make_shared<TlsSocketFd>(std::move(connection), d.What(), peer, d.server != nullptr);
  rt.fds().Set(fd, socket);
  // Once the table has it: another thread's setsockopt of TCP_NODELAY is then the shield's too.
  if (d.server == nullptr) socket->LendNoDelay(fd);
  return socket;
}

std::string PeerText(const struct sockaddr* addr, socklen_t size) {
  char text[64] = {};
  if (addr == nullptr) return "";
  if (addr->sa_family == AF_INET && size >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr->sa_family == AF_INET6 && size >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "";
}

size_t IovTotal(const struct iovec* iov, size_t count) {
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) total += iov[i].iov_len;
  return total;
}

// What a socket the shield cannot protect is ("a UDP socket"), for its refusal; nullptr for one it protects
// (TCP, MPTCP) or that stays on this host (unix, netlink).
const char* Unsupported(int domain, int kind, int protocol) {
  if (domain == AF_PACKET) return "a packet socket";  // raw frames on an interface: packet(7)
  if (domain != AF_INET && domain != AF_INET6) return nullptr;
  if (kind == SOCK_STREAM) {
    return protocol == 0 || protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP ? nullptr : "an SCTP socket";
  }
  if (kind == SOCK_DGRAM) return protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 ? "an ICMP socket" : "a UDP socket";
  return "a raw socket";
}

}  // namespace

long Socket(Runtime& rt, int domain, int type, int protocol) {
  NetworkShield* shield = rt.network();
  const int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (shield != nullptr && shield->RefusesUnsupported()) {
    if (const char* what = Unsupported(domain, kind, protocol)) {
      RuntimeSection section;
      Log("network shield: " + std::string(what) + " refused (SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS=refuse)");
      return -EACCES;
    }
  }
  return RawSyscall(SYS_socket, domain, type, protocol);
}

long Connect(Runtime& rt, int fd, const struct sockaddr* addr, socklen_t size) {
  NetworkShield* shield = rt.network();
  if (shield == nullptr || addr == nullptr || size < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6 && addr->sa_family != AF_UNIX) ||
      SocketType(fd) != SOCK_STREAM) {
    return RawSyscall(SYS_connect, fd, Arg(addr), size);
  }
  // Connected or connecting already (hiredis calls connect again once a non-blocking connect
  // completed, to learn how it went): the kernel says so (0 the first time, EALREADY, EISCONN),
  // and the connection and its handshake go on. Protected again, it sent a second ClientHello
  // down the live connection, which both ends then dropped.
  if (Tls(rt, fd) != nullptr) return RawSyscall(SYS_connect, fd, Arg(addr), size);
  Decision d;
  {
    RuntimeSection section;
    d = shield->ForConnect(addr, size);
    if (d.protection == net::Protection::kRefuse) {
      Log("network shield: connect to " + d.endpoint + " refused by " + d.What());
      return -ECONNREFUSED;
    }
    if (d.protection == net::Protection::kProtected) {
      auto context = shield->Context(d);  // before the kernel's call: a missing identity refuses
      if (!context.ok()) {
        Log("network shield: connect to " + d.endpoint + " refused: " + context.status().message());
        return -ECONNREFUSED;
      }
    }
  }
  long r = RawSyscall(SYS_connect, fd, Arg(addr), size);
  // A connect a signal interrupted goes on in the kernel: the socket is the shield's from now
  // on too (the program's next call finds it connected, or connecting).
  if (d.protection != net::Protection::kProtected || (r != 0 && r != -EINPROGRESS && r != -EINTR)) return r;
  std::shared_ptr<TlsSocketFd> socket;
  {
    RuntimeSection section;
    auto made = Protect(rt, *shield, fd, d, d.endpoint);
    if (!made.ok()) {
      Log("network shield: connect to " + d.endpoint + ": " + made.status().message());
      RawSyscall(SYS_shutdown, fd, SHUT_RDWR);  // never left to carry plaintext
      return -ECONNREFUSED;
    }
    socket = *made;
  }
  if (r == 0 && !(RawSyscall(SYS_fcntl, fd, F_GETFL) & O_NONBLOCK)) {
    // A blocking connect returns once the server proved who it is.
    // Interrupted, or past the socket's SO_SNDTIMEO: as the kernel's connect, the connection
    // goes on (its handshake at the next call or readiness check).
    long h = socket->CompleteHandshake(fd);
    if (h == -EINTR) return -EINTR;
    if (h == -EAGAIN) return -EINPROGRESS;
    if (h < 0) return -ECONNREFUSED;
  }
  return r;
}

long Bind(Runtime& rt, int fd, const struct sockaddr* addr, socklen_t size) {
  NetworkShield* shield = rt.network();
  // A relative path that a server rule names is bound by its absolute name: the rule is judged at
  // accept by the name the kernel gives back (getsockname), and after a chdir a relative one
  // named another file, or none (the connections went in plaintext).
  const std::string path = shield == nullptr || addr == nullptr || size > sizeof(sockaddr_un) ? "" : UnixPath(addr, size);
  if (path.empty() || path[0] == '/') return RawSyscall(SYS_bind, fd, Arg(addr), size);
  std::string absolute;
  {
    RuntimeSection section;
    if (shield->ServerForPath(path) != nullptr) absolute = SocketFileName(path);
  }
  struct sockaddr_un named = {};
  if (absolute.empty() || absolute.size() >= sizeof(named.sun_path)) return RawSyscall(SYS_bind, fd, Arg(addr), size);
  named.sun_family = AF_UNIX;
  std::memcpy(named.sun_path, absolute.data(), absolute.size());
  return RawSyscall(SYS_bind, fd, Arg(&named), static_cast<long>(offsetof(sockaddr_un, sun_path) + absolute.size() + 1));
}

long Accept(Runtime& rt, int fd, struct sockaddr* addr, socklen_t* size, int flags) {
  NetworkShield* shield = rt.network();
  struct sockaddr_storage peer = {};
  socklen_t peer_size = sizeof(peer);
  for (;;) {
    long r = RawSyscall(SYS_accept4, fd, Arg(&peer), Arg(&peer_size), flags);
    if (r < 0 || shield == nullptr) {
      if (r >= 0 && addr != nullptr && size != nullptr) {
        std::memcpy(addr, &peer, std::min<socklen_t>(*size, peer_size));
        *size = peer_size;
      }
      return r;
    }
    int family = Family(static_cast<int>(r));
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX) return r;
    RuntimeSection section;
    Decision d = shield->ForAccept(fd);
    std::string from = PeerText(reinterpret_cast<sockaddr*>(&peer), peer_size);
    if (d.protection == net::Protection::kRefuse) {
      Log("network shield: connection " + (from.empty() ? "" : "from " + from + " ") + "on " + d.endpoint +
          " refused by " + d.What());
      RawSyscall(SYS_close, r);
      return -ECONNABORTED;  // servers take it as a connection that went away, and accept again
    }
    if (d.protection == net::Protection::kProtected) {
      auto made = Protect(rt, *shield, static_cast<int>(r), d, from);
      if (!made.ok()) {
        Log("network shield: connection on " + d.endpoint + " refused: " + made.status().message());
        RawSyscall(SYS_close, r);
        return -ECONNABORTED;
      }
    }
    if (addr != nullptr && size != nullptr) {
      std::memcpy(addr, &peer, std::min<socklen_t>(*size, peer_size));
      *size = peer_size;
    }
    return r;
  }
}

long Close(Runtime& rt, int fd) {
  {
    RuntimeSection section;
    auto d = rt.fds().Take(fd);
    if (d != nullptr && d.use_count() == 1 && d->AsTlsSocket() != nullptr) d->AsTlsSocket()->Closing(fd);
  }
  return RawSyscall(SYS_close, fd);
}

long ReceiveFrom(Runtime& rt, int fd, void* buf, size_t count, int flags, struct sockaddr* from, socklen_t* size) {
  auto d = Tls(rt, fd);
  if (d == nullptr) return RawSyscall6(SYS_recvfrom, fd, Arg(buf), static_cast<long>(count), flags, Arg(from), Arg(size));
  if (flags & MSG_OOB) return -EINVAL;  // no urgent data in a TLS stream
  long r = d->AsTlsSocket()->Receive(fd, buf, count, flags);
  if (r >= 0 && from != nullptr && size != nullptr) {
    long p = RawSyscall(SYS_getpeername, fd, Arg(from), Arg(size));
    if (p != 0) *size = 0;
  }
  return r;
}

// TCP Fast Open (sendto or sendmsg with MSG_FASTOPEN) connects and sends in one call, past
// connect(2): with the shield on, it is a connect judged by the rules, then a send (through TLS
// where a rule protects the destination). Fast Open's saved round trip is given up.
long ConnectForFastOpen(Runtime& rt, int fd, const struct sockaddr* to, socklen_t size) {
  long r = Connect(rt, fd, to, size);
  return r == -EISCONN ? 0 : r;
}

long SendTo(Runtime& rt, int fd, const void* buf, size_t count, int flags, const struct sockaddr* to, socklen_t size) {
  auto d = Tls(rt, fd);
  if (d == nullptr && (flags & MSG_FASTOPEN) && rt.network() != nullptr) {
    if (long r = ConnectForFastOpen(rt, fd, to, size); r != 0) return r;
    return SendTo(rt, fd, buf, count, flags & ~MSG_FASTOPEN, nullptr, 0);
  }
  if (d == nullptr) return RawSyscall6(SYS_sendto, fd, Arg(buf), static_cast<long>(count), flags, Arg(to), size);
  if (flags & MSG_OOB) return -EOPNOTSUPP;
  return d->AsTlsSocket()->Send(fd, buf, count, flags);
}

long ReceiveMessage(Runtime& rt, int fd, struct msghdr* msg, int flags) {
  auto d = Tls(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_recvmsg, fd, Arg(msg), flags);
  if (flags & MSG_OOB) return -EINVAL;
  std::vector<uint8_t> buffer(IovTotal(msg->msg_iov, msg->msg_iovlen));
  long n = d->AsTlsSocket()->Receive(fd, buffer.data(), buffer.size(), flags);
  if (n < 0) return n;
  size_t done = 0;
  for (size_t i = 0; i < msg->msg_iovlen && done < static_cast<size_t>(n); ++i) {
    size_t part = std::min(msg->msg_iov[i].iov_len, static_cast<size_t>(n) - done);
    std::memcpy(msg->msg_iov[i].iov_base, buffer.data() + done, part);
    done += part;
  }
  msg->msg_namelen = 0;
  msg->msg_controllen = 0;  // no ancillary data through TLS
  msg->msg_flags = 0;
  return n;
}

long SendMessage(Runtime& rt, int fd, const struct msghdr* msg, int flags) {
  auto d = Tls(rt, fd);
  if (d == nullptr && (flags & MSG_FASTOPEN) && rt.network() != nullptr && msg != nullptr) {
    if (long r = ConnectForFastOpen(rt, fd, static_cast<const struct sockaddr*>(msg->msg_name), msg->msg_namelen);
        r != 0) {
      return r;
    }
    struct msghdr connected = *msg;
    connected.msg_name = nullptr;
    connected.msg_namelen = 0;
    return SendMessage(rt, fd, &connected, flags & ~MSG_FASTOPEN);
  }
  if (d == nullptr) return RawSyscall(SYS_sendmsg, fd, Arg(msg), flags);
  if ((flags & MSG_OOB) || msg->msg_controllen > 0) return -EOPNOTSUPP;  // descriptors cannot travel in TLS
  std::vector<uint8_t> buffer;
  buffer.reserve(IovTotal(msg->msg_iov, msg->msg_iovlen));
  for (size_t i = 0; i < msg->msg_iovlen; ++i) {
    auto* p = static_cast<const uint8_t*>(msg->msg_iov[i].iov_base);
    buffer.insert(buffer.end(), p, p + msg->msg_iov[i].iov_len);
  }
  return d->AsTlsSocket()->Send(fd, buffer.data(), buffer.size(), flags);
}

long Shutdown(Runtime& rt, int fd, int how) {
  auto d = Tls(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_shutdown, fd, how);
  return d->AsTlsSocket()->Shutdown(fd, how);
}

long SocketOption(Runtime& rt, long nr, int fd, int level, int name, void* value, socklen_t size_or_none, socklen_t* size) {
  // A refused connect's error, which the handshake took from the kernel's socket: the kernel's
  // call checks the program's pointers and sets the size, the shield's error goes in its place.
  if (level == SOL_SOCKET && name == SO_ERROR && nr == SYS_getsockopt) {
    auto d = Tls(rt, fd);
    if (d == nullptr) return kNotMine;
    long r = RawSyscall6(SYS_getsockopt, fd, SOL_SOCKET, SO_ERROR, Arg(value), Arg(size), 0);
    if (r != 0) return r;
    int kernel_error = 0;
    std::memcpy(&kernel_error, value, std::min<size_t>(*size, sizeof(kernel_error)));
    if (const int error = d->AsTlsSocket()->TakeSocketError(); error != 0 && (*size < sizeof(int) || kernel_error == 0)) {
      std::memcpy(value, &error, std::min<size_t>(*size, sizeof(error)));
    }
    return 0;
  }
  // TCP_CORK's getsockopt is the kernel's: its cork is the program's.
  const bool cork = name == TCP_CORK && nr == SYS_setsockopt;
  auto d = level == IPPROTO_TCP && (name == TCP_NODELAY || cork) ? Tls(rt, fd) : nullptr;
  if (d == nullptr) return kNotMine;
  if (cork) return d->AsTlsSocket()->SetCork(fd, value, size_or_none);
  return nr == SYS_setsockopt ? d->AsTlsSocket()->SetNoDelay(fd, value, size_or_none)
                              : d->AsTlsSocket()->GetNoDelay(fd, value, size);
}

void SendHeld(ShieldedFd& d, int fd) {
  if (TlsSocketFd* s = d.AsTlsSocket()) s->SendHeld(fd);
}

long ReadableBytes(Runtime& rt, int fd, int* count) {
  auto d = Tls(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_ioctl, fd, FIONREAD, Arg(count));
  long n = d->AsTlsSocket()->ReadableBytes(fd);
  if (n < 0) return n;
  *count = static_cast<int>(std::min<long>(n, INT32_MAX));
  return 0;
}

bool AnyTls(Runtime& rt, const struct pollfd* fds, unsigned long count) {
  if (fds == nullptr) return false;
  for (unsigned long i = 0; i < count; ++i) {
    if (rt.fds().Has(fds[i].fd) && Tls(rt, fds[i].fd) != nullptr) return true;
  }
  return false;
}

bool AnyTls(Runtime& rt, int nfds, const fd_set* r, const fd_set* w, const fd_set* e) {
  for (int fd = 0; fd < nfds && fd < FD_SETSIZE; ++fd) {
    bool asked = (r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e));
    if (asked && rt.fds().Has(fd) && Tls(rt, fd) != nullptr) return true;
  }
  return false;
}

long Poll(Runtime& rt, struct pollfd* fds, unsigned long count, const struct timespec* timeout, const void* mask,
          size_t mask_size) {
  uint64_t mask_copy = 0;
  const void* kernel_mask = mask;
  if (mask != nullptr && mask_size == sizeof(uint64_t)) {
    mask_copy = *static_cast<const uint64_t*>(mask) & ~kSigsysBit;
    kernel_mask = &mask_copy;
  }
  std::vector<std::shared_ptr<ShieldedFd>> tls(count);
  for (unsigned long i = 0; i < count; ++i) tls[i] = Tls(rt, fds[i].fd);
  const long deadline = timeout != nullptr ? MonotonicNs() + timeout->tv_sec * 1000000000L + timeout->tv_nsec : -1;
  std::vector<struct pollfd> kernel(fds, fds + count);
  for (;;) {
    bool ready_now = false;
    for (unsigned long i = 0; i < count; ++i) {
      kernel[i] = fds[i];
      kernel[i].revents = 0;
      if (tls[i] == nullptr) continue;
      TlsSocketFd* s = tls[i]->AsTlsSocket();
      if (s->Quiet()) continue;  // the kernel's readiness is the connection's
      // A handshake moves on here as far as it can (a client's first flight goes out once
      // the kernel's connect completes), then the wait is for what it needs next.
      if (!s->HandshakeDone()) s->AdvanceHandshake(fds[i].fd);
      s->FlushWithoutWaiting(fds[i].fd);
      kernel[i].events = s->KernelEvents(fds[i].events);
      if (s->Broken()) ready_now = true;
      if (s->ShieldEvents(fds[i].events) != 0) ready_now = true;
    }
    struct timespec wait = {0, 0};
    const struct timespec* wait_for = &wait;
    if (!ready_now) {
      if (deadline < 0) {
        wait_for = nullptr;
      } else {
        long left = std::max(0L, deadline - MonotonicNs());
        wait = {left / 1000000000L, left % 1000000000L};
      }
    }
    long r = RawSyscall(SYS_ppoll, Arg(kernel.data()), static_cast<long>(count), Arg(wait_for), Arg(kernel_mask), mask_size);
    if (r < 0) return r;
    long ready = 0;
    for (unsigned long i = 0; i < count; ++i) {
      short k = kernel[i].revents;
      short out = k;
      if (tls[i] != nullptr) {
        TlsSocketFd* s = tls[i]->AsTlsSocket();
        const short wanted = fds[i].events;
        const short always = static_cast<short>(POLLERR | POLLHUP | POLLNVAL);
        if (!s->HandshakeDone() && (k & (POLLIN | POLLOUT))) s->AdvanceHandshake(fds[i].fd);
        if (s->Broken()) {
          out = static_cast<short>((wanted & (POLLIN | POLLOUT)) | POLLERR | (k & POLLHUP));  // the call reports the error
        } else if (!s->HandshakeDone()) {
          out = static_cast<short>(k & always);  // in progress: neither data nor EOF yet
        } else if (s->Quiet()) {
          out = static_cast<short>(k & (wanted | always));
        } else {
          out = static_cast<short>((k & (wanted | always) & ~POLLIN) | s->ShieldEvents(wanted) | (k & wanted & POLLIN));
        }
      }
      fds[i].revents = out;
      if (out != 0) ++ready;
    }
    if (ready > 0 || (deadline >= 0 && MonotonicNs() >= deadline)) return ready;
    if (r == 0 && ready_now) continue;  // shield-ready entries vanished meanwhile (another reader)
  }
}

long Select(Runtime& rt, int nfds, fd_set* r, fd_set* w, fd_set* e, struct timespec* timeout, const void* mask,
            size_t mask_size) {
  if (nfds < 0 || nfds > FD_SETSIZE) return -EINVAL;
  std::vector<struct pollfd> fds;
  for (int fd = 0; fd < nfds; ++fd) {
    short events = 0;
    if (r && FD_ISSET(fd, r)) events |= POLLIN;
    if (w && FD_ISSET(fd, w)) events |= POLLOUT;
    if (e && FD_ISSET(fd, e)) events |= POLLPRI;
    if (events != 0) fds.push_back({fd, events, 0});
  }
  long start = MonotonicNs();
  long n = Poll(rt, fds.data(), fds.size(), timeout, mask, mask_size);
  if (n < 0) return n;
  if (timeout != nullptr) {  // Linux leaves the time not slept
    long given = timeout->tv_sec * 1000000000L + timeout->tv_nsec;
    long left = std::max(0L, given - (MonotonicNs() - start));
    *timeout = {left / 1000000000L, left % 1000000000L};
  }
  if (r) FD_ZERO(r);
  if (w) FD_ZERO(w);
  if (e) FD_ZERO(e);
  long count = 0;
  for (const struct pollfd& p : fds) {
    if (p.revents & POLLNVAL) return -EBADF;
    if (r && (p.events & POLLIN) && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      FD_SET(p.fd, r);
      ++count;
    }
    if (w && (p.events & POLLOUT) && (p.revents & (POLLOUT | POLLERR))) {
      FD_SET(p.fd, w);
      ++count;
    }
    if (e && (p.events & POLLPRI) && (p.revents & POLLPRI)) {
      FD_SET(p.fd, e);
      ++count;
    }
  }
  return count;
}

}  // namespace scone::runtime::sockets

// ---- epoll ------------------------------------------------------------------------------------
// A TLS connection registered with an epoll instance is registered with the kernel under a data
// word of the shield's (kTlsData | fd), so that its events can be told apart and translated; the
// program's events and data are kept here. The kernel is asked for input while the handshake
// runs, and for output while ciphertext waits to leave.
namespace scone::runtime::sockets {
namespace {

constexpr uint64_t kTlsData = 0x5c0e7150ull << 32;  // high bits no user-space pointer has
constexpr uint64_t kTlsDataMask = 0xffffffffull << 32;

struct Registration {
  std::weak_ptr<ShieldedFd> socket;
  uint32_t events = 0;  // the program's
  uint64_t data = 0;    // the program's
  uint32_t kernel = 0;  // what the kernel was asked for
  bool settled = false;  // quiet when last looked at, and asked for exactly what a quiet one needs
};

struct EpollTable {
  std::mutex mu;
  std::map<int, std::map<int, Registration>> by_epfd;
  std::atomic<int> count{0};  // instances holding a registration: 0 makes every epoll call the kernel's
};

EpollTable& Epolls() {
  static auto* table = new EpollTable();  // used until exit
  return *table;
}

uint32_t KernelInterest(TlsSocketFd* s, uint32_t program) {
  uint32_t wanted = program & (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI);
  uint32_t flags = program & (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP);
  short k = s->KernelEvents(static_cast<short>(wanted & (EPOLLIN | EPOLLOUT | EPOLLPRI)));
  if (!s->HandshakeDone()) k |= POLLIN;  // the peer's handshake messages
  return static_cast<uint32_t>(static_cast<unsigned short>(k)) | (wanted & EPOLLRDHUP) | flags;
}

long KernelCtl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
  struct epoll_event e = {};
  e.events = events;
  e.data.u64 = data;
  return RawSyscall(SYS_epoll_ctl, epfd, op, fd, Arg(&e));
}

}  // namespace

void EpollCreated(int epfd) {
  EpollTable& t = Epolls();
  if (t.count.load(std::memory_order_acquire) == 0) return;
  RuntimeSection section;
  std::lock_guard lock(t.mu);
  if (t.by_epfd.erase(epfd) > 0) t.count.fetch_sub(1);
}

void EpollBeforeFork() { Epolls().mu.lock(); }
void EpollAfterFork() { Epolls().mu.unlock(); }

bool EpollHoldsTls(int epfd) {
  EpollTable& t = Epolls();
  if (t.count.load(std::memory_order_acquire) == 0) return false;
  RuntimeSection section;
  std::lock_guard lock(t.mu);
  return t.by_epfd.count(epfd) != 0;
}

long EpollCtl(Runtime& rt, int epfd, int op, int fd, struct epoll_event* event) {
  EpollTable& t = Epolls();
  auto d = Tls(rt, fd);
  if (d == nullptr) {
    if (op == EPOLL_CTL_DEL && t.count.load(std::memory_order_acquire) > 0) {
      RuntimeSection section;
      std::lock_guard lock(t.mu);
      auto it = t.by_epfd.find(epfd);
      if (it != t.by_epfd.end() && it->second.erase(fd) > 0 && it->second.empty()) {
        t.by_epfd.erase(it);
        t.count.fetch_sub(1);
      }
    }
    return kNotMine;
  }
  TlsSocketFd* s = d->AsTlsSocket();
  RuntimeSection section;
  std::lock_guard lock(t.mu);
  if (op == EPOLL_CTL_DEL) {
    long r = RawSyscall(SYS_epoll_ctl, epfd, op, fd, Arg(event));
    auto it = t.by_epfd.find(epfd);
    if (it != t.by_epfd.end() && it->second.erase(fd) > 0 && it->second.empty()) {
      t.by_epfd.erase(it);
      t.count.fetch_sub(1);
    }
    return r;
  }
  if (event == nullptr) return -EFAULT;
  uint32_t kernel = KernelInterest(s, event->events);
  long r = KernelCtl(epfd, op, fd, kernel, kTlsData | static_cast<uint32_t>(fd));
  if (r != 0) return r;
  auto [it, added] = t.by_epfd.try_emplace(epfd);
  if (added) t.count.fetch_add(1);
  it->second[fd] = Registration{d, event->events, event->data.u64, kernel};
  return 0;
}

long EpollWait(Runtime& rt, int epfd, struct epoll_event* events, int max, const struct timespec* timeout,
               const void* mask, size_t mask_size) {
  (void)rt;
  if (max <= 0) return -EINVAL;
  EpollTable& t = Epolls();
  uint64_t mask_copy = 0;
  const void* kernel_mask = mask;
  if (mask != nullptr && mask_size == sizeof(uint64_t)) {
    mask_copy = *static_cast<const uint64_t*>(mask) & ~kSigsysBit;
    kernel_mask = &mask_copy;
  }
  const long deadline = timeout != nullptr ? MonotonicNs() + timeout->tv_sec * 1000000000L + timeout->tv_nsec : -1;
  // The TLS connections to report: the shield's own readiness, then the kernel's events of
  // connections, translated. On the stack unless many are ready at once: servers wait in a loop,
  // and allocating (or zeroing a buffer of `max` events: redis asks for 10,000) per wait was the
  // largest cost the shield added to a pipelined redis.
  struct Ready {
    int fd;
    uint32_t events;
    uint64_t data;  // the program's
  };
  alignas(Ready) std::byte stack[64 * sizeof(Ready)];
  std::pmr::monotonic_buffer_resource arena(stack, sizeof stack);
  std::pmr::vector<Ready> ready(&arena);
  size_t from_shield = 0;  // ready[0, from_shield): found before the kernel was asked
  // The kernel reports a descriptor once per wait: only the shield's own entries can repeat it.
  auto add_ready = [&](int fd, uint32_t ev, uint64_t data) {
    for (size_t i = 0; i < from_shield; ++i) {
      if (ready[i].fd == fd) {
        ready[i].events |= ev;
        return;
      }
    }
    ready.push_back({fd, ev, data});
  };
  for (;;) {
    ready.clear();
    // The shield's own readiness first (decrypted data, failed connections), and the kernel's
    // interest following each connection's state. A quiet connection (handshake done, nothing
    // buffered or waiting to leave) whose interest is settled costs two atomic loads here.
    {
      RuntimeSection section;
      std::lock_guard lock(t.mu);
      auto it = t.by_epfd.find(epfd);
      if (it != t.by_epfd.end()) {
        for (auto r = it->second.begin(); r != it->second.end();) {
          auto d = r->second.socket.lock();
          if (d == nullptr) {  // closed: the kernel dropped it too
            r = it->second.erase(r);
            continue;
          }
          TlsSocketFd* s = d->AsTlsSocket();
          Registration& reg = r->second;
          if (s->Quiet() && reg.settled) {
            ++r;
            continue;
          }
          if (!s->HandshakeDone()) s->AdvanceHandshake(r->first);
          s->FlushWithoutWaiting(r->first);
          uint32_t out_events = 0;
          if (s->Broken()) out_events = (reg.events & (EPOLLIN | EPOLLOUT)) | EPOLLERR;
          if (s->HandshakeDone() && (reg.events & EPOLLIN) && (s->ShieldEvents(POLLIN) & POLLIN)) out_events |= EPOLLIN;
          if (out_events != 0) ready.push_back({r->first, out_events, reg.data});
          uint32_t kernel_now = KernelInterest(s, reg.events);
          if (kernel_now != reg.kernel &&
              KernelCtl(epfd, EPOLL_CTL_MOD, r->first, kernel_now, kTlsData | static_cast<uint32_t>(r->first)) == 0) {
            reg.kernel = kernel_now;
          }
          reg.settled = s->Quiet() && reg.kernel == kernel_now;
          ++r;
        }
        if (it->second.empty()) {
          t.by_epfd.erase(it);
          t.count.fetch_sub(1);
        }
      }
    }
    from_shield = ready.size();
    // The kernel writes into the program's own array, leaving room for what is ready already
    // (each kernel event yields at most one entry, so the translation below fits in place).
    const int kernel_max = max - static_cast<int>(std::min<size_t>(ready.size(), static_cast<size_t>(max)));
    long n = 0;
    if (kernel_max > 0) {
      struct timespec wait = {0, 0};
      const struct timespec* wait_for = &wait;
      if (ready.empty()) {
        if (deadline < 0) {
          wait_for = nullptr;
        } else {
          long left = std::max(0L, deadline - MonotonicNs());
          wait = {left / 1000000000L, left % 1000000000L};
        }
      }
      n = RawSyscall6(SYS_epoll_pwait2, epfd, Arg(events), kernel_max, Arg(wait_for), Arg(kernel_mask), mask_size);
      if (n < 0 && ready.empty()) return n;
      n = std::max(0L, n);
    }
    int out = 0;  // entries of `events` final so far: the kernel's for other descriptors
    {
      RuntimeSection section;
      std::lock_guard lock(t.mu);
      auto it = t.by_epfd.find(epfd);
      for (long i = 0; i < n; ++i) {
        const struct epoll_event e = events[i];
        if ((e.data.u64 & kTlsDataMask) != kTlsData) {
          events[out++] = e;
          continue;
        }
        int fd = static_cast<int>(e.data.u64 & 0xffffffffu);
        if (it == t.by_epfd.end()) continue;
        auto r = it->second.find(fd);
        if (r == it->second.end()) continue;
        auto d = r->second.socket.lock();
        if (d == nullptr) continue;
        TlsSocketFd* s = d->AsTlsSocket();
        Registration& reg = r->second;
        const uint32_t always = EPOLLERR | EPOLLHUP;
        if (!s->HandshakeDone() && (e.events & (EPOLLIN | EPOLLOUT))) s->AdvanceHandshake(fd);
        uint32_t ev;
        if (s->Broken()) {
          ev = (reg.events & (EPOLLIN | EPOLLOUT)) | EPOLLERR;
        } else if (!s->HandshakeDone()) {
          ev = e.events & always;  // in progress: neither data nor EOF yet
        } else {
          ev = e.events & (reg.events | always);
        }
        if (!s->Quiet()) reg.settled = false;  // its interest may have to follow at the next wait
        if (ev != 0) add_ready(fd, ev, reg.data);
      }
      // EPOLLONESHOT: a connection reported is disarmed until the program re-arms it (MOD).
      for (const Ready& r : ready) {
        if (out >= max) break;
        struct epoll_event e = {};
        e.events = r.events;
        e.data.u64 = r.data;
        events[out++] = e;
        if (it == t.by_epfd.end()) continue;
        auto reg = it->second.find(r.fd);
        if (reg != it->second.end() && (reg->second.events & EPOLLONESHOT)) {
          reg->second.events &= ~(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI);
          reg->second.settled = false;
        }
      }
    }
    if (out > 0) return out;
    if (deadline >= 0 && MonotonicNs() >= deadline) return 0;
  }
}

}  // namespace scone::runtime::sockets
