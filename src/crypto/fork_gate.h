// OpenSSL's own locks (its random generator's, its algorithm store's, its list of the threads
// that used it) are nobody's to hold across a fork: a thread inside OpenSSL while another
// thread forks could leave one of them locked in the child, whose first use of it then waited
// for good (a threaded Python's forked child writing its first protected file: CI hang). So
// every primitive of this module runs inside a gate (InsideOpenSsl), and the runtime's fork
// closes the gate: it waits until no thread is inside, and holds threads that come meanwhile at
// the door until the fork is done. A thread's last call into OpenSSL, at its exit, goes through
// the gate too.
//
// TLS connections (net/tls_connection.cc) pass it too: they work on memory buffers, so nothing
// inside ever waits for the kernel. Cost: one atomic add and one load per call.
#pragma once

#include <cstdint>

namespace scone::crypto {

// For the lifetime of the object this thread is inside OpenSSL (nesting passes).
class InsideOpenSsl {
 public:
  InsideOpenSsl();
  ~InsideOpenSsl();
  InsideOpenSsl(const InsideOpenSsl&) = delete;
  InsideOpenSsl& operator=(const InsideOpenSsl&) = delete;
};

// Before the kernel's fork call: waits until no other thread is inside. REQUIRES: this thread is
// not inside, and calls no primitive until OpenGateAfterFork.
void CloseGateForFork();
// In both processes, once the fork is done.
void OpenGateAfterFork();
// Whether a fork closed the gate (it may still wait for threads inside).
bool GateClosedForFork();

// Frees the calling thread's cipher, digest and MAC contexts (primitives.cc); run at the thread's exit.
void ReleaseThreadCryptoContexts();

// OpenSSL's initialisation for a process whose threads come and go while it forks (the
// runtime): the thread-exit hook that frees a thread's OpenSSL state inside the gate is made
// first. glibc runs an exiting thread's key destructors in the order the keys were made, and
// OpenSSL's own destructor (made by its initialisation) frees the same state outside the gate:
// a server thread ending at a fork left the secure heap's or the ex_data lock held in the
// child, which waited for good at its first key or its first close of a TLS socket.
void InitOpenSslWithGate(uint64_t opts);

}  // namespace scone::crypto
