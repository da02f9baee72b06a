#include "runtime/process/signal_calls.h"

#include <errno.h>
#include <sys/syscall.h>

#include <ucontext.h>

#include <atomic>
#include <mutex>

#include "fs/volume.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/user_memory.h"
#include "runtime/process/termination.h"
#include "runtime/runtime.h"

namespace scone::runtime::process {
namespace {

constexpr uint64_t kSigsysBit = uint64_t{1} << (SIGSYS - 1);
constexpr int kMaxSignal = 64;
constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER

// Writers, in a RuntimeSection (a handler that takes it must not interrupt its holder); the
// wrapper reads under each action's sequence.
std::mutex actions_mu;
KernelSigaction program_sigsys = {};  // SIG_DFL
// Signals whose SIG_DFL ends the process commit first (termination.h), from the first volume on.
std::atomic<bool> committing{false};
// The faults' SIG_DFL has the runtime's fault handler from the first probe of the program's
// memory on (entry/user_memory.h), volume or not.
std::atomic<bool> catching_faults{false};

// The program's action for each signal whose kernel action is the runtime's: its handler
// wrapped, or its SIG_DFL committing first.
struct ProgramAction {
  std::atomic<uint32_t> seq;  // odd while being written
  bool substituted;
  KernelSigaction action;
};
// Constant-initialized: the runtime may start before this library's dynamic initializers run.
constinit ProgramAction program_actions[kMaxSignal + 1] = {};
std::atomic<bool> faulted_in_runtime{false};

// The faults whose SIG_DFL the runtime's fault handler stands for (termination.h). The kernel
// delivers a fault the thread blocks with SIG_DFL, bypassing every handler (a worker thread that
// blocks all signals and crashes lost what the process buffered): they are never blocked in the
// kernel, and the program's view of its mask keeps them (EntryThread::blocked_faults). A fault
// another process sends (kill -SEGV) to a thread that "blocks" it is delivered, not kept pending.
std::atomic<uint64_t> unblocked_faults{0};

// What no mask of the program's blocks in the kernel.
uint64_t NeverBlocked() { return kSigsysBit | unblocked_faults.load(std::memory_order_acquire); }

void TrackBlockedFaults(EntryThread& t, int how, uint64_t set) {
  const uint64_t faults = set & kFaultSignals;
  if (how == SIG_BLOCK) t.blocked_faults |= faults;
  if (how == SIG_UNBLOCK) t.blocked_faults &= ~faults;
  if (how == SIG_SETMASK) t.blocked_faults = faults;
}

bool IsHandler(const void* handler) {
  auto h = reinterpret_cast<uintptr_t>(handler);
  return h != reinterpret_cast<uintptr_t>(SIG_DFL) && h != reinterpret_cast<uintptr_t>(SIG_IGN);
}

void WrappedHandler(int sig, siginfo_t* si, void* context);

// glibc's internal signals (SIGRTMIN - 2 and - 1 in its numbering: the kernel's 32 and 33).
constexpr int kLibcCancel = 32;
constexpr int kLibcSetXid = 33;

// Whether the kernel's handler is one the runtime put in the program's place.
bool IsSubstitute(const void* handler) {
  return handler == reinterpret_cast<void*>(&WrappedHandler) || IsTerminationHandler(handler) ||
         IsFaultHandler(handler);
}

// Whether the runtime's action stands for the program's SIG_DFL of `sig` (from the first volume
// on): a termination that commits first, or a fault that publishes first (termination.h).
bool Substitutes(int sig) { return CommitsBeforeEnding(sig) || PublishesBeforeFault(sig); }
KernelSigaction SubstituteFor(int sig) { return PublishesBeforeFault(sig) ? FaultAction() : TerminationAction(); }

bool CommitsFirst(int sig, const KernelSigaction& program) {
  if (program.handler != SIG_DFL) return false;
  if (committing.load(std::memory_order_acquire) && Substitutes(sig)) return true;
  return catching_faults.load(std::memory_order_acquire) && PublishesBeforeFault(sig);
}

// A consistent copy of the program's action (signal handlers read it: no lock).
bool ReadAction(int sig, KernelSigaction* out) {
  ProgramAction& a = program_actions[sig];
  for (;;) {
    uint32_t before = a.seq.load(std::memory_order_acquire);
    if (before & 1) continue;
    bool substituted = a.substituted;
    *out = a.action;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (a.seq.load(std::memory_order_relaxed) == before) return substituted;
  }
}

// REQUIRES: actions_mu.
void WriteAction(int sig, bool substituted, const KernelSigaction& action) {
  if (PublishesBeforeFault(sig)) {
    const uint64_t bit = uint64_t{1} << (sig - 1);
    if (substituted && action.handler == SIG_DFL) {
      unblocked_faults.fetch_or(bit, std::memory_order_acq_rel);
    } else {
      unblocked_faults.fetch_and(~bit, std::memory_order_acq_rel);
    }
  }
  ProgramAction& a = program_actions[sig];
  a.seq.fetch_add(1, std::memory_order_acq_rel);
  std::atomic_thread_fence(std::memory_order_release);
  a.substituted = substituted;
  a.action = action;
  a.seq.fetch_add(1, std::memory_order_release);
}

// Where the kernel has SIG_DFL for a signal that `substitutes`: the runtime's action.
// REQUIRES: actions_mu.
void SubstituteDefaults(bool (*substitutes)(int)) {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if (!substitutes(sig)) continue;
    const KernelSigaction ours = SubstituteFor(sig);
    // Only where the kernel has SIG_DFL (or SIG_IGN of a fault, which a probe's fault must get
    // past): what the program set, inherited or wrapped stays.
    KernelSigaction current;
    if (RawSyscall(SYS_rt_sigaction, sig, 0, Arg(&current), sizeof(uint64_t)) != 0) continue;
    const bool ignored_fault = current.handler == SIG_IGN && PublishesBeforeFault(sig);
    if (current.handler != SIG_DFL && !ignored_fault) continue;
    if (RawSyscall(SYS_rt_sigaction, sig, Arg(&ours), 0, sizeof(uint64_t)) == 0) WriteAction(sig, true, current);
  }
}

// Faults the kernel raises for the instruction that caused them: they cannot wait.
bool IsFault(int sig, const siginfo_t* si) {
  return PublishesBeforeFault(sig) && si->si_code > 0;
}

// The kernel reset the disposition to SIG_DFL as it delivered (SA_RESETHAND): so does the
// program's view, and SIG_DFL commits first again.
void ResetAsDelivered(int sig) {
  RuntimeSection section;
  std::lock_guard lock(actions_mu);
  const KernelSigaction dfl = {};
  if (!CommitsFirst(sig, dfl)) {
    // The kernel reset it itself, except a fault's (KernelActionFor).
    if (PublishesBeforeFault(sig)) RawSyscall(SYS_rt_sigaction, sig, Arg(&dfl), 0, sizeof(uint64_t));
    WriteAction(sig, false, dfl);
    return;
  }
  const KernelSigaction k = SubstituteFor(sig);
  WriteAction(sig, RawSyscall(SYS_rt_sigaction, sig, Arg(&k), 0, sizeof(uint64_t)) == 0, dfl);
}

void WrappedHandler(int sig, siginfo_t* si, void* context) {
  if (IsFault(sig, si) && RecoverProbeFault(context)) return;  // the program's call fails with EFAULT
  EntryThread& t = ThisThread();
  if (sig == SIGXFSZ && t.own_write) return;  // the runtime's own write met the limit (HoldBack)
  if (t.runtime_thread && (sig == kLibcCancel || sig == kLibcSetXid)) {
    // The C library's own signals reach every thread it made, the runtime's too: setgid() waits
    // until each thread changed its credentials in the handler. A runtime thread has no later
    // point to defer it to (held back, it would come again at once, forever).
    KernelSigaction action;
    ReadAction(sig, &action);
    if (IsHandler(action.handler)) {
      reinterpret_cast<void (*)(int, siginfo_t*, void*)>(action.handler)(sig, si, context);
    }
    return;
  }
  if (t.depth > 0 && !IsFault(sig, si)) {
    HoldBack(t, sig, si, context);
    return;
  }
  KernelSigaction action;
  ReadAction(sig, &action);
  if (action.flags & SA_RESETHAND) ResetAsDelivered(sig);
  if (!IsHandler(action.handler)) return;  // changed meanwhile
  // A fault in the program's code: its handler may end the process (a crash reporter faults
  // again, or re-raises), and a fault while the signal is blocked ends it without any handler.
  // What the process buffered is published first (termination.h); nothing when nothing is.
  if (t.depth == 0 && IsFault(sig, si) && fs::Volume::AnyBuffered()) {
    RuntimeSection section;
    PublishBufferedWrites();
  }
  // Whether a signal that ends the process may commit while this handler runs.
  ProgramHandlerScope scope(context);
  // A fault inside the runtime: the program's handler runs as the program's code, shielded.
  // Either way the handler's calls are the program's: through the shield (entry.cc).
  const int depth = t.depth;
  const char selector = t.selector;
  if (depth > 0) {
    faulted_in_runtime.store(true, std::memory_order_release);
    t.depth = 0;
  }
  t.selector = kSelectorBlock;
  // What the kernel blocks while the handler runs: the interrupted mask, the action's, the signal.
  const uint64_t blocked_before = t.handler_blocked_faults;
  uint64_t during = action.mask;
  during |= *reinterpret_cast<const uint64_t*>(&static_cast<ucontext_t*>(context)->uc_sigmask);
  if (!(action.flags & SA_NODEFER)) during |= uint64_t{1} << (sig - 1);
  t.handler_blocked_faults = during & kFaultSignals;
  if (action.flags & SA_SIGINFO) {
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(action.handler)(sig, si, context);
  } else {
    reinterpret_cast<void (*)(int)>(action.handler)(sig);
  }
  t.handler_blocked_faults = blocked_before;
  t.depth = depth;
  t.selector = selector;
}

// The kernel's action for the program's: the wrapper in place of a handler, the runtime's
// handler in place of a SIG_DFL that commits first, never a mask with SIGSYS.
KernelSigaction KernelActionFor(int sig, const KernelSigaction& program) {
  if (CommitsFirst(sig, program)) return SubstituteFor(sig);
  // A fault the program ignores: natively the kernel ends the process for its own fault, and a
  // fault of the runtime's probe must reach the runtime (the kernel would force SIG_DFL).
  if (program.handler == SIG_IGN && PublishesBeforeFault(sig) && catching_faults.load(std::memory_order_acquire)) {
    return FaultAction();
  }
  KernelSigaction k = program;
  k.mask &= ~NeverBlocked();
  if (IsHandler(program.handler)) {
    k.handler = reinterpret_cast<void*>(&WrappedHandler);
    k.flags |= SA_SIGINFO;
    // A fault's SA_RESETHAND is the wrapper's (ResetAsDelivered): a probe's fault must not use
    // up the program's handler.
    if (PublishesBeforeFault(sig)) k.flags &= ~static_cast<unsigned long>(SA_RESETHAND);
  }
  return k;
}

}  // namespace

const KernelSigaction& ProgramSigsys() { return program_sigsys; }

bool FaultedInRuntime() { return faulted_in_runtime.load(std::memory_order_acquire); }

bool ProgramIgnores(int sig) {
  KernelSigaction action;
  ReadAction(sig, &action);
  return action.handler == SIG_IGN;
}

void HoldBack(EntryThread& t, int sig, siginfo_t* si, void* context) {
  // The runtime's own write passed the file-size limit: its caller fails with EFBIG; natively
  // the program never made that write, nor met this signal.
  if (sig == SIGXFSZ && t.own_write) return;
  auto* uc = static_cast<ucontext_t*>(context);
  sigaddset(&uc->uc_sigmask, sig);
  __atomic_fetch_or(&t.deferred, uint64_t{1} << (sig - 1), __ATOMIC_ACQ_REL);
  RawSyscall(SYS_rt_tgsigqueueinfo, RawSyscall(SYS_getpid), RawSyscall(SYS_gettid), sig, Arg(si));
}

bool RestartsAfter(uint64_t held) {
  if (held == 0) return false;
  for (int sig = 1; sig <= kMaxSignal && sig <= 64; ++sig) {
    if (!(held & (uint64_t{1} << (sig - 1)))) continue;
    KernelSigaction action;
    ReadAction(sig, &action);
    if (!IsHandler(action.handler) || !(action.flags & SA_RESTART)) return false;
  }
  return true;
}

long SigAction(int sig, const KernelSigaction* act, KernelSigaction* old, unsigned long size) {
  if (size != sizeof(uint64_t)) return -EINVAL;
  RuntimeSection section;  // no handler runs while actions_mu is held
  if (sig == SIGSYS) {
    std::lock_guard lock(actions_mu);
    if (old != nullptr) *old = program_sigsys;
    if (act != nullptr) program_sigsys = *act;
    return 0;
  }
  if (sig < 1 || sig > kMaxSignal || sig == SIGKILL || sig == SIGSTOP) {
    return RawSyscall(SYS_rt_sigaction, sig, Arg(act), Arg(old), static_cast<long>(size));
  }
  // A fault's SIG_DFL set again: the program is about to end by it (a crash handler resets it
  // and faults again while the signal is blocked, which no handler sees): its writes first.
  if (act != nullptr && act->handler == SIG_DFL && PublishesBeforeFault(sig)) PublishBufferedWrites();
  std::lock_guard lock(actions_mu);
  KernelSigaction previous_program;
  const bool was_substituted = ReadAction(sig, &previous_program);
  KernelSigaction kernel_old;
  long r;
  if (act != nullptr) {
    const KernelSigaction program = *act;  // `act` and `old` may be the same
    KernelSigaction k = KernelActionFor(sig, program);
    r = RawSyscall(SYS_rt_sigaction, sig, Arg(&k), Arg(&kernel_old), static_cast<long>(size));
    if (r == 0) WriteAction(sig, IsSubstitute(k.handler), program);
  } else {
    r = RawSyscall(SYS_rt_sigaction, sig, 0, Arg(&kernel_old), static_cast<long>(size));
  }
  if (r == 0 && old != nullptr) {
    *old = was_substituted && IsSubstitute(kernel_old.handler) ? previous_program : kernel_old;
  }
  return r;
}

void CommitBeforeEndingBySignals() {
  if (committing.load(std::memory_order_acquire)) return;
  RuntimeSection section;
  LearnUnsafeCode();  // before actions_mu: it takes the dynamic loader's lock
  std::lock_guard lock(actions_mu);
  if (committing.load(std::memory_order_relaxed)) return;
  committing.store(true, std::memory_order_release);
  SubstituteDefaults(Substitutes);
}

void CatchFaults() {
  if (catching_faults.load(std::memory_order_acquire)) return;
  RuntimeSection section;
  LearnUnsafeCode();  // a kill -SEGV ends the process as a termination does
  std::lock_guard lock(actions_mu);
  if (catching_faults.load(std::memory_order_relaxed)) return;
  catching_faults.store(true, std::memory_order_release);
  SubstituteDefaults(PublishesBeforeFault);
}

void WrapInstalledHandlers() {
  std::lock_guard lock(actions_mu);
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if (sig == SIGSYS || sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction current;
    if (RawSyscall(SYS_rt_sigaction, sig, 0, Arg(&current), sizeof(uint64_t)) != 0 || !IsHandler(current.handler) ||
        IsSubstitute(current.handler)) {
      continue;
    }
    KernelSigaction k = KernelActionFor(sig, current);
    if (!(current.flags & kSaRestorer)) continue;  // the C library always sets one; keep it
    if (RawSyscall(SYS_rt_sigaction, sig, Arg(&k), 0, sizeof(uint64_t)) == 0) WriteAction(sig, true, current);
  }
}

namespace {

// rt_sigprocmask caught by the SIGSYS handler (a site that cannot be patched, such as the one in
// pthread_create): the kernel's mask is the handler's, all blocked, and its return restores the
// mask of the handler's frame. That one is the program's: the call reads and changes it there.
long SigProcMaskInHandler(uint64_t* program_mask, int how, const uint64_t* set, uint64_t* old) {
  const uint64_t kUnblockable = (uint64_t{1} << (SIGKILL - 1)) | (uint64_t{1} << (SIGSTOP - 1)) | NeverBlocked();
  const uint64_t before = *program_mask;
  if (set != nullptr) {
    uint64_t after;
    switch (how) {
      case SIG_BLOCK:
        after = before | *set;
        break;
      case SIG_UNBLOCK:
        after = before & ~*set;
        break;
      case SIG_SETMASK:
        after = *set;
        break;
      default:
        return -EINVAL;
    }
    *program_mask = after & ~kUnblockable;
  }
  if (old != nullptr) *old = before;
  return 0;
}

}  // namespace

void BeforeFork() { actions_mu.lock(); }

void AfterFork() { actions_mu.unlock(); }

long SigProcMask(int how, const uint64_t* set, uint64_t* old, unsigned long size) {
  if (size != sizeof(uint64_t)) return -EINVAL;
  EntryThread& t = ThisThread();
  const uint64_t faults_before = t.blocked_faults;
  const uint64_t asked = set != nullptr ? *set : 0;  // `old` may be `set`
  long r;
  if (sigset_t* in_handler = t.handler_mask) {
    r = SigProcMaskInHandler(reinterpret_cast<uint64_t*>(in_handler), how, set, old);
  } else {
    const uint64_t never = NeverBlocked();
    if (set == nullptr || how == SIG_UNBLOCK || !(asked & never)) {
      r = RawSyscall(SYS_rt_sigprocmask, how, Arg(set), Arg(old), static_cast<long>(size));
    } else {
      uint64_t copy = asked & ~never;
      r = RawSyscall(SYS_rt_sigprocmask, how, Arg(&copy), Arg(old), static_cast<long>(size));
    }
  }
  if (r != 0) return r;
  if (set != nullptr) TrackBlockedFaults(t, how, asked);
  if (old != nullptr) *old |= faults_before;
  return 0;
}

long WithMask(long nr, const long args[6]) {
  long a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]};
  uint64_t copy;
  const uint64_t never = NeverBlocked();
  // pselect6's sixth argument points to {const sigset_t* mask; size_t size}.
  struct MaskArg {
    const uint64_t* mask;
    size_t size;
  } mask_arg;
  // Where each call keeps its mask (and the mask's size).
  switch (nr) {
    case SYS_rt_sigsuspend:
      if (a[0] != 0 && a[1] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[0]) & ~never;
        a[0] = Arg(&copy);
      }
      break;
    case SYS_ppoll:
      if (a[3] != 0 && a[4] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[3]) & ~never;
        a[3] = Arg(&copy);
      }
      break;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      if (a[4] != 0 && a[5] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[4]) & ~never;
        a[4] = Arg(&copy);
      }
      break;
    case SYS_pselect6: {
      const auto* given = reinterpret_cast<const MaskArg*>(a[5]);
      if (given != nullptr && given->mask != nullptr && given->size == sizeof(uint64_t)) {
        copy = *given->mask & ~never;
        mask_arg = {&copy, sizeof(uint64_t)};
        a[5] = Arg(&mask_arg);
      }
      break;
    }
    default:
      break;
  }
  return RawSyscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // namespace scone::runtime::process
