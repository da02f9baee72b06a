#include "fs/format.h"

#include <cstring>

namespace scone::fs {

const char* RegionName(Region r) {
  switch (r) {
    case Region::kEncrypted:
      return "encrypted";
    case Region::kAuthenticated:
      return "authenticated";
    case Region::kNotProtected:
      return "not-protected";
  }
  return "unknown";
}

bool ChunkEntry::IsHole() const {
  // Called on every read: word loads instead of a byte loop.
  uint64_t n0, t0, t1;
  uint32_t n1;
  std::memcpy(&n0, nonce.data(), 8);
  std::memcpy(&n1, nonce.data() + 8, 4);
  std::memcpy(&t0, tag.data(), 8);
  std::memcpy(&t1, tag.data() + 8, 8);
  return (n0 | n1 | t0 | t1) == 0;
}

}  // namespace scone::fs
