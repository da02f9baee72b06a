#include "crypto/fork_gate.h"

#include <openssl/crypto.h>
#include <sched.h>

#include <atomic>

#include "common/thread_exit_hook.h"

namespace scone::crypto {
namespace {

std::atomic<int> threads_inside{0};
std::atomic<bool> closed{false};
// Initial-exec: no loader call (the runtime is preloaded, its TLS static).
__attribute__((tls_model("initial-exec"))) thread_local int depth = 0;

void Enter() {
  if (depth++ > 0) return;
  for (;;) {
    threads_inside.fetch_add(1, std::memory_order_seq_cst);
    if (!closed.load(std::memory_order_seq_cst)) return;
    threads_inside.fetch_sub(1, std::memory_order_seq_cst);
    while (closed.load(std::memory_order_acquire)) sched_yield();  // a fork's window: short
  }
}

void Leave() {
  if (--depth == 0) threads_inside.fetch_sub(1, std::memory_order_release);
}

// A thread's end with OpenSSL: its cipher contexts (key schedules cleansed), then OpenSSL's own
// per-thread state, whose release takes OpenSSL's global lock: inside the gate, and before
// OpenSSL's own key destructor (this key is made first, by InitOpenSslWithGate).
void EndThreadUse() {
  Enter();
  ReleaseThreadCryptoContexts();
  OPENSSL_thread_stop();
  Leave();
}

ThreadExitHook& EndThreadUseHook() {
  static ThreadExitHook hook(EndThreadUse);
  return hook;
}

}  // namespace

InsideOpenSsl::InsideOpenSsl() {
  Enter();
  EndThreadUseHook().Arm();
}

InsideOpenSsl::~InsideOpenSsl() { Leave(); }

void CloseGateForFork() {
  closed.store(true, std::memory_order_seq_cst);
  while (threads_inside.load(std::memory_order_seq_cst) != 0) sched_yield();
}

void OpenGateAfterFork() { closed.store(false, std::memory_order_release); }

bool GateClosedForFork() { return closed.load(std::memory_order_acquire); }

void InitOpenSslWithGate(uint64_t opts) {
  EndThreadUseHook();  // its key before OpenSSL's (fork_gate.h)
  OPENSSL_init_crypto(opts, nullptr);
}

}  // namespace scone::crypto
