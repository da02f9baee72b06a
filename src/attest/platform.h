// The platform interface: one per TEE backend, in parallel folders (attest/sim today). Nothing
// above this interface depends on the backend.
#pragma once

#include "attest/evidence.h"

namespace scone::attest {

class Platform {
 public:
  virtual ~Platform() = default;
  // Signs `report` as this platform's evidence. The backend sets report.mode and, where it can
  // tell, report.debug; it never lets a caller claim another mode.
  virtual Result<Evidence> Attest(Report report) const = 0;
  virtual crypto::PublicKey platform_key() const = 0;
};

}  // namespace scone::attest
