#include "fs/merkle_tree.h"

#include <algorithm>

namespace scone::fs {

void MerkleTree::Resize(size_t leaves) {
  size_t old = leaf_count();
  if (old == leaves) return;
  // Resize every level in place. The only nodes whose value changes are above new leaves and on
  // the path of the last leaf (old or new), where a lone child may gain or lose its sibling.
  size_t n = leaves;
  size_t level = 0;
  do {
    if (level == levels_.size()) levels_.emplace_back();
    levels_[level].resize(n, crypto::Hash{});
    ++level;
    n = (n + 1) / 2;
  } while (levels_[level - 1].size() > 1);
  levels_.resize(level);
  std::erase_if(dirty_leaves_, [&](size_t i) { return i >= leaves; });
  if (leaves == 0) return;
  for (size_t i = old; i < leaves; ++i) dirty_leaves_.insert(i);
  dirty_leaves_.insert(std::min(old, leaves) == 0 ? 0 : std::min(old, leaves) - 1);
}

void MerkleTree::SetLeaf(size_t index, const crypto::Hash& hash) {
  levels_[0][index] = hash;
  dirty_leaves_.insert(index);
}

crypto::Hash MerkleTree::Root() {
  if (leaf_count() == 0) return crypto::Hash{};
  std::set<size_t> dirty = std::move(dirty_leaves_);
  dirty_leaves_.clear();
  static constexpr uint8_t kPair = 0x01, kSingle = 0x02;
  for (size_t level = 1; level < levels_.size(); ++level) {
    std::set<size_t> parents;
    for (size_t child : dirty) parents.insert(child / 2);
    const auto& below = levels_[level - 1];
    for (size_t p : parents) {
      size_t left = 2 * p;
      if (left + 1 < below.size()) {
        levels_[level][p] = crypto::Sha256({ByteSpan(&kPair, 1), below[left], below[left + 1]});
      } else {
        levels_[level][p] = crypto::Sha256({ByteSpan(&kSingle, 1), below[left]});
      }
    }
    dirty = std::move(parents);
  }
  return levels_.back()[0];
}

}  // namespace scone::fs
