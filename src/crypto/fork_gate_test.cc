#include "crypto/fork_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "crypto/primitives.h"

namespace scone::crypto {
namespace {

void WaitFor(const std::atomic<bool>& flag) {
  while (!flag.load()) std::this_thread::yield();
}

// A fork waits for the thread inside OpenSSL to leave, and a thread that comes while the gate is
// closed waits until the fork is done.
TEST(ForkGateTest, AForkWaitsForThreadsInsideAndHoldsNewOnesAtTheDoor) {
  std::atomic<bool> inside{false}, let_go{false}, closed{false}, entered{false};
  std::thread holder([&] {
    InsideOpenSsl in;
    inside = true;
    WaitFor(let_go);
  });
  WaitFor(inside);
  std::thread fork([&] {
    CloseGateForFork();
    closed = true;
  });
  while (!GateClosedForFork()) std::this_thread::yield();
  // The gate is closed, and the holder is still inside: the fork cannot be past it.
  EXPECT_FALSE(closed.load());
  std::thread comer([&] {
    InsideOpenSsl in;
    entered = true;
  });
  let_go = true;
  fork.join();  // the holder left the gate (its thread's exit passes the gate too: joined after)
  EXPECT_TRUE(closed.load());
  // Closed until the fork is done: the newcomer is at the door.
  EXPECT_FALSE(entered.load());
  OpenGateAfterFork();
  holder.join();
  comer.join();
  EXPECT_TRUE(entered.load());
}

// Nesting passes (a key made inside a primitive), and the primitives go on across closes and
// opens with another thread using them all along: a hang fails the test.
TEST(ForkGateTest, PrimitivesNestAndGoOnAcrossForks) {
  std::atomic<bool> stop{false};
  std::atomic<int> hashed{0};
  std::thread user([&] {
    while (!stop) {
      SecretBytes key = RandomKey();
      (void)Hkdf(key, {}, "nested", 32);
      ++hashed;
    }
  });
  for (int i = 0; i < 100; ++i) {
    CloseGateForFork();
    OpenGateAfterFork();
    const int after = hashed.load();
    while (hashed.load() == after) std::this_thread::yield();
  }
  stop = true;
  user.join();
}

}  // namespace
}  // namespace scone::crypto
