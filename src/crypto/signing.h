// Ed25519 signatures (OpenSSL EVP), for signer keys (SIGSTRUCT analogue) and platform keys
// (evidence). Private keys live in PEM files written with mode 0600; public keys travel as 32
// raw bytes.
#pragma once

#include <array>
#include <memory>
#include <string>

#include "common/bytes.h"
#include "common/status.h"

namespace scone::crypto {

using PublicKey = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;

class SigningKey {
 public:
  static SigningKey Generate();
  // Reads a PEM private key (Ed25519) from `path`.
  static Result<SigningKey> Load(const std::string& path);
  // Writes the PEM private key to `path` (mode 0600; fails if it exists).
  Status Save(const std::string& path) const;

  PublicKey public_key() const;
  Signature Sign(ByteSpan message) const;

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

 private:
  struct Impl;
  explicit SigningKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True when `signature` is `key`'s signature of `message`.
bool VerifySignature(const PublicKey& key, ByteSpan message, const Signature& signature);

}  // namespace scone::crypto
