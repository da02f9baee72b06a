#include "fs/clean_chunks.h"

#include <cstring>

#include "crypto/secret.h"

namespace scone::fs {

CleanChunks::~CleanChunks() {
  for (auto& slot : slots_) {
    if (slot != nullptr) Wipe(slot->plain.data(), slot->plain.size());
  }
}

bool CleanChunks::CopyOut(uint64_t chunk, const ChunkEntry& entry, size_t from, size_t length,
                          uint8_t* out) const {
  if (chunk >= kMaxChunks || from + length > kChunkSize) return false;
  std::lock_guard lock(mu_);
  const Slot* slot = slots_[chunk].get();
  if (slot == nullptr || !(slot->entry == entry)) return false;
  std::memcpy(out, slot->plain.data() + from, length);
  return true;
}

void CleanChunks::Keep(uint64_t chunk, const ChunkEntry& entry, const uint8_t* plain) {
  if (chunk >= kMaxChunks || entry.IsHole()) return;
  std::lock_guard lock(mu_);
  std::unique_ptr<Slot>& slot = slots_[chunk];
  if (slot == nullptr) slot = std::make_unique<Slot>();
  slot->entry = entry;
  std::memcpy(slot->plain.data(), plain, kChunkSize);
}

}  // namespace scone::fs
