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

// Version of the base state file (`.scone/volume`). 3: every file has one name. 4: some file has
// several (hard links: paths with the same file id and entry), which releases before links
// would mishandle (a commit would update one name only), so they refuse it by its version. A
// state without links is written as 3, readable by them.
inline constexpr uint32_t kStateVersionSingleNames = kFormatVersion;
inline constexpr uint32_t kStateVersionWithLinks = 4;

struct VolumeState {
  std::array<uint8_t, 16> volume_id{};
  RegionRules rules;
  // normalized path -> entry; the names of one file (hard links) share its file id and entry
  std::map<std::string, FileEntry> files;

  void Encode(ByteWriter& w) const;
  static bool Decode(ByteReader& r, VolumeState* out);

  // HMAC over the canonical encoding (files in path order).
  VolumeTag Tag(const SecretBytes& tag_key) const;

  // Whether some file id has several names.
  bool HasLinks() const;
  // Whether every name of a file id carries the same entry (a state is malformed otherwise).
  bool NamesAgree() const;
};

}  // namespace scone::fs
