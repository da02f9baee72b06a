// The `sim` backend: the same software stack in an ordinary process, with a platform key that
// CAS must be told to trust. It provides NO hardware protection of memory: its evidence says
// `mode: sim`, and a policy must tolerate `sim` explicitly to accept it.
//
// Its state lives in one directory (0700): the platform key (platform.key), the secret its
// sealing keys derive from (seal.key), and the counters (counters/, one file each, replaced
// atomically and synced). Root on the host can read all of it: in `sim`, root is trusted.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "attest/platform.h"
#include "crypto/signing.h"

namespace scone::attest::sim {

class SimPlatform : public Platform {
 public:
  // Loads the platform key from `key_path`, creating it (0600) if absent; the sealing secret
  // and counters live beside it.
  static Result<SimPlatform> OpenOrCreate(const std::string& key_path);
  // A platform with a key only: it attests, but keeps no sealing keys or counters.
  explicit SimPlatform(crypto::SigningKey key) : key_(std::move(key)) {}

  Result<Evidence> Attest(Report report) const override;
  crypto::PublicKey platform_key() const override { return key_.public_key(); }
  Result<SecretBytes> SealingKey(uid_t owner, std::string_view label) const override;
  Result<uint64_t> AdvanceCounter(uid_t owner, std::string_view name, uint64_t at_least) const override;

 private:
  crypto::SigningKey key_;
  std::string state_dir_;
  std::shared_ptr<const SecretBytes> seal_secret_;
  std::shared_ptr<std::mutex> counters_mu_ = std::make_shared<std::mutex>();
};

}  // namespace scone::attest::sim
