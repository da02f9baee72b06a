// Reports and evidence (ARCHITECTURE §4.2). A report says what runs (measurement, signer,
// product, security version), how (attributes: debug, the platform's mode) and binds 64 bytes of
// report data (the runtime's fresh TLS key and CAS's nonce, so evidence cannot be replayed or
// moved to another channel). Evidence is a report signed by a platform (LAS); the verifier
// checks the platform's signature against the platforms it trusts, then the policy.
#pragma once

#include <string>
#include <vector>

#include <optional>

#include "attest/sigstruct.h"

namespace scone::attest {

using ReportData = std::array<uint8_t, 64>;

struct Report {
  Measurement measurement{};
  crypto::Hash mrsigner{};
  uint16_t product_id = 0;
  uint16_t svn = 0;
  bool debug = false;
  std::string mode;  // "sim" for the simulation backend; hardware backends name themselves
  ReportData report_data{};

  Bytes Encode() const;
  static bool Decode(ByteReader& r, Report* out);
};

struct Evidence {
  Report report;
  crypto::PublicKey platform{};
  crypto::Signature signature{};

  Bytes Encode() const;
  static Result<Evidence> Decode(ByteSpan bytes);
};

// What a service's policy accepts.
struct AttestationPolicy {
  std::vector<Measurement> mrenclaves;  // any of these, or:
  std::optional<crypto::Hash> mrsigner;  // this signer, with
  uint16_t product_id = 0;               //   this product and
  uint16_t min_svn = 0;                  //   at least this security version
  std::vector<std::string> tolerate;     // "sim", "debug-mode"
};

// Checks the platform's signature (against `trusted_platforms`), that `expected_report_data`
// is bound, and the policy. Fails closed, saying which check failed.
Status VerifyEvidence(const Evidence& evidence,
                      const std::vector<crypto::PublicKey>& trusted_platforms,
                      const ReportData& expected_report_data, const AttestationPolicy& policy);
// Its two halves: where the evidence comes from (a trusted platform's signature over a report
// bound to `expected_report_data`), and what it says against a policy (after the first). CAS
// checks the origin before it looks anything up, so that only genuine evidence learns which
// sessions and services exist.
Status VerifyEvidenceOrigin(const Evidence& evidence, const std::vector<crypto::PublicKey>& trusted_platforms,
                            const ReportData& expected_report_data);
Status CheckEvidencePolicy(const Evidence& evidence, const AttestationPolicy& policy);

}  // namespace scone::attest
