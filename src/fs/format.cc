#include "fs/format.h"

#include <algorithm>

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
  return std::all_of(nonce.begin(), nonce.end(), [](uint8_t b) { return b == 0; }) &&
         std::all_of(tag.begin(), tag.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace scone::fs
