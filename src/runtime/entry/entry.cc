#include "runtime/entry/entry.h"

#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "runtime/entry/code_patcher.h"
#include "runtime/entry/dispatch.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/sud.h"
#include "runtime/process/signal_calls.h"
#include "runtime/runtime.h"

namespace scone::runtime {
namespace {

__attribute__((tls_model("initial-exec"))) thread_local EntryThread this_thread = {kSelectorAllow, 0, false, 0, nullptr, -1, 0, false, 0, false, 0, 0};
std::atomic<bool> installed{false};

// The thread pointer of the thread a clone makes, when it makes one with a TLS block of its own
// (CLONE_SETTLS), else 0.
uintptr_t NewThreadPointer(const SyscallFrame& f) {
  unsigned long flags;
  uint64_t tls;
  if (f.nr == SYS_clone) {
    flags = static_cast<unsigned long>(f.args[0]);
    tls = static_cast<uint64_t>(f.args[4]);
  } else if (f.nr == SYS_clone3) {
    const auto* args = reinterpret_cast<const struct clone_args*>(f.args[0]);
    if (args == nullptr || static_cast<size_t>(f.args[1]) < CLONE_ARGS_SIZE_VER0) return 0;
    flags = args->flags;
    tls = args->tls;
  } else {
    return 0;
  }
  constexpr unsigned long kThread = CLONE_VM | CLONE_THREAD | CLONE_SETTLS;
  return (flags & kThread) == kThread ? static_cast<uintptr_t>(tls) : 0;
}

uintptr_t OwnThreadPointer() {
  uintptr_t tp;
  __asm__("mov %%fs:0, %0" : "=r"(tp));  // x86-64: the TCB's first word points to itself
  return tp;
}

}  // namespace

EntryThread& ThisThread() { return this_thread; }

void PrepareRuntimeClone(const SyscallFrame& f) {
  const uintptr_t child_tp = NewThreadPointer(f);
  if (child_tp == 0 || this_thread.depth == 0) return;
  // Initial-exec TLS lies at the same offset from every thread's thread pointer.
  const uintptr_t offset = reinterpret_cast<uintptr_t>(&this_thread) - OwnThreadPointer();
  auto* child = reinterpret_cast<EntryThread*>(child_tp + offset);
  child->runtime_thread = true;
  child->depth = 1;
  child->selector = kSelectorAllow;
}

// The order of the depth and the selector matters to a signal arriving in between: at depth 0
// its handler runs as the program's code at once (process/signal_calls.cc), and with the selector
// still letting calls through, the handler's calls (a fork, and the child's writes) would reach
// the kernel unshielded. So the depth is above 0 whenever the selector lets calls through.
void EnterRuntimeSection() {
  EntryThread& t = this_thread;
  if (t.depth++ == 0 && !t.runtime_thread) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.selector = kSelectorAllow;
  }
}

void LeaveRuntimeSection() {
  EntryThread& t = this_thread;
  if (t.depth != 1 || t.runtime_thread) {
    --t.depth;
    return;
  }
  if (installed.load(std::memory_order_relaxed)) t.selector = kSelectorBlock;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.depth = 0;
  // Signals held back meanwhile are pending and blocked: unblocking them delivers them now.
  uint64_t deferred = __atomic_exchange_n(&t.deferred, 0, __ATOMIC_ACQ_REL);
  if (deferred != 0) RawSyscall(SYS_rt_sigprocmask, SIG_UNBLOCK, Arg(&deferred), 0, sizeof(uint64_t));
}

bool InstallEntry(ByteSpan plan) {
  if (installed.load()) return true;
  if (!InstallSigsysHandler()) {
    Log("cannot install the SIGSYS handler that carries the runtime's entry");
    return false;
  }
  process::WrapInstalledHandlers();
  CodePatcher::PatchAtStartUp(plan);
  if (!EnableDispatchForThisThread()) {
    Log("the kernel lacks Syscall User Dispatch (Linux 5.11 or later): the runtime cannot see every "
        "system call of this program");
    return false;
  }
  installed.store(true);
  return true;
}

bool EntryInstalled() { return installed.load(std::memory_order_relaxed); }

void EnterNewThread() {
  if (!installed.load(std::memory_order_relaxed)) return;
  EntryThread& t = this_thread;
  // A new thread starts with the TLS image, a fork child with a copy of its parent's state (but
  // not its pending signals: what the parent held back is the parent's).
  if (!t.runtime_thread) t.handler_mask = nullptr;
  EnableDispatchForThisThread();
}

std::unique_ptr<std::thread> StartRuntimeThread(std::function<void()> body) {
  // The new thread starts with the creator's mask (glibc restores it in the thread): all blocked
  // while it is made, the creator's own mask back afterwards (also when making it throws).
  struct AllBlocked {
    uint64_t before = 0;
    AllBlocked() {
      const uint64_t all = ~uint64_t{0};
      RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&all), Arg(&before), sizeof(uint64_t));
    }
    ~AllBlocked() { RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&before), 0, sizeof(uint64_t)); }
  } blocked;
  try {
    return std::make_unique<std::thread>([body = std::move(body)] {
      BecomeRuntimeThread();
      body();
    });
  } catch (const std::exception&) {  // std::system_error (EAGAIN) or std::bad_alloc
    return nullptr;
  }
}

void BecomeRuntimeThread() {
  EntryThread& t = this_thread;
  t.runtime_thread = true;
  t.depth = 1;
  t.selector = kSelectorAllow;
  // Signals are the program's: never delivered to the runtime's threads.
  sigset_t all;
  sigfillset(&all);
  RawSyscall(SYS_rt_sigprocmask, SIG_BLOCK, Arg(&all), 0, sizeof(uint64_t));
}

}  // namespace scone::runtime

// Called by scone_syscall_stub (stubs.cc) for every call a trampoline makes.
extern "C" __attribute__((visibility("hidden"))) scone::runtime::DispatchResult scone_dispatch_from_trampoline(
    scone::runtime::SyscallFrame* f) {
  return scone::runtime::Dispatch(*f);
}

// Called by scone_child_stub in the child of every clone a trampoline made natively.
extern "C" __attribute__((visibility("hidden"))) void scone_enter_new_thread() { scone::runtime::EnterNewThread(); }
