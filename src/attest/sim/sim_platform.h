// The `sim` backend: the same software stack in an ordinary process, with a platform key that
// CAS must be told to trust. It provides NO hardware protection of memory: its evidence says
// `mode: sim`, and a policy must tolerate `sim` explicitly to accept it.
#pragma once

#include <string>

#include "attest/platform.h"
#include "crypto/signing.h"

namespace scone::attest::sim {

class SimPlatform : public Platform {
 public:
  // Loads the platform key from `key_path`, creating it (0600) if absent.
  static Result<SimPlatform> OpenOrCreate(const std::string& key_path);
  explicit SimPlatform(crypto::SigningKey key) : key_(std::move(key)) {}

  Result<Evidence> Attest(Report report) const override;
  crypto::PublicKey platform_key() const override { return key_.public_key(); }

 private:
  crypto::SigningKey key_;
};

}  // namespace scone::attest::sim
