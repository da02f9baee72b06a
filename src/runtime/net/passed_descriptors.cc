#include "runtime/net/passed_descriptors.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/net/network_shield.h"
#include "runtime/net/tls_socket.h"
#include "runtime/runtime.h"

namespace scone::runtime::sockets {
namespace {

// Calls `each` with every descriptor of the SCM_RIGHTS messages in `msg`; stops at the first
// non-zero result and returns it.
template <typename Each>
long ForEachPassed(const struct msghdr* msg, Each each) {
  if (msg == nullptr || msg->msg_control == nullptr || msg->msg_controllen < sizeof(struct cmsghdr)) return 0;
  for (const struct cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr;
       c = CMSG_NXTHDR(const_cast<struct msghdr*>(msg), const_cast<struct cmsghdr*>(c))) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
      if (long r = each(fd); r != 0) return r;
    }
  }
  return 0;
}

std::string WhatShields(ShieldedFd& d) {
  if (d.AsTlsSocket() != nullptr) return "a TLS connection of the network shield";
  if (d.IsConsole()) return "the console shield's stream";
  return "a protected file";
}

// Whether `fd` is a connected stream socket (not a listening one); its peer in `peer`, `size`.
bool ConnectedStream(int fd, struct sockaddr_storage* peer, socklen_t* size) {
  int type = 0, listening = 0;
  socklen_t option_size = sizeof(type);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, Arg(&type), Arg(&option_size)) != 0 || type != SOCK_STREAM) {
    return false;
  }
  option_size = sizeof(listening);
  if (RawSyscall(SYS_getsockopt, fd, SOL_SOCKET, SO_ACCEPTCONN, Arg(&listening), Arg(&option_size)) != 0 || listening) {
    return false;  // a listening socket: accept judges its connections
  }
  *size = sizeof(*peer);
  return RawSyscall(SYS_getpeername, fd, Arg(peer), Arg(size)) == 0;
}

}  // namespace

long CheckPassedDescriptors(Runtime& rt, const struct msghdr* msg) {
  return ForEachPassed(msg, [&](int fd) -> long {
    FdTable& fds = rt.fds();
    if (fds.IsOwn(fd)) return -EBADF;  // the program does not see the runtime's own
    if (!fds.Has(fd)) return 0;
    auto d = fds.Get(fd);
    if (d == nullptr) return 0;
    // Node's cluster module (and pm2's cluster mode) hand accepted connections to workers so by
    // default; each worker accepting for itself works (the hint names how).
    Log("descriptor " + std::to_string(fd) + " is " + WhatShields(*d) +
        ": its state is this process's, another process would get it unshielded; sendmsg fails with EPERM "
        "(a server whose workers get connections from a primary, as Node's cluster module does: let each "
        "worker accept, NODE_CLUSTER_SCHED_POLICY=none)");
    return -EPERM;
  });
}

void CheckReceivedDescriptors(Runtime& rt, const struct msghdr* msg) {
  (void)ForEachPassed(msg, [&](int fd) -> long {
    CheckArrivedDescriptor(rt, fd, "received (SCM_RIGHTS)");
    return 0;
  });
}

void CheckInheritedSockets(Runtime& rt) {
  if (rt.network() == nullptr) return;
  long dir = RawSyscall(SYS_openat, AT_FDCWD, Arg("/proc/self/fd"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  std::vector<int> fds;
  alignas(8) char buf[4096];
  for (long n; (n = RawSyscall(SYS_getdents64, dir, Arg(buf), sizeof(buf))) > 0;) {
    for (long at = 0; at < n;) {
      const auto* e = reinterpret_cast<const struct dirent64*>(buf + at);
      at += e->d_reclen;
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      const int fd = std::atoi(e->d_name);
      if (fd != dir && !rt.fds().IsOwn(fd) && !rt.fds().Has(fd)) fds.push_back(fd);
    }
  }
  RawSyscall(SYS_close, dir);
  for (int fd : fds) CheckArrivedDescriptor(rt, fd, "inherited at start");
}

void CheckArrivedDescriptor(Runtime& rt, int fd, const char* how) {
  NetworkShield* shield = rt.network();
  struct sockaddr_storage peer = {};
  socklen_t size = 0;
  if (shield == nullptr || !ConnectedStream(fd, &peer, &size)) return;
  RuntimeSection section;
  // Either end may be this process's: a connection accepted on a protected port, or one made to
  // a protected destination.
  Decision as_server = shield->ForAccept(fd);
  Decision as_client = shield->ForConnect(reinterpret_cast<const struct sockaddr*>(&peer), size);
  const Decision& d = as_server.protection != net::Protection::kUnprotected ? as_server : as_client;
  if (d.protection == net::Protection::kUnprotected) return;
  // An unconnected unix socket in its place: every read and write fails, none with SIGPIPE.
  long fd_flags = RawSyscall(SYS_fcntl, fd, F_GETFD);
  long dead = RawSyscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (dead < 0 || RawSyscall(SYS_dup3, dead, fd, (fd_flags > 0 && (fd_flags & FD_CLOEXEC)) ? O_CLOEXEC : 0) < 0) {
    RawSyscall(SYS_shutdown, fd, SHUT_RDWR);  // never left to carry plaintext
  }
  if (dead >= 0) RawSyscall(SYS_close, dead);
  Log("network shield: descriptor " + std::to_string(fd) + " " + how + " is a connection (" + d.endpoint +
      ") that " + d.What() + " covers, without its TLS state in this process: it is not usable here");
}

}  // namespace scone::runtime::sockets
