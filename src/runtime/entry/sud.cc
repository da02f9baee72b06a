#include "runtime/entry/sud.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "runtime/entry/code_patcher.h"
#include "runtime/entry/dispatch.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/process/signal_calls.h"
#include "runtime/process/termination.h"
#include "runtime/runtime.h"

extern "C" void scone_signal_restorer();

namespace scone::runtime {
namespace {

constexpr int kSetSyscallUserDispatch = 59;  // PR_SET_SYSCALL_USER_DISPATCH
constexpr int kDispatchOn = 1;               // PR_SYS_DISPATCH_ON
constexpr int kSysUserDispatch = 2;          // si_code of a dispatched system call
constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER (the kernel's; glibc hides it)

std::atomic<long> trapped{0};
std::atomic<bool> logged_thread_clone{false};

// SIGSYS that is not the entry's: as the program asked for it.
void ForwardToProgram(int sig, siginfo_t* si, void* context) {
  const process::KernelSigaction& program = process::ProgramSigsys();
  auto handler = reinterpret_cast<uintptr_t>(program.handler);
  if (handler == reinterpret_cast<uintptr_t>(SIG_IGN)) return;
  if (handler == reinterpret_cast<uintptr_t>(SIG_DFL)) {
    // The default action (a core dump): the runtime's handler steps aside, the signal comes again.
    process::KernelSigaction dfl = {};
    RawSyscall(SYS_rt_sigaction, SIGSYS, Arg(&dfl), 0, sizeof(uint64_t));
    RawSyscall(SYS_rt_tgsigqueueinfo, RawSyscall(SYS_getpid), RawSyscall(SYS_gettid), SIGSYS, Arg(si));
    return;
  }
  if (program.flags & SA_SIGINFO) {
    reinterpret_cast<void (*)(int, siginfo_t*, void*)>(program.handler)(sig, si, context);
  } else {
    reinterpret_cast<void (*)(int)>(program.handler)(sig);
  }
}

// rt_sigreturn caught where no trampoline can make it: what the kernel would do, done to the
// handler's own frame, which its return then restores.
void EmulateSigreturn(ucontext_t* uc, long stack_pointer) {
  const auto* from = reinterpret_cast<const ucontext_t*>(stack_pointer);
  std::memcpy(uc->uc_mcontext.gregs, from->uc_mcontext.gregs, sizeof(gregset_t));
  uc->uc_sigmask = from->uc_sigmask;
  if (from->uc_mcontext.fpregs != nullptr && uc->uc_mcontext.fpregs != nullptr) {
    // The FPU state: the legacy area, or the whole XSAVE area its software-reserved bytes name.
    size_t size = sizeof(*from->uc_mcontext.fpregs);
    uint32_t magic, extended;
    const auto* sw = reinterpret_cast<const uint8_t*>(from->uc_mcontext.fpregs) + 464;
    std::memcpy(&magic, sw, 4);
    std::memcpy(&extended, sw + 4, 4);
    const auto* own = reinterpret_cast<const uint8_t*>(uc->uc_mcontext.fpregs) + 464;
    uint32_t own_magic, own_extended;
    std::memcpy(&own_magic, own, 4);
    std::memcpy(&own_extended, own + 4, 4);
    constexpr uint32_t kXstateMagic = 0x46505853;  // FP_XSTATE_MAGIC1
    if (magic == kXstateMagic && own_magic == kXstateMagic) size = std::min(extended, own_extended);
    std::memcpy(uc->uc_mcontext.fpregs, from->uc_mcontext.fpregs, size);
  }
}

// A call the dispatcher wants made at the program's stack pointer, caught where no trampoline
// can make it.
void NativeFromHandler(const SyscallFrame& f, ucontext_t* uc) {
  greg_t* g = uc->uc_mcontext.gregs;
  if (f.nr == SYS_rt_sigreturn) {
    EmulateSigreturn(uc, f.stack_pointer);
    return;
  }
  // A fork-like clone returns in both processes right here, on copies of this stack.
  const bool shares_memory = f.nr == SYS_clone3 ? true : (f.nr == SYS_clone && (f.args[0] & CLONE_VM));
  if (!shares_memory) {
    long r = RawSyscall6(f.nr, f.args[0], f.args[1], f.args[2], f.args[3], f.args[4], f.args[5]);
    if (r == 0) EnterNewThread();
    g[REG_RAX] = r;
    return;
  }
  if (!logged_thread_clone.exchange(true)) {
    Log("a thread was to be created by code the runtime cannot patch: refused");
  }
  g[REG_RAX] = -ENOSYS;
}

void HandleSigsys(int sig, siginfo_t* si, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  EntryThread& t = ThisThread();
  const char selector = t.selector;
  t.selector = kSelectorAllow;
  if (si->si_code != kSysUserDispatch) {
    if (!process::OnTick(si, uc)) ForwardToProgram(sig, si, context);
    t.selector = selector;
    return;
  }
  trapped.fetch_add(1, std::memory_order_relaxed);
  greg_t* g = uc->uc_mcontext.gregs;
  const auto site = reinterpret_cast<uintptr_t>(si->si_call_addr) - 2;
  if (uintptr_t resume = CodePatcher::PatchTrapped(site)) {
    // The registers are as at the `syscall`: the trampoline makes the call, this time and next.
    g[REG_RIP] = static_cast<greg_t>(resume);
    t.selector = selector;
    return;
  }
  SyscallFrame f = {g[REG_RAX], {g[REG_RDI], g[REG_RSI], g[REG_RDX], g[REG_R10], g[REG_R8], g[REG_R9]},
                    0, g[REG_RSP], 0};
  sigset_t* const outer_mask = t.handler_mask;  // a handler nested in a dispatch (fork's handlers)
  t.handler_mask = &uc->uc_sigmask;
  DispatchResult r = Dispatch(f);
  t.handler_mask = outer_mask;
  switch (r.action) {
    case Action::kDone:
      g[REG_RAX] = r.value;
      break;
    case Action::kChildOnStack:
      g[REG_RAX] = 0;
      g[REG_RSP] = f.new_stack;
      break;
    case Action::kNative:
      NativeFromHandler(f, uc);
      break;
  }
  t.selector = selector;
}

}  // namespace

bool InstallSigsysHandler() {
  process::KernelSigaction sa = {};
  sa.handler = reinterpret_cast<void*>(&HandleSigsys);
  // SA_RESTART: the SIGSYS that is not the entry's (the ticks of termination.h's timer) must not
  // cut the runtime's own waits short.
  sa.flags = SA_SIGINFO | SA_RESTART | kSaRestorer;
  sa.restorer = reinterpret_cast<void*>(&scone_signal_restorer);
  sa.mask = ~uint64_t{0};  // nothing of the program runs while the handler works
  return RawSyscall(SYS_rt_sigaction, SIGSYS, Arg(&sa), 0, sizeof(uint64_t)) == 0;
}

bool EnableDispatchForThisThread() {
  CodeRange own = RuntimeCodeRange();
  EntryThread& t = ThisThread();
  t.selector = t.depth > 0 || t.runtime_thread ? kSelectorAllow : kSelectorBlock;
  long r = RawSyscall(SYS_prctl, kSetSyscallUserDispatch, kDispatchOn, static_cast<long>(own.begin),
                      static_cast<long>(own.end - own.begin), Arg(&t.selector));
  if (r != 0) t.selector = kSelectorAllow;
  return r == 0;
}

SudStats GetSudStats() { return {trapped.load(std::memory_order_relaxed)}; }

}  // namespace scone::runtime
