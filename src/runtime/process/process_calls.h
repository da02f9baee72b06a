// The process calls as the shields need them: programs started by a shielded program run
// shielded (or not at all), children made by clone start with the entry, and SIGSYS, which
// carries the entry's net, stays the runtime's.
#pragma once

#include <string>

#include "runtime/entry/entry.h"

namespace scone::runtime {

class Runtime;

namespace process {

// execve and execveat: only programs the runtime can enter are started (dynamically linked
// against glibc's loader, not setuid to someone else: else EACCES and a `scone:` line naming
// the program); they get the runtime preloaded and a fresh configuration descriptor.
long Exec(Runtime& rt, int dirfd, const char* path, char* const argv[], char* const envp[], int flags);
// Programs are executed through a descriptor, which the kernel names after the file (6.14 and
// later) or the descriptor's number ("3"): /proc/PID/comm is set to `name`, the name the program
// was executed by, as without the runtime (ps, pgrep, pidof); without a name, a number is
// replaced by the file's name.
void NameProgram(const std::string& name);
// Notes, at start-up, which loader and runtime library this process runs with: a program it
// starts must get the same ones (by identity), or it would run without the runtime.
void NoteOwnFiles(const std::string& library_path);

// clone, clone3, fork and vfork. Threads are made natively (kNative), so the child starts on
// its own stack; a fork is made by the dispatcher, with the runtime's own locks held across it
// (the child has only the forking thread). A child meant to share the parent's memory until it
// executes (vfork, posix_spawn's clone) is made by fork instead, because the shields' state
// must never change under the parent's feet. The parent still waits until that child has
// executed a program or exited, and a spawn that failed before its program ran fails as glibc
// reports it.
DispatchResult Clone(SyscallFrame& f);

// exit_group and exit: a child made for vfork tells its parent how it ended.
void BeforeExit(long status);
// The result of every call of a child made for vfork: its last failure is what the parent
// reports if the child exits without executing a program.
void NoteResult(long result);

// prctl: Syscall User Dispatch stays the runtime's; a program cannot make itself dumpable
// while it holds keys (the call succeeds and changes nothing).
long Prctl(long option, long a2, long a3, long a4, long a5);

}  // namespace process
}  // namespace scone::runtime
