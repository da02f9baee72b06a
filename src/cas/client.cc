#include "cas/client.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace scone::cas {

Client::Client(const CasEndpoint& e)
    : http_(std::make_unique<httplib::SSLClient>(e.host, e.port, e.client_cert, e.client_key)),
      where_("https://" + e.host + ":" + std::to_string(e.port)) {
  http_->set_ca_cert_path(e.cas_cert.c_str());
  http_->enable_server_certificate_verification(true);
  http_->set_connection_timeout(5, 0);
  http_->set_read_timeout(30, 0);
}

Client::~Client() = default;

static Result<CasReply> ToReply(const httplib::Result& r, const std::string& where) {
  if (!r) {
    return Status(Code::kIoError, "cannot reach CAS at " + where + ": " + httplib::to_string(r.error()),
                  ECONNREFUSED);
  }
  return CasReply{r->status, r->body};
}

Result<CasReply> Client::Post(const std::string& path, const std::string& body,
                              const std::string& content_type) {
  return ToReply(http_->Post(path.c_str(), body, content_type.c_str()), where_);
}

Result<CasReply> Client::Get(const std::string& path) {
  return ToReply(http_->Get(path.c_str()), where_);
}

Result<CasReply> Client::Delete(const std::string& path) {
  return ToReply(http_->Delete(path.c_str()), where_);
}

Result<std::string> FetchSessionCa(Client& client, const std::string& session) {
  SCONE_ASSIGN_OR_RETURN(CasReply r, client.Get("/session/" + session + "/ca"));
  if (r.status != 200) return ErrorFromReply(r);
  if (r.body.find("-----BEGIN CERTIFICATE-----") != 0) return Internal("CAS sent no certificate for session " + session);
  return r.body;
}

Status ErrorFromReply(const CasReply& r) {
  std::string reason = r.body;
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()) {
    reason = j["error"].get<std::string>();
  }
  Code code = r.status == 403 ? Code::kPermissionDenied
              : r.status == 404 ? Code::kNotFound
              : r.status == 409 ? Code::kRolledBack
                                : Code::kInvalidArgument;
  return Status(code, "CAS refused (HTTP " + std::to_string(r.status) + "): " + reason);
}

Status ParseCasUrl(const std::string& url, CasEndpoint* out) {
  constexpr std::string_view kScheme = "https://";
  if (url.rfind(kScheme, 0) != 0) return InvalidArgument("CAS address '" + url + "' is not https://HOST:PORT");
  std::string rest = url.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("CAS address '" + url + "' has no port");
  out->host = rest.substr(0, colon);
  out->port = std::atoi(rest.c_str() + colon + 1);
  if (out->host.empty() || out->port <= 0 || out->port > 65535) {
    return InvalidArgument("CAS address '" + url + "' is not https://HOST:PORT");
  }
  return Status::Ok();
}

}  // namespace scone::cas
