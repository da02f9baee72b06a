// The network shield in a process: the rules (net/network_rules.h) with their TLS contexts,
// and the decision for each connection the program makes or accepts.
//
// A TCP destination is matched by address and port: the IPs of _DESTINATION_IP, the host when
// it is an IP literal, else the host's addresses as resolved once at start-up ("localhost":
// 127.0.0.1 and ::1). A listening socket is matched by its port (getsockname) or unix path.
// Thread-safety: immutable after Create, but for the contexts, made on first use under a lock.
#pragma once

#include <sys/socket.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "net/network_rules.h"
#include "net/tls_connection.h"
#include "runtime/config.h"

namespace scone::runtime::sockets {

struct Decision {
  net::Protection protection = net::Protection::kUnprotected;
  const net::ServerRule* server = nullptr;  // the rule that decided, if any
  const net::ClientRule* client = nullptr;
  bool by_default = false;  // SCONE_NETWORK_SHIELD=protected: the session's default rule (CAS mode)
  std::string endpoint;  // what the connection goes to or comes in on ("TCP:127.0.0.1:443")

  // "server rule WEB", "client rule DB", or "SCONE_NETWORK_SHIELD=protected" (no rule).
  std::string What() const;
};

// The path of a unix address; empty for an unnamed or abstract one, or another family.
std::string UnixPath(const struct sockaddr* addr, socklen_t size);

// The socket file a unix address's path names, in one spelling: absolute (a relative path from
// the working directory now), links followed as connect follows them, ".", ".." and "//" gone;
// a file not there yet by its directory resolved. Empty where the directory cannot be resolved.
std::string SocketFileName(const std::string& path);

class NetworkShield {
 public:
  // From the variables `scone run` handed over (or the session's environment), and in CAS mode
  // the service's identity and session CA, which fill what the rules leave out.
  static Result<std::unique_ptr<NetworkShield>> Create(std::vector<NetworkVariable> variables,
                                                       std::optional<NetworkDefaults> defaults = std::nullopt);

  bool Enabled() const { return rules_.Enabled(); }
  const net::NetworkRules& rules() const { return rules_; }
  // For programs this one executes.
  std::vector<NetworkVariable> Variables() const;
  std::optional<NetworkDefaults> Defaults() const;

  // An outgoing stream connection to `addr`.
  Decision ForConnect(const struct sockaddr* addr, socklen_t size) const;
  // A connection accepted on the listening socket `listen_fd` (its local address decides).
  Decision ForAccept(int listen_fd) const;
  // The rule for a unix socket's path, judged by the socket file it names (SocketFileName).
  const net::ClientRule* ClientForPath(const std::string& path) const;
  const net::ServerRule* ServerForPath(const std::string& path) const;
  // Whether UDP and raw sockets are refused.
  bool RefusesUnsupported() const { return rules_.unsupported_protocols == net::Protection::kRefuse; }

  // The TLS context of a protected decision (made once per rule).
  Result<std::shared_ptr<net::TlsContext>> Context(const Decision& d);

 private:
  NetworkShield(net::NetworkRules rules, std::vector<NetworkVariable> variables,
                std::optional<NetworkDefaults> defaults)
      : rules_(std::move(rules)), variables_(std::move(variables)), defaults_(std::move(defaults)) {}

  // Whether `ip` is this host's: the loopback, or an interface's address at start-up.
  bool IsLocal(const std::string& ip) const;
  // Refuses two client rules with a destination in common (an address and port, a socket path).
  Status CheckClientRulesApart() const;

  net::NetworkRules rules_;
  std::vector<NetworkVariable> variables_;
  std::optional<NetworkDefaults> defaults_;
  std::vector<std::string> local_addresses_;  // this host's interfaces', read at start-up
  std::vector<std::vector<std::string>> client_addresses_;  // by client rule, normalized IP text
  std::mutex mu_;
  std::map<const void*, std::shared_ptr<net::TlsContext>> contexts_;  // by rule
};

}  // namespace scone::runtime::sockets
