#include "cas/server.h"

#include <httplib.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "cas/network_identity.h"
#include "cas/secrets.h"
#include "crypto/tls_identity.h"
#include "policy/session.h"

namespace scone::cas {
namespace {

constexpr size_t kMaxBodySize = 1 << 20;
// All a connection may send: one request's headers and body, with room for TLS. Past this the
// connection's reads fail, so neither endless headers nor a body httplib skips can grow CAS.
constexpr size_t kMaxConnectionBytes = 2 * kMaxBodySize + (64 << 10);

std::string ClientIdentity(const httplib::Request& req) {
  if (req.ssl == nullptr) return "";
  X509* cert = SSL_get1_peer_certificate(req.ssl);
  if (cert == nullptr) return "";
  std::string fp = crypto::PublicKeyFingerprint(cert);
  X509_free(cert);
  return fp;
}

bool Allowed(const std::vector<std::string>& list, const std::string& creator, const std::string& caller) {
  for (const std::string& who : list) {
    if ((who == "CREATOR" && caller == creator) || who == caller) return true;
  }
  return false;
}

void Reply(httplib::Response& res, const Status& status) {
  res.status = HttpStatusOf(status);
  res.set_content(nlohmann::json{{"error", status.message()}}.dump() + "\n", "application/json");
}

// A GET on the stored session the path names first (req.matches[1]), audited as `action` on
// `object`: `serve(caller, stored)` checks the caller and sets the reply's content; the lookup's
// failure or serve's is the reply, and every outcome is audited.
template <typename Serve>
void ServeStoredSession(Store* store, const httplib::Request& req, httplib::Response& res, const std::string& action,
                        const std::string& object, Serve serve) {
  const std::string caller = ClientIdentity(req);
  const std::string name = req.matches[1];
  if (Status audit = store->AuditHealth(); !audit.ok()) return Reply(res, audit);
  Status served = [&]() -> Status {
    SCONE_ASSIGN_OR_RETURN(auto current, store->Get(name));
    if (!current) return NotFound("no session " + name);
    return serve(caller, *current);
  }();
  if (!served.ok()) {
    store->Audit(caller, action, object, "refused: " + served.message());
    return Reply(res, served);
  }
  store->Audit(caller, action, object, "ok");
}

// Accepts any client certificate: it names the caller; authorization is the sessions' business.
int AcceptAnyClientCertificate(int, X509_STORE_CTX*) { return 1; }

// Reads a request body of at most kMaxBodySize, whatever its framing (Content-Length or
// chunked: httplib hands chunks over as they come, and reading stops at the limit). On failure
// replies (413, or 400 for a malformed body), audits, and returns nothing.
std::optional<std::string> ReadBody(const httplib::ContentReader& reader, httplib::Response& res, Store* store,
                                    const std::string& caller, const std::string& action) {
  std::string body;
  bool too_large = false;
  bool complete = reader([&](const char* data, size_t size) {
    if (body.size() + size > kMaxBodySize) {
      too_large = true;
      return false;
    }
    body.append(data, size);
    return true;
  });
  if (complete) return body;
  Status why = too_large ? InvalidArgument("request body over " + std::to_string(kMaxBodySize) + " bytes")
                         : InvalidArgument("request body incomplete or malformed");
  store->Audit(caller, action, "", "rejected: " + why.message());
  Reply(res, why);
  if (too_large) res.status = 413;
  return std::nullopt;
}

// What the REST port tracks per TLS connection (OpenSSL ex_data, freed with the SSL object,
// before httplib closes the socket).
struct TlsConnection {
  ConnectionGuard* guard;
  int fd;
  size_t received = 0;
};

int ConnectionIndex() {
  static int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        auto* c = static_cast<TlsConnection*>(ptr);
        if (c == nullptr) return;
        c->guard->Release(c->fd);
        delete c;
      });
  return index;
}

// Counts what the peer sent; past kMaxConnectionBytes, reads fail.
long CountReceived(BIO* bio, int oper, const char*, size_t, int, long, int ret, size_t* processed) {
  if (oper != (BIO_CB_READ | BIO_CB_RETURN) || ret <= 0 || processed == nullptr) return ret;
  auto* c = static_cast<TlsConnection*>(static_cast<void*>(BIO_get_callback_arg(bio)));
  if (c == nullptr) return ret;
  c->received += *processed;
  return c->received > kMaxConnectionBytes ? -1 : ret;
}

// httplib's task queue, backed by the elastic pool: one thread per connection being served.
class PoolQueue : public httplib::TaskQueue {
 public:
  explicit PoolQueue(ElasticPool* pool) : pool_(pool) {}
  void enqueue(std::function<void()> fn) override { pool_->Run(std::move(fn)); }
  void shutdown() override { pool_->Drain(); }

 private:
  ElasticPool* pool_;
};

}  // namespace

int HttpStatusOf(const Status& status) {
  switch (status.code()) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
    case Code::kDataCorrupted:
      return 400;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
    case Code::kRolledBack:
      return 409;
    case Code::kUnsupported:
      return 415;
    case Code::kIoError:
      return 503;
    default:
      return 500;
  }
}

Server::~Server() {
  http_.reset();  // its connections end before the guard and pool they use
}

Result<std::unique_ptr<Server>> Server::Create(const std::string& state_dir, const std::vector<std::string>& admins,
                                               std::shared_ptr<Anchor> anchor, ConnectionGuard::Limits limits) {
  std::unique_ptr<Server> s(new Server());
  s->admins_ = admins;
  SCONE_ASSIGN_OR_RETURN(s->store_, Store::Open(state_dir, std::move(anchor)));
  crypto::TlsIdentityFiles tls{state_dir + "/cas.key", state_dir + "/cas.crt"};
  s->cert_path_ = tls.cert_path;
  s->key_path_ = tls.key_path;
  SCONE_RETURN_IF_ERROR(crypto::EnsureTlsIdentity(tls, "scone-cas"));
  s->guard_ = std::make_unique<ConnectionGuard>(limits);
  s->pool_ = std::make_unique<ElasticPool>(8, limits.max_connections + 8);
  Server* server = s.get();
  s->http_ = std::make_unique<httplib::SSLServer>([tls, server](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, AcceptAnyClientCertificate);
    SSL_CTX_set_app_data(&ctx, server);
    // The first thing OpenSSL does with a connection: admit it, or end it at once.
    SSL_CTX_set_info_callback(&ctx, [](const SSL* ssl, int where, int) {
      if ((where & SSL_CB_HANDSHAKE_START) == 0 || SSL_get_ex_data(ssl, ConnectionIndex()) != nullptr) return;
      auto* self = static_cast<Server*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
      self->AdmitTls(const_cast<SSL*>(ssl));
    });
    return SSL_CTX_use_certificate_chain_file(&ctx, tls.cert_path.c_str()) == 1 &&
           SSL_CTX_use_PrivateKey_file(&ctx, tls.key_path.c_str(), SSL_FILETYPE_PEM) == 1;
  });
  if (!s->http_->is_valid()) return Internal("CAS TLS set-up failed");
  ElasticPool* pool = s->pool_.get();
  s->http_->new_task_queue = [pool] { return new PoolQueue(pool); };
  s->http_->set_read_timeout(10, 0);
  s->http_->set_write_timeout(10, 0);
  s->http_->set_keep_alive_max_count(1);  // one request per connection: the byte budget is for it
  s->Routes();
  return s;
}

void Server::AdmitTls(SSL* ssl) {
  int fd = SSL_get_fd(ssl);
  std::string address = ConnectionGuard::PeerAddress(fd);
  std::string refusal;
  if (fd < 0 || !guard_->Admit(fd, address, &refusal)) {
    if (fd >= 0) shutdown(fd, SHUT_RDWR);  // the handshake fails at its next read
    auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(refused_mu_);
    auto& last = refused_[address];
    if (last + std::chrono::seconds(10) <= now) {  // one record per address and ten seconds
      last = now;
      store_->Audit("client@" + address, "connect", "", "refused: " + refusal);
    }
    if (refused_.size() > 4096) refused_.clear();
    return;
  }
  auto* c = new TlsConnection{guard_.get(), fd};
  SSL_set_ex_data(ssl, ConnectionIndex(), c);
  BIO* rbio = SSL_get_rbio(ssl);
  BIO_set_callback_arg(rbio, static_cast<char*>(static_cast<void*>(c)));
  BIO_set_callback_ex(rbio, CountReceived);
}

void Server::Routes() {
  Store* store = store_.get();
  http_->Post("/session", [store](const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
    std::string caller = ClientIdentity(req);
    if (Status audit = store->AuditHealth(); !audit.ok()) return Reply(res, audit);
    auto body = ReadBody(reader, res, store, caller, "create-or-update");
    if (!body) return;
    auto session = policy::Session::Parse(*body);
    if (!session.ok()) {
      store->Audit(caller, "create-or-update", "", "rejected: " + session.status().message());
      return Reply(res, session.status().Annotate("session rejected"));
    }
    auto refuse = [&](const std::string& action, const Status& why) {
      store->Audit(caller, action, session->name, "refused: " + why.message());
      Reply(res, why);
    };
    auto current = store->Get(session->name);
    if (!current.ok()) return refuse("create-or-update", current.status());
    StoredSession next{session->name, ToHex(policy::Session::HashOf(*body)), caller, *body, session->read_access};
    std::optional<std::string> replaces;
    if (*current) {
      const StoredSession& old = **current;
      auto old_parsed = policy::Session::Parse(old.text);
      if (!old_parsed.ok()) return refuse("update", old_parsed.status());
      if (!Allowed(old_parsed->update_access, old.creator, caller)) {
        return refuse("update", PermissionDenied("not allowed to update session " + session->name));
      }
      if (!session->predecessor || ToHex(*session->predecessor) != old.hash) {
        return refuse("update", RolledBack("predecessor must be the hash of the current session " + session->name +
                                           " (" + old.hash + ")"));
      }
      next.creator = old.creator;
      replaces = old.hash;
    } else if (session->predecessor) {
      return refuse("create", InvalidArgument("session " + session->name +
                                              " does not exist: a new session has no predecessor"));
    }
    std::string action = replaces ? "update" : "create";
    // Secrets are made here and stored with the session in one transaction: a request that
    // fails leaves nothing behind, and a create never inherits values.
    auto secrets = PlanSecrets(*store, *session, replaces.has_value());
    if (!secrets.ok()) return refuse(action, secrets.status().Annotate("session " + session->name));
    Status put = store->Put(next, replaces, *secrets);
    if (!put.ok()) return refuse(action, put);
    store->Audit(caller, action, session->name, "ok");
    res.status = replaces ? 200 : 201;
    res.set_content(nlohmann::json{{"name", next.name}, {"hash", next.hash}}.dump() + "\n", "application/json");
  });
  http_->Get(R"(/session/([A-Za-z0-9._-]+))", [store](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    ServeStoredSession(store, req, res, "read", name, [&](const std::string& caller, const StoredSession& stored) {
      if (!Allowed(stored.readers, stored.creator, caller)) {
        return PermissionDenied("not allowed to read session " + name);
      }
      res.set_content(stored.text, "application/yaml");
      return Status::Ok();
    });
  });
  http_->Get(R"(/session/([A-Za-z0-9._-]+)/ca)", [store](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    ServeStoredSession(store, req, res, "read-ca", name, [&](const std::string& caller, const StoredSession& stored) {
      if (!Allowed(stored.readers, stored.creator, caller)) {
        return PermissionDenied("not allowed to read session " + name);
      }
      SCONE_ASSIGN_OR_RETURN(policy::Session session, policy::Session::Parse(stored.text));
      SCONE_ASSIGN_OR_RETURN(std::string ca, SessionCaCertificate(*store, session));
      res.set_content(ca, "application/x-pem-file");
      return Status::Ok();
    });
  });
  // A service's console key, for the session's owner (who may update it: who could as well
  // release the key to a service of their own): `scone console decrypt --session --service`.
  http_->Get(R"(/session/([A-Za-z0-9._-]+)/console-key/([A-Za-z0-9._-]+))",
             [store](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const std::string service = req.matches[2];
    ServeStoredSession(store, req, res, "console-key", name + "/" + service,
                       [&](const std::string& caller, const StoredSession& stored) {
      SCONE_ASSIGN_OR_RETURN(policy::Session parsed, policy::Session::Parse(stored.text));
      if (!Allowed(parsed.update_access, stored.creator, caller)) {
        return PermissionDenied("not the owner of session " + name + ": its console keys are the owner's");
      }
      if (parsed.FindService(service) == nullptr) return NotFound("no service " + service + " in session " + name);
      SCONE_ASSIGN_OR_RETURN(auto key, store->ConsoleKey(name, service, /*create=*/false));
      if (!key) {
        return NotFound("service " + service + " of session " + name +
                        " has no console key: it never ran with SCONE_CONSOLE_SHIELD=protected");
      }
      std::string hex = ToHex(key->span());
      res.set_content(nlohmann::json{{"key", hex}}.dump() + "\n", "application/json");
      Wipe(hex);
      return Status::Ok();
    });
  });
  // Deleting a session (its owner's: who may update it) takes its secrets and its volumes' keys
  // with it. Refused while another session imports one of its secrets: that session would
  // stop working at its next release.
  http_->Delete(R"(/session/([A-Za-z0-9._-]+))", [store](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    ServeStoredSession(store, req, res, "delete", name, [&](const std::string& caller, const StoredSession& stored) {
      SCONE_ASSIGN_OR_RETURN(policy::Session parsed, policy::Session::Parse(stored.text));
      if (!Allowed(parsed.update_access, stored.creator, caller)) {
        return PermissionDenied("not allowed to delete session " + name + " (only who may update it)");
      }
      SCONE_ASSIGN_OR_RETURN(std::vector<StoredSession> all, store->List());
      for (const StoredSession& other : all) {
        if (other.name == name) continue;
        SCONE_ASSIGN_OR_RETURN(auto full, store->Get(other.name));
        if (!full) continue;
        auto other_parsed = policy::Session::Parse((*full).text);
        if (!other_parsed.ok()) continue;
        for (const auto& secret : other_parsed->secrets) {
          if (secret.import_session == name) {
            return AlreadyExists("session " + other.name + " imports secret " + secret.import_secret +
                                      " of session " + name + ": delete or change it first");
          }
        }
      }
      SCONE_RETURN_IF_ERROR(store->Delete(name, stored.hash));
      res.set_content(nlohmann::json{{"deleted", name}}.dump() + "\n", "application/json");
      return Status::Ok();
    });
  });
  http_->Get("/session", [store](const httplib::Request& req, httplib::Response& res) {
    std::string caller = ClientIdentity(req);
    auto all = store->List();  // names, creators and readers: nothing is unsealed or parsed
    if (!all.ok()) {
      store->Audit(caller, "list", "", "refused: " + all.status().message());
      return Reply(res, all.status());
    }
    nlohmann::json names = nlohmann::json::array();
    for (const StoredSession& s : *all) {
      if (Allowed(s.readers, s.creator, caller)) names.push_back(s.name);
    }
    res.set_content(nlohmann::json{{"sessions", names}}.dump() + "\n", "application/json");
  });
  http_->Post("/platform", [this, store](const httplib::Request& req, httplib::Response& res,
                                         const httplib::ContentReader& reader) {
    std::string caller = ClientIdentity(req);
    if (Status audit = store->AuditHealth(); !audit.ok()) return Reply(res, audit);
    if (std::find(admins_.begin(), admins_.end(), caller) == admins_.end()) {
      store->Audit(caller, "trust-platform", "", "denied");
      return Reply(res, PermissionDenied("only CAS administrators may change the trusted platforms"));
    }
    auto text = ReadBody(reader, res, store, caller, "trust-platform");
    if (!text) return;
    auto body = nlohmann::json::parse(*text, nullptr, false);
    std::string hex = body.is_object() && body.contains("key") && body["key"].is_string() ? body["key"].get<std::string>() : "";
    auto key = FromHexArray<crypto::PublicKey{}.size()>(hex);
    if (!key.ok()) {
      store->Audit(caller, "trust-platform", "", "rejected: not a key");
      return Reply(res, InvalidArgument("body must be {\"key\": \"<64 hex digits>\"}"));
    }
    Status s = store->TrustPlatform(*key, caller);
    store->Audit(caller, "trust-platform", hex, s.ok() ? "ok" : s.message());
    if (!s.ok()) return Reply(res, s);
    res.set_content(nlohmann::json{{"trusted", hex}}.dump() + "\n", "application/json");
  });
  http_->Get("/platform", [store](const httplib::Request& req, httplib::Response& res) {
    auto keys = store->TrustedPlatforms();
    if (!keys.ok()) {
      store->Audit(ClientIdentity(req), "list-platforms", "", "refused: " + keys.status().message());
      return Reply(res, keys.status());
    }
    nlohmann::json list = nlohmann::json::array();
    for (const auto& k : *keys) list.push_back(ToHex(k));
    res.set_content(nlohmann::json{{"platforms", list}}.dump() + "\n", "application/json");
  });
  http_->set_error_handler([store](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) {
      std::string reason = "HTTP " + std::to_string(res.status);
      store->Audit(ClientIdentity(req), req.method + " " + req.path, "", "refused: " + reason);
      res.set_content(nlohmann::json{{"error", reason}}.dump() + "\n", "application/json");
    }
  });
}

Result<int> Server::Bind(const std::string& host, int port) {
  int bound = port == 0 ? http_->bind_to_any_port(host.c_str()) : (http_->bind_to_port(host.c_str(), port) ? port : -1);
  if (bound <= 0) return IoError("bind " + host + ":" + std::to_string(port), EADDRINUSE);
  return bound;
}

void Server::Run() { http_->listen_after_bind(); }

// Called from a signal handler (scone cas serve): no locks here. Connections still open end
// by themselves or at their deadline before Run returns.
void Server::Stop() { http_->stop(); }

}  // namespace scone::cas
