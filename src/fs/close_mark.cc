#include "fs/close_mark.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include "common/bytes.h"
#include "crypto/primitives.h"
#include "os/file.h"
#include "os/syscalls.h"

namespace scone::fs {
namespace {

// magic(8) | volume id(16) | u64 applied seq | u64 last seq | u64 journal end | boot id(16) |
// HMAC-SHA256 over everything before it.
constexpr char kMagic[8] = {'S', 'C', 'O', 'N', 'E', 'C', 'M', '1'};
constexpr size_t kBodySize = 8 + 16 + 8 + 8 + 8 + 16;
constexpr size_t kMarkSize = kBodySize + crypto::kHashSize;

Bytes EncodeBody(const CloseMark& mark) {
  ByteWriter w;
  w.Raw(ByteSpan(reinterpret_cast<const uint8_t*>(kMagic), sizeof(kMagic)));
  w.Raw(mark.volume_id);
  w.U64(mark.applied_seq);
  w.U64(mark.last_seq);
  w.U64(mark.journal_end);
  w.Raw(mark.boot);
  return w.Take();
}

}  // namespace

std::optional<BootId> CurrentBootId() {
  auto text = os::ReadWholeFile("/proc/sys/kernel/random/boot_id", 64);
  if (!text.ok()) return std::nullopt;
  std::string hex;
  for (uint8_t c : *text) {
    if (c != '-' && c != '\n') hex.push_back(static_cast<char>(c));
  }
  auto id = FromHexArray<16>(hex);
  if (!id.ok()) return std::nullopt;
  return *id;
}

Status WriteCloseMark(const std::string& path, const SecretBytes& key, const CloseMark& mark) {
  Bytes out = EncodeBody(mark);
  const crypto::Hash mac = crypto::HmacSha256(key, {out});
  out.insert(out.end(), mac.begin(), mac.end());
  // (Not through a link planted there: a program running as root would truncate its target.)
  SCONE_ASSIGN_OR_RETURN(os::File f, os::OpenRegularFile(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW));
  return f.WriteAt(0, out);
}

std::optional<CloseMark> TakeCloseMark(const std::string& path, const std::function<SecretBytes()>& key) {
  auto data = os::ReadWholeRegularFile(path, kMarkSize + 1);
  if (!data.ok() && data.status().code() == Code::kNotFound) return std::nullopt;
  // (A process that may not remove it, another user's, cannot mark the volume in use either:
  // it joins a process that may.)
  if (os::Sys().unlink(path.c_str()) != 0 && errno != ENOENT) return std::nullopt;
  if (!data.ok() || data->size() != kMarkSize) return std::nullopt;
  CloseMark mark;
  ByteReader r(ByteSpan(data->data(), kBodySize));
  uint8_t magic[8];
  if (!r.Raw(magic) || !std::equal(magic, magic + 8, kMagic) || !r.Raw(mark.volume_id) || !r.U64(&mark.applied_seq) ||
      !r.U64(&mark.last_seq) || !r.U64(&mark.journal_end) || !r.Raw(mark.boot)) {
    return std::nullopt;
  }
  const crypto::Hash mac = crypto::HmacSha256(key(), {ByteSpan(data->data(), kBodySize)});
  if (!crypto::ConstantTimeEquals(mac, ByteSpan(data->data() + kBodySize, crypto::kHashSize))) return std::nullopt;
  return mark;
}

}  // namespace scone::fs
