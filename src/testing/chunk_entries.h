// Chunk table entries for tests: a sealed-looking entry whose nonce and tag are all `b`.
#pragma once

#include <cstdint>

#include "fs/format.h"

namespace scone::testing {

inline fs::ChunkEntry SealedEntry(uint8_t b) {
  fs::ChunkEntry e;
  e.nonce.fill(b);
  e.tag.fill(b);
  return e;
}

}  // namespace scone::testing
