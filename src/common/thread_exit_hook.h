// Per-thread clean-up at thread exit that never allocates for the thread.
//
// A C++ thread_local with a destructor registers itself on first use through
// __cxa_thread_atexit, which allocates, and glibc aborts the whole process when that allocation
// fails ("failed to register TLS destructor"): a program that had used up its memory (ulimit -v)
// died at the first write of a thread that had not written before. A pthread key made once
// costs the thread nothing for the first 32 keys of the process, and a failure to arm it only
// leaves the thread's state to the process's exit.
#pragma once

#include <pthread.h>

namespace scone {

class ThreadExitHook {
 public:
  // `release` runs on an exiting thread that armed the hook, after C++ thread-local
  // destructors, in the order the hooks were made.
  explicit ThreadExitHook(void (*release)());
  ThreadExitHook(const ThreadExitHook&) = delete;
  ThreadExitHook& operator=(const ThreadExitHook&) = delete;

  // Arms the hook for the calling thread; cheap once armed.
  void Arm() {
    if (have_key_ && pthread_getspecific(key_) == nullptr) ArmSlow();
  }

 private:
  void ArmSlow();

  void (*release_)() = nullptr;
  pthread_key_t key_{};
  bool have_key_ = false;
};

}  // namespace scone
