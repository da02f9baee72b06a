// A sparse binary Merkle tree over page hashes, kept in memory only: it is rebuilt from the pages
// that hold data when a file is opened and updated along one path per changed page, so
// committing a change costs O(changed pages * log pages) hashes however large the file is.
//
// Shape: 2^depth leaves, the smallest power of two >= leaf_count() (depth 0 for one leaf). Every
// leaf past leaf_count(), and every page that holds no entries, is the hole leaf (all zeros, which
// no SHA-256 output is). Node hash: SHA-256(0x01 || left || right). A subtree of holes thus has a
// constant hash per level (precomputed), and only leaves and nodes that differ from it are
// stored: memory grows with the pages that hold data, not with the file's logical size. The tree
// does not bind leaf_count() (trailing holes change nothing); the file root binds the size.
// The root of an empty tree is all zeros.
//
// Not thread-safe: the owning file's lock protects it.
#pragma once

#include <cstdint>
#include <set>
#include <unordered_map>
#include <vector>

#include "crypto/primitives.h"

namespace scone::fs {

class MerkleTree {
 public:
  // The leaf of a page that holds no entries.
  static const crypto::Hash& HoleLeaf();

  uint64_t leaf_count() const { return leaves_; }
  // Grows (new leaves are holes) or shrinks the tree (leaves past the new end are dropped).
  void Resize(uint64_t leaves);
  // REQUIRES: index < leaf_count().
  void SetLeaf(uint64_t index, const crypto::Hash& hash);
  // Whether leaf `index` is the hole leaf (any index; past the end: true).
  bool IsHoleLeaf(uint64_t index) const;
  // Recomputes the nodes above changed leaves and returns the root.
  crypto::Hash Root();
  // Leaves and inner nodes held in memory (all others are holes).
  size_t stored_nodes() const;

 private:
  const crypto::Hash& Node(unsigned level, uint64_t index) const;
  void Store(unsigned level, uint64_t index, const crypto::Hash& hash);

  uint64_t leaves_ = 0;
  // [0]: leaves; [depth]: the root. Hashed, not ordered: lookups are what commits do most.
  std::vector<std::unordered_map<uint64_t, crypto::Hash>> levels_;
  std::set<uint64_t> dirty_leaves_;
};

}  // namespace scone::fs
