#include "fs/buffered_room.h"

#include <gtest/gtest.h>

namespace scone::fs {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

TEST(BufferedRoom, PromisesWhatTheDiskHoldsBesidesTheMargin) {
  BufferedRoom room;
  uint64_t free = 3 * kMiB;
  auto disk = [&]() -> Result<uint64_t> { return free; };
  EXPECT_TRUE(room.Promise(kMiB, disk));
  EXPECT_TRUE(room.Promise(kMiB, disk));
  // 2 MiB promised, 1 MiB of margin: not one byte more.
  EXPECT_FALSE(room.Promise(1, disk));
  EXPECT_EQ(room.promised(), 2 * kMiB);
  room.Release(kMiB);
  EXPECT_TRUE(room.Promise(4096, disk));
}

TEST(BufferedRoom, AsksTheDiskAgainWhileItIsSmall) {
  BufferedRoom room;
  uint64_t free = 8 * kMiB;
  int asked = 0;
  auto disk = [&]() -> Result<uint64_t> {
    ++asked;
    return free;
  };
  EXPECT_TRUE(room.Promise(kMiB, disk));
  room.Release(kMiB);
  free = kMiB / 2;  // another program filled the disk meanwhile
  EXPECT_FALSE(room.Promise(4096, disk));
  EXPECT_EQ(asked, 2);
}

TEST(BufferedRoom, AnUnansweredAskPromises) {
  BufferedRoom room;
  EXPECT_TRUE(room.Promise(kMiB, []() -> Result<uint64_t> { return IoError("statfs", EIO); }));
  EXPECT_EQ(room.promised(), kMiB);
  room.Release(2 * kMiB);  // never below zero
  EXPECT_EQ(room.promised(), 0u);
}

}  // namespace
}  // namespace scone::fs
