#include "net/network_rules.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <map>
#include <memory>

#include "common/setting.h"

namespace scone::net {
namespace {

const std::string kPrefix = kVariablePrefix;
const std::string kServer = kPrefix + "_SERVER_";
const std::string kClient = kPrefix + "_CLIENT_";
const std::string kUnsupported = kPrefix + "_UNSUPPORTED_PROTOCOLS";

// Longest first: DESTINATION_IP before DESTINATION.
const std::vector<std::string> kServerAttributes = {"CLIENT_AUTH", "IDENTITY", "PORT"};
const std::vector<std::string> kClientAttributes = {"SERVER_DNS_NAME", "DESTINATION_IP", "DESTINATION",
                                                    "SERVER_AUTH", "IDENTITY"};

Status Bad(const std::string& variable, const std::string& what) {
  return InvalidArgument(variable + ": " + what);
}

bool StartsWith(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Values are SCONE's lowercase words, matched exactly (common/setting.h), in the enums' order.
static_assert(static_cast<int>(Protection::kUnprotected) == 1 && static_cast<int>(Protection::kRefuse) == 2);
static_assert(static_cast<int>(ShieldMode::kUnprotected) == 1 && static_cast<int>(ShieldMode::kProtected) == 2);
Result<Protection> ParseProtection(const std::string& variable, const std::string& value) {
  SCONE_ASSIGN_OR_RETURN(size_t i, ParseSetting(variable, value, {"protected", "unprotected", "refuse"}));
  return static_cast<Protection>(i);
}

bool IsIpLiteral(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

Result<uint16_t> ParsePort(const std::string& variable, const std::string& text) {
  if (text.empty() || text.size() > 5 || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    return Bad(variable, "port '" + text + "' is not a number");
  }
  long port = std::stol(text);
  if (port < 1 || port > 65535) return Bad(variable, "port " + text + " is not between 1 and 65535");
  return static_cast<uint16_t>(port);
}

// TCP:<port> (server) or TCP:<host>:<port> (client); unix:<path> (absolute).
Result<Endpoint> ParseEndpoint(const std::string& variable, const std::string& value, bool with_host) {
  Endpoint e;
  size_t colon = value.find(':');
  std::string scheme = Lower(value.substr(0, colon == std::string::npos ? value.size() : colon));
  const char* form = with_host ? "TCP:<host>:<port> or unix:<path>" : "TCP:<port> or unix:<path>";
  if (colon == std::string::npos) return Bad(variable, "'" + value + "' is not " + form);
  std::string rest = value.substr(colon + 1);
  if (scheme == "unix") {
    // A newline or NUL would make the path another than it reads (a NUL ends it in the kernel).
    if (std::any_of(rest.begin(), rest.end(), [](char c) { return std::iscntrl(static_cast<unsigned char>(c)); })) {
      return Bad(variable, "unix socket path holds a control character (a newline, a NUL...)");
    }
    if (rest.empty() || rest[0] != '/') return Bad(variable, "unix socket path '" + rest + "' is not absolute");
    if (rest.size() >= 108) return Bad(variable, "unix socket path is longer than a socket address holds");
    e.unix_socket = true;
    e.path = rest;
    return e;
  }
  if (scheme != "tcp") return Bad(variable, "'" + value + "' is not " + form);
  if (!with_host) {
    SCONE_ASSIGN_OR_RETURN(e.port, ParsePort(variable, rest));
    return e;
  }
  size_t last = rest.rfind(':');
  if (last == std::string::npos || last == 0) return Bad(variable, "'" + value + "' is not " + form);
  std::string host = rest.substr(0, last);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.find(':') != std::string::npos && !IsIpLiteral(host)) {
    return Bad(variable, "host '" + host + "' is not an address (an IPv6 address goes in brackets)");
  }
  SCONE_ASSIGN_OR_RETURN(e.port, ParsePort(variable, rest.substr(last + 1)));
  e.host = host;
  return e;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr MemoryBio(const void* data, size_t size) { return BioPtr(BIO_new_mem_buf(data, static_cast<int>(size))); }

// Whether the text is PEM blocks and nothing else but white space between them: OpenSSL's reader
// skips text outside the blocks, so a value with junk around them (a truncated paste, two values
// run together) would pass unnoticed. The error says where, never what (the value may hold a key).
Status OnlyPemBlocks(const std::string& variable, std::string_view text) {
  constexpr std::string_view kBegin = "-----BEGIN ", kEnd = "-----END ", kDashes = "-----";
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  size_t pos = 0;
  int blocks = 0;
  for (;;) {
    while (pos < text.size() && space(text[pos])) ++pos;
    if (pos == text.size()) return Status::Ok();
    const std::string where = blocks == 0 ? "before the first PEM block" : "after PEM block " + std::to_string(blocks);
    if (text.substr(pos, kBegin.size()) != kBegin) {
      return Bad(variable, "text that is not PEM " + where + " (byte " + std::to_string(pos) + ")");
    }
    size_t end = text.find(kEnd, pos);
    size_t close = end == std::string_view::npos ? end : text.find(kDashes, end + kEnd.size());
    if (close == std::string_view::npos) {
      return Bad(variable, "a PEM block " + where + " has no END line (byte " + std::to_string(pos) + ")");
    }
    pos = close + kDashes.size();
    ++blocks;
  }
}

// The certificates in a PEM text: how many, or an error naming the variable.
Result<int> CountCertificates(const std::string& variable, const void* data, size_t size) {
  BioPtr bio = MemoryBio(data, size);
  int count = 0;
  for (;;) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    X509_free(cert);
    ++count;
  }
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  // Running out of PEM blocks is the normal end; anything else is a certificate that does not parse.
  if (count > 0 && e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
    return Bad(variable, "certificate " + std::to_string(count + 1) + " does not parse");
  }
  const std::string_view text(static_cast<const char*>(data), size);
  // No certificate block at all (a private key alone, a CSR): says so, not "does not parse".
  if (count == 0 && text.find("-----BEGIN CERTIFICATE-----") == std::string_view::npos &&
      text.find("-----BEGIN TRUSTED CERTIFICATE-----") == std::string_view::npos) {
    if (text.find("-----BEGIN ") != std::string_view::npos) SCONE_RETURN_IF_ERROR(OnlyPemBlocks(variable, text));
    return Bad(variable, "no PEM certificate in the value");
  }
  // Junk around a block can make it unreadable too: where it is says more than "none found".
  SCONE_RETURN_IF_ERROR(OnlyPemBlocks(variable, text));
  if (count == 0) return Bad(variable, "certificate 1 does not parse");
  return count;
}

Result<Identity> ParseIdentity(const std::string& variable, const std::string& value) {
  BioPtr bio = MemoryBio(value.data(), value.size());
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  ERR_clear_error();
  if (key == nullptr) return Bad(variable, "no PEM private key in the value (an identity is a key and its certificate)");
  if (auto count = CountCertificates(variable, value.data(), value.size()); !count.ok()) {
    EVP_PKEY_free(key);
    return count.status();
  }
  BioPtr certs = MemoryBio(value.data(), value.size());
  X509* first = PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr);
  bool matches = first != nullptr && X509_check_private_key(first, key) == 1;
  X509_free(first);
  EVP_PKEY_free(key);
  ERR_clear_error();
  if (!matches) return Bad(variable, "the first certificate is not the private key's");
  Identity id;
  id.pem = SecretBytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(value.data()), value.size()));
  return id;
}

// A CA or `disabled` (true in *disabled).
Result<std::optional<Authority>> ParseAuthority(const std::string& variable, const std::string& value, bool* disabled) {
  if (Lower(value) == "disabled") {  // "Disabled" too: an error, never read as a CA
    SCONE_RETURN_IF_ERROR(ParseSetting(variable, value, {"disabled"}).status());
    *disabled = true;
    return std::optional<Authority>();
  }
  SCONE_ASSIGN_OR_RETURN(int count, CountCertificates(variable, value.data(), value.size()));
  (void)count;
  return std::optional<Authority>(Authority{value});
}

// SCONE_NETWORK_SHIELD_SERVER_<NAME>[_<ATTRIBUTE>]: splits the rest after the prefix.
void SplitRuleVariable(const std::string& rest, const std::vector<std::string>& attributes, std::string* name,
                       std::string* attribute) {
  for (const std::string& a : attributes) {
    const std::string suffix = "_" + a;
    if (rest.size() > suffix.size() && rest.compare(rest.size() - suffix.size(), suffix.size(), suffix) == 0) {
      *name = rest.substr(0, rest.size() - suffix.size());
      *attribute = a;
      return;
    }
  }
  *name = rest;
  attribute->clear();
}

// TLS settings on a rule that makes no TLS (unprotected, refuse) would be ignored, and whoever
// gave an identity or a CA may believe the traffic protected: refused, naming the first such.
Status NoTlsSettings(const std::string& base, Protection protection,
                     const std::map<std::string, std::string>& attributes, std::initializer_list<const char*> tls) {
  if (protection == Protection::kProtected) return Status::Ok();
  for (const char* attribute : tls) {
    if (attributes.count(attribute) != 0) {
      return Bad(base + "_" + attribute, std::string("given for a rule that is '") + ProtectionName(protection) +
                                             "': TLS settings apply to protected rules only (it would be ignored)");
    }
  }
  return Status::Ok();
}

}  // namespace

const char* ProtectionName(Protection p) {
  switch (p) {
    case Protection::kProtected:
      return "protected";
    case Protection::kUnprotected:
      return "unprotected";
    case Protection::kRefuse:
      return "refuse";
  }
  return "?";
}

std::string Endpoint::ToString() const {
  if (unix_socket) return "unix:" + path;
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "TCP:" + (host.empty() ? "" : h + ":") + std::to_string(port);
}

bool IsShieldVariable(const std::string& name) {
  return name == kPrefix || StartsWith(name, kPrefix + "_");
}

Result<NetworkRules> NetworkRules::Parse(const std::vector<std::pair<std::string, std::string>>& variables,
                                         const ParseOptions& options) {
  NetworkRules rules;
  // Attributes by rule name, gathered first: the rule's own variable may come after them.
  std::map<std::string, std::map<std::string, std::string>> servers, clients;
  bool mode_given = false, any_rule = false;
  for (const auto& [variable, value] : variables) {
    if (!IsShieldVariable(variable)) continue;
    if (variable == kPrefix) {
      SCONE_ASSIGN_OR_RETURN(size_t i, ParseSetting(variable, value, {"disabled", "unprotected", "protected"}));
      rules.mode = static_cast<ShieldMode>(i);
      mode_given = true;
    } else if (variable == kUnsupported) {
      SCONE_ASSIGN_OR_RETURN(rules.unsupported_protocols, ParseProtection(variable, value));
      if (rules.unsupported_protocols == Protection::kProtected) {
        return Bad(variable, "'protected' is not possible (no TLS over UDP); use unprotected or refuse");
      }
    } else if (StartsWith(variable, kServer) || StartsWith(variable, kClient)) {
      bool server = StartsWith(variable, kServer);
      std::string rest = variable.substr((server ? kServer : kClient).size());
      std::string name, attribute;
      SplitRuleVariable(rest, server ? kServerAttributes : kClientAttributes, &name, &attribute);
      if (name.empty()) return Bad(variable, "the rule has no name");
      auto& rule = (server ? servers : clients)[name];
      rule[attribute.empty() ? "" : attribute] = value;
      any_rule = true;
    } else {
      return Bad(variable, "not one of the network shield's variables");
    }
  }
  // Rules, or refusing UDP, turn the shield on alone; with the shield disabled they would be
  // ignored, silently.
  const bool refuses_unsupported = rules.unsupported_protocols == Protection::kRefuse;
  if (!mode_given && (any_rule || refuses_unsupported)) rules.mode = ShieldMode::kUnprotected;
  if (rules.mode == ShieldMode::kDisabled && any_rule) {
    return Bad(kPrefix, "disabled, but rules are given (they would be ignored)");
  }
  if (rules.mode == ShieldMode::kDisabled && refuses_unsupported) {
    return Bad(kPrefix, "disabled, but " + kUnsupported + "=refuse is given (it would be ignored)");
  }

  for (const auto& [name, attributes] : servers) {
    const std::string base = kServer + name;
    auto own = attributes.find("");
    if (own == attributes.end()) {
      return Bad(base + "_" + attributes.begin()->first, "no " + base + " gives the rule's protection");
    }
    ServerRule rule;
    rule.name = name;
    SCONE_ASSIGN_OR_RETURN(rule.protection, ParseProtection(base, own->second));
    SCONE_RETURN_IF_ERROR(NoTlsSettings(base, rule.protection, attributes, {"IDENTITY", "CLIENT_AUTH"}));
    auto port = attributes.find("PORT");
    if (port == attributes.end()) return Bad(base + "_PORT", "missing (the rule names no port)");
    SCONE_ASSIGN_OR_RETURN(rule.port, ParseEndpoint(base + "_PORT", port->second, /*with_host=*/false));
    if (auto it = attributes.find("IDENTITY"); it != attributes.end()) {
      SCONE_ASSIGN_OR_RETURN(rule.identity, ParseIdentity(base + "_IDENTITY", it->second));
    } else if (rule.protection == Protection::kProtected && !options.session_ca) {
      return Bad(base + "_IDENTITY", "missing (a protected server needs a private key and certificate; without CAS there is no session CA to issue one)");
    }
    if (auto it = attributes.find("CLIENT_AUTH"); it != attributes.end()) {
      SCONE_ASSIGN_OR_RETURN(rule.client_auth, ParseAuthority(base + "_CLIENT_AUTH", it->second, &rule.client_auth_disabled));
    } else if (rule.protection == Protection::kProtected && !options.session_ca) {
      return Bad(base + "_CLIENT_AUTH", "missing (a CA for client certificates, or 'disabled'; without CAS there is no session CA)");
    }
    for (const ServerRule& other : rules.servers) {
      if (other.port.unix_socket == rule.port.unix_socket && other.port.port == rule.port.port &&
          other.port.path == rule.port.path) {
        return Bad(base + "_PORT", rule.port.ToString() + " is also rule " + other.name + "'s");
      }
    }
    rules.servers.push_back(std::move(rule));
  }

  for (const auto& [name, attributes] : clients) {
    const std::string base = kClient + name;
    auto own = attributes.find("");
    if (own == attributes.end()) {
      return Bad(base + "_" + attributes.begin()->first, "no " + base + " gives the rule's protection");
    }
    ClientRule rule;
    rule.name = name;
    SCONE_ASSIGN_OR_RETURN(rule.protection, ParseProtection(base, own->second));
    SCONE_RETURN_IF_ERROR(NoTlsSettings(base, rule.protection, attributes, {"IDENTITY", "SERVER_AUTH", "SERVER_DNS_NAME"}));
    auto destination = attributes.find("DESTINATION");
    if (destination == attributes.end()) return Bad(base + "_DESTINATION", "missing (the rule names no destination)");
    SCONE_ASSIGN_OR_RETURN(rule.destination, ParseEndpoint(base + "_DESTINATION", destination->second, /*with_host=*/true));
    if (auto it = attributes.find("DESTINATION_IP"); it != attributes.end()) {
      if (rule.destination.unix_socket) return Bad(base + "_DESTINATION_IP", "given for a unix socket destination");
      size_t start = 0;
      while (start <= it->second.size()) {  // a comma-separated list
        size_t comma = it->second.find(',', start);
        std::string ip = it->second.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!IsIpLiteral(ip)) return Bad(base + "_DESTINATION_IP", "'" + ip + "' is not an IPv4 or IPv6 address");
        rule.destination_ips.push_back(ip);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    if (auto it = attributes.find("SERVER_DNS_NAME"); it != attributes.end()) {
      const std::string& dns = it->second;
      bool ok = !dns.empty() && dns.size() <= 253 && std::all_of(dns.begin(), dns.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*';
      });
      if (!ok) return Bad(base + "_SERVER_DNS_NAME", "'" + dns + "' is not a DNS name");
      rule.server_dns_name = dns;
    } else if (!rule.destination.unix_socket && !IsIpLiteral(rule.destination.host)) {
      rule.server_dns_name = rule.destination.host;
    }
    if (auto it = attributes.find("IDENTITY"); it != attributes.end()) {
      SCONE_ASSIGN_OR_RETURN(rule.identity, ParseIdentity(base + "_IDENTITY", it->second));
    }
    if (auto it = attributes.find("SERVER_AUTH"); it != attributes.end()) {
      SCONE_ASSIGN_OR_RETURN(rule.server_auth, ParseAuthority(base + "_SERVER_AUTH", it->second, &rule.server_auth_disabled));
    } else if (rule.protection == Protection::kProtected && !options.session_ca) {
      return Bad(base + "_SERVER_AUTH", "missing (a CA for the server's certificate, or 'disabled'; without CAS there is no session CA)");
    }
    rules.clients.push_back(std::move(rule));
  }
  return rules;
}

Status NetworkRules::UseSessionDefaults(const SecretBytes& identity, const std::string& session_ca) {
  std::string identity_text(reinterpret_cast<const char*>(identity.data()), identity.size());
  auto parsed_identity = ParseIdentity("the service's identity from CAS", identity_text);
  Wipe(identity_text);
  if (!parsed_identity.ok()) return parsed_identity.status();
  bool disabled = false;
  SCONE_ASSIGN_OR_RETURN(auto ca, ParseAuthority("the session CA from CAS", session_ca, &disabled));
  if (!ca) return InvalidArgument("the session CA from CAS: no certificate");
  auto own_identity = [&] { return Identity{parsed_identity->pem.Clone()}; };
  for (ServerRule& r : servers) {
    if (!r.identity) r.identity = own_identity();
    if (!r.client_auth && !r.client_auth_disabled) r.client_auth = ca;
  }
  for (ClientRule& r : clients) {
    if (!r.identity) r.identity = own_identity();
    if (!r.server_auth && !r.server_auth_disabled) r.server_auth = ca;
  }
  if (mode == ShieldMode::kProtected) {
    ServerRule server;
    server.name = "(default)";
    server.identity = own_identity();
    server.client_auth = ca;
    default_server = std::move(server);
    ClientRule client;
    client.name = "(default)";
    client.identity = own_identity();
    client.server_auth = ca;
    default_client = std::move(client);
  }
  return Status::Ok();
}

const ServerRule* NetworkRules::ServerForPort(uint16_t port) const {
  for (const ServerRule& r : servers) {
    if (!r.port.unix_socket && r.port.port == port) return &r;
  }
  return nullptr;
}

const ServerRule* NetworkRules::ServerForPath(const std::string& path) const {
  for (const ServerRule& r : servers) {
    if (r.port.unix_socket && r.port.path == path) return &r;
  }
  return nullptr;
}

const ClientRule* NetworkRules::ClientForPath(const std::string& path) const {
  for (const ClientRule& r : clients) {
    if (r.destination.unix_socket && r.destination.path == path) return &r;
  }
  return nullptr;
}

}  // namespace scone::net
