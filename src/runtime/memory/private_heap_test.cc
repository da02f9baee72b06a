#include "runtime/memory/private_heap.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace scone::runtime::memory {
namespace {

struct Block {
  unsigned char* data;
  size_t size;
  unsigned char fill;
};

bool Intact(const Block& b) {
  for (size_t i = 0; i < b.size; ++i) {
    if (b.data[i] != b.fill) return false;
  }
  return true;
}

// Random sizes (the pool's odd size classes included), alignments and reallocations; every block
// keeps its bytes until it is freed, so no two live blocks overlap.
void Churn(uint32_t seed, int rounds) {
  std::mt19937 rng(seed);
  std::vector<Block> live;
  for (int i = 0; i < rounds; ++i) {
    if (live.size() < 400 && rng() % 3 != 0) {
      const size_t size = rng() % 5 != 0 ? rng() % 300 : rng() % 300000;
      const size_t alignment = size_t{16} << (rng() % 4);
      auto* p = static_cast<unsigned char*>(rng() % 4 != 0 ? Allocate(size) : AllocateAligned(size, alignment));
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << "size " << size;
      const auto fill = static_cast<unsigned char>(rng());
      std::memset(p, fill, size);
      live.push_back({p, size, fill});
      continue;
    }
    if (live.empty()) continue;
    const size_t k = rng() % live.size();
    Block b = live[k];
    ASSERT_TRUE(Intact(b)) << "a block of " << b.size << " bytes was overwritten (round " << i << ")";
    if (rng() % 4 == 0) {
      const size_t size = 1 + rng() % 2000;
      auto* q = static_cast<unsigned char*>(Reallocate(b.data, size));
      ASSERT_NE(q, nullptr);
      for (size_t j = 0; j < std::min(size, b.size); ++j) ASSERT_EQ(q[j], b.fill) << "reallocation lost byte " << j;
      std::memset(q, b.fill, size);
      live[k] = {q, size, b.fill};
    } else {
      Free(b.data);
      live[k] = live.back();
      live.pop_back();
    }
  }
  for (const Block& b : live) {
    EXPECT_TRUE(Intact(b));
    Free(b.data);
  }
}

TEST(PrivateHeapTest, BlocksNeverOverlapAndKeepTheirBytes) { Churn(1, 100000); }

TEST(PrivateHeapTest, ThreadsShareTheHeap) {
  std::vector<std::thread> threads;
  for (uint32_t seed = 2; seed < 6; ++seed) threads.emplace_back(Churn, seed, 30000);
  for (auto& t : threads) t.join();
}

TEST(PrivateHeapTest, AlignmentAsAsked) {
  for (size_t alignment = 16; alignment <= 8192; alignment *= 2) {
    void* p = AllocateAligned(24, alignment);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u) << alignment;
    Free(p);
  }
}

TEST(PrivateHeapTest, ReallocateFollowsRealloc) {
  EXPECT_EQ(Reallocate(Allocate(10), 0), nullptr);  // freed
  void* p = Reallocate(nullptr, 5);
  ASSERT_NE(p, nullptr);
  std::memcpy(p, "abcde", 5);
  void* q = Reallocate(p, 100000);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(std::memcmp(q, "abcde", 5), 0);
  Free(q);
  Free(nullptr);
}

}  // namespace
}  // namespace scone::runtime::memory
