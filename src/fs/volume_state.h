// The authenticated state of a volume: its identity, its region rules and, for every protected
// file, the file's identity, region, plaintext size and root. The volume tag is an HMAC over
// exactly this (not over bookkeeping such as the journal position), so it names the contents.
#pragma once

#include <map>
#include <string>

#include "common/bytes.h"
#include "crypto/primitives.h"
#include "fs/format.h"
#include "fs/region_rules.h"

namespace scone::fs {

struct FileEntry {
  FileId file_id{};
  Region region = Region::kEncrypted;
  uint64_t size = 0;
  Root root{};

  bool operator==(const FileEntry&) const = default;
  void Encode(ByteWriter& w) const;
  static bool Decode(ByteReader& r, FileEntry* out);
};

using VolumeTag = crypto::Hash;

struct VolumeState {
  std::array<uint8_t, 16> volume_id{};
  RegionRules rules;
  std::map<std::string, FileEntry> files;  // normalized path -> entry

  void Encode(ByteWriter& w) const;
  static bool Decode(ByteReader& r, VolumeState* out);

  // HMAC over the canonical encoding (files in path order).
  VolumeTag Tag(const SecretBytes& tag_key) const;

};

}  // namespace scone::fs
