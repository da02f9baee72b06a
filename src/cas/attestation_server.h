// CAS's attestation port (cas/protocol.h): hands out nonces, checks RA-TLS evidence against the
// session's policy and the trusted platforms, releases service configurations, and takes the
// volume tags services report.
//
// One thread accepts; each connection is admitted by a ConnectionGuard (a cap per client address,
// a deadline for the whole connection, handshake included) and served on a thread of an elastic
// pool, so slow or broken clients hold their own threads for at most the deadline and never
// stop CAS serving others. Each connection carries one request.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attest/ra_tls.h"
#include "cas/connection_guard.h"
#include "cas/protocol.h"
#include "cas/store.h"
#include "policy/session.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace scone::cas {

// Nonces CAS handed out and not yet used: each is good for one attestation, for a minute.
class NonceBook {
 public:
  attest::Nonce Issue();
  // True once per issued nonce, within its lifetime.
  bool Consume(const attest::Nonce& nonce);

 private:
  static constexpr size_t kMaxOutstanding = 1 << 16;
  std::mutex mu_;
  std::map<attest::Nonce, std::chrono::steady_clock::time_point> outstanding_;
};

class AttestationServer {
 public:
  // `store` outlives the server; the TLS identity is CAS's.
  static Result<std::unique_ptr<AttestationServer>> Create(Store* store, const std::string& cert_path,
                                                           const std::string& key_path,
                                                           ConnectionGuard::Limits limits = {});
  ~AttestationServer();

  // May be called more than once (one listener per address, e.g. the loopback and the address
  // containers reach the host at); each gets its own acceptor thread.
  Result<int> Bind(const std::string& host, int port);
  // Starts accepting, with `workers` threads kept ready; returns at once.
  void Start(int workers);
  void Stop();

 private:
  AttestationServer() = default;
  void Accept(int listener);
  void Serve(int fd, const std::string& address);
  void ServeNonce(int fd);
  // A session parsed once per version (keyed by its hash): parsing dominates otherwise.
  Result<std::shared_ptr<const policy::Session>> ParsedSession(const std::string& name);
  Bytes Handle(SSL* ssl, const Request& request, const std::string& peer);
  Bytes Configure(X509* peer_cert, const std::string& config_id, const std::string& peer);
  Bytes Report(X509* peer_cert, const Request& request, const std::string& peer);
  Result<std::vector<std::string>> VolumesOf(const std::string& session, const std::string& service);

  Store* store_ = nullptr;
  SSL_CTX* ctx_ = nullptr;
  std::vector<int> listeners_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> acceptors_;
  std::unique_ptr<ConnectionGuard> guard_;
  std::unique_ptr<ElasticPool> pool_;
  std::mutex refused_mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> refused_;  // last audited, per address
  NonceBook nonces_;
  // Keys that attested, by SPKI hash: the config id they were given, so reports from them count.
  std::mutex attested_mu_;
  std::map<crypto::Hash, std::string> attested_;
  std::mutex sessions_mu_;
  std::map<std::string, std::shared_ptr<const policy::Session>> sessions_;
};

}  // namespace scone::cas
