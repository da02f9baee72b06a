#include "fs/merkle_tree.h"

#include <gtest/gtest.h>

#include <random>

namespace scone::fs {
namespace {

crypto::Hash LeafValue(size_t i, int version) {
  std::string s = std::to_string(i) + "/" + std::to_string(version);
  return crypto::Sha256({AsBytes(s)});
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

TEST(MerkleTreeTest, IncrementalUpdatesMatchRebuild) {
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
      leaves[i] = LeafValue(i, step);
      t.SetLeaf(i, leaves[i]);
    }
    if (rng() % 3 == 0) ASSERT_EQ(t.Root(), FreshRoot(leaves)) << "step " << step;
  }
  EXPECT_EQ(t.Root(), FreshRoot(leaves));
}

}  // namespace
}  // namespace scone::fs
