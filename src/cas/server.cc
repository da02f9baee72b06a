#include "cas/server.h"

#include <httplib.h>
#include <openssl/ssl.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "cas/secrets.h"
#include "crypto/tls_identity.h"
#include "policy/session.h"

namespace scone::cas {
namespace {

constexpr size_t kMaxBodySize = 1 << 20;

std::string ClientIdentity(const httplib::Request& req) {
  if (req.ssl == nullptr) return "";
  X509* cert = SSL_get1_peer_certificate(req.ssl);
  if (cert == nullptr) return "";
  std::string fp = crypto::PublicKeyFingerprint(cert);
  X509_free(cert);
  return fp;
}

bool Allowed(const std::vector<std::string>& list, const std::string& creator,
             const std::string& caller) {
  for (const std::string& who : list) {
    if ((who == "CREATOR" && caller == creator) || who == caller) return true;
  }
  return false;
}

void Reply(httplib::Response& res, const Status& status) {
  res.status = HttpStatusOf(status);
  res.set_content(nlohmann::json{{"error", status.message()}}.dump() + "\n", "application/json");
}

// Accepts any client certificate: it names the caller; authorization is the sessions' business.
int AcceptAnyClientCertificate(int, X509_STORE_CTX*) { return 1; }

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
    default:
      return 500;
  }
}

Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(const std::string& state_dir,
                                               const std::vector<std::string>& admins) {
  std::unique_ptr<Server> s(new Server());
  s->admins_ = admins;
  SCONE_ASSIGN_OR_RETURN(s->store_, Store::Open(state_dir));
  crypto::TlsIdentityFiles tls{state_dir + "/cas.key", state_dir + "/cas.crt"};
  s->cert_path_ = tls.cert_path;
  s->key_path_ = tls.key_path;
  SCONE_RETURN_IF_ERROR(crypto::EnsureTlsIdentity(tls, "scone-cas"));
  s->http_ = std::make_unique<httplib::SSLServer>([tls](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       AcceptAnyClientCertificate);
    return SSL_CTX_use_certificate_chain_file(&ctx, tls.cert_path.c_str()) == 1 &&
           SSL_CTX_use_PrivateKey_file(&ctx, tls.key_path.c_str(), SSL_FILETYPE_PEM) == 1;
  });
  if (!s->http_->is_valid()) return Internal("CAS TLS set-up failed");
  s->http_->set_payload_max_length(kMaxBodySize);
  s->http_->set_read_timeout(10, 0);
  s->Routes();
  return s;
}

void Server::Routes() {
  Store* store = store_.get();
  http_->Post("/session", [store](const httplib::Request& req, httplib::Response& res) {
    std::string caller = ClientIdentity(req);
    auto session = policy::Session::Parse(req.body);
    if (!session.ok()) {
      store->Audit(caller, "create-or-update", "", "rejected: " + session.status().message());
      return Reply(res, session.status().Annotate("session rejected"));
    }
    auto current = store->Get(session->name);
    if (!current.ok()) return Reply(res, current.status());
    StoredSession next{session->name, ToHex(policy::Session::HashOf(req.body)), caller, req.body};
    std::optional<std::string> replaces;
    if (*current) {
      const StoredSession& old = **current;
      auto old_parsed = policy::Session::Parse(old.text);
      if (!old_parsed.ok()) return Reply(res, old_parsed.status());
      if (!Allowed(old_parsed->update_access, old.creator, caller)) {
        store->Audit(caller, "update", session->name, "denied");
        return Reply(res, PermissionDenied("not allowed to update session " + session->name));
      }
      if (!session->predecessor || ToHex(*session->predecessor) != old.hash) {
        store->Audit(caller, "update", session->name, "wrong predecessor");
        return Reply(res, RolledBack("predecessor must be the hash of the current session " +
                                     session->name + " (" + old.hash + ")"));
      }
      next.creator = old.creator;
      replaces = old.hash;
    } else if (session->predecessor) {
      return Reply(res, InvalidArgument("session " + session->name +
                                        " does not exist: a new session has no predecessor"));
    }
    if (Status generated = GenerateSecrets(*store, *session); !generated.ok()) {
      store->Audit(caller, "create-or-update", session->name, "secrets: " + generated.message());
      return Reply(res, generated.Annotate("session " + session->name));
    }
    Status put = store->Put(next, replaces);
    store->Audit(caller, replaces ? "update" : "create", session->name, put.ok() ? "ok" : put.message());
    if (!put.ok()) return Reply(res, put);
    res.status = replaces ? 200 : 201;
    res.set_content(nlohmann::json{{"name", next.name}, {"hash", next.hash}}.dump() + "\n",
                    "application/json");
  });
  http_->Get(R"(/session/([A-Za-z0-9._-]+))", [store](const httplib::Request& req, httplib::Response& res) {
    std::string caller = ClientIdentity(req);
    std::string name = req.matches[1];
    auto current = store->Get(name);
    if (!current.ok()) return Reply(res, current.status());
    if (!*current) return Reply(res, NotFound("no session " + name));
    auto parsed = policy::Session::Parse((*current)->text);
    if (!parsed.ok()) return Reply(res, parsed.status());
    if (!Allowed(parsed->read_access, (*current)->creator, caller)) {
      store->Audit(caller, "read", name, "denied");
      return Reply(res, PermissionDenied("not allowed to read session " + name));
    }
    store->Audit(caller, "read", name, "ok");
    res.set_content((*current)->text, "application/yaml");
  });
  http_->Get("/session", [store](const httplib::Request& req, httplib::Response& res) {
    std::string caller = ClientIdentity(req);
    auto all = store->List();
    if (!all.ok()) return Reply(res, all.status());
    nlohmann::json names = nlohmann::json::array();
    for (const StoredSession& s : *all) {
      auto parsed = policy::Session::Parse(s.text);
      if (parsed.ok() && Allowed(parsed->read_access, s.creator, caller)) names.push_back(s.name);
    }
    res.set_content(nlohmann::json{{"sessions", names}}.dump() + "\n", "application/json");
  });
  http_->Post("/platform", [this, store](const httplib::Request& req, httplib::Response& res) {
    std::string caller = ClientIdentity(req);
    if (std::find(admins_.begin(), admins_.end(), caller) == admins_.end()) {
      store->Audit(caller, "trust-platform", "", "denied");
      return Reply(res, PermissionDenied("only CAS administrators may change the trusted platforms"));
    }
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    std::string hex = body.is_object() && body.contains("key") && body["key"].is_string() ? body["key"].get<std::string>() : "";
    auto key = FromHexArray<crypto::PublicKey{}.size()>(hex);
    if (!key.ok()) return Reply(res, InvalidArgument("body must be {\"key\": \"<64 hex digits>\"}"));
    Status s = store->TrustPlatform(*key, caller);
    store->Audit(caller, "trust-platform", hex, s.ok() ? "ok" : s.message());
    if (!s.ok()) return Reply(res, s);
    res.set_content(nlohmann::json{{"trusted", hex}}.dump() + "\n", "application/json");
  });
  http_->Get("/platform", [store](const httplib::Request&, httplib::Response& res) {
    auto keys = store->TrustedPlatforms();
    if (!keys.ok()) return Reply(res, keys.status());
    nlohmann::json list = nlohmann::json::array();
    for (const auto& k : *keys) list.push_back(ToHex(k));
    res.set_content(nlohmann::json{{"platforms", list}}.dump() + "\n", "application/json");
  });
  http_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(nlohmann::json{{"error", "HTTP " + std::to_string(res.status)}}.dump() + "\n",
                      "application/json");
    }
  });
}

Result<int> Server::Bind(const std::string& host, int port) {
  int bound = port == 0 ? http_->bind_to_any_port(host.c_str()) : (http_->bind_to_port(host.c_str(), port) ? port : -1);
  if (bound <= 0) return IoError("bind " + host + ":" + std::to_string(port), EADDRINUSE);
  return bound;
}

void Server::Run() { http_->listen_after_bind(); }

void Server::Stop() { http_->stop(); }

}  // namespace scone::cas
