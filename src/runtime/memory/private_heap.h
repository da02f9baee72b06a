// The runtime's own heap: every allocation the runtime makes (operator new, and its OpenSSL's)
// comes from here, never from the program's allocator.
//
// Why: the C library's allocator makes system calls while it holds its own locks (free() trims
// a thread's heap with the arena locked: madvise, mprotect, and once per process an open, read
// and close of /proc/sys/vm/overcommit_memory). Those calls enter the runtime like any other; had
// the runtime allocated from the same allocator there, the thread would wait for the lock it
// holds itself, and every other thread for the runtime's locks that thread held.
//
// Free lists by size class over memory mapped from the kernel, behind a lock of its own that
// waits with raw futex calls: nothing here calls into the C library or back into the runtime's
// entry. Thread-safety: all functions may be called concurrently.
#pragma once

#include <cstddef>

namespace scone::runtime::memory {

// Aligned to 16 bytes, or nullptr when the kernel gives no more memory.
void* Allocate(size_t size);
// At least `alignment` (a power of two).
void* AllocateAligned(size_t size, size_t alignment);
// Blocks from Allocate, AllocateAligned or Reallocate; nullptr is ignored.
void Free(void* p);
// realloc's contract: Reallocate(nullptr, n) allocates; the first min(old, n) bytes are kept.
void* Reallocate(void* p, size_t size);

// Whether the calling thread is inside the heap (holding its lock, perhaps): no place to end the
// process at (process/termination.cc).
bool InsideHeap();

// fork: the heap's lock is held across the kernel's call, so that the child never inherits it
// held by a thread it does not have; both processes let go right after.
void BeforeFork();
void AfterFork();

}  // namespace scone::runtime::memory
