#include "runtime/net/network_shield.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "runtime/entry/raw_syscall.h"
#include "runtime/runtime.h"

namespace scone::runtime::sockets {
namespace {

// An address as text, IPv4-mapped IPv6 addresses as IPv4; "" for other families.
std::string AddressText(const struct sockaddr* addr, socklen_t size, uint16_t* port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET && size >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    *port = ntohs(in->sin_port);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return text;
  }
  if (addr->sa_family == AF_INET6 && size >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    *port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    }
    return text;
  }
  return "";
}

// An IP literal in the form AddressText gives.
std::string Normalized(const std::string& ip) {
  unsigned char buf[16];
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, ip.c_str(), buf) == 1) return inet_ntop(AF_INET, buf, text, sizeof(text));
  if (inet_pton(AF_INET6, ip.c_str(), buf) == 1) {
    if (IN6_IS_ADDR_V4MAPPED(reinterpret_cast<in6_addr*>(buf))) return inet_ntop(AF_INET, buf + 12, text, sizeof(text));
    return inet_ntop(AF_INET6, buf, text, sizeof(text));
  }
  return "";
}

}  // namespace

std::string UnixPath(const struct sockaddr* addr, socklen_t size) {
  if (addr->sa_family != AF_UNIX || size <= offsetof(sockaddr_un, sun_path)) return "";
  const auto* un = reinterpret_cast<const sockaddr_un*>(addr);
  size_t n = size - offsetof(sockaddr_un, sun_path);
  if (n == 0 || un->sun_path[0] == '\0') return "";  // unnamed or abstract
  return std::string(un->sun_path, strnlen(un->sun_path, n));
}

std::string SocketFileName(const std::string& path) {
  if (path.empty()) return path;
  std::string full = path;
  if (full[0] != '/') {
    char cwd[PATH_MAX];
    if (RawSyscall(SYS_getcwd, Arg(cwd), sizeof(cwd)) <= 0) return "";
    full = std::string(cwd) + "/" + full;
  }
  char resolved[PATH_MAX];
  if (realpath(full.c_str(), resolved) != nullptr) return resolved;  // the file, its links followed as connect does
  // Not there (yet): its directory resolved, the name kept.
  while (full.size() > 1 && full.back() == '/') full.pop_back();
  const size_t slash = full.rfind('/');
  const std::string dir = slash == 0 ? "/" : full.substr(0, slash);
  const std::string base = full.substr(slash + 1);
  if (realpath(dir.c_str(), resolved) == nullptr) return "";
  const std::string parent = resolved;
  return parent == "/" ? "/" + base : parent + "/" + base;
}

namespace {

// Whether `ip` (AddressText's form) is on the loopback: 127.0.0.0/8 or ::1.
bool Loopback(const std::string& ip) { return ip == "::1" || ip.rfind("127.", 0) == 0; }

// The addresses of this host's interfaces, in AddressText's form (read once, at start-up).
std::vector<std::string> InterfaceAddresses() {
  std::vector<std::string> out;
  struct ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (auto* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    uint16_t ignored;
    socklen_t size = i->ifa_addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::string text = AddressText(i->ifa_addr, size, &ignored);
    if (!text.empty()) out.push_back(text);
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

std::string Decision::What() const {
  if (by_default || (server == nullptr && client == nullptr)) {
    return "SCONE_NETWORK_SHIELD=protected (no rule names " + endpoint + ")";
  }
  if (server != nullptr) return "server rule " + server->name;
  if (client != nullptr) return "client rule " + client->name;
  return "SCONE_NETWORK_SHIELD=protected (no rule names " + endpoint + ")";
}

Result<std::unique_ptr<NetworkShield>> NetworkShield::Create(std::vector<NetworkVariable> variables,
                                                             std::optional<NetworkDefaults> defaults) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const NetworkVariable& v : variables) {
    pairs.emplace_back(v.name, std::string(reinterpret_cast<const char*>(v.value.data()), v.value.size()));
  }
  auto rules = net::NetworkRules::Parse(pairs, {.session_ca = defaults.has_value()});
  for (auto& [name, value] : pairs) Wipe(value);
  if (!rules.ok()) return rules.status();
  if (defaults) SCONE_RETURN_IF_ERROR(rules->UseSessionDefaults(defaults->identity, defaults->session_ca));
  std::unique_ptr<NetworkShield> shield(
      new NetworkShield(std::move(rules).value(), std::move(variables), std::move(defaults)));
  for (const net::ClientRule& c : shield->rules_.clients) {
    std::vector<std::string> addresses;
    for (const std::string& ip : c.destination_ips) addresses.push_back(Normalized(ip));
    if (!c.destination.unix_socket && addresses.empty()) {
      std::string literal = Normalized(c.destination.host);
      if (!literal.empty()) {
        addresses.push_back(literal);
      } else if (c.destination.host == "localhost") {
        addresses = {"127.0.0.1", "::1"};
      } else {
        struct addrinfo hints = {};
        hints.ai_socktype = SOCK_STREAM;
        struct addrinfo* found = nullptr;
        if (getaddrinfo(c.destination.host.c_str(), nullptr, &hints, &found) == 0) {
          for (auto* a = found; a != nullptr; a = a->ai_next) {
            uint16_t ignored;
            std::string text = AddressText(a->ai_addr, a->ai_addrlen, &ignored);
            if (!text.empty()) addresses.push_back(text);
          }
          freeaddrinfo(found);
        }
        // A rule that can never match is almost certainly a typo, and the connections it was
        // meant for would fall to the default: refused, naming the variable.
        if (addresses.empty()) {
          return InvalidArgument(std::string(net::kVariablePrefix) + "_CLIENT_" + c.name + "_DESTINATION: host '" +
                                 c.destination.host + "' does not resolve (a rule that could never match); give its "
                                 "addresses in " + net::kVariablePrefix + "_CLIENT_" + c.name + "_DESTINATION_IP");
        }
      }
    }
    shield->client_addresses_.push_back(std::move(addresses));
  }
  SCONE_RETURN_IF_ERROR(shield->CheckClientRulesApart());
  if (!shield->rules_.clients.empty()) shield->local_addresses_ = InterfaceAddresses();
  return shield;
}

Status NetworkShield::CheckClientRulesApart() const {
  // Two rules for one destination: the first by name won, silently, whatever the second said (an
  // `unprotected` A over a `protected` B sent plaintext). Refused at start, as two server rules
  // for one port are.
  const auto& clients = rules_.clients;
  // Each unix destination's socket file, however spelled (a link to it, "./", "//"), as the
  // rules match it: resolved once per rule.
  std::vector<std::string> socket_files;
  for (const net::ClientRule& c : clients) {
    socket_files.push_back(c.destination.unix_socket ? SocketFileName(c.destination.path) : "");
  }
  for (size_t j = 0; j < clients.size(); ++j) {
    for (size_t i = 0; i < j; ++i) {
      const net::ClientRule& a = clients[i];
      const net::ClientRule& b = clients[j];
      std::string shared;
      if (a.destination.unix_socket || b.destination.unix_socket) {
        if (a.destination.unix_socket && b.destination.unix_socket &&
            (a.destination.path == b.destination.path ||
             (!socket_files[i].empty() && socket_files[i] == socket_files[j]))) {
          shared = socket_files[i].empty() ? a.destination.path : socket_files[i];
        }
      } else if (a.destination.port == b.destination.port) {
        for (const std::string& address : client_addresses_[j]) {
          if (std::find(client_addresses_[i].begin(), client_addresses_[i].end(), address) != client_addresses_[i].end()) {
            shared = address;
            break;
          }
        }
      }
      if (!shared.empty()) {
        return InvalidArgument(std::string(net::kVariablePrefix) + "_CLIENT_" + b.name + "_DESTINATION: " +
                               b.destination.ToString() + " is also rule " + a.name + "'s destination (" + shared +
                               "): one rule per destination");
      }
    }
  }
  return Status::Ok();
}

std::vector<NetworkVariable> NetworkShield::Variables() const {
  std::vector<NetworkVariable> out;
  for (const NetworkVariable& v : variables_) out.push_back({v.name, v.value.Clone()});
  return out;
}

std::optional<NetworkDefaults> NetworkShield::Defaults() const {
  if (!defaults_) return std::nullopt;
  return NetworkDefaults{defaults_->identity.Clone(), defaults_->session_ca};
}

Decision NetworkShield::ForConnect(const struct sockaddr* addr, socklen_t size) const {
  Decision d;
  if (addr == nullptr) return d;
  std::string path = UnixPath(addr, size);
  if (!path.empty()) {
    d.endpoint = "unix:" + path;
    if (const net::ClientRule* c = ClientForPath(path)) {
      d.client = c;
      d.protection = c->protection;
    }
    return d;  // unix sockets no rule names are the system's (nscd, syslog): never the default
  }
  uint16_t port = 0;
  std::string ip = AddressText(addr, size, &port);
  if (ip.empty()) return d;
  // The unspecified address as a destination is the kernel's loopback (connect to 0.0.0.0 or
  // [::] reaches 127.0.0.1 or ::1): judged as that, else it would pass every rule by.
  if (ip == "0.0.0.0") ip = "127.0.0.1";
  if (ip == "::") ip = "::1";
  d.endpoint = "TCP:" + (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
  // A rule for the destination's address; else, when the destination is this host (the loopback
  // or an interface's address, which reach the same listeners bound to the wildcard), a rule for
  // any of this host's addresses on that port: 127.0.0.2 must not pass a rule for 127.0.0.1 by.
  const bool local = IsLocal(ip);
  for (bool exact : {true, false}) {
    if (!exact && !local) break;
    for (size_t i = 0; i < rules_.clients.size(); ++i) {
      const net::ClientRule& c = rules_.clients[i];
      if (c.destination.unix_socket || c.destination.port != port) continue;
      for (const std::string& a : client_addresses_[i]) {
        if (exact ? a == ip : IsLocal(a)) {
          d.client = &c;
          d.protection = c.protection;
          return d;
        }
      }
    }
  }
  d.protection = rules_.Default();
  if (d.protection == net::Protection::kProtected && rules_.default_client) {
    d.client = &*rules_.default_client;
    d.by_default = true;
  }
  return d;
}

namespace {

// The first of `rules` whose unix path names the socket file `path` names: by the file's one
// spelling on both sides (SocketFileName). A rule for /run/app/s.sock matched "s.sock" after a
// chdir, "/run//app/./s.sock" or a link to it no more, and the connection went in plaintext (a
// `refuse` rule was passed by the same way). By the text where the name cannot be resolved.
template <typename Rule, typename EndpointOf>
const Rule* RuleForSocketFile(const std::vector<Rule>& rules, const std::string& path, EndpointOf endpoint) {
  const std::string name = SocketFileName(path);
  for (const Rule& r : rules) {
    const net::Endpoint& e = endpoint(r);
    if (e.unix_socket && (name.empty() ? e.path == path : SocketFileName(e.path) == name)) return &r;
  }
  return nullptr;
}

}  // namespace

const net::ClientRule* NetworkShield::ClientForPath(const std::string& path) const {
  return RuleForSocketFile(rules_.clients, path, [](const net::ClientRule& r) -> const net::Endpoint& { return r.destination; });
}

const net::ServerRule* NetworkShield::ServerForPath(const std::string& path) const {
  return RuleForSocketFile(rules_.servers, path, [](const net::ServerRule& r) -> const net::Endpoint& { return r.port; });
}

bool NetworkShield::IsLocal(const std::string& ip) const {
  if (Loopback(ip)) return true;
  for (const std::string& a : local_addresses_) {
    if (a == ip) return true;
  }
  return false;
}

Decision NetworkShield::ForAccept(int listen_fd) const {
  Decision d;
  struct sockaddr_storage local = {};
  socklen_t size = sizeof(local);
  if (RawSyscall(SYS_getsockname, listen_fd, Arg(&local), Arg(&size)) != 0) return d;
  auto* addr = reinterpret_cast<const struct sockaddr*>(&local);
  std::string path = UnixPath(addr, size);
  if (!path.empty()) {
    d.endpoint = "unix:" + path;
    if (const net::ServerRule* s = ServerForPath(path)) {
      d.server = s;
      d.protection = s->protection;
    }
    return d;
  }
  uint16_t port = 0;
  if (AddressText(addr, size, &port).empty()) return d;
  d.endpoint = "TCP:" + std::to_string(port);
  if (const net::ServerRule* s = rules_.ServerForPort(port)) {
    d.server = s;
    d.protection = s->protection;
    return d;
  }
  d.protection = rules_.Default();
  if (d.protection == net::Protection::kProtected && rules_.default_server) {
    d.server = &*rules_.default_server;
    d.by_default = true;
  }
  return d;
}

Result<std::shared_ptr<net::TlsContext>> NetworkShield::Context(const Decision& d) {
  const void* key = d.server != nullptr ? static_cast<const void*>(d.server) : static_cast<const void*>(d.client);
  if (key == nullptr) {
    return PermissionDenied(d.What() + ": without CAS there is no default identity for it (name it in a rule)");
  }
  std::lock_guard lock(mu_);
  auto it = contexts_.find(key);
  if (it != contexts_.end()) return it->second;
  auto made = d.server != nullptr ? net::TlsContext::ForServer(*d.server) : net::TlsContext::ForClient(*d.client);
  if (!made.ok()) return made.status();
  contexts_[key] = *made;
  return made;
}

}  // namespace scone::runtime::sockets
