// clone, clone3, fork and vfork; exit of a child made for vfork; prctl.
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "runtime/entry/code_patcher.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/memory/private_heap.h"
#include "runtime/process/fork.h"
#include "runtime/process/process_calls.h"
#include "runtime/process/signal_calls.h"
#include "runtime/process/termination.h"
#include "runtime/runtime.h"

namespace scone::runtime::process {
namespace {

// In a child made for vfork: the pipe on which it tells its waiting parent how it ended
// (nothing if it executed a program: the pipe closes on exec), and its last failure.
int vfork_report_fd = -1;
int vfork_last_error = 0;

// The flags a child that shares memory until exec may carry and still be made by fork.
constexpr unsigned long kForkableFlags = CLONE_VM | CLONE_VFORK | CSIGNAL;

// glibc's posix_spawn exits its child with this status when a step before the program failed.
constexpr long kSpawnFailureStatus = 127;

std::atomic<bool> logged_unforkable{false};

// The entry's own locks and the runtime's heap, which the C library's allocator locks come before (a thread patching a
// site the allocator's mmap reached holds the patcher's lock): taken at the kernel's call itself.
// After a fault inside the runtime, the faulting thread may hold them: not taken (fork.h).
class EntryLocksHeld {
 public:
  EntryLocksHeld() : held_(!FaultedInRuntime()) {
    if (!held_) return;
    CodePatcher::BeforeFork();
    BeforeFork();
    memory::BeforeFork();  // last: nothing else the thread takes waits for it
  }
  ~EntryLocksHeld() {
    if (!held_) return;
    memory::AfterFork();
    AfterFork();
    CodePatcher::AfterFork();
  }
  EntryLocksHeld(const EntryLocksHeld&) = delete;
  EntryLocksHeld& operator=(const EntryLocksHeld&) = delete;

 private:
  const bool held_;
};

// A child that copies the parent's memory and goes on from the caller's stack (fork, and clone
// without CLONE_VM or a stack of its own): made here, in a section, with the runtime's locks held
// (fork.h). glibc's fork() prepared already; a raw fork is prepared here. Both processes let go
// of the locks before they return to any other code.
DispatchResult ForkHere(const SyscallFrame& f) {
  RuntimeSection section;
  // Prepared by glibc's fork(), which holds its allocator's locks until this call returns to it
  // and completes the fork in the runtime's parent handler; any other fork is complete here.
  const bool by_the_c_library = ForkPrepared();
  PrepareFork();
  long r;
  {
    EntryLocksHeld entry_locks;
    r = RawSyscall6(f.nr, f.args[0], f.args[1], f.args[2], f.args[3], f.args[4], f.args[5]);
  }
  if (r == 0) {
    EnterNewThread();
    ForgetHeldTermination();
    AfterForkInChild();
  } else {
    AfterForkInParent(r > 0);
    if (!by_the_c_library) CompleteForkInParent();
  }
  return {r, Action::kDone};
}

// glibc's fork() called by the runtime as the program's own code (shielded: the dispatcher serves
// this thread at depth 0): the program's pthread_atfork handlers run, and write, as in any fork
// (an allocator's keep malloc usable in the child, where the runtime allocates), and its clone
// comes back to the dispatcher (ForkHere).
pid_t ForkAsProgram() {
  EntryThread& t = ThisThread();
  const char selector = t.selector;
  t.selector = kSelectorBlock;  // the net catches the handlers' calls, also inside a SIGSYS handler
  pid_t pid = fork();
  t.selector = selector;
  return pid;
}

// A child that would share the parent's memory until it executes, made by fork instead (glibc's
// fork, which leaves the child's allocator usable). The parent waits until the child executed a
// program or exited, as vfork's parent does; with `report_failure`, a child that ended before its
// program ran fails the call with its error.
DispatchResult ForkForVfork(SyscallFrame& f, long child_stack, bool wait_for_exec, bool report_failure) {
  int pipe_fds[2] = {-1, -1};
  if (wait_for_exec) {
    long r = RawSyscall(SYS_pipe2, Arg(pipe_fds), O_CLOEXEC);
    if (r < 0) return {r, Action::kDone};
  }
  const pid_t pid = ForkAsProgram();
  RuntimeSection section;
  if (pid == 0) {
    if (wait_for_exec) {
      RawSyscall(SYS_close, pipe_fds[0]);
      vfork_report_fd = pipe_fds[1];
      vfork_last_error = 0;
    }
    if (child_stack != 0) {
      f.new_stack = child_stack;
      return {0, Action::kChildOnStack};
    }
    return {0, Action::kDone};
  }
  long result = pid < 0 ? -errno : pid;
  if (wait_for_exec) {
    RawSyscall(SYS_close, pipe_fds[1]);
    int error = 0;
    long n;
    do {
      n = pid > 0 ? RawSyscall(SYS_read, pipe_fds[0], Arg(&error), sizeof(error)) : 0;
    } while (n == -EINTR);
    RawSyscall(SYS_close, pipe_fds[0]);
    if (n == sizeof(error) && error > 0 && report_failure) {
      RawSyscall(SYS_wait4, pid, 0, 0, 0);
      result = -error;
    }
  }
  return {result, Action::kDone};
}

// The child's stack pointer, and flags, of a clone or clone3.
bool CloneRequest(const SyscallFrame& f, unsigned long* flags, long* child_stack) {
  if (f.nr == SYS_clone) {
    *flags = static_cast<unsigned long>(f.args[0]);
    *child_stack = f.args[1];
    return true;
  }
  const auto* args = reinterpret_cast<const struct clone_args*>(f.args[0]);
  if (args == nullptr || static_cast<size_t>(f.args[1]) < CLONE_ARGS_SIZE_VER0) return false;
  struct clone_args copy = {};
  std::memcpy(&copy, args, CLONE_ARGS_SIZE_VER0);
  *flags = static_cast<unsigned long>(copy.flags) | static_cast<unsigned long>(copy.exit_signal);
  *child_stack = copy.stack != 0 ? static_cast<long>(copy.stack + copy.stack_size) : 0;
  return true;
}

}  // namespace

DispatchResult Clone(SyscallFrame& f) {
  if (f.nr == SYS_fork) return ForkHere(f);
  if (f.nr == SYS_vfork) return ForkForVfork(f, 0, true, false);
  unsigned long flags;
  long child_stack;
  if (!CloneRequest(f, &flags, &child_stack)) return {0, Action::kNative};  // the kernel's EINVAL
  if (!(flags & CLONE_VM) && child_stack == 0) return ForkHere(f);
  if (!(flags & CLONE_VM) || (flags & CLONE_THREAD)) return {0, Action::kNative};
  if ((flags & ~kForkableFlags) != 0) {
    if (!logged_unforkable.exchange(true)) {
      Log("a clone that shares memory with a child process (flags " + std::to_string(flags) +
          ") is made as asked: the child's calls are shielded, but it must not change the shields' state");
    }
    return {0, Action::kNative};
  }
  return ForkForVfork(f, child_stack, (flags & CLONE_VFORK) != 0, true);
}

void BeforeExit(long status) {
  if (vfork_report_fd < 0) return;
  int error = (status & 0xff) == kSpawnFailureStatus ? vfork_last_error : 0;
  if (error > 0) RawSyscall(SYS_write, vfork_report_fd, Arg(&error), sizeof(error));
  RawSyscall(SYS_close, vfork_report_fd);
  vfork_report_fd = -1;
}

void NoteResult(long result) {
  if (vfork_report_fd >= 0 && result < 0 && result > -4096) vfork_last_error = static_cast<int>(-result);
}

long Prctl(long option, long a2, long a3, long a4, long a5) {
  constexpr long kSetSyscallUserDispatch = 59;  // PR_SET_SYSCALL_USER_DISPATCH
  if (option == kSetSyscallUserDispatch) return -EPERM;
  if (option == PR_SET_DUMPABLE && a2 != 0 && ShieldIfReady() != nullptr) return 0;
  return RawSyscall(SYS_prctl, option, a2, a3, a4, a5);
}

}  // namespace scone::runtime::process
