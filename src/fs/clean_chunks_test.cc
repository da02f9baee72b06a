#include "fs/clean_chunks.h"

#include <gtest/gtest.h>

#include <vector>

#include "testing/chunk_entries.h"

namespace scone::fs {
namespace {

using testing::SealedEntry;

std::vector<uint8_t> Chunk(uint8_t fill) { return std::vector<uint8_t>(kChunkSize, fill); }

TEST(CleanChunksTest, AKeptChunkIsGivenOnlyUnderItsEntry) {
  CleanChunks clean;
  std::vector<uint8_t> out(100, 0);
  EXPECT_FALSE(clean.CopyOut(0, SealedEntry(1), 0, 100, out.data()));  // nothing kept yet
  clean.Keep(0, SealedEntry(1), Chunk('a').data());
  ASSERT_TRUE(clean.CopyOut(0, SealedEntry(1), 10, 100, out.data()));
  EXPECT_EQ(out, std::vector<uint8_t>(100, 'a'));
  // The chunk sealed again (a write, another process's record): another nonce and tag.
  EXPECT_FALSE(clean.CopyOut(0, SealedEntry(2), 0, 100, out.data()));
  ChunkEntry same_tag_other_nonce = SealedEntry(1);
  same_tag_other_nonce.nonce[0] ^= 1;
  EXPECT_FALSE(clean.CopyOut(0, same_tag_other_nonce, 0, 100, out.data()));
  // Another chunk's slot is its own.
  EXPECT_FALSE(clean.CopyOut(1, SealedEntry(1), 0, 100, out.data()));
  clean.Keep(0, SealedEntry(2), Chunk('b').data());
  EXPECT_FALSE(clean.CopyOut(0, SealedEntry(1), 0, 100, out.data()));
  ASSERT_TRUE(clean.CopyOut(0, SealedEntry(2), kChunkSize - 100, 100, out.data()));
  EXPECT_EQ(out, std::vector<uint8_t>(100, 'b'));
}

TEST(CleanChunksTest, OnlySmallFilesAndSealedChunksAreKept) {
  EXPECT_TRUE(CleanChunks::Keeps(0));
  EXPECT_TRUE(CleanChunks::Keeps(CleanChunks::kMaxChunks * kChunkSize));
  EXPECT_FALSE(CleanChunks::Keeps(CleanChunks::kMaxChunks * kChunkSize + 1));
  CleanChunks clean;
  std::vector<uint8_t> out(10);
  clean.Keep(CleanChunks::kMaxChunks, SealedEntry(1), Chunk('a').data());
  EXPECT_FALSE(clean.CopyOut(CleanChunks::kMaxChunks, SealedEntry(1), 0, 10, out.data()));
  clean.Keep(1, ChunkEntry{}, Chunk('a').data());  // a hole has no ciphertext to stand for
  EXPECT_FALSE(clean.CopyOut(1, ChunkEntry{}, 0, 10, out.data()));
  clean.Keep(1, SealedEntry(3), Chunk('c').data());
  EXPECT_FALSE(clean.CopyOut(1, SealedEntry(3), kChunkSize - 5, 10, out.data()));  // past the chunk
}

}  // namespace
}  // namespace scone::fs
