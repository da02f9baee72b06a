// Redirects the `syscall` instructions of the loaded C library (and of every object loaded at
// start-up) to trampolines that call the dispatcher (entry.h), the way PMDK's syscall_intercept
// does, decoding machine code with Zydis.
//
// A site is patched by overwriting at least five bytes around its `syscall` with a jump to its
// trampoline, which runs the overwritten instructions, then the call through the entry, and
// jumps back. Which bytes may be overwritten is decided from the instructions themselves: only
// whole instructions, none of them relative to the instruction pointer, none but the first the
// target of a branch (a branch into the middle of the window would land in the jump).
//
//   - At start-up (PatchAtStartUp), while no other thread runs, the functions on a list of the
//     C library's busy system-call wrappers are decoded whole and patched with any window that
//     fits, the `syscall` instruction included (read(2)'s wrapper sets its number with a
//     two-byte `xor`, too short alone).
//   - Later, for a site Syscall User Dispatch caught (PatchTrapped), only the one instruction
//     before the `syscall` is replaced, if it is five bytes or longer, and never the `syscall`
//     itself: another thread may be suspended anywhere, but never inside one instruction, and
//     one returning from this very system call resumes after it, which is unchanged. The bytes
//     are written so that a thread running into them meanwhile only waits (a two-byte jump to
//     itself first), and every core is made to see the new code (membarrier).
//
// Everything here works without allocating, so PatchTrapped may run in a signal handler.
// Thread-safety: patching is serialized by one lock, which a thread may take again.
#pragma once

#include <cstdint>

#include "common/bytes.h"
#include <utility>

namespace scone::runtime {

class CodePatcher {
 public:
  // Learns the objects that may be patched and patches the wrappers that need a whole-function
  // analysis, or applies `plan` (from Plan() in the program that executed this one) where this
  // process's objects are the same files holding the same bytes. Returns the number of sites
  // patched. REQUIRES: no other thread runs the program's code.
  static int PatchAtStartUp(ByteSpan plan);
  // The patches applied so far, for a program this one executes: applying them is a copy per
  // site, where finding them took decoding and a trapped call each.
  static Bytes Plan();
  // For a `syscall` instruction at `site` caught by Syscall User Dispatch, with the
  // instructions before it already run: patches the site if it is safe, and returns the
  // address where the thread resumes to make the call through the trampoline (after the copy
  // of the instruction it already ran), or 0 when the site stays with the SIGSYS handler.
  static uintptr_t PatchTrapped(uintptr_t site);

  // A fork waits for a patch being written by another thread and holds off the next one (the
  // child has only the forking thread: a patch half-written, or the patcher's lock held, would
  // stay so in it). AfterFork, in both processes, lets patching go on. The forking thread may
  // still patch meanwhile.
  static void BeforeFork();
  static void AfterFork();

  struct Stats {
    int patched_at_start_up;
    int patched_later;
    int refused;
    std::pair<uintptr_t, long> busiest_refused[4];  // (site, calls the handler made for it)
  };
  static Stats GetStats();
};

// The range of the runtime's own machine code (its text, trampolines included): system calls
// made from there go straight to the kernel.
struct CodeRange {
  uintptr_t begin;
  uintptr_t end;
};
CodeRange RuntimeCodeRange();

}  // namespace scone::runtime
