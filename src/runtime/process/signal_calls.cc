#include "runtime/process/signal_calls.h"

#include <errno.h>
#include <sys/syscall.h>

#include <ucontext.h>

#include <atomic>
#include <mutex>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"

namespace scone::runtime::process {
namespace {

constexpr uint64_t kSigsysBit = uint64_t{1} << (SIGSYS - 1);
constexpr int kMaxSignal = 64;
constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER

std::mutex actions_mu;  // writers; the wrapper reads under each action's sequence
KernelSigaction program_sigsys = {};  // SIG_DFL

// The program's action for each signal whose handler is wrapped.
struct ProgramAction {
  std::atomic<uint32_t> seq;  // odd while being written
  bool wrapped;
  KernelSigaction action;
};
// Constant-initialized: the runtime may start before this library's dynamic initializers run.
constinit ProgramAction program_actions[kMaxSignal + 1] = {};

bool IsHandler(const void* handler) {
  auto h = reinterpret_cast<uintptr_t>(handler);
  return h != reinterpret_cast<uintptr_t>(SIG_DFL) && h != reinterpret_cast<uintptr_t>(SIG_IGN);
}

// A consistent copy of the program's action (signal handlers read it: no lock).
bool ReadAction(int sig, KernelSigaction* out) {
  ProgramAction& a = program_actions[sig];
  for (;;) {
    uint32_t before = a.seq.load(std::memory_order_acquire);
    if (before & 1) continue;
    bool wrapped = a.wrapped;
    *out = a.action;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (a.seq.load(std::memory_order_relaxed) == before) return wrapped;
  }
}

// REQUIRES: actions_mu.
void WriteAction(int sig, bool wrapped, const KernelSigaction& action) {
  ProgramAction& a = program_actions[sig];
  a.seq.fetch_add(1, std::memory_order_acq_rel);
  std::atomic_thread_fence(std::memory_order_release);
  a.wrapped = wrapped;
  a.action = action;
  a.seq.fetch_add(1, std::memory_order_release);
}

// Faults the kernel raises for the instruction that caused them: they cannot wait.
bool IsFault(int sig, const siginfo_t* si) {
  return (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP) && si->si_code > 0;
}

void WrappedHandler(int sig, siginfo_t* si, void* context) {
  EntryThread& t = ThisThread();
  if (t.depth > 0 && !IsFault(sig, si)) {
    // The runtime is at work here: blocked in the interrupted context, pending again, and
    // delivered when its section ends.
    auto* uc = static_cast<ucontext_t*>(context);
    sigaddset(&uc->uc_sigmask, sig);
    __atomic_fetch_or(&t.deferred, uint64_t{1} << (sig - 1), __ATOMIC_ACQ_REL);
    RawSyscall(SYS_rt_tgsigqueueinfo, RawSyscall(SYS_getpid), RawSyscall(SYS_gettid), sig, Arg(si));
    return;
  }
  KernelSigaction action;
  ReadAction(sig, &action);
  if (action.flags & SA_RESETHAND) {
    // The kernel reset the disposition as it delivered: so does the program's view.
    std::lock_guard lock(actions_mu);
    WriteAction(sig, false, KernelSigaction{});
  }
  if (!IsHandler(action.handler)) return;  // changed meanwhile
  // A fault inside the runtime: the program's handler runs as the program's code, shielded.
  const int depth = t.depth;
  const char selector = t.selector;
  if (depth > 0) {
    t.depth = 0;
    t.selector = kSelectorBlock;
  }
  if (action.flags & SA_SIGINFO) {
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(action.handler)(sig, si, context);
  } else {
    reinterpret_cast<void (*)(int)>(action.handler)(sig);
  }
  t.depth = depth;
  t.selector = selector;
}

// The kernel's action for the program's: the wrapper in place of a handler, never a mask with
// SIGSYS.
KernelSigaction KernelActionFor(const KernelSigaction& program) {
  KernelSigaction k = program;
  k.mask &= ~kSigsysBit;
  if (IsHandler(program.handler)) {
    k.handler = reinterpret_cast<void*>(&WrappedHandler);
    k.flags |= SA_SIGINFO;
  }
  return k;
}

}  // namespace

const KernelSigaction& ProgramSigsys() { return program_sigsys; }

long SigAction(int sig, const KernelSigaction* act, KernelSigaction* old, unsigned long size) {
  if (size != sizeof(uint64_t)) return -EINVAL;
  if (sig == SIGSYS) {
    std::lock_guard lock(actions_mu);
    if (old != nullptr) *old = program_sigsys;
    if (act != nullptr) program_sigsys = *act;
    return 0;
  }
  if (sig < 1 || sig > kMaxSignal || sig == SIGKILL || sig == SIGSTOP) {
    return RawSyscall(SYS_rt_sigaction, sig, Arg(act), Arg(old), static_cast<long>(size));
  }
  std::lock_guard lock(actions_mu);
  KernelSigaction previous_program;
  const bool was_wrapped = ReadAction(sig, &previous_program);
  KernelSigaction kernel_old;
  long r;
  if (act != nullptr) {
    KernelSigaction k = KernelActionFor(*act);
    r = RawSyscall(SYS_rt_sigaction, sig, Arg(&k), Arg(&kernel_old), static_cast<long>(size));
    if (r == 0) WriteAction(sig, IsHandler(act->handler), *act);
  } else {
    r = RawSyscall(SYS_rt_sigaction, sig, 0, Arg(&kernel_old), static_cast<long>(size));
  }
  if (r == 0 && old != nullptr) {
    const bool kernel_has_wrapper = kernel_old.handler == reinterpret_cast<void*>(&WrappedHandler);
    *old = was_wrapped && kernel_has_wrapper ? previous_program : kernel_old;
  }
  return r;
}

void WrapInstalledHandlers() {
  std::lock_guard lock(actions_mu);
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if (sig == SIGSYS || sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction current;
    if (RawSyscall(SYS_rt_sigaction, sig, 0, Arg(&current), sizeof(uint64_t)) != 0 || !IsHandler(current.handler) ||
        current.handler == reinterpret_cast<void*>(&WrappedHandler)) {
      continue;
    }
    KernelSigaction k = KernelActionFor(current);
    if (!(current.flags & kSaRestorer)) continue;  // the C library always sets one; keep it
    if (RawSyscall(SYS_rt_sigaction, sig, Arg(&k), 0, sizeof(uint64_t)) == 0) WriteAction(sig, true, current);
  }
}

namespace {

// rt_sigprocmask caught by the SIGSYS handler (a site that cannot be patched, such as the one in
// pthread_create): the kernel's mask is the handler's, all blocked, and its return restores the
// mask of the handler's frame. That one is the program's: the call reads and changes it there.
long SigProcMaskInHandler(uint64_t* program_mask, int how, const uint64_t* set, uint64_t* old) {
  constexpr uint64_t kUnblockable = (uint64_t{1} << (SIGKILL - 1)) | (uint64_t{1} << (SIGSTOP - 1)) | kSigsysBit;
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
  if (sigset_t* in_handler = ThisThread().handler_mask) {
    return SigProcMaskInHandler(reinterpret_cast<uint64_t*>(in_handler), how, set, old);
  }
  if (set == nullptr || how == SIG_UNBLOCK || !(*set & kSigsysBit)) {
    return RawSyscall(SYS_rt_sigprocmask, how, Arg(set), Arg(old), static_cast<long>(size));
  }
  uint64_t copy = *set & ~kSigsysBit;
  return RawSyscall(SYS_rt_sigprocmask, how, Arg(&copy), Arg(old), static_cast<long>(size));
}

long WithMask(long nr, const long args[6]) {
  long a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]};
  uint64_t copy;
  // pselect6's sixth argument points to {const sigset_t* mask; size_t size}.
  struct MaskArg {
    const uint64_t* mask;
    size_t size;
  } mask_arg;
  // Where each call keeps its mask (and the mask's size).
  switch (nr) {
    case SYS_rt_sigsuspend:
      if (a[0] != 0 && a[1] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[0]) & ~kSigsysBit;
        a[0] = Arg(&copy);
      }
      break;
    case SYS_ppoll:
      if (a[3] != 0 && a[4] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[3]) & ~kSigsysBit;
        a[3] = Arg(&copy);
      }
      break;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      if (a[4] != 0 && a[5] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[4]) & ~kSigsysBit;
        a[4] = Arg(&copy);
      }
      break;
    case SYS_pselect6: {
      const auto* given = reinterpret_cast<const MaskArg*>(a[5]);
      if (given != nullptr && given->mask != nullptr && given->size == sizeof(uint64_t)) {
        copy = *given->mask & ~kSigsysBit;
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
