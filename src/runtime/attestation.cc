#include "runtime/attestation.h"

#include <unistd.h>

#include <cstdlib>

#include "attest/las.h"
#include "cas/attestation_client.h"
#include "os/file.h"

namespace scone::runtime {
namespace {

cas::AttestationEndpoint Endpoint(const CasSettings& s) { return {s.host, s.port, s.cas_key_hash}; }

std::string Env(const char* name) {
  const char* v = getenv(name);
  return v ? v : "";
}

Result<std::optional<attest::SigStruct>> LoadSigStruct(const std::string& path, bool required) {
  auto bytes = os::ReadWholeFile(path, 1 << 16);
  if (!bytes.ok()) {
    if (!required && bytes.status().code() == Code::kNotFound) return std::optional<attest::SigStruct>();
    return bytes.status();
  }
  SCONE_ASSIGN_OR_RETURN(attest::SigStruct s, attest::SigStruct::Decode(*bytes));
  return std::optional<attest::SigStruct>(s);
}

}  // namespace

Result<std::optional<CasSettings>> CasSettingsFromEnvironment() {
  CasSettings s;
  // Set at all means attestation: set empty (a template's unset variable) is an error, never a
  // run without it.
  if (getenv("SCONE_CONFIG_ID") == nullptr) return std::optional<CasSettings>();
  s.config_id = Env("SCONE_CONFIG_ID");
  std::string session, service;
  if (Status id = cas::SplitConfigId(s.config_id, &session, &service); !id.ok()) return id.Annotate("SCONE_CONFIG_ID");
  std::string addr = Env("SCONE_CAS_ADDR");
  if (addr.empty()) return InvalidArgument("SCONE_CONFIG_ID is set but SCONE_CAS_ADDR is not");
  size_t colon = addr.rfind(':');
  s.host = colon == std::string::npos ? addr : addr.substr(0, colon);
  s.port = colon == std::string::npos ? cas::kDefaultAttestationPort : std::atoi(addr.c_str() + colon + 1);
  if (s.host.empty() || s.port <= 0 || s.port > 65535) {
    return InvalidArgument("SCONE_CAS_ADDR '" + addr + "' is not HOST[:PORT]");
  }
  s.las_socket = Env("SCONE_LAS_ADDR");
  if (s.las_socket.rfind("unix:", 0) == 0) s.las_socket = s.las_socket.substr(5);
  if (s.las_socket.empty()) return InvalidArgument("SCONE_LAS_ADDR (LAS's unix socket) is not set");
  auto pin = FromHexArray<crypto::kHashSize>(Env("SCONE_CAS_KEY_HASH"));
  if (!pin.ok()) {
    return InvalidArgument("SCONE_CAS_KEY_HASH must name CAS's public key (64 hex digits): the runtime "
                           "trusts no CAS it cannot recognize");
  }
  s.cas_key_hash = *pin;
  s.sigstruct_path = Env("SCONE_SIGSTRUCT");
  return std::optional<CasSettings>(std::move(s));
}

Result<CasConnection> CasConnection::Attest(const CasSettings& settings, cas::ServiceConfig* config) {
  SCONE_ASSIGN_OR_RETURN(attest::Nonce nonce, cas::FetchNonce(Endpoint(settings)));
  SCONE_ASSIGN_OR_RETURN(attest::TlsCredential credential, attest::TlsCredential::Generate("scone-runtime"));

  std::string sig_path = settings.sigstruct_path;
  bool sig_required = !sig_path.empty();
  if (sig_path.empty()) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) sig_path = std::string(exe, static_cast<size_t>(n)) + ".sig";
  }
  SCONE_ASSIGN_OR_RETURN(auto sigstruct, LoadSigStruct(sig_path, sig_required));
  SCONE_ASSIGN_OR_RETURN(attest::Evidence evidence,
                         attest::RequestEvidence(settings.las_socket,
                                                 attest::BindReportData(credential.key_hash(), nonce), sigstruct));
  SCONE_RETURN_IF_ERROR(credential.AttachEvidence(evidence));

  cas::Request config_request;
  config_request.kind = cas::RequestKind::kConfig;
  config_request.config_id = settings.config_id;
  SCONE_ASSIGN_OR_RETURN(Bytes blob, cas::Exchange(Endpoint(settings), credential, config_request));
  auto decoded = cas::ServiceConfig::Decode(blob);
  Wipe(blob);
  if (!decoded.ok()) return decoded.status();
  *config = std::move(decoded).value();
  return CasConnection(settings, std::move(credential));
}

Result<CasHandover> CasConnection::Handover() const {
  CasHandover h;
  h.config_id = settings_.config_id;
  h.host = settings_.host;
  h.port = settings_.port;
  h.cas_key_hash = settings_.cas_key_hash;
  SCONE_ASSIGN_OR_RETURN(h.key_pem, credential_.ExportKey());
  h.cert_der = credential_.CertificateDer();
  return h;
}

Result<CasConnection> CasConnection::FromHandover(const CasHandover& h) {
  CasSettings s;
  s.config_id = h.config_id;
  s.host = h.host;
  s.port = h.port;
  s.cas_key_hash = h.cas_key_hash;
  SCONE_ASSIGN_OR_RETURN(attest::TlsCredential credential, attest::TlsCredential::Import(h.key_pem, h.cert_der));
  return CasConnection(std::move(s), std::move(credential));
}

Status CasConnection::Report(const std::vector<cas::VolumeReport>& reports) const {
  cas::Request request;
  request.kind = cas::RequestKind::kReport;
  request.config_id = settings_.config_id;
  request.reports = reports;
  return cas::Exchange(Endpoint(settings_), credential_, request).status();
}

}  // namespace scone::runtime
