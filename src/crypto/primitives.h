// The crypto primitives libscone uses, all from OpenSSL 3: randomness, SHA-256, HMAC-SHA-256,
// HKDF-SHA-256 and AES-256-GCM. Nothing here is implemented by hand.
//
// Thread-safety: every function and every const method is safe to call from many threads.
#pragma once

#include <array>
#include <initializer_list>
#include <string_view>

#include "common/bytes.h"
#include "common/status.h"
#include "crypto/secret.h"

namespace scone::crypto {

inline constexpr size_t kKeySize = 32;
inline constexpr size_t kNonceSize = 12;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kHashSize = 32;

using Hash = std::array<uint8_t, kHashSize>;

// Fills out with bytes from the kernel's generator (getrandom, which never blocks once it was
// seeded at boot; no lock of the process, so a forked child draws even where another thread
// of its parent was drawing). Fails closed: a broken generator is fatal.
void RandomBytes(MutableByteSpan out);
// A fresh random 96-bit AES-GCM nonce. Drawn from a per-thread batch of RandomBytes (one
// call per few hundred nonces); the batch is discarded in a forked child, so parent
// and child never hand out the same nonce.
void FreshNonce(uint8_t* out);
// Up to 64 fresh random bytes from the same batch (a new file's id: no system call per file).
void FreshRandom(MutableByteSpan out);
// Fork: the batch is discarded in a child through a pthread_atfork handler, registered at the
// first FreshNonce. A program that forks while it may hand out its first nonce (the runtime:
// its console shield seals a record in its pthread_atfork parent handler, while glibc holds the
// lock that registering takes) registers it beforehand; and a fork that glibc does not see (a raw clone)
// calls NoteForkInChild in the child itself.
void RegisterNonceForkHandler();
void NoteForkInChild();
SecretBytes RandomKey();

// Constant-time equality of two byte strings.
bool ConstantTimeEquals(ByteSpan a, ByteSpan b);

// SHA-256 over the concatenation of parts.
Hash Sha256(std::initializer_list<ByteSpan> parts);
// HMAC-SHA-256 over the concatenation of parts.
Hash HmacSha256(const SecretBytes& key, std::initializer_list<ByteSpan> parts);
// HKDF-SHA-256 (RFC 5869): a key of out_size bytes for the purpose `info`, bound to `salt`.
SecretBytes Hkdf(const SecretBytes& input_key, ByteSpan salt, std::string_view info,
                 size_t out_size = kKeySize);

// Base64 (RFC 4648, with padding, no line breaks), OpenSSL's codec. Base64Size(n): the text's
// size for n bytes. Base64Encode writes exactly that many characters (no NUL) and returns it.
inline constexpr size_t Base64Size(size_t n) { return 4 * ((n + 2) / 3); }
size_t Base64Encode(ByteSpan bytes, char* out);
// Decodes `text` (a multiple of 4 characters) into `out` (room for text.size() / 4 * 3);
// returns the decoded size, or -1 if it is not base64.
long Base64Decode(std::string_view text, uint8_t* out);

// AES-256-GCM with caller-chosen nonces. Each thread keeps cipher contexts with the key schedule
// of the key it used last, so a run of chunks under one key costs only an IV set-up per chunk.
class Aes256Gcm {
 public:
  // REQUIRES: key.size() == kKeySize.
  explicit Aes256Gcm(SecretBytes key);
  ~Aes256Gcm();
  Aes256Gcm(const Aes256Gcm&) = delete;
  Aes256Gcm& operator=(const Aes256Gcm&) = delete;

  // Encrypts `plaintext` into `out` (same size; may alias) and writes the 16-byte tag.
  // `aad` parts are authenticated, not encrypted. Fails only with ENOMEM (kIoError) when this
  // thread cannot get memory for its cipher context.
  Status Seal(ByteSpan nonce, std::initializer_list<ByteSpan> aad, ByteSpan plaintext,
              uint8_t* out, uint8_t* tag) const;
  // Decrypts and verifies; on failure `out` is wiped and the status says only
  // "decryption failed" (kDataCorrupted), never why. ENOMEM (kIoError) as for Seal: that is no
  // verdict on the data, see Authentic.
  Status Open(ByteSpan nonce, std::initializer_list<ByteSpan> aad, ByteSpan ciphertext,
              uint8_t* out, const uint8_t* tag) const;

 private:
  SecretBytes key_;
  uint64_t id_;  // unique per object: names the key in the per-thread context cache
};

// An Open's outcome as a verdict: true for authentic, false for not (kDataCorrupted), or the
// error that kept it from deciding, which a caller must not take for damage.
Result<bool> Authentic(const Status& opened);

}  // namespace scone::crypto
