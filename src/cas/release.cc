#include "cas/release.h"

#include "cas/network_identity.h"
#include "cas/secrets.h"
#include "common/setting.h"

namespace scone::cas {
namespace {

std::string Text(const SecretBytes& s) { return std::string(s.span().begin(), s.span().end()); }

Result<SecretBytes> SubstituteSecrets(Store& store, const policy::Session& session, std::string_view text) {
  SCONE_ASSIGN_OR_RETURN(std::string out, policy::Substitute(text, [&](std::string_view ref) -> Result<std::string> {
    SCONE_ASSIGN_OR_RETURN(SecretBytes value, SecretText(store, session, ref));
    return Text(value);
  }));
  SecretBytes secret(AsBytes(out));
  Wipe(out);
  return secret;
}

// SCONE's `command` is split at white space (no shell quoting), before secrets are substituted.
std::vector<std::string> SplitCommand(const std::string& command) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < command.size()) {
    size_t start = command.find_first_not_of(" \t\n", pos);
    if (start == std::string::npos) break;
    size_t end = command.find_first_of(" \t\n", start);
    if (end == std::string::npos) end = command.size();
    out.push_back(command.substr(start, end - start));
    pos = end;
  }
  return out;
}

}  // namespace

Result<bool> ConsoleShieldWanted(const policy::Service& service) {
  auto it = service.environment.find(kConsoleShieldVariable);
  if (it == service.environment.end()) return false;
  auto wanted = ParseConsoleShield(it->second);
  if (!wanted.ok()) return wanted.status().Annotate("service " + service.name);
  return *wanted;
}

attest::AttestationPolicy PolicyFor(const policy::Session& session, const policy::Service& service) {
  attest::AttestationPolicy p;
  p.mrenclaves = service.mrenclaves;
  p.mrsigner = service.mrsigner;
  p.product_id = service.isvprodid;
  p.min_svn = service.isvsvn;
  p.tolerate = session.tolerate;
  return p;
}

Result<ServiceConfig> ReleaseConfig(Store& store, const policy::Session& session,
                                    const policy::Service& service) {
  ServiceConfig c;
  // Split before the secrets go in: a value is exactly one argument, whatever it holds (before,
  // a value with spaces added arguments, and an empty one removed its own).
  const std::vector<std::string> words = SplitCommand(service.command);
  c.argv.reserve(words.size());  // no reallocation leaves copies of the values behind
  for (const std::string& word : words) {
    SCONE_ASSIGN_OR_RETURN(SecretBytes argument, SubstituteSecrets(store, session, word));
    c.argv.emplace_back(reinterpret_cast<const char*>(argument.data()), argument.size());
  }
  c.environment.reserve(service.environment.size());  // no reallocation leaves copies behind
  for (const auto& [name, value] : service.environment) {
    SCONE_ASSIGN_OR_RETURN(SecretBytes v, SubstituteSecrets(store, session, value));
    std::string entry;  // built in place: no temporary copy of the value is left behind
    entry.reserve(name.size() + 1 + v.size());
    entry.append(name).append("=").append(reinterpret_cast<const char*>(v.data()), v.size());
    c.environment.push_back(std::move(entry));
  }
  c.pwd = service.pwd;
  SCONE_ASSIGN_OR_RETURN(auto network, ReleaseNetworkIdentity(store, session, service));
  if (network) {
    c.network_identity = std::move(network->identity);
    c.session_ca = std::move(network->session_ca);
  }
  SCONE_ASSIGN_OR_RETURN(bool console, ConsoleShieldWanted(service));
  if (console) {
    SCONE_ASSIGN_OR_RETURN(auto key, store.ConsoleKey(session.name, service.name, /*create=*/true));
    c.console_key = std::move(*key);
  }
  if (service.image_name.empty()) return c;
  const policy::Image* image = session.FindImage(service.image_name);
  if (image == nullptr) return NotFound("image " + service.image_name + " is not in session " + session.name);
  for (const policy::VolumeRef& v : image->volumes) {
    VolumeGrant g;
    g.name = v.name;
    g.path = v.path;
    SCONE_ASSIGN_OR_RETURN(g.key, store.VolumeKey(session.name, v.name));
    SCONE_ASSIGN_OR_RETURN(g.expected, store.GetVolumeMark(session.name, v.name));
    c.volumes.push_back(std::move(g));
  }
  for (const policy::InjectionFile& f : image->injection_files) {
    InjectedFile out;
    out.path = f.path;
    SCONE_ASSIGN_OR_RETURN(out.content, SubstituteSecrets(store, session, f.content));
    c.injected_files.push_back(std::move(out));
  }
  return c;
}

}  // namespace scone::cas
