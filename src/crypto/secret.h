// Key material: a zeroizing, non-copyable holder.
//
// Bytes live in OpenSSL's secure heap (mlock'ed, excluded from core dumps, guard pages) when it
// can be set up, else in ordinary memory that is wiped on release. Moving is allowed, copying is
// not: every place that duplicates a key has to say so with Clone().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace scone {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);
  SecretBytes(std::span<const uint8_t> bytes);  // NOLINT: copies in, caller wipes its copy
  ~SecretBytes();
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  SecretBytes Clone() const { return SecretBytes(span()); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> mutable_span() { return {data_, size_}; }

  // Constant-time comparison.
  bool Equals(const SecretBytes& other) const;

 private:
  void Release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Sets up OpenSSL's secure heap with `size` bytes, if nothing has used it yet (else it keeps its
// size). Once set up, OpenSSL allocates every thread's random generators there too (512 bytes a
// thread) and fails when it is full: a server with many threads reserves room for them first.
void ReserveSecureHeap(size_t size);
// The same, bounded by what the process may lock (half its RLIMIT_MEMLOCK; never below the
// default): a larger heap than the limit allows would not be set up at all, and every key would
// then live in ordinary memory.
void ReserveSecureHeapWithinLimit(size_t size);

// Wipes a buffer that held key material or plaintext, in a way the compiler cannot elide.
void Wipe(void* data, size_t size);
inline void Wipe(std::vector<uint8_t>& bytes) { Wipe(bytes.data(), bytes.size()); }
inline void Wipe(std::string& text) { Wipe(text.data(), text.size()); }

// Wipes `size` bytes of the calling thread's stack below the caller's frame: what deeper calls
// (ours and OpenSSL's) left there after handling secrets. Call it from a shallow frame.
void WipeStackBelow(size_t size = 64 * 1024);

}  // namespace scone
