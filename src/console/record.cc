#include "console/record.h"

#include <cstdlib>
#include <cstring>

namespace scone::console {
namespace {

constexpr char kStreamKeyInfo[] = "scone console stream v1";
constexpr size_t kAadSize = kHeaderSize - crypto::kNonceSize;

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* ChannelName(Channel c) {
  switch (c) {
    case Channel::kStdin:
      return "stdin";
    case Channel::kStdout:
      return "stdout";
    case Channel::kStderr:
      return "stderr";
  }
  return "?";
}

StreamId NewStreamId() {
  StreamId id;
  crypto::RandomBytes(id);
  return id;
}

std::string ShortName(const StreamId& id) { return ToHex(ByteSpan(id.data(), 4)); }

std::unique_ptr<crypto::Aes256Gcm> StreamCipher(const SecretBytes& console_key, const StreamId& id) {
  return std::make_unique<crypto::Aes256Gcm>(crypto::Hkdf(console_key, id, kStreamKeyInfo));
}

void SealRecord(const crypto::Aes256Gcm& cipher, RecordType type, const StreamId& stream, uint64_t sequence,
                ByteSpan payload, uint8_t* out) {
  out[0] = kVersion;
  out[1] = static_cast<uint8_t>(type);
  PutU32(out + 2, static_cast<uint32_t>(payload.size()));
  std::memcpy(out + 6, stream.data(), kStreamIdSize);
  PutU64(out + 6 + kStreamIdSize, sequence);
  uint8_t* nonce = out + kAadSize;
  crypto::FreshNonce(nonce);
  uint8_t* body = out + kHeaderSize;
  Status s = cipher.Seal(ByteSpan(nonce, crypto::kNonceSize), {ByteSpan(out, kAadSize)}, payload, body,
                         body + payload.size());
  if (!s.ok()) std::abort();  // OpenSSL failing to encrypt: fail closed, never write plaintext
}

bool ParseHeader(ByteSpan bytes, RecordHeader* out, std::string* why) {
  if (bytes.size() < kHeaderSize) {
    *why = "cut short";
    return false;
  }
  if (bytes[0] != kVersion) {
    *why = "not a console record (version " + std::to_string(bytes[0]) + ")";
    return false;
  }
  if (bytes[1] < static_cast<uint8_t>(RecordType::kStart) || bytes[1] > static_cast<uint8_t>(RecordType::kEnd)) {
    *why = "not a console record (type " + std::to_string(bytes[1]) + ")";
    return false;
  }
  out->type = static_cast<RecordType>(bytes[1]);
  out->size = GetU32(bytes.data() + 2);
  if (out->size > kMaxPayload) {
    *why = "not a console record (size " + std::to_string(out->size) + ")";
    return false;
  }
  std::memcpy(out->stream.data(), bytes.data() + 6, kStreamIdSize);
  out->sequence = GetU64(bytes.data() + 6 + kStreamIdSize);
  return true;
}

Status OpenRecord(const crypto::Aes256Gcm& cipher, const RecordHeader& header, ByteSpan record, uint8_t* out) {
  if (record.size() != header.RecordSize()) return DataCorrupted("decryption failed");
  return cipher.Open(record.subspan(kAadSize, crypto::kNonceSize), {record.first(kAadSize)},
                     record.subspan(kHeaderSize, header.size), out, record.data() + kHeaderSize + header.size);
}

Bytes StartPayload(const StartInfo& info) {
  Bytes p;
  p.reserve(2 * kStreamIdSize + 2 + info.siblings.size() * kStreamIdSize);
  p.insert(p.end(), info.parent.begin(), info.parent.end());
  p.push_back(static_cast<uint8_t>(info.channel));
  p.insert(p.end(), info.run.begin(), info.run.end());
  p.push_back(static_cast<uint8_t>(info.siblings.size()));
  for (const StreamId& s : info.siblings) p.insert(p.end(), s.begin(), s.end());
  return p;
}

bool ParseStart(ByteSpan p, StartInfo* out) {
  constexpr size_t kFixed = 2 * kStreamIdSize + 2;
  if (p.size() < kFixed) return false;
  const size_t count = p[2 * kStreamIdSize + 1];
  if (count > kMaxSiblings || p.size() != kFixed + count * kStreamIdSize) return false;
  if (p[kStreamIdSize] > static_cast<uint8_t>(Channel::kStderr)) return false;
  std::memcpy(out->parent.data(), p.data(), kStreamIdSize);
  out->channel = static_cast<Channel>(p[kStreamIdSize]);
  std::memcpy(out->run.data(), p.data() + kStreamIdSize + 1, kStreamIdSize);
  out->siblings.assign(count, StreamId{});
  for (size_t i = 0; i < count; ++i) std::memcpy(out->siblings[i].data(), p.data() + kFixed + i * kStreamIdSize, kStreamIdSize);
  return true;
}

size_t EncodeTextRecord(ByteSpan record, char* out) {
  size_t n = crypto::Base64Encode(record, out);
  out[n] = '\n';
  return n + 1;
}

bool BeginsTextRecord(uint8_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

}  // namespace scone::console
