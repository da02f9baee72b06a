#include "runtime/attestation.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "attest/las.h"
#include "os/file.h"
#include "runtime/real_libc.h"

namespace scone::runtime {
namespace {

constexpr int kTimeoutSeconds = 30;

std::string Env(const char* name) {
  const char* v = getenv(name);
  return v ? v : "";
}

// The certificate is checked by its key after the handshake: CAS is pinned, not CA-issued.
int AcceptForPinning(int, X509_STORE_CTX*) { return 1; }

Result<int> ConnectTcp(const std::string& host, int port) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) return NotFound("CAS host " + host + ": " + gai_strerror(rc));
  int last_errno = ECONNREFUSED;
  for (addrinfo* a = found; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    struct timeval tv = {kTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      freeaddrinfo(found);
      return fd;
    }
    last_errno = errno;
    Real().close(fd);
  }
  freeaddrinfo(found);
  return IoError("connect to CAS at " + host + ":" + std::to_string(port), last_errno);
}

std::string TlsError() {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown TLS error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

// One request on a fresh TLS 1.3 connection, as `credential`; CAS must hold the pinned key.
Result<Bytes> Exchange(const CasSettings& s, const attest::TlsCredential& credential, const cas::Request& request) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Internal("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, AcceptForPinning);
  Result<Bytes> result = Internal("unreachable");
  auto fd = ConnectTcp(s.host, s.port);
  SSL* ssl = nullptr;
  if (!fd.ok()) {
    result = fd.status();
  } else if ((ssl = SSL_new(ctx)) == nullptr || SSL_use_certificate(ssl, credential.certificate()) != 1 ||
             SSL_use_PrivateKey(ssl, credential.key()) != 1 || SSL_set_fd(ssl, *fd) != 1) {
    result = Internal("TLS set-up failed: " + TlsError());
  } else if (SSL_connect(ssl) != 1) {
    result = PermissionDenied("TLS handshake with CAS at " + s.host + " failed: " + TlsError());
  } else {
    X509* peer = SSL_get0_peer_certificate(ssl);
    if (peer == nullptr || attest::PublicKeyHash(peer) != s.cas_key_hash) {
      result = PermissionDenied("the server at " + s.host + ":" + std::to_string(s.port) +
                                " is not the CAS whose key SCONE_CAS_KEY_HASH names");
    } else if (Status sent = cas::SendFrame(ssl, request.Encode()); !sent.ok()) {
      result = sent;
    } else if (auto reply = cas::ReceiveFrame(ssl, cas::kMaxFrame); !reply.ok()) {
      result = reply.status().Annotate("CAS at " + s.host);
    } else {
      result = cas::ParseReply(*reply);
      Wipe(*reply);
    }
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  if (fd.ok()) Real().close(*fd);
  return result;
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
  s.config_id = Env("SCONE_CONFIG_ID");
  if (s.config_id.empty()) return std::optional<CasSettings>();
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
  auto pin = FromHex(Env("SCONE_CAS_KEY_HASH"));
  if (!pin.ok() || pin->size() != s.cas_key_hash.size()) {
    return InvalidArgument("SCONE_CAS_KEY_HASH must name CAS's public key (64 hex digits): the runtime "
                           "trusts no CAS it cannot recognize");
  }
  std::copy(pin->begin(), pin->end(), s.cas_key_hash.begin());
  s.sigstruct_path = Env("SCONE_SIGSTRUCT");
  return std::optional<CasSettings>(std::move(s));
}

Result<CasConnection> CasConnection::Attest(const CasSettings& settings, cas::ServiceConfig* config) {
  SCONE_ASSIGN_OR_RETURN(attest::TlsCredential credential, attest::TlsCredential::Generate("scone-runtime"));
  cas::Request nonce_request;
  nonce_request.kind = cas::RequestKind::kNonce;
  SCONE_ASSIGN_OR_RETURN(Bytes nonce_bytes, Exchange(settings, credential, nonce_request));
  attest::Nonce nonce;
  if (nonce_bytes.size() != nonce.size()) return InvalidArgument("CAS sent a malformed nonce");
  std::copy(nonce_bytes.begin(), nonce_bytes.end(), nonce.begin());

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
  SCONE_ASSIGN_OR_RETURN(Bytes blob, Exchange(settings, credential, config_request));
  auto decoded = cas::ServiceConfig::Decode(blob);
  Wipe(blob);
  if (!decoded.ok()) return decoded.status();
  *config = std::move(decoded).value();
  return CasConnection(settings, std::move(credential));
}

Status CasConnection::Report(const std::vector<cas::VolumeReport>& reports) const {
  cas::Request request;
  request.kind = cas::RequestKind::kReport;
  request.config_id = settings_.config_id;
  request.reports = reports;
  return Exchange(settings_, credential_, request).status();
}

}  // namespace scone::runtime
