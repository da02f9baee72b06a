// The runtime's side of attestation: before main, the runtime proves to CAS what runs and gets
// the service's configuration (cas/protocol.h), without anything secret passing through the
// host's hands:
//
//   1. a fresh P-256 key in memory; a nonce from CAS's attestation port;
//   2. evidence from LAS with report data = SHA-256(key) || nonce (attest/ra_tls.h);
//   3. a TLS connection to CAS with that evidence in the client certificate: CAS checks it
//      against the session's policy and answers with the configuration.
//
// CAS is recognized by its public key (pinned, SCONE_CAS_KEY_HASH), not by a CA. The same key
// later reports the volumes' new tags, so CAS can refuse a rolled-back volume at the next start.
//
// Configured by SCONE's variables: SCONE_CAS_ADDR (HOST[:PORT], port 18765 by default),
// SCONE_LAS_ADDR (LAS's unix socket), SCONE_CONFIG_ID (SESSION/SERVICE), plus
// SCONE_CAS_KEY_HASH and, for signed programs, SCONE_SIGSTRUCT (a `scone sign` file; default
// PROGRAM.sig beside the executable, if present).
#pragma once

#include <optional>
#include <string>

#include "attest/ra_tls.h"
#include "cas/protocol.h"
#include "runtime/config.h"

namespace scone::runtime {

struct CasSettings {
  std::string host;
  int port = 0;
  std::string las_socket;
  std::string config_id;
  crypto::Hash cas_key_hash{};
  std::string sigstruct_path;
};

// The settings in this process's environment; nullopt when SCONE_CONFIG_ID is not set (set
// but empty or malformed: an error).
Result<std::optional<CasSettings>> CasSettingsFromEnvironment();

class CasConnection {
 public:
  // Attests and fetches the configuration.
  static Result<CasConnection> Attest(const CasSettings& settings, cas::ServiceConfig* config);
  // Reports the volumes' states under the attested key.
  Status Report(const std::vector<cas::VolumeReport>& reports) const;

  // The attested identity, for a program this one executes; and the connection it rebuilds.
  Result<CasHandover> Handover() const;
  static Result<CasConnection> FromHandover(const CasHandover& handover);

 private:
  CasConnection(CasSettings settings, attest::TlsCredential credential)
      : settings_(std::move(settings)), credential_(std::move(credential)) {}
  CasSettings settings_;
  attest::TlsCredential credential_;
};

}  // namespace scone::runtime
