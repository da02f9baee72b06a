#include "attest/evidence.h"

#include <algorithm>

namespace scone::attest {
namespace {
constexpr char kReportLabel[] = "scone-report-v1";
constexpr char kEvidenceLabel[] = "scone-evidence-v1";

bool Tolerates(const AttestationPolicy& p, const std::string& what) {
  return std::find(p.tolerate.begin(), p.tolerate.end(), what) != p.tolerate.end();
}
}  // namespace

Bytes Report::Encode() const {
  ByteWriter w;
  w.Str(kReportLabel);
  w.Raw(measurement);
  w.Raw(mrsigner);
  w.U32(product_id);
  w.U32(svn);
  w.U8(debug ? 1 : 0);
  w.Str(mode);
  w.Raw(report_data);
  return w.Take();
}

bool Report::Decode(ByteReader& r, Report* out) {
  std::string label;
  uint32_t product, svn;
  uint8_t debug;
  if (!r.Str(&label, 64) || label != kReportLabel || !r.Raw(out->measurement) ||
      !r.Raw(out->mrsigner) || !r.U32(&product) || !r.U32(&svn) || product > 0xffff ||
      svn > 0xffff || !r.U8(&debug) || debug > 1 || !r.Str(&out->mode, 32) ||
      !r.Raw(out->report_data)) {
    return false;
  }
  out->product_id = static_cast<uint16_t>(product);
  out->svn = static_cast<uint16_t>(svn);
  out->debug = debug == 1;
  return true;
}

Bytes Evidence::Encode() const {
  ByteWriter w;
  w.Str(kEvidenceLabel);
  w.Blob(report.Encode());
  w.Raw(platform);
  w.Raw(signature);
  return w.Take();
}

Result<Evidence> Evidence::Decode(ByteSpan bytes) {
  ByteReader r(bytes);
  Evidence e;
  std::string label;
  Bytes report;
  if (!r.Str(&label, 64) || label != kEvidenceLabel || !r.Blob(&report, 4096) ||
      !r.Raw(e.platform) || !r.Raw(e.signature) || !r.done()) {
    return InvalidArgument("evidence is malformed");
  }
  ByteReader rr(report);
  if (!Report::Decode(rr, &e.report) || !rr.done()) return InvalidArgument("report is malformed");
  return e;
}

Status VerifyEvidence(const Evidence& evidence,
                      const std::vector<crypto::PublicKey>& trusted_platforms,
                      const ReportData& expected_report_data, const AttestationPolicy& policy) {
  SCONE_RETURN_IF_ERROR(VerifyEvidenceOrigin(evidence, trusted_platforms, expected_report_data));
  return CheckEvidencePolicy(evidence, policy);
}

Status VerifyEvidenceOrigin(const Evidence& evidence, const std::vector<crypto::PublicKey>& trusted_platforms,
                            const ReportData& expected_report_data) {
  const Report& r = evidence.report;
  if (std::find(trusted_platforms.begin(), trusted_platforms.end(), evidence.platform) ==
      trusted_platforms.end()) {
    return PermissionDenied("evidence comes from a platform that is not trusted");
  }
  if (!crypto::VerifySignature(evidence.platform, r.Encode(), evidence.signature)) {
    return PermissionDenied("evidence signature does not verify");
  }
  if (!crypto::ConstantTimeEquals(r.report_data, expected_report_data)) {
    return PermissionDenied("evidence is bound to another channel or nonce (replayed?)");
  }
  return Status::Ok();
}

Status CheckEvidencePolicy(const Evidence& evidence, const AttestationPolicy& policy) {
  const Report& r = evidence.report;
  // Only the sim backend exists; it protects no memory, so a policy must tolerate it by name.
  // Any other mode is unknown to this verifier and refused.
  if (r.mode != "sim") return PermissionDenied("evidence names an unknown platform mode '" + r.mode + "'");
  if (!Tolerates(policy, "sim")) {
    return PermissionDenied("evidence is from a 'sim' platform, which the policy does not "
                            "tolerate (security.attestation.tolerate: [sim])");
  }
  if (r.debug && !Tolerates(policy, "debug-mode")) {
    return PermissionDenied("evidence is from a debug runtime, which the policy does not tolerate");
  }
  if (std::find(policy.mrenclaves.begin(), policy.mrenclaves.end(), r.measurement) !=
      policy.mrenclaves.end()) {
    return Status::Ok();
  }
  if (policy.mrsigner) {
    if (!crypto::ConstantTimeEquals(*policy.mrsigner, r.mrsigner)) {
      return PermissionDenied("measurement not listed and signer does not match");
    }
    if (r.product_id != policy.product_id) {
      return PermissionDenied("product id " + std::to_string(r.product_id) + " is not " +
                              std::to_string(policy.product_id));
    }
    if (r.svn < policy.min_svn) {
      return PermissionDenied("security version " + std::to_string(r.svn) + " is below " +
                              std::to_string(policy.min_svn));
    }
    return Status::Ok();
  }
  return PermissionDenied("measurement " + ToHex(r.measurement) + " is not one the policy names");
}

}  // namespace scone::attest
