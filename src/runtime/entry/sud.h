// Syscall User Dispatch (Linux >= 5.11), the net under the patched code: with a thread's
// selector set to block, every system call it makes outside the runtime's own code (entry.h's
// RuntimeCodeRange) becomes a SIGSYS, which the runtime's handler dispatches (and, where it can,
// patches so the next call takes the fast way).
//
// The setting is per thread and is neither inherited by clone nor kept across execve: every
// child turns it on first thing (EnterNewThread), every new program's runtime at start-up.
#pragma once

namespace scone::runtime {

// Installs the process's SIGSYS handler, with the runtime's own restorer (its sigreturn lies in
// the runtime's code). Returns false if the kernel refuses.
bool InstallSigsysHandler();
// Turns dispatch on for the calling thread, selector set to block. Returns false if the kernel
// lacks Syscall User Dispatch.
bool EnableDispatchForThisThread();

struct SudStats {
  long trapped;  // system calls that reached the handler
};
SudStats GetSudStats();

}  // namespace scone::runtime
