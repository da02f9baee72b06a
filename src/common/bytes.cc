#include "common/bytes.h"

#include <cstring>

namespace scone {

std::string ToHex(ByteSpan bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

static int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<Bytes> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return InvalidArgument("hex string has an odd number of digits");
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexDigit(hex[2 * i]);
    int lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return InvalidArgument("not a hex digit at position " + std::to_string(hi < 0 ? 2 * i : 2 * i + 1));
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

void ByteWriter::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void ByteWriter::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

bool ByteReader::U8(uint8_t* v) {
  if (remaining() < 1) return false;
  *v = in_[pos_++];
  return true;
}

bool ByteReader::U32(uint32_t* v) {
  if (remaining() < 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(in_[pos_ + i]) << (8 * i);
  pos_ += 4;
  return true;
}

bool ByteReader::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
  pos_ += 8;
  return true;
}

bool ByteReader::Raw(MutableByteSpan out) {
  if (remaining() < out.size()) return false;
  if (!out.empty()) std::memcpy(out.data(), in_.data() + pos_, out.size());
  pos_ += out.size();
  return true;
}

bool ByteReader::View(size_t n, ByteSpan* out) {
  if (remaining() < n) return false;
  *out = in_.subspan(pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::Blob(Bytes* out, size_t max_size) {
  uint32_t n;
  if (!U32(&n) || n > max_size || remaining() < n) return false;
  out->assign(in_.begin() + pos_, in_.begin() + pos_ + n);
  pos_ += n;
  return true;
}

bool ByteReader::Str(std::string* out, size_t max_size) {
  uint32_t n;
  if (!U32(&n) || n > max_size || remaining() < n) return false;
  out->assign(reinterpret_cast<const char*>(in_.data()) + pos_, n);
  pos_ += n;
  return true;
}

}  // namespace scone
