// The runtime's side of every fork, whoever makes it: the program's fork(), the C library's for
// system() and popen(), a raw clone, the runtime's own fork standing in for vfork (clone.cc).
//
// A child has only the thread that forked: a lock of the runtime that another thread held would
// stay held in it forever, a structure it was changing stay half-changed. So the forking thread
// holds the runtime's locks across the kernel's call (PrepareFork), and both processes let go of
// them right where that call returns (AfterForkInParent, AfterForkInChild), before any other code
// of the process runs: the C library's child reset and every pthread_atfork handler (the
// program's, its libraries') find the runtime usable, in whatever order they were registered.
//
// Where the locks are taken matters: a thread holding one of them may be waiting for the
// allocator, whose locks glibc's fork() takes before its clone. So glibc's fork() prepares
// through the prepare handler the runtime registers at start-up (the last one to run, after the
// program's own, which may still write protected files); a fork the C library does not prepare
// (a raw clone or fork system call) is prepared by the dispatcher. Nothing else of the C library's
// atfork machinery is relied on. From PrepareFork to the kernel's call, the thread's signals are
// blocked (no program handler runs while the runtime holds its locks) and a signal that ends the
// process waits (process/termination.h).
//
// Every lock another thread may hold counts, OpenSSL's too: its uses pass a gate the fork closes
// (crypto/fork_gate.h).
//
// A fork after a fault inside the runtime (a crash handler's: the faulting thread may hold any of
// the runtime's locks) takes none of them and never waits: the child cannot use the volumes
// (EIO), as the process itself commits nothing more (FaultedInRuntime).
#pragma once

#include <cstdint>

namespace scone::runtime::process {

// Before the kernel's call (in the C library's prepare phase, or the dispatcher's). Idempotent
// until the fork is done.
void PrepareFork();
// Whether PrepareFork ran on this thread for a fork not done yet.
bool ForkPrepared();
// Counts the forks this process and its ancestors prepared: what a process learned about state
// shared with other processes holds until it changes (one load).
uint64_t ForkGeneration();
// Right after the kernel's call, in each process: only releases and resets, no allocation and no
// lock another thread may hold (in the child, the allocator may be unusable until the C library
// has reset it; in the parent, glibc's fork holds its allocator's locks until the call returns to
// it, and a thread this one waits for may be waiting for them). `forked`: the kernel made a
// child. REQUIRES: ForkPrepared.
void AfterForkInParent(bool forked);
void AfterForkInChild();
// In the parent once the fork is complete, what may allocate or wait: the console's announcement
// of the child, dropping the references to connections held across the call. Done by the
// runtime's pthread_atfork parent handler (after glibc's fork let go of its locks), right after
// the call for a fork the C library did not make, and at the thread's next fork. Cheap when there
// is nothing to do. REQUIRES: not inside a fork's window (between the kernel's call and glibc's
// unlocking).
void CompleteForkInParent();

// In a forked child, what needs the allocator: its own cross-process volume locks, forgetting
// what the parent's threads wrote. Done by the runtime's pthread_atfork child handler (after the C
// library's reset, before the program's handlers), else before the child's first call that may
// need the shield, before it forks again and before it closes its volumes at exit. Cheap when
// there is nothing to do.
void CompleteForkInChild();
inline bool ForkChildPending();
// The calls the C library makes in a child before it has reset its allocator (robust list, rseq,
// locks, memory; `flags`: mmap's): they need no shield, and the runtime must not allocate yet.
bool BeforeChildReset(long nr, long flags);
// A child forked from a process with several threads: files another thread was writing may stay
// locked in it forever. It commits only what it writes itself, and leaves closing the volumes to
// the parent.
bool ChildOfThreads();

// The C library's pthread_atfork handlers of the runtime, registered once at start-up: prepare
// for glibc's fork(), and a safety net where its clone did not reach the dispatcher.
void RegisterForkHandlers();

namespace internal {
extern bool child_pending;  // written only by the one thread of a fresh child
}
inline bool ForkChildPending() { return internal::child_pending; }

}  // namespace scone::runtime::process
