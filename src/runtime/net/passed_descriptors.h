// Descriptors that cross between processes on their own, not by fork or exec: sent with
// SCM_RIGHTS (sendmsg, sendmmsg), received with it (recvmsg, recvmmsg), or taken from another
// process (pidfd_getfd).
//
// A shielded descriptor's state (a TLS connection's keys and sequence numbers, a protected
// file's chunk tables, the console's stream) lives in this process's memory: another process
// would get the bare kernel object, and what it wrote would reach the wire, the disk or the
// console as plaintext. So a shielded process never passes one: the send fails with EPERM and a
// `scone:` line. Conversely a connected stream socket that arrives from elsewhere has no TLS
// state here: where the network shield's rules protect (or refuse) its connection, the
// descriptor is replaced by an unconnected socket (reads and writes fail with ENOTCONN or
// EINVAL), with a `scone:` line, so nothing the program writes leaves in plaintext.
#pragma once

#include <sys/socket.h>

namespace scone::runtime {

class Runtime;

namespace sockets {

// 0, or -EPERM when `msg` passes one of the shields' descriptors (or the runtime's own).
long CheckPassedDescriptors(Runtime& rt, const struct msghdr* msg);
// After a recvmsg that succeeded: the descriptors it brought, made safe.
void CheckReceivedDescriptors(Runtime& rt, const struct msghdr* msg);
// At start: every connected stream socket the program inherited (from a parent outside the
// runtime, or one whose TLS state stayed behind at exec) is checked as one that arrived.
void CheckInheritedSockets(Runtime& rt);
// A descriptor that came from another process (`how`: "received", "taken with pidfd_getfd").
void CheckArrivedDescriptor(Runtime& rt, int fd, const char* how);

}  // namespace sockets
}  // namespace scone::runtime
