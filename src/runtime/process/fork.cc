#include "runtime/process/fork.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/parallel.h"
#include "crypto/fork_gate.h"
#include "crypto/primitives.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/process/signal_calls.h"
#include "runtime/process/termination.h"
#include "runtime/alone_watcher.h"
#include "runtime/files/image_broker.h"
#include "runtime/files/protected_fd.h"
#include "runtime/files/mapped_files.h"
#include "runtime/net/socket_calls.h"
#include "runtime/net/tls_socket.h"
#include "runtime/runtime.h"

namespace scone::runtime::process {
namespace internal {
bool child_pending = false;
}  // namespace internal

namespace {

using internal::child_pending;

enum Prepared : int {
  kNotPrepared,
  kHolding,  // the runtime's locks are held across the fork
  kNothing,  // after a fault in the runtime: nothing taken, the child gets no volumes
};

// Per thread (a fork is prepared and done on one thread); initial-exec: no loader call.
__attribute__((tls_model("initial-exec"))) thread_local int prepared = kNotPrepared;
__attribute__((tls_model("initial-exec"))) thread_local uint64_t mask_before = 0;

// A child forked from a process with several threads has only the thread that forked: files
// another thread was writing may stay locked forever in it. It commits only what it writes
// itself, and leaves closing the volumes to the parent (CloseVolumesAtExit).
bool forking_with_threads = false;
bool child_of_threads = false;
bool child_without_volumes = false;

std::atomic<uint64_t> fork_generation{0};

// The descriptors whose locks the forking thread holds across the kernel's call: TLS
// connections, and protected files' offsets. Per thread (two threads may fork one after the
// other, the second preparing while the first lets go). Made at the thread's first fork
// (PrepareFork may allocate) and kept (trivially destructible TLS: a thread's destructors may run
// before a fork in an exit handler). Emptied only where dropping a reference may free memory: in
// the parent once the fork is complete (CompleteForkInParent), in a child once its allocator is
// usable (CompleteForkInChild).
struct HeldDescriptors {
  std::vector<std::shared_ptr<ShieldedFd>> connections;
  std::vector<std::shared_ptr<ShieldedFd>> files;
};
__attribute__((tls_model("initial-exec"))) thread_local HeldDescriptors* held_descriptors = nullptr;
// Set in the parent by AfterForkInParent: CompleteForkInParent has work.
__attribute__((tls_model("initial-exec"))) thread_local bool parent_pending = false;

HeldDescriptors& Held() {
  if (held_descriptors == nullptr) held_descriptors = new HeldDescriptors();
  return *held_descriptors;
}

void HoldConnections(Runtime& rt) {
  const uint64_t generation = fork_generation.fetch_add(1, std::memory_order_acq_rel) + 1;
  auto& held = Held().connections;
  held.clear();
  for (auto& [fd, d] : rt.fds().All()) {
    if (auto* s = d->AsTlsSocket(); s != nullptr && s->BeforeFork(generation)) held.push_back(d);
  }
}

// Each protected file description once (dup'ed descriptors share one). No thread holds two
// offsets at a time (a copy reads, then writes): any order will do.
void HoldFileOffsets(Runtime& rt) {
  auto& held = Held().files;
  held.clear();
  for (auto& [fd, d] : rt.fds().All()) {
    if (d->AsProtectedFile() != nullptr) held.push_back(std::move(d));
  }
  // Sorted, not searched: a server forking with thousands of descriptors open.
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  for (auto& d : held) d->AsProtectedFile()->BeforeFork();
}

// Neither allocates (in a child the allocator may not be usable yet).
void LetGoOfDescriptors(bool in_child) {
  if (held_descriptors == nullptr) return;
  for (auto& d : held_descriptors->files) d->AsProtectedFile()->AfterFork();
  for (auto& d : held_descriptors->connections) d->AsTlsSocket()->AfterFork(in_child);
}
void DropHeldDescriptors() {
  if (held_descriptors == nullptr) return;
  held_descriptors->connections.clear();
  held_descriptors->files.clear();
}

// The locks PrepareFork took last, let go of first (in both processes).
void LetGoOfLocks(Runtime& rt) {
  rt.AfterFork();
  for (auto& v : rt.volumes()) v->recent.AfterFork();
  rt.fds().AfterFork();
}

constexpr uint64_t Bit(int sig) { return uint64_t{1} << (sig - 1); }

// Every signal but SIGSYS (the entry's) and the faults (which cannot wait).
void BlockSignals() {
  const uint64_t block = ~(Bit(SIGSYS) | kFaultSignals);
  RawSyscall(SYS_rt_sigprocmask, SIG_BLOCK, Arg(&block), Arg(&mask_before), sizeof(uint64_t));
}

void RestoreSignals() { RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&mask_before), 0, sizeof(uint64_t)); }

bool SeveralThreads() {
  static const char* single_threaded = static_cast<const char*>(dlsym(RTLD_DEFAULT, "__libc_single_threaded"));
  return single_threaded == nullptr || *single_threaded == 0;
}

void PrepareHandler() { PrepareFork(); }
// After glibc's fork let go of its allocator's locks, before the program's handlers.
void ParentHandler() {
  if (ForkPrepared()) AfterForkInParent(false);  // the clone never reached the dispatcher
  CompleteForkInParent();
}
// After the C library's child reset, before the program's handlers (registered later).
void ChildHandler() {
  if (ForkPrepared()) AfterForkInChild();
  CompleteForkInChild();
}

}  // namespace

void PrepareFork() {
  if (prepared != kNotPrepared) return;
  CompleteForkInParent();  // a fork before whose end nothing completed the last
  // Signals first: one held back by a section would be let through at its end.
  BlockSignals();
  RuntimeSection section;
  ThisThread().forking = true;
  if (FaultedInRuntime()) {
    prepared = kNothing;
    return;
  }
  prepared = kHolding;
  Runtime* rt = ShieldIfReady();
  if (rt == nullptr) return;
  CompleteForkInChild();  // a child forking before it used its volumes: its own locks first
  forking_with_threads = SeveralThreads();
  // What this process wrote is committed first: the child starts from it (before any lock is
  // held: a commit takes the file's and the volume's). Other threads' writes are published from
  // here on, as after the fork.
  for (auto& v : rt->volumes()) {
    if (fs::Volume* volume = v->IfOpen()) volume->ShareBeforeFork();
  }
  for (auto& [fd, d] : rt->fds().All()) d->ShareWithOtherProcesses(fd);
  sockets::EpollBeforeFork();
  HoldConnections(*rt);
  for (auto& v : rt->volumes()) {
    // Files kept only because they were opened last do not keep the volume from resting.
    v->recent.Clear();
    if (fs::Volume* volume = v->IfOpen()) {
      if (Status s = volume->RestIfUnused(); !s.ok()) Log(s.message());
    }
  }
  // In the order a thread inside a file's call takes them: its offset, the mappings and their
  // images, the files (Volume::BeforeFork: the images lock, each file, the volume), then what the
  // volume calls while it is locked (the watcher, the reporter).
  HoldFileOffsets(*rt);
  MappedFiles::Get().BeforeFork();
  ImageBroker::Get().BeforeFork();
  for (auto& v : rt->volumes()) {
    v->BeforeFork();
    if (fs::Volume* volume = v->IfOpen()) volume->BeforeFork();
  }
  AloneWatcher::Get().BeforeFork();
  if (auto* r = rt->reporter()) r->BeforeFork();
  rt->console().BeforeFork();
  rt->fds().BeforeFork();
  // Locks whose holders wait for nothing else: last.
  for (auto& v : rt->volumes()) v->recent.BeforeFork();
  rt->BeforeFork();
  crypto::CloseGateForFork();  // no thread inside OpenSSL (fork_gate.h)
}

bool ForkPrepared() { return prepared != kNotPrepared; }

uint64_t ForkGeneration() { return fork_generation.load(std::memory_order_acquire); }

void AfterForkInParent(bool forked) {
  if (prepared == kHolding) {
    if (Runtime* rt = ShieldIfReady()) {
      crypto::OpenGateAfterFork();
      LetGoOfLocks(*rt);
      rt->console().AfterForkInParent(forked);
      for (auto& v : rt->volumes()) {
        if (fs::Volume* volume = v->IfOpen()) volume->AfterForkInParent();
        v->AfterFork();
      }
      if (auto* r = rt->reporter()) r->AfterForkInParent();
      ImageBroker::Get().AfterForkInParent();
      MappedFiles::Get().AfterFork();
      AloneWatcher::Get().AfterForkInParent();
      LetGoOfDescriptors(false);  // kept in the lists: dropping a reference may free memory
      sockets::EpollAfterFork();
      parent_pending = true;
    }
  }
  prepared = kNotPrepared;
  ThisThread().forking = false;
  RestoreSignals();
}

void AfterForkInChild() {
  // What the parent's threads learned about state shared with other processes (a TLS
  // connection's owner) holds for the parent, not for this new process: it asks again.
  fork_generation.fetch_add(1, std::memory_order_acq_rel);
  crypto::NoteForkInChild();  // a raw clone runs no pthread_atfork handler: nonce batches go here too
  ResetParallelHelperInChild();
  Runtime* rt = ShieldIfReady();
  if (prepared == kHolding && rt != nullptr) {
    crypto::OpenGateAfterFork();
    LetGoOfLocks(*rt);
    rt->console().AfterForkInChild();
    if (auto* r = rt->reporter()) r->AfterForkInChild();
    ImageBroker::Get().AfterForkInChild();
    MappedFiles::Get().AfterFork();
    AloneWatcher::Get().AfterForkInChild();
    LetGoOfDescriptors(true);  // kept in the lists: dropping a reference may free memory
    sockets::EpollAfterFork();
    for (auto& v : rt->volumes()) {
      if (fs::Volume* volume = v->IfOpen()) volume->AfterForkInChild();
      v->AfterFork();
    }
  }
  child_without_volumes = prepared == kNothing;
  if (child_without_volumes && rt != nullptr) rt->CloseVolumes();  // every call on them fails with EIO
  child_pending = rt != nullptr;
  prepared = kNotPrepared;
  ThisThread().forking = false;
  RestoreSignals();
}

void CompleteForkInParent() {
  if (!parent_pending) return;
  RuntimeSection section;
  parent_pending = false;
  DropHeldDescriptors();
  if (Runtime* rt = ShieldIfReady()) {
    for (auto& v : rt->volumes()) {
      if (fs::Volume* volume = v->IfOpen()) volume->DropFilesHeldForFork(/*in_child=*/false);
    }
    rt->console().AnnounceChildren();
  }
}

void CompleteForkInChild() {
  if (!child_pending) return;
  RuntimeSection section;
  child_pending = false;
  Runtime* rt = ShieldIfReady();
  if (rt == nullptr) return;
  if (child_without_volumes) {
    Log("this process was forked after a fault inside the runtime: its volumes are unavailable");
    return;
  }
  DropHeldDescriptors();
  ImageBroker::Get().CompleteForkInChild();  // serves the images its mappings show
  if (forking_with_threads) {
    child_of_threads = true;
    for (auto& [fd, d] : rt->fds().All()) d->ForgetParentWrites();
  }
  for (auto& v : rt->volumes()) {
    if (Status moved = CheckVolumeStillThere(v->root, v->device, v->inode); !moved.ok()) {
      Log(moved.message());
      _exit(126);  // the parent, which still judges paths by the old name, carries on
    }
    if (fs::Volume* volume = v->IfOpen()) {
      volume->DropFilesHeldForFork(/*in_child=*/true);
      Status s = volume->RejoinAfterFork();
      if (!s.ok()) Log(s.message());
    }
  }
}

bool ChildOfThreads() { return child_of_threads; }

bool BeforeChildReset(long nr, long flags) {
  switch (nr) {
    case SYS_set_robust_list:
    case SYS_rseq:
    case SYS_futex:
    case SYS_getpid:
    case SYS_gettid:
    case SYS_brk:
    case SYS_munmap:
    case SYS_mprotect:
    case SYS_madvise:
    case SYS_mremap:
      return true;
    case SYS_mmap:
      return (flags & MAP_ANONYMOUS) != 0;
    default:
      return false;
  }
}

void RegisterForkHandlers() {
  static bool registered = false;
  if (registered) return;
  registered = true;
  crypto::RegisterNonceForkHandler();  // now: registering it first inside a fork would deadlock
  pthread_atfork(PrepareHandler, ParentHandler, ChildHandler);
}

}  // namespace scone::runtime::process
