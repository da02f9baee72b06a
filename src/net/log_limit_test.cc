#include "net/log_limit.h"

#include <gtest/gtest.h>

namespace scone::net {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

TEST(LogLimitTest, FirstLinesOfASecondThenOneCountOfTheRest) {
  LogLimit limit(3);
  uint64_t held = 99;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limit.Allow("server rule A", 5 * kSecond + i, &held));
    EXPECT_EQ(held, 0u);
  }
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(limit.Allow("server rule A", 5 * kSecond + 100 + i, &held));
    EXPECT_EQ(held, 0u);
  }
  // Another rule has its own budget.
  EXPECT_TRUE(limit.Allow("client rule B", 5 * kSecond + 200, &held));
  EXPECT_EQ(held, 0u);
  // The next second: the first line carries the count of those held back.
  EXPECT_TRUE(limit.Allow("server rule A", 6 * kSecond, &held));
  EXPECT_EQ(held, 10u);
  EXPECT_TRUE(limit.Allow("server rule A", 6 * kSecond + 1, &held));
  EXPECT_EQ(held, 0u);
  // Much later, after a quiet spell: no count left over.
  EXPECT_TRUE(limit.Allow("server rule A", 60 * kSecond, &held));
  EXPECT_EQ(held, 0u);
}

}  // namespace
}  // namespace scone::net
