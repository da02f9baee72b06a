// A CAS client for people and tools: HTTPS with this user's client certificate (the identity
// that becomes a session's CREATOR), and CAS's certificate pinned.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace httplib {
class SSLClient;
}

namespace scone::cas {

struct CasEndpoint {
  std::string host;
  int port = 0;
  std::string cas_cert;     // PEM certificate CAS must present
  std::string client_cert;  // this user's identity
  std::string client_key;
};

struct CasReply {
  int status = 0;
  std::string body;
};

class Client {
 public:
  explicit Client(const CasEndpoint& endpoint);
  ~Client();

  Result<CasReply> Post(const std::string& path, const std::string& body,
                        const std::string& content_type);
  Result<CasReply> Get(const std::string& path);
  Result<CasReply> Delete(const std::string& path);

 private:
  std::unique_ptr<httplib::SSLClient> http_;
  std::string where_;
};

// The certificate (PEM) of the CA that issues session `session`'s network identities: what a
// client outside the session trusts to verify its services (`scone session ca`, `scone stack ca`).
Result<std::string> FetchSessionCa(Client& client, const std::string& session);

// A CAS error reply as a Status whose message is CAS's reason.
Status ErrorFromReply(const CasReply& reply);

// "https://HOST:PORT" -> host, port.
Status ParseCasUrl(const std::string& url, CasEndpoint* out);

}  // namespace scone::cas
