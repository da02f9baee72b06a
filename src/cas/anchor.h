// Where CAS keeps what must not lie beside its database: the key that seals its master key,
// and a counter that only grows, against which CAS checks its database is not older than it
// should be (a copy put back while CAS was stopped). Both are the platform's (attest/platform.h):
// LAS's on this host, as a TEE keeps sealing keys and monotonic counters for its enclaves.
//
// Thread-safety: implementations may be called from any thread, one call at a time per object.
#pragma once

#include <memory>
#include <string>

#include "attest/platform.h"
#include "common/status.h"
#include "crypto/secret.h"

namespace scone::cas {

class Anchor {
 public:
  virtual ~Anchor() = default;
  virtual Result<SecretBytes> SealingKey(const std::string& label) = 0;
  // Raises counter `name` to `at_least` if below (durably); returns its value. 0 reads it.
  virtual Result<uint64_t> AdvanceCounter(const std::string& name, uint64_t at_least) = 0;
  // Where the anchor is, for messages ("LAS at /path").
  virtual std::string Where() const = 0;
};

// The platform behind the LAS at `socket_path`, for the calling process's user.
std::shared_ptr<Anchor> LasAnchor(const std::string& socket_path);
// A platform in this process (tests, benchmarks), for the calling process's user. `platform`
// outlives the anchor.
std::shared_ptr<Anchor> PlatformAnchor(const attest::Platform* platform);

}  // namespace scone::cas
