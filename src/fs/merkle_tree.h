// A binary Merkle tree over page hashes, kept in memory only: it is rebuilt from the pages when a
// file is opened and updated along one path per changed page, so committing a change costs
// O(changed pages * log pages) hashes however large the file is.
//
// Node hash: SHA-256(0x01 || left || right), or SHA-256(0x02 || only_child) for the last node of
// an odd level. The root of an empty tree is all zeros. Not thread-safe: the owning file's lock
// protects it.
#pragma once

#include <set>
#include <vector>

#include "crypto/primitives.h"

namespace scone::fs {

class MerkleTree {
 public:
  size_t leaf_count() const { return levels_.empty() ? 0 : levels_[0].size(); }

  // Grows (new leaves are zero until set) or shrinks the tree.
  void Resize(size_t leaves);
  void SetLeaf(size_t index, const crypto::Hash& hash);
  // Recomputes the nodes above changed leaves and returns the root.
  crypto::Hash Root();

 private:
  std::vector<std::vector<crypto::Hash>> levels_;  // levels_[0]: leaves; back(): the root
  std::set<size_t> dirty_leaves_;
};

}  // namespace scone::fs
