// `scone cas serve`: the configuration and attestation service's HTTPS API (TLS 1.3, mutual
// TLS: every client presents a certificate, which is its identity).
//
//   POST /session          create a session, or update one (needs its current hash as
//                          `predecessor` and the caller in `access_policy.update`)
//   GET  /session/NAME     the session as submitted (caller in `access_policy.read`)
//   GET  /session          names of the sessions the caller may read
//   POST /platform         {"key": HEX}: trust a platform key (CAS administrators only)
//   GET  /platform         the trusted platform keys
//
// Errors are JSON {"error": reason} with a 4xx status (503 while the audit log cannot be
// written), each refusal also in the audit log; CAS keeps serving whatever it receives. Bodies
// are read up to 1 MiB whatever their framing (chunked too), a connection may send at most
// about twice that in all, and connections are admitted and bounded in time by a
// ConnectionGuard (cas/connection_guard.h), each served on its own thread of an elastic pool.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cas/connection_guard.h"
#include "cas/store.h"
#include "common/status.h"

namespace httplib {
class SSLServer;
}
typedef struct ssl_st SSL;

namespace scone::cas {

class Server {
 public:
  // State (database, master key, TLS identity) lives in `state_dir`. `admins` are the client
  // identities (public key fingerprints) that may change what CAS trusts.
  // The store's master key is sealed by, and its state counter kept with, `anchor`.
  static Result<std::unique_ptr<Server>> Create(const std::string& state_dir, const std::vector<std::string>& admins,
                                                std::shared_ptr<Anchor> anchor, ConnectionGuard::Limits limits = {});
  ~Server();

  // Binds; port 0 picks a free one. Returns the port.
  Result<int> Bind(const std::string& host, int port);
  // Serves until Stop().
  void Run();
  void Stop();

  Store* store() { return store_.get(); }
  const std::string& cert_path() const { return cert_path_; }
  const std::string& key_path() const { return key_path_; }

 private:
  Server() = default;
  void Routes();
  // Admits a new TLS connection (from OpenSSL's handshake-start callback) or shuts it down.
  void AdmitTls(SSL* ssl);

  std::unique_ptr<Store> store_;
  std::vector<std::string> admins_;
  std::string cert_path_, key_path_;
  std::unique_ptr<ConnectionGuard> guard_;
  std::unique_ptr<ElasticPool> pool_;
  std::mutex refused_mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> refused_;  // last audited, per address
  std::unique_ptr<httplib::SSLServer> http_;
};

// Maps a Status to an HTTP status for CAS responses (the one place that does).
int HttpStatusOf(const Status& status);

}  // namespace scone::cas
