// The network shield at the system-call layer: the kernel's socket calls, with the kernel's
// arguments and results (a value >= 0, or -errno).
//
// connect() to a destination a client rule protects and accept() on a listening socket a server
// rule protects make the new connection a TlsSocketFd in the descriptor table; reads and writes
// on it (read, readv, recv*, write, writev, send*, sendfile) then carry plaintext for the program
// and TLS records on the wire. Readiness (poll, ppoll, select, pselect6, epoll level and edge
// triggered) counts plaintext the shield holds as readable and never shows a handshake in
// progress as readable data or EOF.
// Calls on other descriptors are made unchanged.
#pragma once

#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>

namespace scone::runtime {

class Runtime;
class ShieldedFd;

namespace sockets {

long Socket(Runtime& rt, int domain, int type, int protocol);
long Connect(Runtime& rt, int fd, const struct sockaddr* addr, socklen_t size);
// bind: a relative unix path that a server rule names is bound by its absolute name.
long Bind(Runtime& rt, int fd, const struct sockaddr* addr, socklen_t size);
long Accept(Runtime& rt, int fd, struct sockaddr* addr, socklen_t* size, int flags);
// close of a TLS connection's descriptor: close_notify when it is the last one.
long Close(Runtime& rt, int fd);

// On TLS connections (REQUIRES: the table holds `fd` as one).
long ReceiveFrom(Runtime& rt, int fd, void* buf, size_t count, int flags, struct sockaddr* from, socklen_t* size);
long SendTo(Runtime& rt, int fd, const void* buf, size_t count, int flags, const struct sockaddr* to, socklen_t size);
long ReceiveMessage(Runtime& rt, int fd, struct msghdr* msg, int flags);
long SendMessage(Runtime& rt, int fd, const struct msghdr* msg, int flags);
long Shutdown(Runtime& rt, int fd, int how);
// setsockopt and getsockopt of TCP_NODELAY on a TLS connection (tls_socket.h: the shield lends
// it during the handshake), and setsockopt of TCP_CORK (the shield holds plaintext back while
// corked); kNotMine for every other option and descriptor.
long SocketOption(Runtime& rt, long nr, int fd, int level, int name, void* value, socklen_t size_or_none, socklen_t* size);
// The program leaves descriptor `fd` without closing it (exit, exec, close_range): a TLS
// connection sends the plaintext it held back under TCP_CORK or MSG_MORE, without waiting.
void SendHeld(ShieldedFd& d, int fd);
// ioctl(FIONREAD) on a shielded descriptor: a TLS connection's plaintext, else the kernel's answer.
long ReadableBytes(Runtime& rt, int fd, int* count);

// Whether any descriptor of the set is a TLS connection (else the kernel's call serves).
bool AnyTls(Runtime& rt, const struct pollfd* fds, unsigned long count);
bool AnyTls(Runtime& rt, int nfds, const fd_set* r, const fd_set* w, const fd_set* e);
// ppoll (poll: timeout converted by the caller); `mask` as the program gave it (SIGSYS never
// blocked: the caller's WithMask rules apply).
long Poll(Runtime& rt, struct pollfd* fds, unsigned long count, const struct timespec* timeout, const void* mask,
          size_t mask_size);
// pselect6 / select: `timeout` updated as Linux does.
long Select(Runtime& rt, int nfds, fd_set* r, fd_set* w, fd_set* e, struct timespec* timeout, const void* mask,
            size_t mask_size);

// epoll_ctl: a TLS connection's registration is the shield's (the kernel is asked for what the
// connection needs: input during the handshake, output while ciphertext waits); kNotMine for
// other descriptors.
long EpollCtl(Runtime& rt, int epfd, int op, int fd, struct epoll_event* event);
// Whether the epoll instance holds a TLS connection (else the kernel's call serves).
bool EpollHoldsTls(int epfd);
// A new epoll instance got this number: what a closed one there held is forgotten.
void EpollCreated(int epfd);
// Fork: no other thread changes the table across it (taken before the TLS connections' locks,
// which a thread holding it takes).
void EpollBeforeFork();
void EpollAfterFork();
// epoll_wait, epoll_pwait, epoll_pwait2 (`timeout`: nullptr waits without end).
long EpollWait(Runtime& rt, int epfd, struct epoll_event* events, int max, const struct timespec* timeout,
               const void* mask, size_t mask_size);

}  // namespace sockets
}  // namespace scone::runtime
