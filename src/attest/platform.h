// The platform interface: one per TEE backend, in parallel folders (attest/sim today). Nothing
// above this interface depends on the backend.
#pragma once

#include <sys/types.h>

#include <string_view>

#include "attest/evidence.h"
#include "crypto/secret.h"

namespace scone::attest {

class Platform {
 public:
  virtual ~Platform() = default;
  // Signs `report` as this platform's evidence. The backend sets report.mode and, where it can
  // tell, report.debug; it never lets a caller claim another mode.
  virtual Result<Evidence> Attest(Report report) const = 0;
  virtual crypto::PublicKey platform_key() const = 0;

  // What a service keeps where its host cannot change it (the analogue of a TEE's sealing key
  // and monotonic counters). `owner` names whom they belong to: a TEE binds them to the
  // enclave's signer; the sim platform, which cannot measure memory, to the requesting user.
  //
  // The key named `label` for `owner`: the same on this platform every time, derivable on no
  // other platform, never stored beside what it seals.
  virtual Result<SecretBytes> SealingKey(uid_t owner, std::string_view label) const = 0;
  // Raises `owner`'s counter `name` to `at_least` if it is below, durably before returning;
  // returns its value. A counter never goes down.
  virtual Result<uint64_t> AdvanceCounter(uid_t owner, std::string_view name, uint64_t at_least) const = 0;
};

}  // namespace scone::attest
