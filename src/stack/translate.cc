#include "stack/translate.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>

#include "image/sconify.h"
#include "stack/compose_keys.h"

namespace scone::stack {
namespace {

std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

Status Fail(const StackFile& f, int line, const std::string& what) {
  return InvalidArgument(f.path + ":" + std::to_string(line) + ": " + what);
}

// The last value of `key` (the one that counts), or "".
std::string ValueOf(const std::vector<std::pair<std::string, std::string>>& env, const std::string& key) {
  for (auto it = env.rbegin(); it != env.rend(); ++it) {
    if (it->first == key) return it->second;
  }
  return "";
}

bool HasKey(const std::vector<std::pair<std::string, std::string>>& env, const std::string& key) {
  for (const auto& [k, v] : env) {
    if (k == key) return true;
  }
  return false;
}

// The session's view of one secure service.
Result<image::ServiceTemplate> SessionService(const StackFile& f, const StackService& s,
                                              const Deployment& d) {
  auto found = d.images.find(s.name);
  if (found == d.images.end()) return Internal("no image facts for service " + s.name);
  const ServiceImage& img = found->second;
  image::ServiceTemplate t;
  t.service_name = s.name;
  t.measurement = img.measurement;
  t.command = img.command;
  if (s.command) {
    // The image's program is what was measured; a command starting another one would be refused.
    if (img.command.empty() || BaseName(s.command->front()) != BaseName(img.command.front())) {
      return Fail(f, s.command_line,
                  "service " + s.name + ": command starts " + s.command->front() + " but image " +
                      s.image + " runs " + (img.command.empty() ? "nothing" : img.command.front()) +
                      ", the program that is measured; use an image whose command starts it");
    }
    t.command = *s.command;
    t.command.front() = img.command.front();
  }
  t.environment = img.environment;
  for (const auto& kv : s.environment) t.environment.push_back(kv);
  auto set_default = [&](const std::string& key, const std::string& value) {
    if (!HasKey(s.environment, key)) t.environment.emplace_back(key, value);
  };
  if (s.network_shield) {
    set_default("SCONE_NETWORK_SHIELD", "protected");
    // Published ports: outside clients have no session certificate; they verify the service
    // with the session CA (`scone stack ca`).
    for (const PublishedPort& p : s.ports) {
      if (p.published == 0 || p.protocol != "tcp") continue;
      std::string rule = "SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_" + std::to_string(p.target);
      set_default(rule, "protected");
      set_default(rule + "_PORT", "TCP:" + std::to_string(p.target));
      // Only a protected rule takes TLS settings (an unprotected one given here refuses them).
      if (ValueOf(t.environment, rule) == "protected") set_default(rule + "_CLIENT_AUTH", "disabled");
    }
  }
  if (s.console_shield) set_default("SCONE_CONSOLE_SHIELD", "protected");
  t.pwd = s.working_dir.empty() ? img.pwd : s.working_dir;
  if (s.file_shield) {
    for (const std::string& target : s.volume_targets) {
      t.volumes.push_back({s.name + "_" + image::VolumeName(target), target});
    }
  }
  t.injected = img.injected;
  for (const ConfigRef& c : s.configs) {
    auto content = d.config_contents.find(c.source);
    if (content == d.config_contents.end()) return Internal("config " + c.source + " was not read");
    t.injected.push_back({c.target, content->second});
  }
  return t;
}

// A string for Docker's Compose loader, which wants strings where a plain 3.8 or true would be a
// number or a boolean: emitted double-quoted (EmitQuoting), as scalars quoted in the source are.
YAML::Node Quoted(const std::string& value) {
  YAML::Node n(value);
  n.SetTag("!");
  return n;
}

// yaml-cpp's emitter forgets how a scalar was written: scalars tagged "!" (quoted in the source,
// or made with Quoted) are emitted double-quoted, so "3.8" and "true" stay strings.
void EmitQuoting(YAML::Emitter& e, const YAML::Node& n) {
  if (n.IsMap()) {
    e << YAML::BeginMap;
    for (const auto& kv : n) {
      e << YAML::Key;
      EmitQuoting(e, kv.first);
      e << YAML::Value;
      EmitQuoting(e, kv.second);
    }
    e << YAML::EndMap;
  } else if (n.IsSequence()) {
    e << YAML::BeginSeq;
    for (const auto& item : n) EmitQuoting(e, item);
    e << YAML::EndSeq;
  } else if (n.IsScalar()) {
    if (n.Tag() == "!") e << YAML::DoubleQuoted;
    e << n.Scalar();
  } else {
    e << YAML::Null;
  }
}

// Long port syntax, host mode where the engine has no routing mesh (and the user said nothing).
YAML::Node PortsFor(const StackService& s, bool no_ipvs, const YAML::Node& written) {
  if (!no_ipvs) return written;
  YAML::Node ports(YAML::NodeType::Sequence);
  for (const PublishedPort& p : s.ports) {
    YAML::Node n;
    n["target"] = p.target;
    if (p.published != 0) n["published"] = p.published;
    n["protocol"] = Quoted(p.protocol);
    n["mode"] = Quoted("host");
    ports.push_back(n);
  }
  // Written ports that named their mode keep it.
  size_t i = 0;
  for (const auto& w : written) {
    if (w.IsMap() && w["mode"]) ports[i]["mode"] = Quoted(w["mode"].Scalar());
    ++i;
  }
  return ports;
}

YAML::Node ComposeService(const StackService& s, const Deployment& d) {
  YAML::Node out = YAML::Clone(s.node);
  for (const char* key : kSconeServiceKeys) out.remove(key);
  if (s.secure) {
    for (const char* key : {"command", "environment", "configs", "working_dir"}) out.remove(key);
    out["image"] = Quoted(d.images.at(s.name).image);
    YAML::Node env;
    env["SCONE_CONFIG_ID"] = Quoted(d.stack + "/" + s.name);
    env["SCONE_CAS_ADDR"] = Quoted(d.cas_addr);
    env["SCONE_LAS_ADDR"] = Quoted(kServiceLasPath);
    env["SCONE_CAS_KEY_HASH"] = Quoted(d.cas_key_hash);
    out["environment"] = env;
    YAML::Node las;
    las["type"] = Quoted("bind");
    las["source"] = Quoted(d.las_socket);
    las["target"] = Quoted(kServiceLasPath);
    YAML::Node volumes = out["volumes"] ? out["volumes"] : YAML::Node(YAML::NodeType::Sequence);
    volumes.push_back(las);
    out["volumes"] = volumes;
    // Sealed records on a pipe are binary; Docker's log drivers store lines as UTF-8 text and
    // replace what is not (helper's finding: `docker service logs` could not be decrypted). On a
    // terminal the records are base64 lines, which arrive intact.
    if (s.console_shield && !out["tty"]) out["tty"] = true;
  }
  if (d.no_ipvs) {
    if (!out["deploy"]) out["deploy"] = YAML::Node(YAML::NodeType::Map);
    if (!out["deploy"]["endpoint_mode"]) out["deploy"]["endpoint_mode"] = Quoted("dnsrr");
  }
  if (s.node["ports"]) out["ports"] = PortsFor(s, d.no_ipvs, s.node["ports"]);
  return out;
}

Result<std::string> ComposeFile(const StackFile& f, const Deployment& d) {
  YAML::Node out;
  out["version"] = Quoted("3.8");  // long port and volume syntax, endpoint_mode
  YAML::Node services(YAML::NodeType::Map);
  std::set<std::string> standard_configs;
  for (const StackService& s : f.services) {
    services[s.name] = ComposeService(s, d);
    if (!s.secure) {
      for (const ConfigRef& c : s.configs) standard_configs.insert(c.source);
    }
  }
  out["services"] = services;
  for (const char* key : {"networks", "volumes"}) {
    if (f.root[key]) out[key] = YAML::Clone(f.root[key]);
  }
  // Only standard services' configs go to Docker; secure services' files come from CAS.
  if (!standard_configs.empty()) {
    YAML::Node configs;
    for (const StackConfig& c : f.configs) {
      if (!standard_configs.count(c.name)) continue;
      YAML::Node n = YAML::Clone(f.root["configs"][c.name]);
      if (!c.file.empty() && c.file[0] != '/') n["file"] = Quoted(d.stack_dir + "/" + c.file);
      configs[c.name] = n;
    }
    out["configs"] = configs;
  }
  YAML::Emitter e;
  e << YAML::Comment("Written by scone stack deploy from " + f.path + " (stack " + d.stack +
                     "). Secure services get their command, environment and secrets from CAS.");
  EmitQuoting(e, out);
  if (!e.good()) return Internal("cannot write the stack file: " + std::string(e.GetLastError()));
  return std::string(e.c_str()) + "\n";
}

}  // namespace

Result<Translation> Translate(const StackFile& f, const Deployment& d) {
  image::SessionTemplate t;
  t.session_name = d.stack;
  t.predecessor = d.predecessor;
  t.written_by = "scone stack deploy from " + f.path;
  for (const StackService& s : f.services) {
    if (!s.secure) continue;
    SCONE_ASSIGN_OR_RETURN(image::ServiceTemplate st, SessionService(f, s, d));
    t.services.push_back(std::move(st));
  }
  for (const StackSecret& s : f.secrets) {
    t.secrets.push_back({s.name, s.kind, s.length, s.value, s.private_key, s.issuer, s.dns});
  }
  Translation out;
  if (!t.services.empty()) {
    auto session = image::WriteSession(t);
    if (!session.ok()) return session.status().Annotate(f.path);
    out.session_yaml = *session;
  }
  SCONE_ASSIGN_OR_RETURN(out.compose_yaml, ComposeFile(f, d));
  return out;
}

bool HostHasIpvs() { return access("/proc/net/ip_vs", F_OK) == 0; }

}  // namespace scone::stack
