// Signals, as far as the entry needs them.
//
// SIGSYS carries the entry's net (sud.h), so the program never blocks it (a blocked SIGSYS from
// Syscall User Dispatch kills the process) and never replaces the runtime's handler. The
// program's own SIGSYS disposition is kept here and honoured for SIGSYS that is not the entry's
// (seccomp's, kill's).
//
// Every handler the program installs is wrapped: a signal that arrives while the runtime works
// on the thread (a RuntimeSection, holding its locks, its own calls let through) is held back:
// the wrapper blocks it in the interrupted context and raises it again with its siginfo, so the
// kernel keeps it pending (and queues real-time signals as it always does), and the section's end
// unblocks it. The program's handler then runs as if the signal had come a moment later. Faults
// (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP from the kernel) cannot wait and run at once.
//
// Once the process has a volume open, a SIG_DFL that ends the process has the runtime's handler
// in the kernel, which commits first (termination.h). The program sees its own actions in
// rt_sigaction, never the wrapper nor that handler.
#pragma once

#include <signal.h>

#include <cstdint>

#include "runtime/entry/entry.h"

namespace scone::runtime::process {

// The kernel's struct sigaction (rt_sigaction's argument).
struct KernelSigaction {
  void* handler;
  unsigned long flags;
  void* restorer;
  uint64_t mask;
};

// rt_sigaction.
long SigAction(int sig, const KernelSigaction* act, KernelSigaction* old, unsigned long size);
// rt_sigprocmask.
long SigProcMask(int how, const uint64_t* set, uint64_t* old, unsigned long size);
// The calls that take a mask for their duration (rt_sigsuspend, ppoll, pselect6, epoll_pwait,
// epoll_pwait2): the call with SIGSYS taken out of the mask.
long WithMask(long nr, const long args[6]);

// The program's SIGSYS disposition, for the entry's handler.
const KernelSigaction& ProgramSigsys();

// A signal that arrived while the runtime works on thread `t` (depth > 0): blocked in the
// interrupted context, pending again with its siginfo, delivered when the section ends. A
// SIGXFSZ that one of the runtime's own writes caused is dropped instead.
void HoldBack(EntryThread& t, int sig, siginfo_t* si, void* context);

// Whether a blocking call that the signals `held` (a mask of HoldBack's, delivered since)
// interrupted restarts, as the kernel restarts it after handlers installed with SA_RESTART:
// every one of them has a handler with SA_RESTART. False for an empty mask.
bool RestartsAfter(uint64_t held);

// From now on, SIG_DFL of a signal that ends the process commits first, and that of a fault
// publishes buffered writes first (termination.h): the process has a volume open. Idempotent;
// the first call costs two rt_sigaction per signal.
void CommitBeforeEndingBySignals();

// From now on, SIG_DFL of a fault has the runtime's fault handler (termination.h), which turns a
// fault of a probe of the program's memory into a failed probe (entry/user_memory.h), and ends
// the process for any other fault as SIG_DFL does. Idempotent; one atomic load once done.
void CatchFaults();

// Wraps the handlers installed before the entry was (by libraries' constructors).
void WrapInstalledHandlers();

// Whether a fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) ever hit the runtime's own work (a
// crash handler then runs as the program's code): that thread may have held any of the runtime's
// locks and left its state half-changed, so from then on nothing waits for them (fork.h, exit).
bool FaultedInRuntime();

// Whether the program's action for `sig` is SIG_IGN (the runtime's handler may stand in the
// kernel for it: a fault's, see CatchFaults).
bool ProgramIgnores(int sig);

// Fork support: no action is half-changed, nor its lock held, in a child (which has only the
// forking thread). AfterFork runs in both processes.
void BeforeFork();
void AfterFork();

}  // namespace scone::runtime::process
