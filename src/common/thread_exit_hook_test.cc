#include "common/thread_exit_hook.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace scone {
namespace {

std::atomic<int> released{0};
void CountRelease() { released.fetch_add(1); }

TEST(ThreadExitHookTest, RunsOnceForEachThreadThatArmedIt) {
  static ThreadExitHook hook(CountRelease);
  released = 0;
  std::thread armed_twice([] {
    hook.Arm();
    hook.Arm();
  });
  armed_twice.join();
  EXPECT_EQ(released.load(), 1);
  std::thread not_armed([] {});
  not_armed.join();
  EXPECT_EQ(released.load(), 1);
  std::thread armed([] { hook.Arm(); });
  armed.join();
  EXPECT_EQ(released.load(), 2);
}

// The release may use what it releases again (a volume closed by a later hook seals with the
// thread's cipher contexts): arming again from inside the release runs it once more.
std::atomic<int> rounds{0};
ThreadExitHook* again_hook = nullptr;
void ReleaseAndArmOnce() {
  if (rounds.fetch_add(1) == 0) again_hook->Arm();
}

TEST(ThreadExitHookTest, ArmedDuringReleaseRunsAgain) {
  static ThreadExitHook hook(ReleaseAndArmOnce);
  again_hook = &hook;
  std::thread t([] { hook.Arm(); });
  t.join();
  EXPECT_EQ(rounds.load(), 2);
}

}  // namespace
}  // namespace scone
