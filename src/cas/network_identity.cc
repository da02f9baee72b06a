#include "cas/network_identity.h"

#include <arpa/inet.h>

#include <cctype>
#include <set>

#include "net/network_rules.h"

namespace scone::cas {
namespace {

constexpr char kImplicitCaEntry[] = "scone:session-ca";
constexpr char kServicePrefix[] = "scone:service:";
constexpr size_t kMaxCommonName = 64;  // ub-common-name (RFC 5280)

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsIpLiteral(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// A name or address a client checks a server's certificate against, into `dns` or `ips`.
// Values holding a $$SCONE::...$$ reference, or that are neither, are left to the runtime's
// parser to judge.
void AddName(const std::string& name, std::set<std::string>* dns, std::set<std::string>* ips) {
  if (IsIpLiteral(name)) {
    ips->insert(name);
  } else if (policy::ValidDnsName(name)) {
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    dns->insert(lower);
  }
}

Result<std::string> StoredText(Store& store, const std::string& session, const std::string& entry) {
  SCONE_ASSIGN_OR_RETURN(auto stored, store.GetSecret(session, entry));
  if (!stored) return NotFound("");
  return std::string(stored->value.span().begin(), stored->value.span().end());
}

}  // namespace

SessionCa SessionCaOf(const policy::Session& session) {
  const policy::Secret* only = nullptr;
  int generated_cas = 0;
  for (const policy::Secret& s : session.secrets) {
    if (s.kind != policy::Secret::Kind::kX509Ca || s.value || s.import_session || !s.issuer.empty()) continue;
    only = &s;
    ++generated_cas;
  }
  if (generated_cas == 1) {
    return {only->name, only->private_key.empty() ? only->name + ".key" : only->private_key, only};
  }
  return {kImplicitCaEntry, std::string(kImplicitCaEntry) + ".key", nullptr};
}

crypto::CertificateRequest ImplicitCaRequest(const policy::Session& session) {
  crypto::CertificateRequest r;
  r.common_name = ("SCONE session " + session.name).substr(0, kMaxCommonName);
  r.is_ca = true;
  return r;
}

bool UsesNetworkShield(const policy::Service& service) {
  for (const auto& [name, value] : service.environment) {
    if (net::IsShieldVariable(name)) return true;
  }
  return false;
}

std::string ServiceCertEntry(const std::string& service) { return kServicePrefix + service; }
std::string ServiceKeyEntry(const std::string& service) { return kServicePrefix + service + ".key"; }

crypto::CertificateRequest ServiceCertificateRequest(const policy::Session& session, const policy::Service& service) {
  std::set<std::string> dns = {"localhost"}, ips = {"127.0.0.1", "::1"};
  AddName(service.name, &dns, &ips);
  const std::string client = std::string(net::kVariablePrefix) + "_CLIENT_";
  for (const policy::Service& s : session.services) {
    for (const auto& [variable, value] : s.environment) {
      if (variable.rfind(client, 0) != 0) continue;
      if (EndsWith(variable, "_SERVER_DNS_NAME")) {
        AddName(value, &dns, &ips);
      } else if (EndsWith(variable, "_DESTINATION")) {
        // TCP:<host>:<port>, IPv6 in brackets; unix sockets name no host.
        size_t first = value.find(':'), last = value.rfind(':');
        if (first == std::string::npos || last <= first) continue;
        std::string scheme = value.substr(0, first);
        for (char& c : scheme) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (scheme != "TCP") continue;
        std::string host = value.substr(first + 1, last - first - 1);
        if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
        AddName(host, &dns, &ips);
      }
    }
  }
  crypto::CertificateRequest r;
  r.common_name = service.name.substr(0, kMaxCommonName);
  r.dns.assign(dns.begin(), dns.end());
  r.ips.assign(ips.begin(), ips.end());
  return r;
}

Result<std::optional<NetworkIdentity>> ReleaseNetworkIdentity(Store& store, const policy::Session& session,
                                                              const policy::Service& service) {
  if (!UsesNetworkShield(service)) return std::optional<NetworkIdentity>();
  SCONE_ASSIGN_OR_RETURN(auto cert, store.GetSecret(session.name, ServiceCertEntry(service.name)));
  if (!cert) return std::optional<NetworkIdentity>();  // stored before CAS made identities
  SCONE_ASSIGN_OR_RETURN(auto key, store.GetSecret(session.name, ServiceKeyEntry(service.name)));
  SCONE_ASSIGN_OR_RETURN(std::string ca, SessionCaCertificate(store, session));
  if (!key) return DataCorrupted("session " + session.name + ": service " + service.name + "'s key is missing");
  NetworkIdentity out;
  out.identity = SecretBytes(key->value.size() + cert->value.size());
  std::copy(key->value.span().begin(), key->value.span().end(), out.identity.data());
  std::copy(cert->value.span().begin(), cert->value.span().end(), out.identity.data() + key->value.size());
  out.session_ca = std::move(ca);
  return std::optional<NetworkIdentity>(std::move(out));
}

Result<std::string> SessionCaCertificate(Store& store, const policy::Session& session) {
  auto text = StoredText(store, session.name, SessionCaOf(session).cert_entry);
  if (text.ok()) return text;
  if (text.status().code() != Code::kNotFound) return text.status();
  return NotFound("session " + session.name + " has no CA yet (it was stored before CAS made session CAs: "
                  "an update makes one)");
}

}  // namespace scone::cas
