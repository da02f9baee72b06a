// The network shield's configuration: which connections get TLS, with what identity and which
// peers they accept, in SCONE's own variables, so that a policy written for SCONE works unchanged:
//
//   SCONE_NETWORK_SHIELD=disabled|unprotected|protected        connections no rule names
//   SCONE_NETWORK_SHIELD_SERVER_<NAME>=protected|unprotected|refuse
//     _PORT=TCP:<port>|unix:<path>   the listening socket whose accepted connections it covers
//     _IDENTITY=<PEM>                private key + certificate (+ chain)
//     _CLIENT_AUTH=<PEM>|disabled    CA certificate(s) a client's certificate must chain to
//   SCONE_NETWORK_SHIELD_CLIENT_<NAME>=protected|unprotected|refuse
//     _DESTINATION=TCP:<host>:<port>|unix:<path>
//     _DESTINATION_IP=<ip>           the address connect() sees, where <host> is a name
//     _SERVER_DNS_NAME=<name>        the name the server's certificate must carry (and SNI)
//     _IDENTITY=<PEM>                a client certificate (mutual TLS), optional
//     _SERVER_AUTH=<PEM>|disabled    CA certificate(s) the server's certificate must chain to
//   SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS=unprotected|refuse   UDP, raw sockets
//
// A pure parser: no sockets, no name resolution (the runtime resolves host names). Every error
// names the variable and what is wrong with it, never a key's bytes. A rule <NAME> may not end in
// an attribute's name (SERVER_A_PORT is rule A's port).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "crypto/secret.h"

namespace scone::net {

inline constexpr char kVariablePrefix[] = "SCONE_NETWORK_SHIELD";

// What happens to a connection a rule (or the default) covers.
enum class Protection { kProtected, kUnprotected, kRefuse };
// SCONE_NETWORK_SHIELD: kDisabled turns the shield off (rules are then an error: they would be
// silently ignored).
enum class ShieldMode { kDisabled, kUnprotected, kProtected };

const char* ProtectionName(Protection p);

// TCP:<port> (a server's), TCP:<host>:<port> (a client's), or unix:<path>.
struct Endpoint {
  bool unix_socket = false;
  std::string host;  // clients only; may be an IP literal ([v6] without brackets) or a name
  uint16_t port = 0;
  std::string path;  // unix sockets

  std::string ToString() const;
};

// PEM material of a TLS identity, checked to parse and to match (the key is the certificate's).
struct Identity {
  SecretBytes pem;  // key and certificates, as given
};

// PEM CA certificates, checked to parse; `disabled` is no value.
struct Authority {
  std::string pem;
};

struct ServerRule {
  std::string name;
  Protection protection = Protection::kProtected;
  Endpoint port;
  std::optional<Identity> identity;       // required when protected, unless a session CA issues one
  bool client_auth_disabled = false;
  std::optional<Authority> client_auth;   // none and not disabled: the session CA's (CAS mode)
};

struct ClientRule {
  std::string name;
  Protection protection = Protection::kProtected;
  Endpoint destination;
  std::vector<std::string> destination_ips;  // IP literals, from _DESTINATION_IP
  std::string server_dns_name;              // "" for none (an IP destination is checked as an IP)
  std::optional<Identity> identity;
  bool server_auth_disabled = false;
  std::optional<Authority> server_auth;
};

struct ParseOptions {
  // CAS mode: a missing _IDENTITY or _CLIENT_AUTH/_SERVER_AUTH is the session CA's. Without CAS
  // they must be given (`disabled` for no peer authentication).
  bool session_ca = false;
};

// The parsed configuration. Thread-safety: immutable after Parse.
struct NetworkRules {
  ShieldMode mode = ShieldMode::kDisabled;
  Protection unsupported_protocols = Protection::kUnprotected;
  std::vector<ServerRule> servers;
  std::vector<ClientRule> clients;
  // CAS mode: the rules for connections no rule names under SCONE_NETWORK_SHIELD=protected
  // (UseSessionDefaults); without CAS there are none, and such connections are refused.
  std::optional<ServerRule> default_server;
  std::optional<ClientRule> default_client;

  // Whether any variable turned the shield on.
  bool Enabled() const { return mode != ShieldMode::kDisabled; }
  // What covers connections no rule names.
  Protection Default() const {
    return mode == ShieldMode::kProtected ? Protection::kProtected : Protection::kUnprotected;
  }

  // `variables`: NAME=VALUE pairs; those not starting with SCONE_NETWORK_SHIELD are ignored.
  // Unknown SCONE_NETWORK_SHIELD* names, values and malformed PEM are errors.
  static Result<NetworkRules> Parse(const std::vector<std::pair<std::string, std::string>>& variables,
                                    const ParseOptions& options = {});

  // CAS mode (cas/network_identity.h): the attested service's identity (PEM key + certificate)
  // and its session CA's certificate fill what a rule leaves out (a missing _IDENTITY,
  // _CLIENT_AUTH, _SERVER_AUTH; `disabled` stays disabled), and make default_server and
  // default_client: mutual TLS, the peer certified by the session CA (a default client checks
  // no name: no rule gives one). An error names what CAS sent that does not parse.
  Status UseSessionDefaults(const SecretBytes& identity, const std::string& session_ca);

  // The server rule for a listening socket on TCP port `port` / unix socket `path`, or nullptr.
  const ServerRule* ServerForPort(uint16_t port) const;
  const ServerRule* ServerForPath(const std::string& path) const;
  // The client rule for a connection to the unix socket `path`, or nullptr. TCP destinations
  // are matched by the runtime, which resolves their host names.
  const ClientRule* ClientForPath(const std::string& path) const;
};

// Whether `name` is one of the shield's variables (SCONE_NETWORK_SHIELD or SCONE_NETWORK_SHIELD_*).
bool IsShieldVariable(const std::string& name);

}  // namespace scone::net
