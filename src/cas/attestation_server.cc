#include "cas/attestation_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "cas/release.h"
#include "cas/secrets.h"
#include "crypto/certificates.h"

namespace scone::cas {
namespace {

constexpr auto kNonceLifetime = std::chrono::seconds(60);
constexpr size_t kMaxAttested = 1 << 16;
constexpr int kConnectionDeadlineSeconds = 10;  // per receive; the guard bounds the whole connection

// Any client certificate is accepted at the TLS layer: what it proves (evidence bound to its
// key) is checked per request; TLS proves the client holds the key.
int AcceptAnyClientCertificate(int, X509_STORE_CTX*) { return 1; }

}  // namespace

attest::Nonce NonceBook::Issue() {
  attest::Nonce n;
  crypto::RandomBytes(n);
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (outstanding_.size() >= kMaxOutstanding) {
    // Under a flood of nonce requests, forget expired ones first, then arbitrary ones: an
    // honest client whose nonce is forgotten retries.
    std::erase_if(outstanding_, [&](const auto& e) { return e.second < now; });
    if (outstanding_.size() >= kMaxOutstanding) outstanding_.erase(outstanding_.begin());
  }
  outstanding_[n] = now + kNonceLifetime;
  return n;
}

bool NonceBook::Consume(const attest::Nonce& nonce) {
  std::lock_guard lock(mu_);
  auto it = outstanding_.find(nonce);
  if (it == outstanding_.end()) return false;
  bool fresh = it->second >= std::chrono::steady_clock::now();
  outstanding_.erase(it);
  return fresh;
}

AttestationServer::~AttestationServer() {
  Stop();
  SSL_CTX_free(ctx_);
}

Result<std::unique_ptr<AttestationServer>> AttestationServer::Create(Store* store, const std::string& cert_path,
                                                                     const std::string& key_path,
                                                                     ConnectionGuard::Limits limits) {
  std::unique_ptr<AttestationServer> s(new AttestationServer());
  s->store_ = store;
  s->guard_ = std::make_unique<ConnectionGuard>(limits);
  s->ctx_ = SSL_CTX_new(TLS_server_method());
  if (s->ctx_ == nullptr) return Internal("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(s->ctx_, TLS1_3_VERSION);
  SSL_CTX_set_verify(s->ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, AcceptAnyClientCertificate);
  SSL_CTX_set_session_cache_mode(s->ctx_, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(s->ctx_, 0);  // one request per connection: resumption buys nothing
  if (SSL_CTX_use_certificate_chain_file(s->ctx_, cert_path.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(s->ctx_, key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Internal("CAS attestation port: cannot load " + cert_path);
  }
  return s;
}

Result<int> AttestationServer::Bind(const std::string& host, int port) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return IoError("socket", errno);
  listeners_.push_back(listener);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return InvalidArgument("attestation address " + host + " is not an IPv4 address");
  }
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 512) != 0) {
    return IoError("bind " + host + ":" + std::to_string(port), errno);
  }
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  return static_cast<int>(ntohs(addr.sin_port));
}

void AttestationServer::Start(int workers) {
  pool_ = std::make_unique<ElasticPool>(static_cast<size_t>(workers), 1024);
  for (int listener : listeners_) acceptors_.emplace_back([this, listener] { Accept(listener); });
}

void AttestationServer::Stop() {
  if (stopping_.exchange(true)) return;
  for (int listener : listeners_) shutdown(listener, SHUT_RDWR);  // wakes the acceptors
  for (std::thread& t : acceptors_) {
    if (t.joinable()) t.join();
  }
  guard_->ShutdownAll();  // connections in progress end now
  pool_.reset();          // joins their threads
  for (int listener : listeners_) close(listener);
  listeners_.clear();
}

void AttestationServer::Accept(int listener) {
  while (!stopping_.load()) {
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      return;
    }
    std::string address = ConnectionGuard::PeerAddress(fd);
    std::string refusal;
    if (!guard_->Admit(fd, address, &refusal)) {
      close(fd);
      // One audit record per address and ten seconds: a flood must not flood the log.
      auto now = std::chrono::steady_clock::now();
      std::lock_guard lock(refused_mu_);
      auto& last = refused_[address];
      if (last + std::chrono::seconds(10) <= now) {
        last = now;
        store_->Audit("service@" + address, "connect", "", "refused: " + refusal);
      }
      if (refused_.size() > 4096) refused_.clear();
      continue;
    }
    pool_->Run([this, fd, address] {
      Serve(fd, address);
      guard_->Release(fd);
      close(fd);
      WipeStackBelow();  // what serving left on this thread's stack may be a service's secrets
    });
  }
}

void AttestationServer::Serve(int fd, const std::string& address) {
  struct timeval deadline = {kConnectionDeadlineSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &deadline, sizeof(deadline));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in peer_addr = {};
  socklen_t len = sizeof(peer_addr);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer_addr), &len);
  std::string peer = address + ":" + std::to_string(ntohs(peer_addr.sin_port));

  char first = 0;
  if (recv(fd, &first, 1, MSG_PEEK) != 1) return;
  if (first == kNonceRequest[0]) return ServeNonce(fd);
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) return;
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    auto frame = ReceiveFrame(ssl, 64 * 1024);
    Bytes reply;
    if (!frame.ok()) {
      reply = ErrorReply(frame.status().message());
    } else if (auto request = Request::Decode(*frame); !request.ok()) {
      reply = ErrorReply(request.status().message());
    } else {
      reply = Handle(ssl, *request, peer);
    }
    (void)SendFrame(ssl, reply);
    Wipe(reply);  // may hold a service's secrets
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  ERR_clear_error();
}

void AttestationServer::ServeNonce(int fd) {
  char request[kNonceRequestSize];
  size_t got = 0;
  while (got < sizeof(request)) {
    ssize_t n = recv(fd, request + got, sizeof(request) - got, 0);
    if (n <= 0) return;
    got += static_cast<size_t>(n);
  }
  if (std::memcmp(request, kNonceRequest, sizeof(request)) != 0) return;
  attest::Nonce nonce = nonces_.Issue();
  (void)!send(fd, nonce.data(), nonce.size(), MSG_NOSIGNAL);
}

Bytes AttestationServer::Handle(SSL* ssl, const Request& request, const std::string& peer) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return ErrorReply("no client certificate");
  // Nothing is released or changed without its audit record.
  if (Status audit = store_->AuditHealth(); !audit.ok()) return ErrorReply("CAS refuses for now: " + audit.message());
  if (request.kind == RequestKind::kConfig) return Configure(cert, request.config_id, peer);
  return Report(cert, request, peer);
}

Bytes AttestationServer::Configure(X509* cert, const std::string& config_id, const std::string& peer) {
  std::string actor = "service@" + peer;
  auto refuse = [&](const Status& why) {
    store_->Audit(actor, "attest", config_id, "refused: " + why.message());
    return ErrorReply(why.message());
  };
  std::string session_name, service_name;
  if (Status s = SplitConfigId(config_id, &session_name, &service_name); !s.ok()) return refuse(s);
  auto evidence = attest::EvidenceFromCertificate(cert);
  if (!evidence.ok()) return refuse(evidence.status());
  // The report data must name this connection's key and a nonce CAS issued and nobody used.
  crypto::Hash key_hash = crypto::PublicKeyHash(cert);
  const attest::ReportData& data = evidence->report.report_data;
  if (!std::equal(key_hash.begin(), key_hash.end(), data.begin())) {
    return refuse(PermissionDenied("evidence is bound to another key than this connection's"));
  }
  // Genuine evidence first: only a program a trusted platform vouched for learns which sessions
  // and services exist (before, any TLS client with made-up evidence could probe the names).
  auto platforms = store_->TrustedPlatforms();
  if (!platforms.ok()) return refuse(platforms.status());
  if (Status origin = attest::VerifyEvidenceOrigin(*evidence, *platforms, data); !origin.ok()) return refuse(origin);
  auto session = ParsedSession(session_name);
  if (!session.ok()) return refuse(session.status());
  const policy::Service* service = (*session)->FindService(service_name);
  if (service == nullptr) return refuse(NotFound("session " + session_name + " has no service " + service_name));
  Status verified = attest::CheckEvidencePolicy(*evidence, PolicyFor(**session, *service));
  if (!verified.ok()) return refuse(verified);
  // Only evidence a trusted platform signed may use up a nonce (nonces travel in the clear).
  attest::Nonce nonce;
  std::copy(data.begin() + key_hash.size(), data.end(), nonce.begin());
  if (!nonces_.Consume(nonce)) {
    return refuse(PermissionDenied("evidence names a nonce CAS did not issue, or one already used or expired "
                                   "(replayed evidence?)"));
  }
  auto config = ReleaseConfig(*store_, **session, *service);
  if (!config.ok()) return refuse(config.status());
  {
    std::lock_guard lock(attested_mu_);
    if (attested_.size() >= kMaxAttested) attested_.erase(attested_.begin());
    attested_[key_hash] = config_id;
  }
  store_->Audit(actor, "attest", config_id,
                "ok: " + evidence->report.mode + " " + ToHex(evidence->report.measurement));
  SecretBytes encoded = config->Encode();
  return OkReply(encoded.span());
}

Result<std::shared_ptr<const policy::Session>> AttestationServer::ParsedSession(const std::string& name) {
  SCONE_ASSIGN_OR_RETURN(auto stored, store_->Get(name));
  if (!stored) return NotFound("no session " + name);
  {
    std::lock_guard lock(sessions_mu_);
    auto it = sessions_.find(stored->hash);
    if (it != sessions_.end()) return it->second;
  }
  SCONE_ASSIGN_OR_RETURN(policy::Session parsed, policy::Session::Parse(stored->text));
  auto shared = std::make_shared<const policy::Session>(std::move(parsed));
  std::lock_guard lock(sessions_mu_);
  if (sessions_.size() >= 1024) sessions_.clear();
  sessions_[stored->hash] = shared;
  return shared;
}

// The names of the volumes the service's image mounts.
Result<std::vector<std::string>> AttestationServer::VolumesOf(const std::string& session_name,
                                                              const std::string& service_name) {
  SCONE_ASSIGN_OR_RETURN(auto session, ParsedSession(session_name));
  const policy::Service* service = session->FindService(service_name);
  std::vector<std::string> names;
  const policy::Image* image = service ? session->FindImage(service->image_name) : nullptr;
  if (image == nullptr) return names;
  for (const policy::VolumeRef& v : image->volumes) names.push_back(v.name);
  return names;
}

Bytes AttestationServer::Report(X509* cert, const Request& request, const std::string& peer) {
  std::string actor = "service@" + peer;
  crypto::Hash key_hash = crypto::PublicKeyHash(cert);
  {
    std::lock_guard lock(attested_mu_);
    auto it = attested_.find(key_hash);
    if (it == attested_.end() || it->second != request.config_id) {
      store_->Audit(actor, "report-tags", request.config_id, "refused: not attested");
      return ErrorReply("this key did not attest for " + request.config_id);
    }
  }
  std::string session_name, service_name;
  if (!SplitConfigId(request.config_id, &session_name, &service_name).ok()) return ErrorReply("bad config id");
  auto mounted = VolumesOf(session_name, service_name);
  if (!mounted.ok()) return ErrorReply(mounted.status().message());
  for (const VolumeReport& v : request.reports) {
    if (std::find(mounted->begin(), mounted->end(), v.name) == mounted->end()) {
      store_->Audit(actor, "report-tag", request.config_id + "/" + v.name, "refused: not a volume of the service");
      return ErrorReply("volume " + v.name + " is not one of " + request.config_id + "'s volumes");
    }
    Status s = store_->PutVolumeMark(session_name, v.name, v.mark);
    store_->Audit(actor, "report-tag", request.config_id + "/" + v.name,
                  s.ok() ? "ok: generation " + std::to_string(v.mark.generation) : s.message());
    if (!s.ok()) return ErrorReply(s.message());
  }
  return OkReply({});
}

}  // namespace scone::cas
