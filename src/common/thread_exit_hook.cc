#include "common/thread_exit_hook.h"

namespace scone {
namespace {

// The key's value is the hook's release function: glibc passes it back at thread exit.
void RunRelease(void* release) { reinterpret_cast<void (*)()>(release)(); }

}  // namespace

ThreadExitHook::ThreadExitHook(void (*release)()) : release_(release) {
  have_key_ = pthread_key_create(&key_, RunRelease) == 0;
}

void ThreadExitHook::ArmSlow() {
  // ENOMEM (a key past the first 32 needs a block per thread) leaves it unarmed: tried again at
  // the next use, and at worst the thread's state is freed with the process.
  (void)pthread_setspecific(key_, reinterpret_cast<void*>(release_));
}

}  // namespace scone
