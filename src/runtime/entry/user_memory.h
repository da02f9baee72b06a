// The program's memory as the runtime reads and writes it for a call.
//
// The kernel copies a call's buffers and paths with routines that turn a fault into EFAULT. The
// runtime reads and writes the same memory in its own code (a protected file's plaintext, a
// path it judges), where a bad pointer faulted inside the runtime: the program died of SIGSEGV
// where natively its call failed, or its SIGSEGV handler ran while the runtime held a file's
// lock. So the runtime checks first, one byte per page, with probes whose fault the fault
// handlers turn into a failed probe (RecoverProbeFault), as the kernel's exception table does.
// A write probe is an atomic OR of zero: it changes nothing, even under another thread's store.
//
// What another thread unmaps between the check and the use still faults; the kernel has the
// same window between its own check and copy, and closes it with its exception table.
#pragma once

#include <sys/uio.h>

#include <cstddef>

namespace scone::runtime {

// Whether [p, p + n) lies in the program's half of the address space, as the kernel's access_ok
// asks before a transfer (a count past its end fails the call with EFAULT, whatever the pages).
bool InProgramSpace(const void* p, size_t n);

// How many bytes from `p` on the program can read (`Writable`: write) before the first page that
// it cannot: `n` when it can all of them.
size_t ReadableBytes(const void* p, size_t n);
size_t WritableBytes(void* p, size_t n);

// Whether the NUL-terminated string at `s` can be read up to its end (at most `max` bytes).
bool ReadableString(const char* s, size_t max);

// A program's iovec array, cut at the first byte its buffers do not allow (read: the runtime
// reads them; write: it writes them): `*count` vectors, the last maybe shortened, as the kernel
// stops a transfer at the first fault. -EFAULT when the array itself cannot be read, or no byte
// can be moved and some was asked for, -EINVAL when a length is negative as a ssize_t (as the
// kernel's import of an iovec array); else 0. `out` holds at least `*count` entries.
long UsableVectors(const struct iovec* iov, int* count, bool write, struct iovec* out);

// For the fault handlers: a fault at a probe's instruction resumes at the probe's failure return.
// `context` is the handler's ucontext.
bool RecoverProbeFault(void* context);

}  // namespace scone::runtime
