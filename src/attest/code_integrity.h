// What LAS checks besides the measurement before it vouches for a process: that only the
// measured files' code can run in it. The measurement covers the files mapped executable, so
// code that got in otherwise went unseen: a preloaded library copied itself to anonymous memory,
// started a thread there and made its own file's pages non-executable; the process measured as
// the genuine program and received its session's secrets (hostile finding). Such code runs
// from memory that is no file's, from a file's pages written in memory, or on a thread that
// existed before the runtime asked (it asks in its constructor, before `main`; threads started
// earlier are not shielded either).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace scone::attest {

// The value of "Field:" in /proc/PID/status, or "" if absent (or unreadable).
std::string ProcessStatusField(pid_t pid, const std::string& field);

// kPermissionDenied naming what was found, from /proc/PID/smaps and /proc/PID/status, and
// CheckNoOtherProcessSharesMemory.
Status CheckOnlyMeasuredCodeRuns(pid_t pid);

// No other process shares the address space (clone(CLONE_VM) without CLONE_THREAD: not counted
// as a thread, and it could read the secrets once released). kcmp(KCMP_VM) with every process.
Status CheckNoOtherProcessSharesMemory(pid_t pid);

// The check of the executable memory alone, on the text of /proc/PID/smaps: every executable
// mapping is a file's (or the kernel's vDSO) and none of its pages was written in memory.
Status CheckExecutableMemory(std::string_view smaps, pid_t pid);

}  // namespace scone::attest
