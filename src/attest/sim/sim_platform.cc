#include "attest/sim/sim_platform.h"

#include "os/file.h"

namespace scone::attest::sim {

Result<SimPlatform> SimPlatform::OpenOrCreate(const std::string& key_path) {
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(key_path));
  if (!exists) {
    crypto::SigningKey key = crypto::SigningKey::Generate();
    SCONE_RETURN_IF_ERROR(key.Save(key_path));
    return SimPlatform(std::move(key));
  }
  SCONE_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::SigningKey::Load(key_path));
  return SimPlatform(std::move(key));
}

Result<Evidence> SimPlatform::Attest(Report report) const {
  report.mode = "sim";  // never anything else: this backend protects no memory
  Evidence e;
  e.report = report;
  e.platform = key_.public_key();
  e.signature = key_.Sign(report.Encode());
  return e;
}

}  // namespace scone::attest::sim
