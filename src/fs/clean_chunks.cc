#include "fs/clean_chunks.h"

#include <cstring>

#include "crypto/secret.h"

namespace scone::fs {

CleanChunks::~CleanChunks() {
  if (slots_ != nullptr) Wipe(slots_->data(), sizeof(*slots_));
}

bool CleanChunks::CopyOut(uint64_t chunk, const ChunkEntry& entry, size_t from, size_t length,
                          uint8_t* out) const {
  if (chunk >= kMaxChunks || from + length > kChunkSize) return false;
  std::lock_guard lock(mu_);
  if (slots_ == nullptr) return false;
  const Slot& slot = (*slots_)[chunk];
  if (!slot.used || !(slot.entry == entry)) return false;
  std::memcpy(out, slot.plain.data() + from, length);
  return true;
}

void CleanChunks::Keep(uint64_t chunk, const ChunkEntry& entry, const uint8_t* plain) {
  if (chunk >= kMaxChunks || entry.IsHole()) return;
  std::lock_guard lock(mu_);
  if (slots_ == nullptr) slots_ = std::make_unique<std::array<Slot, kMaxChunks>>();
  Slot& slot = (*slots_)[chunk];
  slot.entry = entry;
  std::memcpy(slot.plain.data(), plain, kChunkSize);
  slot.used = true;
}

}  // namespace scone::fs
