#include "runtime/process/termination.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/syscall.h>
#include <time.h>

#include <mutex>

#include "common/parallel.h"
#include "runtime/entry/code_patcher.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/user_memory.h"
#include "runtime/memory/private_heap.h"
#include "runtime/runtime.h"

extern "C" void scone_signal_restorer();
extern "C" char scone_trampolines_begin[];
extern "C" char scone_trampolines_end[];

namespace scone::runtime::process {
namespace internal {
// kNone, then kPublishing while the first signal is written down, kHeld until a safe point is
// reached, kEnding from the commit on.
std::atomic<int> held_state{0};
}  // namespace internal

namespace {

using internal::held_state;
constexpr int kNone = 0;
constexpr int kPublishing = 1;
constexpr int kHeld = 2;
constexpr int kEnding = 3;

constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER (the kernel's; glibc hides it)
constexpr int kMaxSignal = 64;
constexpr long kTickNanoseconds = 10'000'000;
constexpr int kMaxTicks = 200;  // two seconds without a safe point: end without committing

constexpr uint64_t Bit(int sig) { return uint64_t{1} << (sig - 1); }
constexpr uint64_t kFaults = kFaultSignals;
// Default actions other than ending the process: ignoring, stopping.
constexpr uint64_t kNotEnding = Bit(SIGCHLD) | Bit(SIGCONT) | Bit(SIGURG) | Bit(SIGWINCH) | Bit(SIGSTOP) |
                                Bit(SIGTSTP) | Bit(SIGTTIN) | Bit(SIGTTOU);
constexpr uint64_t kLeftAlone = Bit(SIGKILL) | Bit(SIGSYS) | Bit(SIGABRT) | kFaults;

// The signal the process ends by (the first one). Written under kPublishing, read after kHeld.
int held_sig = 0;
siginfo_t held_info;
std::atomic<bool> ticking{false};
std::atomic<int> ticks{0};

// Code a thread may be running while it holds the C library's locks.
struct CodeSpan {
  uintptr_t begin;
  uintptr_t end;
};
constexpr int kMaxSpans = 16;
CodeSpan unsafe_code[kMaxSpans];
int unsafe_spans = 0;
const CodeSpan trampolines = {reinterpret_cast<uintptr_t>(scone_trampolines_begin),
                              reinterpret_cast<uintptr_t>(scone_trampolines_end)};

bool In(const CodeSpan& s, uintptr_t ip) { return ip >= s.begin && ip < s.end; }

bool InUnsafeCode(uintptr_t ip) {
  if (In(trampolines, ip)) return true;  // the C library's instructions around its calls
  for (int i = 0; i < unsafe_spans; ++i) {
    if (In(unsafe_code[i], ip)) return true;
  }
  return false;
}

// Calls the C library may make while it holds its allocator's locks.
bool UnsafeCall(long nr) {
  switch (nr) {
    case SYS_brk:
    case SYS_mmap:
    case SYS_munmap:
    case SYS_mremap:
    case SYS_mprotect:
    case SYS_madvise:
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
      return true;
    default:
      return false;
  }
}

// Whether the thread, interrupted in `uc`, holds neither the runtime's locks nor the C library's.
bool AtSafePoint(const EntryThread& t, const ucontext_t* uc) {
  if (t.depth > 0 || t.unsafe_handlers > 0 || t.forking || memory::InsideHeap()) return false;
  if (t.call >= 0 && UnsafeCall(t.call)) return false;
  const auto ip = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  if (InUnsafeCode(ip)) return false;
  // The runtime's code at depth 0: safe inside the dispatcher (a program's call), not in the
  // stub that leads there from the C library.
  CodeRange own = RuntimeCodeRange();
  if (ip >= own.begin && ip < own.end) return t.call >= 0;
  return true;
}

// Writes down the signal the process ends by; false if one is already.
bool Hold(int sig, const siginfo_t& info) {
  int expected = kNone;
  if (!held_state.compare_exchange_strong(expected, kPublishing, std::memory_order_acq_rel)) return false;
  held_sig = sig;
  held_info = info;
  held_state.store(kHeld, std::memory_order_release);
  return true;
}

// `sig` again with SIG_DFL and `info`, unblocked: the process ends by it as the kernel ends it.
void RaiseWithDefault(int sig, const siginfo_t& info) {
  KernelSigaction dfl = {};
  RawSyscall(SYS_rt_sigaction, sig, Arg(&dfl), 0, sizeof(uint64_t));
  const long pid = RawSyscall(SYS_getpid);
  const long tid = RawSyscall(SYS_gettid);
  if (RawSyscall(SYS_rt_tgsigqueueinfo, pid, tid, sig, Arg(&info)) != 0) RawSyscall(SYS_tgkill, pid, tid, sig);
  const uint64_t bit = Bit(sig);
  RawSyscall(SYS_rt_sigprocmask, SIG_UNBLOCK, Arg(&bit), 0, sizeof(uint64_t));
}

// The held signal, with SIG_DFL, again: the process ends as the kernel ends it.
[[noreturn]] void EndBySignal() {
  RaiseWithDefault(held_sig, held_info);
  for (;;) RawSyscall(SYS_exit_group, 128 + held_sig);  // not reached: the signal ended it
}

// At a safe point: commits, closes the volumes, and ends the process by the held signal. Returns
// if another thread is doing so already.
void End() {
  int expected = kHeld;
  if (!held_state.compare_exchange_strong(expected, kEnding, std::memory_order_acq_rel)) return;
  RuntimeSection section;  // kept to the end: no program handler runs after the signal
  StartNoMoreHelpers();     // the other threads stop at their next call: a new one would too
  CloseVolumesAtExit();
  EndBySignal();
}

// Another thread is ending the process: this one makes no more calls (natively it would be gone
// already; its calls on protected files would fail once the volumes closed).
[[noreturn]] void Park() {
  const uint64_t all = ~uint64_t{0};
  RawSyscall(SYS_rt_sigprocmask, SIG_BLOCK, Arg(&all), 0, sizeof(uint64_t));
  for (;;) RawSyscall(SYS_pause);
}

// No safe point in time: the process ends as a crash would (its last commit stays).
[[noreturn]] void GiveUp() {
  static constexpr char kLine[] =
      "scone: a signal ended the process before it reached a point where its writes could be "
      "committed: they are lost, as in a crash\n";
  RawSyscall(SYS_write, 2, Arg(kLine), sizeof(kLine) - 1);
  EndBySignal();
}

// The timer whose ticks (SIGSYS, to the process) look for a thread at a safe point.
void StartTicks() {
  if (ticking.exchange(true)) return;
  struct sigevent event = {};
  event.sigev_notify = SIGEV_SIGNAL;
  event.sigev_signo = SIGSYS;
  event.sigev_value.sival_ptr = &held_state;
  int timer;  // the kernel's timer_t
  if (RawSyscall(SYS_timer_create, CLOCK_MONOTONIC, Arg(&event), Arg(&timer)) != 0) return;
  struct itimerspec every = {{0, kTickNanoseconds}, {0, kTickNanoseconds}};
  RawSyscall(SYS_timer_settime, timer, 0, Arg(&every), 0);
}

// Found by an address in any of its segments: an object's executable segments.
struct Learning {
  uintptr_t address;
};
int LearnObject(struct dl_phdr_info* info, size_t, void* data) {
  const uintptr_t address = static_cast<Learning*>(data)->address;
  bool contains = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& p = info->dlpi_phdr[i];
    uintptr_t begin = info->dlpi_addr + p.p_vaddr;
    contains = contains || (p.p_type == PT_LOAD && address >= begin && address < begin + p.p_memsz);
  }
  if (!contains) return 0;
  for (int i = 0; i < info->dlpi_phnum && unsafe_spans < kMaxSpans; ++i) {
    const ElfW(Phdr)& p = info->dlpi_phdr[i];
    if (p.p_type != PT_LOAD || !(p.p_flags & PF_X)) continue;
    uintptr_t begin = info->dlpi_addr + p.p_vaddr;
    unsafe_code[unsafe_spans++] = {begin, begin + p.p_memsz};
  }
  return 1;
}

void TerminationHandler(int sig, siginfo_t* si, void* context) {
  EntryThread& t = ThisThread();
  if (sig == SIGXFSZ && t.own_write) return;  // the runtime's own write met the limit (HoldBack)
  if (t.depth > 0) {
    HoldBack(t, sig, si, context);  // the runtime is at work: it comes again when it is done
    return;
  }
  Hold(sig, *si);  // the first signal is the one the process ends by
  if (held_state.load(std::memory_order_acquire) == kHeld && AtSafePoint(t, static_cast<ucontext_t*>(context))) End();
  StartTicks();
}

// A fault's instruction, at a point where the runtime holds none of its locks: publishes what the
// process buffered, then ends the process by the fault (termination.h).
void FaultHandler(int sig, siginfo_t* si, void* context) {
  if (si->si_code <= 0) {  // sent (kill -SEGV): it ends the process as any other signal does
    if (!ProgramIgnores(sig)) TerminationHandler(sig, si, context);
    return;
  }
  if (RecoverProbeFault(context)) return;  // the program's call fails with EFAULT (user_memory.h)
  const EntryThread& t = ThisThread();
  const auto ip = static_cast<uintptr_t>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP]);
  const CodeRange own = RuntimeCodeRange();
  const bool in_runtime = t.depth > 0 || t.forking || memory::InsideHeap() || (ip >= own.begin && ip < own.end);
  if (!in_runtime) {
    // Another thread ends the process already (a fault, or a signal committing): it ends it.
    int state = held_state.load(std::memory_order_acquire);
    for (;;) {
      if (state == kEnding) Park();
      if (state == kPublishing) {  // another thread writes down a signal: a few stores
        state = held_state.load(std::memory_order_acquire);
        continue;
      }
      if (held_state.compare_exchange_weak(state, kEnding, std::memory_order_acq_rel)) break;
    }
    // The other threads stop at their next system call, as the fault would stop them natively;
    // what any of them buffered, or took to publish and is still publishing, is published
    // before the process ends (a thread that returned early because another had taken the
    // files lost them all when two threads faulted at once).
    RuntimeSection section;
    if (!PublishAllBufferedWrites(kMaxTicks * kTickNanoseconds / 1'000'000)) {
      static constexpr char kLine[] =
          "scone: a fault ended the process before its last writes could be published: they are lost, as in a crash\n";
      RawSyscall(SYS_write, 2, Arg(kLine), sizeof(kLine) - 1);
    }
  }
  // Raised again with SIG_DFL rather than left to the instruction: a trap's is behind it, and
  // one that would not fault again (another thread mapped the page meanwhile) would leave the
  // parked threads parked for good. (No core is lost: the runtime's processes are not dumpable.)
  RaiseWithDefault(sig, *si);
}

}  // namespace

bool PublishesBeforeFault(int sig) { return sig >= 1 && sig <= kMaxSignal && (Bit(sig) & kFaults) != 0; }

KernelSigaction FaultAction() {
  KernelSigaction k = TerminationAction();
  k.handler = reinterpret_cast<void*>(&FaultHandler);
  return k;
}

bool IsFaultHandler(const void* handler) { return handler == reinterpret_cast<void*>(&FaultHandler); }

bool CommitsBeforeEnding(int sig) {
  return sig >= 1 && sig <= kMaxSignal && !(Bit(sig) & (kNotEnding | kLeftAlone));
}

KernelSigaction TerminationAction() {
  KernelSigaction k = {};
  k.handler = reinterpret_cast<void*>(&TerminationHandler);
  // SA_RESTART: a call it interrupts goes on if the process does not end at once.
  k.flags = SA_SIGINFO | SA_RESTART | kSaRestorer;
  k.restorer = reinterpret_cast<void*>(&scone_signal_restorer);
  k.mask = ~(Bit(SIGSYS) | kFaults);  // nothing of the program runs meanwhile
  return k;
}

bool IsTerminationHandler(const void* handler) { return handler == reinterpret_cast<void*>(&TerminationHandler); }

void LearnUnsafeCode() {
  static std::mutex mu;
  static bool learned = false;
  std::lock_guard lock(mu);
  if (learned) return;
  learned = true;
  // The C library (its allocator, its other locks), the dynamic loader (its lock), and the
  // object whose malloc the process uses, if another.
  for (const char* symbol : {"gnu_get_libc_version", "__tls_get_addr", "malloc"}) {
    Learning l = {reinterpret_cast<uintptr_t>(dlsym(RTLD_DEFAULT, symbol))};
    if (l.address != 0) dl_iterate_phdr(LearnObject, &l);
  }
}

void AtSystemCall(long nr) {
  const int state = held_state.load(std::memory_order_acquire);
  const EntryThread& t = ThisThread();
  if (state < kHeld || t.unsafe_handlers > 0 || t.forking || UnsafeCall(nr)) return;
  if (state == kHeld) End();
  Park();
}

bool OnTick(const siginfo_t* si, ucontext_t* uc) {
  if (si->si_code != SI_TIMER || si->si_value.sival_ptr != &held_state) return false;
  if (held_state.load(std::memory_order_acquire) != kHeld) return true;  // ending elsewhere
  if (AtSafePoint(ThisThread(), uc)) End();
  if (ticks.fetch_add(1, std::memory_order_relaxed) + 1 >= kMaxTicks) {
    int expected = kHeld;
    if (held_state.compare_exchange_strong(expected, kEnding, std::memory_order_acq_rel)) GiveUp();
  }
  return true;
}

void ForgetHeldTermination() {
  held_state.store(kNone, std::memory_order_relaxed);
  ticking.store(false, std::memory_order_relaxed);  // timers are not inherited
  ticks.store(0, std::memory_order_relaxed);
}

void EndIfTerminating() {
  if (held_state.load(std::memory_order_acquire) >= kHeld) EndBySignal();
}

ProgramHandlerScope::ProgramHandlerScope(const void* context)
    : unsafe_(!AtSafePoint(ThisThread(), static_cast<const ucontext_t*>(context))) {
  if (unsafe_) ++ThisThread().unsafe_handlers;
}

ProgramHandlerScope::~ProgramHandlerScope() {
  if (unsafe_) --ThisThread().unsafe_handlers;
}

}  // namespace scone::runtime::process
