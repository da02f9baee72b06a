#include "fs/chunk_table.h"

#include <gtest/gtest.h>

#include <vector>

#include "testing/chunk_entries.h"

namespace scone::fs {
namespace {

using testing::SealedEntry;

std::vector<uint64_t> StoredPages(const ChunkTable& t) {
  std::vector<uint64_t> pages;
  for (const auto& [page, content] : t) pages.push_back(page);
  return pages;
}

TEST(ChunkTableTest, HolesCostNothingAndPagesComeInOrder) {
  ChunkTable t;
  const uint64_t far = uint64_t{1} << 31;  // a chunk at 8 TiB
  EXPECT_TRUE(t.Entry(far).IsHole());
  EXPECT_FALSE(t.IsDurable(far));
  t.MutableEntry(far) = SealedEntry(1);
  t.MutableEntry(5) = SealedEntry(2);
  EXPECT_EQ(StoredPages(t), (std::vector<uint64_t>{0, far / kEntriesPerPage}));
  EXPECT_FALSE(t.Entry(far).IsHole());
  EXPECT_TRUE(t.Entry(far + 1).IsHole());
  EXPECT_EQ(t.lower_bound(1)->first, far / kEntriesPerPage);
}

TEST(ChunkTableTest, TruncationKeepsDurableBitsUntilTheyAreCleared) {
  ChunkTable t;
  for (uint64_t c : {3, 200, 400}) {
    t.MutableEntry(c) = SealedEntry(static_cast<uint8_t>(c));
    t.SetDurable(c, true);
  }
  t.MutableEntry(150) = SealedEntry(9);  // sealed since the commit: not durable
  t.ClearEntriesFrom(150);
  EXPECT_TRUE(t.Entry(150).IsHole());
  EXPECT_TRUE(t.Entry(400).IsHole());
  EXPECT_FALSE(t.Entry(3).IsHole());
  // The committed entries past the cut are still what the durable state references.
  EXPECT_TRUE(t.IsDurable(200));
  EXPECT_TRUE(t.IsDurable(400));
  EXPECT_EQ(StoredPages(t), (std::vector<uint64_t>{0, 1, 2}));
  t.ClearDurableFrom(150);
  EXPECT_FALSE(t.IsDurable(400));
  EXPECT_EQ(StoredPages(t), (std::vector<uint64_t>{0}));  // pages left with nothing are dropped
  t.ClearEntry(3);
  t.SetDurable(3, false);
  EXPECT_TRUE(StoredPages(t).empty());
  EXPECT_EQ(t.Find(0), nullptr);
}

}  // namespace
}  // namespace scone::fs
