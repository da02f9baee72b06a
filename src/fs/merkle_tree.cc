#include "fs/merkle_tree.h"

#include <array>
#include <bit>

namespace scone::fs {
namespace {

constexpr uint8_t kPair = 0x01;
constexpr unsigned kMaxDepth = 64;

crypto::Hash Parent(const crypto::Hash& left, const crypto::Hash& right) {
  return crypto::Sha256({ByteSpan(&kPair, 1), left, right});
}

// hole[l]: the hash of a subtree of 2^l hole leaves.
const std::array<crypto::Hash, kMaxDepth + 1>& HoleNodes() {
  static const auto holes = [] {
    std::array<crypto::Hash, kMaxDepth + 1> h{};
    for (unsigned l = 1; l <= kMaxDepth; ++l) h[l] = Parent(h[l - 1], h[l - 1]);
    return h;
  }();
  return holes;
}

unsigned DepthFor(uint64_t leaves) { return leaves <= 1 ? 0 : std::bit_width(leaves - 1); }

}  // namespace

const crypto::Hash& MerkleTree::HoleLeaf() { return HoleNodes()[0]; }

const crypto::Hash& MerkleTree::Node(unsigned level, uint64_t index) const {
  const auto& nodes = levels_[level];
  auto it = nodes.find(index);
  return it == nodes.end() ? HoleNodes()[level] : it->second;
}

void MerkleTree::Store(unsigned level, uint64_t index, const crypto::Hash& hash) {
  if (hash == HoleNodes()[level]) {
    levels_[level].erase(index);
  } else {
    levels_[level].insert_or_assign(index, hash);
  }
}

size_t MerkleTree::stored_nodes() const {
  size_t n = 0;
  for (const auto& level : levels_) n += level.size();
  return n;
}

bool MerkleTree::IsHoleLeaf(uint64_t index) const {
  return levels_.empty() || levels_[0].count(index) == 0;
}

void MerkleTree::Resize(uint64_t leaves) {
  if (leaves == leaves_) return;
  if (leaves == 0) {
    *this = MerkleTree();
    return;
  }
  const unsigned old_depth = levels_.empty() ? 0 : static_cast<unsigned>(levels_.size() - 1);
  const unsigned depth = DepthFor(leaves);
  if (leaves < leaves_) {
    // Nodes that cover only leaves past the new end become holes; the one node per level that
    // straddles the end lies on the path of the new last leaf.
    for (unsigned l = 0; l < levels_.size(); ++l) {
      const uint64_t first_gone = ((leaves - 1) >> l) + 1;
      std::erase_if(levels_[l], [&](const auto& node) { return node.first >= first_gone; });
    }
    dirty_leaves_.erase(dirty_leaves_.lower_bound(leaves), dirty_leaves_.end());
    dirty_leaves_.insert(leaves - 1);
  }
  levels_.resize(depth + 1);
  // A new level above the old root: only index 0 can differ from a hole, on the path of leaf 0.
  if (depth > old_depth || leaves_ == 0) dirty_leaves_.insert(0);
  leaves_ = leaves;
}

void MerkleTree::SetLeaf(uint64_t index, const crypto::Hash& hash) {
  Store(0, index, hash);
  dirty_leaves_.insert(index);
}

crypto::Hash MerkleTree::Root() {
  if (leaves_ == 0) return crypto::Hash{};
  std::set<uint64_t> dirty = std::move(dirty_leaves_);
  dirty_leaves_.clear();
  for (unsigned level = 1; level < levels_.size(); ++level) {
    std::set<uint64_t> parents;
    for (uint64_t child : dirty) parents.insert(child / 2);
    for (uint64_t p : parents) Store(level, p, Parent(Node(level - 1, 2 * p), Node(level - 1, 2 * p + 1)));
    dirty = std::move(parents);
  }
  return Node(static_cast<unsigned>(levels_.size() - 1), 0);
}

}  // namespace scone::fs
