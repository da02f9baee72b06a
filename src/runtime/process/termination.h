// A signal that ends the process commits what it wrote first, as exit does.
//
// While the process has a volume open, every signal whose default action ends the process
// (SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1/2, SIGXCPU, the real-time ones...)
// and whose disposition is SIG_DFL has the runtime's handler in the kernel instead
// (signal_calls.h keeps the program's view: it sees SIG_DFL). The handler commits the open
// protected files and closes the volumes (CloseVolumesAtExit), then restores SIG_DFL and raises
// the signal again with its siginfo, so the process ends as it would have: the parent's
// WIFSIGNALED and WTERMSIG are native. Exec resets the disposition to SIG_DFL as the kernel
// always does.
//
// Committing needs the C library's allocator, whose locks the interrupted thread may hold, and
// the runtime's locks. So the commit runs only at a safe point: not in a runtime section (the
// signal is held back until it ends, as for every handler), not inside the C library or the
// dynamic loader (or the object that defines malloc), not in a memory-management call or a
// fork, and not in a program handler that interrupted one of those. Elsewhere the signal is
// held: the process ends at its next system call that is a safe point, or at the first tick of
// a timer (SIGSYS every 10 ms) that finds a thread at one. A process that reaches none within
// two seconds ends by the signal without committing (what a crash leaves: the last commit).
//
// Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP raised by an instruction) cannot wait for a
// safe point, and the program's state may be broken: the runtime's fault handler only publishes
// what the process buffered (Volume::PublishBuffered: writes that returned stay, as the kernel's
// page cache keeps them when a program crashes natively), unless the fault is inside the
// runtime (its locks may be held). Publishing needs no lock of the C library's (the runtime
// allocates from its own heap), so a fault inside the C library (strlen of a bad pointer, the
// commonest crash) publishes too. The other threads stop at their next system call, and the
// handler waits until none still publishes files it took (bounded). Then SIG_DFL again, and the
// signal raised again with its siginfo: the process ends as the kernel would have ended it.
// Mappings (shared images) are not sealed there: only writes. Faults with SIG_DFL are never
// blocked in the kernel (signal_calls.h): a blocked one would be delivered with SIG_DFL, past
// this handler.
//
// Not caught: SIGKILL and SIGSTOP (impossible), SIGSYS (the entry's), and SIGABRT (abort(): the
// allocator may be what aborted, holding its locks; abort()'s own kill publishes first, as every
// call by which something leaves the process does).
#pragma once

#include <signal.h>
#include <ucontext.h>

#include <atomic>

#include "runtime/process/signal_calls.h"

namespace scone::runtime::process {

// Whether the runtime commits before `sig` ends the process (its default action ends it and the
// runtime may catch it).
bool CommitsBeforeEnding(int sig);
// The kernel's action standing for the program's SIG_DFL of such a signal.
KernelSigaction TerminationAction();
bool IsTerminationHandler(const void* handler);
// The faults (a mask, bit sig-1): signals the kernel raises for an instruction.
inline constexpr uint64_t kFaultSignals = (uint64_t{1} << (SIGSEGV - 1)) | (uint64_t{1} << (SIGBUS - 1)) |
                                          (uint64_t{1} << (SIGILL - 1)) | (uint64_t{1} << (SIGFPE - 1)) |
                                          (uint64_t{1} << (SIGTRAP - 1));
// Whether the runtime publishes buffered writes before the fault `sig` ends the process.
bool PublishesBeforeFault(int sig);
// The kernel's action standing for the program's SIG_DFL of such a fault.
KernelSigaction FaultAction();
bool IsFaultHandler(const void* handler);
// Learns where a thread may hold the C library's locks (see above), once; before the first
// TerminationAction is installed. Takes the dynamic loader's lock.
void LearnUnsafeCode();

namespace internal {
extern std::atomic<int> held_state;  // see termination.cc
}
// Whether a signal is ending the process (held until a safe point, or committing).
inline bool TerminationHeld() { return internal::held_state.load(std::memory_order_relaxed) != 0; }
// Dispatch, at depth 0, before and after the program's call `nr`, when TerminationHeld(): ends
// the process here if the call is a safe point; if another thread is ending it already, the
// thread goes no further (natively it would be gone; once the volumes closed, its calls on
// protected files would fail).
void AtSystemCall(long nr);
// A SIGSYS that is not the entry's: the tick of the timer that looks for a safe point (true,
// and the process may end here), or not (false).
bool OnTick(const siginfo_t* si, ucontext_t* uc);
// In a forked child: a signal the parent held is the parent's.
void ForgetHeldTermination();
// At exit_group, after the volumes closed: a process a signal is ending ends by that signal.
void EndIfTerminating();

// A program handler runs over `context`: while it does, whether the context it interrupted is a
// safe point is the question (it may have interrupted the allocator).
class ProgramHandlerScope {
 public:
  explicit ProgramHandlerScope(const void* context);
  ~ProgramHandlerScope();
  ProgramHandlerScope(const ProgramHandlerScope&) = delete;
  ProgramHandlerScope& operator=(const ProgramHandlerScope&) = delete;

 private:
  bool unsafe_;
};

}  // namespace scone::runtime::process
