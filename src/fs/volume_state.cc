#include "fs/volume_state.h"

#include <set>

namespace scone::fs {

void FileEntry::Encode(ByteWriter& w) const {
  w.Raw(file_id);
  w.U8(static_cast<uint8_t>(region));
  w.U64(size);
  w.Raw(root);
}

bool FileEntry::Decode(ByteReader& r, FileEntry* out) {
  uint8_t region;
  if (!r.Raw(out->file_id) || !r.U8(&region) || !r.U64(&out->size) || !r.Raw(out->root)) {
    return false;
  }
  if (region != static_cast<uint8_t>(Region::kEncrypted) &&
      region != static_cast<uint8_t>(Region::kAuthenticated)) {
    return false;
  }
  out->region = static_cast<Region>(region);
  return true;
}

void VolumeState::Encode(ByteWriter& w) const {
  w.Raw(volume_id);
  rules.Encode(w);
  w.U64(files.size());
  for (const auto& [path, entry] : files) {
    w.Str(path);
    entry.Encode(w);
  }
}

bool VolumeState::Decode(ByteReader& r, VolumeState* out) {
  uint64_t count;
  if (!r.Raw(out->volume_id) || !RegionRules::Decode(r, &out->rules) || !r.U64(&count)) {
    return false;
  }
  out->files.clear();
  for (uint64_t i = 0; i < count; ++i) {
    std::string path;
    FileEntry entry;
    if (!r.Str(&path, 4096) || !FileEntry::Decode(r, &entry)) return false;
    out->files.emplace(std::move(path), entry);
  }
  return true;
}

VolumeTag VolumeState::Tag(const SecretBytes& tag_key) const {
  ByteWriter w;
  static constexpr char kLabel[] = "scone-volume-tag-v1";
  w.Raw(AsBytes(kLabel));
  Encode(w);
  return crypto::HmacSha256(tag_key, {w.bytes()});
}

bool VolumeState::HasLinks() const {
  std::set<FileId> seen;
  for (const auto& [path, entry] : files) {
    if (!seen.insert(entry.file_id).second) return true;
  }
  return false;
}

bool VolumeState::NamesAgree() const {
  std::map<FileId, const FileEntry*> first;
  for (const auto& [path, entry] : files) {
    auto [it, inserted] = first.emplace(entry.file_id, &entry);
    if (!inserted && !(*it->second == entry)) return false;
  }
  return true;
}

}  // namespace scone::fs
