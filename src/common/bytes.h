// Byte strings, hex, and a bounds-checked binary encoder/decoder for our on-disk records.
//
// ByteReader never reads past its input: every Get* fails once the input is short, and the
// caller turns that into a "truncated" error naming the object it was parsing.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace scone {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;
using MutableByteSpan = std::span<uint8_t>;

std::string ToHex(ByteSpan bytes);
// Lowercase or uppercase hex, even length; anything else is an error.
Result<Bytes> FromHex(std::string_view hex);
// Exactly N bytes as hex (2N digits); anything else is an error.
template <size_t N>
Result<std::array<uint8_t, N>> FromHexArray(std::string_view hex) {
  auto bytes = FromHex(hex);
  if (!bytes.ok() || bytes->size() != N) {
    return Status(Code::kInvalidArgument, "expected " + std::to_string(2 * N) + " hex digits");
  }
  std::array<uint8_t, N> out;
  std::copy(bytes->begin(), bytes->end(), out.begin());
  return out;
}

inline ByteSpan AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Little-endian encoder: integers fixed width, strings and blobs length-prefixed (u32).
class ByteWriter {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Raw(ByteSpan b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Blob(ByteSpan b) {
    U32(static_cast<uint32_t>(b.size()));
    Raw(b);
  }
  void Str(std::string_view s) { Blob(AsBytes(s)); }
  // Reserves room for `size` bytes: a writer of secrets that reserves its exact size never
  // reallocates, so no copy of them is left behind in freed memory.
  void Reserve(size_t size) { out_.reserve(size); }

  const Bytes& bytes() const { return out_; }
  Bytes Take() { return std::move(out_); }

 private:
  Bytes out_;
};

class ByteReader {
 public:
  explicit ByteReader(ByteSpan in) : in_(in) {}

  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  // Copies exactly out.size() bytes.
  bool Raw(MutableByteSpan out);
  // A view of the next n bytes (valid as long as the input is).
  bool View(size_t n, ByteSpan* out);
  // A length-prefixed blob of at most max_size bytes.
  bool Blob(Bytes* out, size_t max_size);
  bool Str(std::string* out, size_t max_size);

  size_t remaining() const { return in_.size() - pos_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  ByteSpan in_;
  size_t pos_ = 0;
};

}  // namespace scone
