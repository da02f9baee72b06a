// The runtime's entry: every system call of the process reaches Dispatch (dispatch.h) here.
//
// Two ways lead in, and the program cannot tell them apart:
//   - patched code: at start-up, and later on first use, the `syscall` instructions of the C
//     library (and the dynamic loader) are redirected to trampolines that call the dispatcher
//     (code_patcher.h). A call costs a jump, a register save and a function call.
//   - Syscall User Dispatch, the net (sud.h): the kernel turns every other system call made
//     outside the runtime's own code into a SIGSYS whose handler dispatches it (a few
//     microseconds). A site caught this way is patched for next time when that is safe.
//
// Both hand the dispatcher a SyscallFrame and act on its DispatchResult. The runtime's own
// calls (its code, and the C library and OpenSSL running on its behalf, see RuntimeSection)
// go straight to the kernel.
#pragma once

#include <signal.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "common/bytes.h"

namespace scone::runtime {

// A system call as the program made it. The dispatcher may change the arguments (and the
// number) before asking for the call to be made natively.
struct SyscallFrame {
  long nr;
  long args[6];
  long new_stack;      // kChildOnStack: where the child's stack pointer goes
  long stack_pointer;  // the program's stack pointer at the call (rt_sigreturn's frame)
  long unused;
};

enum class Action : long {
  kDone = 0,          // value is the result (>= 0 or -errno)
  kNative = 1,        // make the call (frame.nr, frame.args) at the program's own stack
                      // pointer: rt_sigreturn, and clones whose child starts on that stack
  kChildOnStack = 2,  // a child made by the dispatcher (fork for vfork): result 0, stack
                      // pointer frame.new_stack
};

struct DispatchResult {
  long value;
  Action action;
};

// Per-thread state of the entry. Initial-exec TLS: the runtime is loaded at start-up, and the
// entry must not call into the dynamic loader.
struct EntryThread {
  // Syscall User Dispatch's selector for this thread: kBlock sends the thread's system calls
  // to the SIGSYS handler, kAllow lets them through (while the runtime works).
  volatile char selector;
  // >0 while the runtime works on this thread: its own calls go straight to the kernel.
  int depth;
  // Set for the runtime's own threads (the crypto helper, the CAS reporter): always depth > 0.
  bool runtime_thread;
  // Signals that arrived while the runtime worked, held back (blocked and pending) until its
  // section ends (process/signal_calls.h).
  uint64_t deferred;
  // In the SIGSYS handler: the program's signal mask, in the handler's frame (the handler runs
  // with all blocked; its return restores this one).
  sigset_t* handler_mask;
  // The program's system call the dispatcher serves at depth 0, or -1 (process/termination.h
  // asks whether the thread is at a safe point).
  long call;
  // Program handlers running over a context that was not a safe point (process/termination.h).
  int unsafe_handlers;
  // From the runtime's preparation of a fork to the kernel's call: the thread holds the runtime's
  // locks (process/fork.h), not a safe point either.
  bool forking;
  // The faults the program asked to block on this thread, which the kernel's mask may not hold
  // (process/signal_calls.h: a blocked fault would bypass the runtime's fault handler).
  uint64_t blocked_faults;
  // In one of the runtime's own writes (files/shield_syscalls.cc): a SIGXFSZ now is the kernel's
  // answer to it passing the program's file-size limit, not the program's (process/signal_calls.h).
  bool own_write;
  // The faults (SIGSEGV, SIGBUS) the kernel blocks while a program handler runs on this thread
  // (its action's mask, its own signal): a probe of the program's memory lets them through
  // (entry/user_memory.h).
  uint64_t handler_blocked_faults;
  // The ticket this thread's program call claimed as it began (OfferTicketToNextCall), or 0.
  uint64_t ticket;
};
EntryThread& ThisThread();

inline constexpr char kSelectorAllow = 0;  // SYSCALL_DISPATCH_FILTER_ALLOW
inline constexpr char kSelectorBlock = 1;  // SYSCALL_DISPATCH_FILTER_BLOCK

// The runtime at work on this thread: its system calls go straight to the kernel, and no program
// signal handler runs until it is done (one must never run while the runtime holds its locks,
// nor with its system calls let through): a signal arriving meanwhile is held back and
// delivered when the outermost section ends (process/signal_calls.h). Nests; costs nothing
// beyond two stores unless a signal arrives.
// A section's two halves, for code that cannot name this header's types (the private heap,
// memory/private_heap.cc, declares them weak: its unit tests link it alone).
void EnterRuntimeSection();
void LeaveRuntimeSection();

class RuntimeSection {
 public:
  RuntimeSection() { EnterRuntimeSection(); }
  ~RuntimeSection() { LeaveRuntimeSection(); }
  RuntimeSection(const RuntimeSection&) = delete;
  RuntimeSection& operator=(const RuntimeSection&) = delete;
};

// Something a call found out for the program's very next call, of whichever thread (files/
// file_calls.cc: an open's stat answers the fstat right after it). The call offers a ticket; the
// next program call to begin claims it, whichever thread makes it, so that nothing the program
// asked of the kernel can have come in between while TicketOfThisCall() is that ticket. A call
// pays one load of a flag that only such offers write (it was a write per call, and the cache
// line's trip between cores per call in threaded programs).
uint64_t OfferTicketToNextCall();
inline uint64_t TicketOfThisCall() { return ThisThread().ticket; }

// The signals held back on this thread since its outermost section began (a mask, bit sig-1):
// a blocking call in a section ends early when one arrived, as the kernel's call would.
inline uint64_t HeldSignals() { return __atomic_load_n(&ThisThread().deferred, __ATOMIC_ACQUIRE); }

// Installs the entry for the whole process (SIGSYS handler, patches of the C library, Syscall
// User Dispatch on this thread), applying `plan` (CodePatcher::Plan of the program that executed
// this one) where it fits. Called once by the runtime's start-up, while single-threaded when
// possible. Returns false (and logs why) when the kernel lacks Syscall User Dispatch.
bool InstallEntry(ByteSpan plan);
// Whether the entry is installed (system calls reach Dispatch).
bool EntryInstalled();

// A new thread or process begins: called by the child of every clone the entry sees, on the
// child's own stack, before it runs any of the program's code. Enables the entry for it.
void EnterNewThread();
// Marks the calling thread as one of the runtime's own (see EntryThread::runtime_thread).
void BecomeRuntimeThread();
// Starts one of the runtime's own threads (a watcher, a reporter, a server), running `body`. It
// starts with every signal blocked: a signal of the program's (a timer's SIGALRM, directed at the
// process) delivered to it before it became the runtime's ran the program's handler there,
// unshielded, and a fork in that handler made a child whose every call reached the kernel
// unshielded: plaintext in the volume (hostile finding, 2 runs in 30).
// Null when the thread cannot be made (no memory for its stack, the process's thread limit):
// the caller goes on without it and may try again later; the runtime never aborts the program
// for it (it did: an uncaught std::system_error under `ulimit -v`).
std::unique_ptr<std::thread> StartRuntimeThread(std::function<void()> body);
// Before the kernel's call of a clone the runtime makes for itself (one made while it works on
// the calling thread, depth > 0: pthread_create for the crypto helper or the CAS reporter): a
// new thread is marked as one of the runtime's own in its TLS block, which the C library laid
// out before the call, so EnterNewThread leaves its calls let through from its first
// instruction. Otherwise the net would catch the C library's start-up calls on it (rseq,
// set_robust_list), made with every signal blocked: a blocked SIGSYS from Syscall User Dispatch
// is forced, and ends the process. Does nothing for other clones.
void PrepareRuntimeClone(const SyscallFrame& f);

}  // namespace scone::runtime
