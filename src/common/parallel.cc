#include "common/parallel.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

extern "C" int __cxa_atexit(void (*fn)(void*), void* arg, void* dso_handle);

namespace scone {
namespace {

std::atomic<void (*)()> helper_start_hook{nullptr};
std::atomic<bool> no_more_helpers{false};


// A job is handed over through `state_`: kIdle -> kQueued (caller) -> kDone (helper) -> kIdle
// (caller). Both sides spin briefly before sleeping, because a streaming reader or writer hands
// over a job every few dozen microseconds and a futex wake-up costs about as much.
class Helper {
 public:
  bool TrySubmit(const std::function<void(size_t, size_t)>* fn, size_t begin, size_t end) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || !EnsureStarted()) return false;
    int idle = kIdle;
    if (!state_.compare_exchange_strong(idle, kClaimed)) return false;
    job_ = fn;
    begin_ = begin;
    end_ = end;
    state_.store(kQueued, std::memory_order_release);
    cv_.notify_one();
    return true;
  }

  void Wait() {
    if (!SpinUntil(state_, kDone)) {
      std::unique_lock lock(mu_);
      done_cv_.wait(lock, [&] { return state_.load(std::memory_order_acquire) == kDone; });
    }
    state_.store(kIdle, std::memory_order_release);
  }

  // At exit: the helper leaves its loop and is joined, so its thread-local state (cipher
  // contexts holding key schedules) is destroyed, and nothing restarts it.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
      if (!started_) return;
      cv_.notify_all();
    }
    pthread_join(thread_, nullptr);
    started_ = false;
  }

  // In a forked child the thread is gone and the mutex may be held by a thread that no longer
  // exists: start from scratch, once per process (a second reset could strand a helper the child
  // started meanwhile).
  void ResetAfterFork() {
    const pid_t pid = getpid();
    if (reset_in_ == pid) return;
    reset_in_ = pid;
    new (&mu_) std::mutex();
    new (&cv_) std::condition_variable();
    new (&done_cv_) std::condition_variable();
    started_ = false;
    stopped_ = false;
    state_.store(kIdle);
  }

 private:
  enum { kIdle, kClaimed, kQueued, kDone };
  // Spin for at most ~100 µs: long enough to bridge back-to-back jobs, short enough not to take
  // the core (or its hyperthread sibling) from the work the caller does between jobs.
  static bool SpinUntil(const std::atomic<int>& state, int want) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (state.load(std::memory_order_acquire) == want) return true;
        __builtin_ia32_pause();
      }
      if (std::chrono::steady_clock::now() > deadline) return false;
    }
  }

  bool EnsureStarted() {
    if (started_) return true;
    if (stopped_ || no_more_helpers.load(std::memory_order_relaxed)) return false;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&thread_, nullptr, &Helper::Main, this);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (r != 0) return false;
    started_ = true;
    return true;
  }

  static void* Main(void* self) {
    if (void (*hook)() = helper_start_hook.load()) hook();
    static_cast<Helper*>(self)->Loop();
    return nullptr;
  }

  void Loop() {
    for (;;) {
      if (!SpinUntil(state_, kQueued)) {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopped_ || state_.load(std::memory_order_acquire) == kQueued; });
        if (stopped_ && state_.load(std::memory_order_acquire) != kQueued) return;
      }
      (*job_)(begin_, end_);
      {
        std::lock_guard lock(mu_);
        state_.store(kDone, std::memory_order_release);
      }
      done_cv_.notify_one();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  bool started_ = false;
  bool stopped_ = false;
  pthread_t thread_{};
  std::atomic<int> state_{kIdle};
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  size_t begin_ = 0, end_ = 0;
  pid_t reset_in_ = 0;
};

Helper* helper_if_created = nullptr;

Helper& TheHelper() {
  // Never destroyed (only stopped at exit): static destructors may still call ParallelFor.
  static Helper* helper = [] {
    auto* h = new Helper();
    helper_if_created = h;
    pthread_atfork(nullptr, nullptr, [] { TheHelper().ResetAfterFork(); });
    // Registered without a DSO handle: it runs in exit() itself (before OpenSSL's clean-up,
    // registered earlier), also when this code lives in a preloaded library.
    __cxa_atexit([](void*) { TheHelper().Stop(); }, nullptr, nullptr);
    return h;
  }();
  return *helper;
}

bool MoreThanOneCore() {
  static const bool multi = sysconf(_SC_NPROCESSORS_ONLN) > 1;
  return multi;
}

}  // namespace

void StopParallelHelper() { TheHelper().Stop(); }

void ResetParallelHelperInChild() {
  if (helper_if_created != nullptr) helper_if_created->ResetAfterFork();
}

void SetHelperThreadStartHook(void (*hook)()) { helper_start_hook.store(hook); }

void StartNoMoreHelpers() { no_more_helpers.store(true, std::memory_order_relaxed); }

void ParallelFor(size_t count, size_t min_parallel_count,
                 const std::function<void(size_t, size_t)>& fn) {
  if (count == 0) return;
  if (count < min_parallel_count || !MoreThanOneCore()) {
    fn(0, count);
    return;
  }
  size_t half = count / 2;
  Helper& helper = TheHelper();
  if (!helper.TrySubmit(&fn, half, count)) {
    fn(0, count);
    return;
  }
  fn(0, half);
  helper.Wait();
}

}  // namespace scone

namespace scone {

void ParallelPipeline(size_t count, size_t block, const std::function<void(size_t, size_t)>& work,
                      const std::function<void(size_t, size_t)>& consume) {
  if (count == 0) return;
  const size_t blocks = (count + block - 1) / block;
  auto range_end = [&](size_t b) { return std::min(count, (b + 1) * block); };
  std::atomic<size_t> next{0};
  std::unique_ptr<std::atomic<bool>[]> done(new std::atomic<bool>[blocks]);
  for (size_t b = 0; b < blocks; ++b) done[b].store(false, std::memory_order_relaxed);
  // Claims and works on blocks until none is left; returns false if there was none to claim.
  auto work_one = [&]() {
    size_t b = next.fetch_add(1, std::memory_order_relaxed);
    if (b >= blocks) return false;
    work(b * block, range_end(b));
    done[b].store(true, std::memory_order_release);
    return true;
  };
  const std::function<void(size_t, size_t)> helper_job = [&](size_t, size_t) {
    while (work_one()) {
    }
  };
  Helper& helper = TheHelper();
  const bool helped = blocks > 1 && MoreThanOneCore() && helper.TrySubmit(&helper_job, 0, 0);
  size_t consumed = 0;
  while (consumed < blocks) {
    size_t ready = consumed;
    while (ready < blocks && done[ready].load(std::memory_order_acquire)) ++ready;
    if (ready > consumed) {
      consume(consumed * block, range_end(ready - 1));
      consumed = ready;
    } else if (!work_one()) {
      __builtin_ia32_pause();  // the helper is finishing the next block in order
    }
  }
  if (helped) helper.Wait();
}

}  // namespace scone

namespace scone {

void ParallelAfterInOrder(size_t count, size_t block,
                          const std::function<void(size_t, size_t)>& produce,
                          const std::function<void(size_t, size_t)>& work) {
  if (count == 0) return;
  const size_t blocks = (count + block - 1) / block;
  auto range_end = [&](size_t b) { return std::min(count, (b + 1) * block); };
  std::atomic<size_t> produced{0};  // blocks produce() is done with
  std::atomic<size_t> next{0};      // next block to claim for work()
  const std::function<void(size_t, size_t)> helper_job = [&](size_t, size_t) {
    for (;;) {
      size_t b = next.fetch_add(1, std::memory_order_relaxed);
      if (b >= blocks) return;
      while (produced.load(std::memory_order_acquire) <= b) __builtin_ia32_pause();
      work(b * block, range_end(b));
    }
  };
  Helper& helper = TheHelper();
  const bool helped = blocks > 1 && MoreThanOneCore() && helper.TrySubmit(&helper_job, 0, 0);
  for (size_t b = 0; b < blocks; ++b) {
    produce(b * block, range_end(b));
    produced.store(b + 1, std::memory_order_release);
  }
  for (size_t b = next.fetch_add(1, std::memory_order_relaxed); b < blocks;
       b = next.fetch_add(1, std::memory_order_relaxed)) {
    work(b * block, range_end(b));
  }
  if (helped) helper.Wait();
}

}  // namespace scone
