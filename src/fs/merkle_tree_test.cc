#include "fs/merkle_tree.h"

#include <gtest/gtest.h>

#include <random>

namespace scone::fs {
namespace {

crypto::Hash LeafValue(size_t i, int version) {
  std::string s = std::to_string(i) + "/" + std::to_string(version);
  return crypto::Sha256({AsBytes(s)});
}

// The root of 2^30 hole leaves: the hole hash of level 30, computed independently.
crypto::Hash DenseHoleRoot30() {
  static constexpr uint8_t kPair = 0x01;
  crypto::Hash h = MerkleTree::HoleLeaf();
  for (int l = 0; l < 30; ++l) h = crypto::Sha256({ByteSpan(&kPair, 1), h, h});
  return h;
}

// A reference built level by level over every leaf, holes included: what the sparse tree must
// equal.
crypto::Hash DenseRoot(std::vector<crypto::Hash> level) {
  if (level.empty()) return crypto::Hash{};
  size_t width = 1;
  while (width < level.size()) width *= 2;
  level.resize(width, MerkleTree::HoleLeaf());
  static constexpr uint8_t kPair = 0x01;
  while (level.size() > 1) {
    std::vector<crypto::Hash> up;
    for (size_t i = 0; i < level.size(); i += 2) {
      up.push_back(crypto::Sha256({ByteSpan(&kPair, 1), level[i], level[i + 1]}));
    }
    level = std::move(up);
  }
  return level[0];
}

// Builds a tree from scratch: the reference for incremental updates.
crypto::Hash FreshRoot(const std::vector<crypto::Hash>& leaves) {
  MerkleTree t;
  t.Resize(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) t.SetLeaf(i, leaves[i]);
  return t.Root();
}

TEST(MerkleTreeTest, EmptyRootIsZero) {
  MerkleTree t;
  EXPECT_EQ(t.Root(), crypto::Hash{});
}

TEST(MerkleTreeTest, EveryLeafAndItsPositionMatter) {
  std::vector<crypto::Hash> leaves;
  for (size_t i = 0; i < 5; ++i) leaves.push_back(LeafValue(i, 0));
  crypto::Hash root = FreshRoot(leaves);
  for (size_t i = 0; i < leaves.size(); ++i) {
    auto changed = leaves;
    changed[i] = LeafValue(i, 1);
    EXPECT_NE(FreshRoot(changed), root) << i;
  }
  auto swapped = leaves;
  std::swap(swapped[1], swapped[2]);
  EXPECT_NE(FreshRoot(swapped), root);
  auto shorter = leaves;
  shorter.pop_back();
  EXPECT_NE(FreshRoot(shorter), root);
}

TEST(MerkleTreeTest, SparseTreeEqualsTheDenseReferenceWithHoles) {
  std::mt19937_64 rng(7);
  for (size_t n : {1, 2, 3, 5, 8, 9, 31, 64, 100}) {
    std::vector<crypto::Hash> leaves(n, MerkleTree::HoleLeaf());
    MerkleTree t;
    t.Resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (rng() % 3 == 0) continue;  // a hole page
      leaves[i] = LeafValue(i, 0);
      t.SetLeaf(i, leaves[i]);
    }
    EXPECT_EQ(t.Root(), DenseRoot(leaves)) << n << " leaves";
  }
}

TEST(MerkleTreeTest, HolesCostNoMemoryAtAnySize) {
  // 2^30 pages: a 600 TiB file. Two pages hold data; the tree stores their paths and no more.
  const uint64_t n = uint64_t{1} << 30;
  MerkleTree t;
  t.Resize(n);
  EXPECT_EQ(t.Root(), DenseHoleRoot30());
  t.SetLeaf(12345, LeafValue(1, 0));
  t.SetLeaf(n - 1, LeafValue(2, 0));
  crypto::Hash root = t.Root();
  EXPECT_LE(t.stored_nodes(), 2u * 31u);
  EXPECT_FALSE(t.IsHoleLeaf(12345));
  EXPECT_TRUE(t.IsHoleLeaf(12346));
  // A leaf set back to a hole is dropped again, with the nodes above it.
  t.SetLeaf(12345, MerkleTree::HoleLeaf());
  t.SetLeaf(n - 1, MerkleTree::HoleLeaf());
  EXPECT_NE(t.Root(), root);
  EXPECT_EQ(t.Root(), DenseHoleRoot30());
  EXPECT_EQ(t.stored_nodes(), 0u);
}

TEST(MerkleTreeTest, ShrinkingDropsLeavesAndGrowingBackGivesHoles) {
  MerkleTree t;
  t.Resize(300);
  for (size_t i = 0; i < 300; ++i) t.SetLeaf(i, LeafValue(i, 0));
  t.Root();
  t.Resize(70);
  t.Resize(300);  // the leaves past 70 come back as holes, not as they were
  std::vector<crypto::Hash> expected(300, MerkleTree::HoleLeaf());
  for (size_t i = 0; i < 70; ++i) expected[i] = LeafValue(i, 0);
  EXPECT_EQ(t.Root(), DenseRoot(expected));
}

TEST(MerkleTreeTest, IncrementalUpdatesMatchRebuild) {
  // Holes mixed in: a leaf set to the hole leaf must leave the tree as if never set.
  std::mt19937_64 rng(42);
  MerkleTree t;
  std::vector<crypto::Hash> leaves;
  for (int step = 0; step < 400; ++step) {
    int op = rng() % 4;
    if (op == 0) {  // resize
      size_t n = rng() % 70;
      size_t old = leaves.size();
      leaves.resize(n);
      t.Resize(n);
      for (size_t i = old; i < n; ++i) {
        leaves[i] = LeafValue(i, step);
        t.SetLeaf(i, leaves[i]);
      }
    } else if (!leaves.empty()) {
      size_t i = rng() % leaves.size();
      leaves[i] = op == 1 ? MerkleTree::HoleLeaf() : LeafValue(i, step);
      t.SetLeaf(i, leaves[i]);
    }
    if (rng() % 3 == 0) ASSERT_EQ(t.Root(), DenseRoot(leaves)) << "step " << step;
  }
  EXPECT_EQ(t.Root(), FreshRoot(leaves));
  EXPECT_EQ(t.Root(), DenseRoot(leaves));
}

}  // namespace
}  // namespace scone::fs
