#include "fs/recently_unlinked.h"

#include <fcntl.h>

#include <algorithm>

#include "crypto/primitives.h"
#include "os/file.h"

namespace scone::fs {
namespace {
// u64 seq | u32 count | nonce(12) | ct(count entries) | tag(16); the volume id, the sequence
// and the count are authenticated.
constexpr size_t kHeadSize = 8 + 4 + crypto::kNonceSize;
constexpr size_t kMaxListSize = kHeadSize + RecentlyUnlinked::kKept * 128 + crypto::kTagSize;
}  // namespace

void RecentlyUnlinked::Note(const FileEntry& entry) {
  std::erase_if(entries_, [&](const FileEntry& e) { return e.file_id == entry.file_id; });
  entries_.push_back(entry);
  if (entries_.size() > kKept) entries_.pop_front();
}

std::optional<FileEntry> RecentlyUnlinked::Find(const FileId& id) const {
  auto it = std::find_if(entries_.rbegin(), entries_.rend(), [&](const FileEntry& e) { return e.file_id == id; });
  if (it == entries_.rend()) return std::nullopt;
  return *it;
}

Status RecentlyUnlinked::Write(const std::string& path, const SecretBytes& key, ByteSpan volume_id,
                               uint64_t seq) const {
  ByteWriter body;
  for (const FileEntry& e : entries_) e.Encode(body);
  ByteWriter head;
  head.U64(seq);
  head.U32(static_cast<uint32_t>(entries_.size()));
  uint8_t nonce[crypto::kNonceSize];
  crypto::FreshNonce(nonce);
  head.Raw(ByteSpan(nonce, sizeof(nonce)));
  Bytes out = head.Take();
  out.resize(kHeadSize + body.bytes().size() + crypto::kTagSize);
  SCONE_RETURN_IF_ERROR(crypto::Aes256Gcm(key.Clone()).Seal(
      ByteSpan(nonce, sizeof(nonce)), {volume_id, ByteSpan(out.data(), 12)}, body.bytes(), out.data() + kHeadSize,
      out.data() + kHeadSize + body.bytes().size()));
  // Not through a link put in its place (a program running as root overwrote the link's target),
  // and not into a FIFO (the open waited for a reader forever: hostile findings).
  SCONE_ASSIGN_OR_RETURN(os::File f, os::OpenRegularFile(path, O_WRONLY | O_CREAT | O_NOFOLLOW));
  SCONE_RETURN_IF_ERROR(f.WriteAt(0, out));
  return f.Truncate(out.size());
}

void RecentlyUnlinked::Load(const std::string& path, const SecretBytes& key, ByteSpan volume_id, uint64_t seq) {
  entries_.clear();
  auto data = os::ReadWholeRegularFile(path, kMaxListSize);
  if (!data.ok() || data->size() < kHeadSize + crypto::kTagSize) return;
  ByteReader head(*data);
  uint64_t written_seq;
  uint32_t count;
  if (!head.U64(&written_seq) || !head.U32(&count) || written_seq != seq || count > kKept) return;
  const size_t body_size = data->size() - kHeadSize - crypto::kTagSize;
  Bytes body(body_size);
  if (!crypto::Aes256Gcm(key.Clone())
           .Open(ByteSpan(data->data() + 12, crypto::kNonceSize), {volume_id, ByteSpan(data->data(), 12)},
                 ByteSpan(data->data() + kHeadSize, body_size), body.data(), data->data() + kHeadSize + body_size)
           .ok()) {
    return;
  }
  ByteReader r(body);
  for (uint32_t i = 0; i < count; ++i) {
    FileEntry e;
    if (!FileEntry::Decode(r, &e)) {
      entries_.clear();
      return;
    }
    entries_.push_back(e);
  }
  if (!r.done()) entries_.clear();
}

}  // namespace scone::fs
