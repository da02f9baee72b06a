#include "runtime/console/kept_locks.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>

#include <memory>
#include <thread>

#include "runtime/console/console_shield.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"

namespace scone::runtime {
namespace {

std::atomic<ConsoleStream*> slots[KeptConsoleLocks::kMaxStreams];
// 0: no thread yet; 1: running; -1: none could be made (streams then let go after each record).
std::atomic<int> thread_state{0};
std::atomic<bool> thread_waits{false};  // on count_, with no deadline

}  // namespace

std::atomic<int> KeptConsoleLocks::count_{0};
std::atomic<int> KeptConsoleLocks::waiting_{0};

bool KeptConsoleLocks::Add(ConsoleStream* stream) {
  if (thread_state.load(std::memory_order_acquire) == 0) {
    int expected = 0;
    if (thread_state.compare_exchange_strong(expected, 1)) {
      std::unique_ptr<std::thread> t = StartRuntimeThread(Run);
      if (t == nullptr) {
        thread_state.store(-1);
      } else {
        (void)t.release();  // it runs until the process ends, beyond its exit handlers
      }
    }
  }
  if (thread_state.load(std::memory_order_acquire) != 1) return false;
  for (auto& slot : slots) {
    ConsoleStream* empty = nullptr;
    if (slot.compare_exchange_strong(empty, stream)) {
      if (count_.fetch_add(1) == 0 && thread_waits.exchange(false)) {
        (void)RawSyscall(SYS_futex, Arg(&count_), FUTEX_WAKE_PRIVATE, 1);
      }
      return true;
    }
  }
  return false;
}

void KeptConsoleLocks::Remove(ConsoleStream* stream) {
  for (auto& slot : slots) {
    ConsoleStream* expected = stream;
    if (slot.compare_exchange_strong(expected, nullptr)) {
      count_.fetch_sub(1);
      return;
    }
  }
}

void KeptConsoleLocks::LetGoAll(const ConsoleStream* except) {
  for (auto& slot : slots) {
    ConsoleStream* stream = slot.load(std::memory_order_acquire);
    if (stream != nullptr && stream != except) stream->LetGoOfKeptLock(false);
  }
}

void KeptConsoleLocks::Run() {
  static_assert(sizeof(std::atomic<int>) == sizeof(int));
  // A stream lets go every kMaxRecords records and keeps again at its next: the thread goes on
  // ticking through such gaps (waking it each time would cost a futex call and a switch), and
  // waits without a deadline once no lock was kept for kLingerTicks.
  constexpr int kLingerTicks = 50;
  int idle_ticks = 0;
  for (;;) {
    if (count_.load() == 0 && ++idle_ticks > kLingerTicks) {
      thread_waits.store(true);
      if (count_.load() == 0) (void)RawSyscall(SYS_futex, Arg(&count_), FUTEX_WAIT_PRIVATE, 0, 0);
      thread_waits.store(false);
      idle_ticks = 0;
      continue;
    }
    if (count_.load() != 0) idle_ticks = 0;
    struct timespec idle = {0, kIdleMs * 1'000'000L};
    (void)RawSyscall(SYS_nanosleep, Arg(&idle), 0);
    RuntimeSection section;
    for (auto& slot : slots) {
      if (ConsoleStream* stream = slot.load(std::memory_order_acquire)) stream->LetGoOfKeptLock(true);
    }
  }
}

void KeptConsoleLocks::AfterForkInChild() {
  // The parent's thread is not the child's, nor are the locks: the child's streams take their own.
  for (auto& slot : slots) slot.store(nullptr);
  count_.store(0);
  waiting_.store(0);
  thread_state.store(0);
  thread_waits.store(false);
}

}  // namespace scone::runtime
