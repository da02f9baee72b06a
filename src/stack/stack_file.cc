#include "stack/stack_file.h"

#include <cctype>
#include <set>

#include "stack/compose_keys.h"
#include "stack/secret_refs.h"

namespace scone::stack {
namespace {

constexpr size_t kMaxStackFileSize = 1 << 20;
constexpr size_t kMaxSecretLength = 1 << 16;

bool Identifier(const std::string& s) {
  if (s.empty() || s.size() > 128 ||
      !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// A service or stack name as Docker and CAS both accept it.
bool ServiceName(const std::string& s) {
  if (s.empty() || s.size() > 63 || !std::isalnum(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

Result<std::string> Scalar(const YAML::Node& n, const std::string& what) {
  if (!n.IsScalar()) return At(n, what + " must be a string");
  return n.Scalar();
}

Result<int> Port(const YAML::Node& at, const std::string& text) {
  if (text.empty() || text.size() > 5 ||
      text.find_first_not_of("0123456789") != std::string::npos || std::stoi(text) < 1 ||
      std::stoi(text) > 65535) {
    return At(at, "'" + text + "' is not a port number (a port range is not supported)");
  }
  return std::stoi(text);
}

// `protected` (the default) or `disabled`.
Result<bool> ShieldSetting(const YAML::Node& n, const std::string& key) {
  SCONE_ASSIGN_OR_RETURN(std::string v, Scalar(n, key));
  if (v == "protected") return true;
  if (v == "disabled") return false;
  return At(n, key + " must be protected or disabled, not '" + v + "'");
}

Result<StackSecret> ParseSecret(const std::string& name, const YAML::Node& n,
                                const YAML::Node& key) {
  StackSecret s;
  s.name = name;
  s.line = key.Mark().line + 1;
  if (!Identifier(name))
    return At(key, "secret name '" + name + "' must be letters, digits and '_' (it is written $" +
                       name + ")");
  SCONE_RETURN_IF_ERROR(CheckComposeKeys(n, "secret", "secret " + name));
  if (n["file"] || n["external"] || n["driver"] || n["name"]) {
    return At(key, "secret " + name +
                       ": Docker secrets are not used: a secure stack's secrets go to CAS, which "
                       "hands them to attested services only; declare kind: and length: "
                       "(generated) or value: (given)");
  }
  if (!n["kind"])
    return At(key, "secret " + name + " has no kind (ascii, binary, private-key, x509 or x509-ca)");
  SCONE_ASSIGN_OR_RETURN(s.kind, Scalar(n["kind"], "kind"));
  static const std::set<std::string> kinds = {"ascii", "binary", "private-key", "x509", "x509-ca"};
  if (!kinds.count(s.kind)) {
    return At(n["kind"], "secret " + name + ": unknown kind '" + s.kind +
                             "' (ascii, binary, private-key, x509, x509-ca)");
  }
  if (n["length"]) {
    SCONE_ASSIGN_OR_RETURN(std::string l, Scalar(n["length"], "length"));
    if (l.empty() || l.size() > 6 || l.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(l) == 0 || std::stoul(l) > kMaxSecretLength) {
      return At(n["length"], "secret " + name + ": length must be a number from 1 to " +
                                 std::to_string(kMaxSecretLength));
    }
    s.length = std::stoul(l);
  }
  if (n["value"]) {
    SCONE_ASSIGN_OR_RETURN(std::string v, Scalar(n["value"], "value"));
    s.value = v;
  }
  if (s.length && s.value)
    return At(key, "secret " + name + ": give length (CAS generates it) or value, not both");
  if ((s.kind == "ascii" || s.kind == "binary") && !s.length && !s.value) {
    return At(key, "secret " + name + ": give length: (CAS generates it) or value:");
  }
  if (n["private_key"]) {
    SCONE_ASSIGN_OR_RETURN(s.private_key, Scalar(n["private_key"], "private_key"));
  }
  if (n["issuer"]) {
    SCONE_ASSIGN_OR_RETURN(s.issuer, Scalar(n["issuer"], "issuer"));
  }
  if (n["dns"]) {
    if (!n["dns"].IsSequence()) return At(n["dns"], "dns must be a list");
    for (const auto& d : n["dns"]) {
      SCONE_ASSIGN_OR_RETURN(std::string v, Scalar(d, "dns"));
      s.dns.push_back(v);
    }
  }
  return s;
}

Result<std::vector<std::string>> CommandWords(const YAML::Node& n) {
  std::vector<std::string> words;
  auto add = [&](const YAML::Node& at, const std::string& text, bool split) -> Status {
    if (text.find_first_of("\"'\\") != std::string::npos) {
      return At(at,
                "command: quotes and backslashes are not supported in a secure service's command "
                "(CAS splits it "
                "at white space): give an entry script");
    }
    size_t i = 0;
    while (i < text.size()) {
      size_t start = text.find_first_not_of(" \t\n", i);
      if (start == std::string::npos) break;
      size_t end = text.find_first_of(" \t\n", start);
      if (!split && (start != 0 || end != std::string::npos)) {
        return At(at, "command: an argument with white space ('" + text +
                          "') is not supported (CAS splits at white space)");
      }
      words.push_back(
          text.substr(start, end == std::string::npos ? std::string::npos : end - start));
      i = end == std::string::npos ? text.size() : end;
    }
    return Status::Ok();
  };
  if (n.IsScalar()) {
    SCONE_RETURN_IF_ERROR(add(n, n.Scalar(), true));
  } else if (n.IsSequence()) {
    for (const auto& w : n) {
      SCONE_ASSIGN_OR_RETURN(std::string s, Scalar(w, "each word of command"));
      SCONE_RETURN_IF_ERROR(add(w, s, false));
    }
  } else {
    return At(n, "command must be a string or a list");
  }
  if (words.empty()) return At(n, "command is empty");
  return words;
}

Result<std::vector<std::pair<std::string, std::string>>> Environment(const YAML::Node& n) {
  std::vector<std::pair<std::string, std::string>> env;
  if (n.IsMap()) {
    for (const auto& kv : n) {
      if (!kv.second.IsScalar())
        return At(kv.second, "environment " + kv.first.Scalar() + " must be a string");
      env.emplace_back(kv.first.Scalar(), kv.second.Scalar());
    }
  } else if (n.IsSequence()) {
    for (const auto& item : n) {
      SCONE_ASSIGN_OR_RETURN(std::string kv, Scalar(item, "each environment entry"));
      size_t eq = kv.find('=');
      if (eq == std::string::npos) {
        return At(item, "environment " + kv +
                            " has no value: a secure service never takes one from the deploying "
                            "shell; write " +
                            kv + "=VALUE");
      }
      env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
  } else {
    return At(n, "environment must be a mapping or a list");
  }
  for (const auto& [k, v] : env) {
    if (k.empty() || k.find_first_of("= \t\n") != std::string::npos)
      return At(n, "environment: bad name '" + k + "'");
    if (k == "LD_PRELOAD" || k.rfind("SCONE_", 0) == 0) {
      if (k.rfind("SCONE_NETWORK_SHIELD", 0) != 0 && k != "SCONE_CONSOLE_SHIELD") {
        return At(n, "environment " + k + " is set by SCONE for a secure service");
      }
    }
  }
  return env;
}

Result<std::vector<PublishedPort>> Ports(const YAML::Node& n) {
  if (!n.IsSequence()) return At(n, "ports must be a list");
  std::vector<PublishedPort> out;
  for (const auto& item : n) {
    PublishedPort p;
    p.line = item.Mark().line + 1;
    if (item.IsMap()) {
      SCONE_RETURN_IF_ERROR(CheckComposeKeys(item, "port", "a port"));
      if (!item["target"]) return At(item, "a port needs target:");
      SCONE_ASSIGN_OR_RETURN(p.target, Port(item["target"], item["target"].Scalar()));
      if (item["published"]) {
        SCONE_ASSIGN_OR_RETURN(p.published, Port(item["published"], item["published"].Scalar()));
      }
      if (item["protocol"]) p.protocol = item["protocol"].Scalar();
      if (item["mode"]) p.host_mode = item["mode"].Scalar() == "host";
    } else {
      // [IP:]PUBLISHED:TARGET[/PROTOCOL] or TARGET[/PROTOCOL]
      SCONE_ASSIGN_OR_RETURN(std::string text, Scalar(item, "a port"));
      size_t slash = text.find('/');
      if (slash != std::string::npos) {
        p.protocol = text.substr(slash + 1);
        text = text.substr(0, slash);
      }
      size_t colon = text.rfind(':');
      SCONE_ASSIGN_OR_RETURN(p.target,
                             Port(item, text.substr(colon == std::string::npos ? 0 : colon + 1)));
      if (colon != std::string::npos) {
        std::string published = text.substr(0, colon);
        if (published.find(':') != std::string::npos) {
          return At(item, "port " + item.Scalar() +
                              ": a host IP is not supported by docker stack deploy");
        }
        SCONE_ASSIGN_OR_RETURN(p.published, Port(item, published));
      }
    }
    if (p.protocol != "tcp" && p.protocol != "udp")
      return At(item, "port protocol must be tcp or udp");
    out.push_back(p);
  }
  return out;
}

Result<std::vector<std::string>> VolumeTargets(const YAML::Node& n) {
  if (!n.IsSequence()) return At(n, "volumes must be a list");
  std::vector<std::string> out;
  for (const auto& item : n) {
    std::string target;
    if (item.IsMap()) {
      SCONE_RETURN_IF_ERROR(CheckComposeKeys(item, "volume", "a volume"));
      if (!item["target"]) return At(item, "a volume needs target:");
      SCONE_ASSIGN_OR_RETURN(target, Scalar(item["target"], "target"));
    } else {
      SCONE_ASSIGN_OR_RETURN(std::string text, Scalar(item, "a volume"));
      size_t colon = text.find(':');
      target = colon == std::string::npos ? text : text.substr(colon + 1);
      target = target.substr(0, target.find(':'));
    }
    if (target.empty() || target[0] != '/' || target == "/")
      return At(item, "volume target '" + target + "' must be an absolute path other than /");
    out.push_back(target);
  }
  return out;
}

Result<std::vector<ConfigRef>> ConfigRefs(const YAML::Node& n) {
  if (!n.IsSequence()) return At(n, "configs must be a list");
  std::vector<ConfigRef> out;
  for (const auto& item : n) {
    ConfigRef c;
    c.line = item.Mark().line + 1;
    if (item.IsMap()) {
      SCONE_RETURN_IF_ERROR(CheckComposeKeys(item, "config-ref", "a config"));
      if (!item["source"]) return At(item, "a config needs source:");
      SCONE_ASSIGN_OR_RETURN(c.source, Scalar(item["source"], "source"));
      if (item["target"]) {
        SCONE_ASSIGN_OR_RETURN(c.target, Scalar(item["target"], "target"));
      }
    } else {
      SCONE_ASSIGN_OR_RETURN(c.source, Scalar(item, "a config"));
    }
    if (c.target.empty()) c.target = "/" + c.source;  // Compose's default
    if (c.target[0] != '/')
      return At(item, "config target '" + c.target + "' must be an absolute path");
    out.push_back(c);
  }
  return out;
}

// Every string under `n` that refers to a secret: an error (`why` says where it would leak).
Status NoSecretReference(const YAML::Node& n, const std::set<std::string>& declared,
                         const std::string& why) {
  if (n.IsScalar()) {
    auto refs = SecretsReferenced(n.Scalar(), declared);
    if (!refs.empty()) return At(n, "$" + refs.front() + ": " + why);
  } else if (n.IsMap()) {
    for (const auto& kv : n) SCONE_RETURN_IF_ERROR(NoSecretReference(kv.second, declared, why));
  } else if (n.IsSequence()) {
    for (const auto& item : n) SCONE_RETURN_IF_ERROR(NoSecretReference(item, declared, why));
  }
  return Status::Ok();
}

Result<StackService> ParseService(const std::string& name, const YAML::Node& key,
                                  const YAML::Node& n, const std::set<std::string>& secrets) {
  StackService s;
  s.name = name;
  s.line = key.Mark().line + 1;
  s.node = n;
  if (!ServiceName(name))
    return At(key, "service name '" + name + "' must be letters, digits, '-' and '_'");
  SCONE_RETURN_IF_ERROR(CheckComposeKeys(n, "service", "service " + name));
  if (n["not_scone"]) {
    SCONE_ASSIGN_OR_RETURN(std::string v, Scalar(n["not_scone"], "not_scone"));
    if (v != "true" && v != "false")
      return At(n["not_scone"], "not_scone must be \"true\" or \"false\"");
    s.secure = v != "true";
  }
  for (const char* opt : {"file_shield", "network_shield", "console_shield"}) {
    if (!n[opt]) continue;
    if (!s.secure)
      return At(n[opt], std::string(opt) + " is for secure services; " + name + " is not_scone");
    SCONE_ASSIGN_OR_RETURN(bool on, ShieldSetting(n[opt], opt));
    (std::string(opt) == "file_shield"      ? s.file_shield
     : std::string(opt) == "network_shield" ? s.network_shield
                                            : s.console_shield) = on;
  }
  if (!n["image"]) return At(key, "service " + name + " has no image");
  SCONE_ASSIGN_OR_RETURN(s.image, Scalar(n["image"], "image"));
  if (n["secrets"]) {
    return At(n["secrets"],
              "service " + name +
                  ": Docker secrets are not used; refer to a stack secret as $name in "
                  "command or environment (CAS gives it to the attested service only)");
  }
  if (n["deploy"]) {
    SCONE_RETURN_IF_ERROR(CheckComposeKeys(n["deploy"], "deploy", "deploy of " + name));
  }
  if (n["ports"]) {
    SCONE_ASSIGN_OR_RETURN(s.ports, Ports(n["ports"]));
  }
  if (n["volumes"]) {
    SCONE_ASSIGN_OR_RETURN(s.volume_targets, VolumeTargets(n["volumes"]));
  }
  if (n["configs"]) {
    SCONE_ASSIGN_OR_RETURN(s.configs, ConfigRefs(n["configs"]));
  }
  if (!s.secure) {
    SCONE_RETURN_IF_ERROR(
        NoSecretReference(n, secrets,
                          "service " + name +
                              " is not_scone: Docker would hold the "
                              "secret in plaintext in its spec; only secure services get secrets"));
    return s;
  }
  for (const char* key_name : {"entrypoint", "env_file"}) {
    if (n[key_name]) {
      return At(n[key_name], std::string(key_name) + " is not supported for a secure service (" +
                                 (std::string(key_name) == "entrypoint"
                                      ? "the image's program is the one measured"
                                      : "its values would not go through CAS") +
                                 "); use command and environment");
    }
  }
  for (const auto& kv : n) {
    std::string k = kv.first.Scalar();
    if (k == "command" || k == "environment") continue;
    SCONE_RETURN_IF_ERROR(NoSecretReference(kv.second, secrets,
                                            k + " goes to Docker, not to CAS: only command and "
                                                "environment may refer to secrets"));
  }
  if (n["command"]) {
    s.command_line = n["command"].Mark().line + 1;
    SCONE_ASSIGN_OR_RETURN(std::vector<std::string> words, CommandWords(n["command"]));
    for (std::string& w : words) {
      auto v = ToSessionValue(w, secrets);
      if (!v.ok()) return At(n["command"], "command: " + v.status().message());
      w = *v;
    }
    s.command = words;
  }
  if (n["environment"]) {
    SCONE_ASSIGN_OR_RETURN(s.environment, Environment(n["environment"]));
    for (auto& [k, v] : s.environment) {
      auto value = ToSessionValue(v, secrets);
      if (!value.ok())
        return At(n["environment"], "environment " + k + ": " + value.status().message());
      v = *value;
    }
  }
  if (n["working_dir"]) {
    SCONE_ASSIGN_OR_RETURN(s.working_dir, Scalar(n["working_dir"], "working_dir"));
  }
  return s;
}

Result<StackFile> Parse(std::string_view text) {
  StackFile f;
  if (text.size() > kMaxStackFileSize)
    return InvalidArgument("line 1: the stack file is larger than 1 MiB");
  try {
    f.root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument("line " + std::to_string(e.mark.line + 1) +
                           ": malformed YAML: " + e.msg);
  }
  const YAML::Node& root = f.root;
  if (!root.IsMap()) return InvalidArgument("line 1: a stack file is a mapping with services:");
  SCONE_RETURN_IF_ERROR(CheckNoDuplicateKeys(root));
  SCONE_RETURN_IF_ERROR(CheckComposeKeys(root, "top", "the stack file"));
  if (root["version"]) {
    std::string v = root["version"].Scalar();
    if (v.empty() || v[0] != '3')
      return At(root["version"], "version '" + v + "': docker stack deploy reads Compose 3.x");
  }
  std::set<std::string> names;
  if (root["secrets"]) {
    if (!root["secrets"].IsMap()) return At(root["secrets"], "secrets must be a mapping");
    for (const auto& kv : root["secrets"]) {
      SCONE_ASSIGN_OR_RETURN(StackSecret s, ParseSecret(kv.first.Scalar(), kv.second, kv.first));
      names.insert(s.name);
      f.secrets.push_back(std::move(s));
    }
  }
  if (root["configs"]) {
    if (!root["configs"].IsMap()) return At(root["configs"], "configs must be a mapping");
    for (const auto& kv : root["configs"]) {
      SCONE_RETURN_IF_ERROR(CheckComposeKeys(kv.second, "config", "config " + kv.first.Scalar()));
      StackConfig c{kv.first.Scalar(), "", kv.second["external"].IsDefined(),
                    kv.first.Mark().line + 1};
      if (kv.second["file"]) {
        SCONE_ASSIGN_OR_RETURN(c.file, Scalar(kv.second["file"], "file"));
      }
      if (c.file.empty() && !c.external) return At(kv.first, "config " + c.name + " needs file:");
      f.configs.push_back(c);
    }
  }
  if (!root["services"] || !root["services"].IsMap() || root["services"].size() == 0) {
    return At(root, "a stack file needs services: (a mapping of at least one)");
  }
  for (const auto& kv : root["services"]) {
    SCONE_ASSIGN_OR_RETURN(StackService s,
                           ParseService(kv.first.Scalar(), kv.first, kv.second, names));
    for (const ConfigRef& c : s.configs) {
      const StackConfig* config = f.FindConfig(c.source);
      if (config == nullptr)
        return InvalidArgument("line " + std::to_string(c.line) + ": unknown config '" + c.source +
                               "'");
      if (s.secure && config->external) {
        return InvalidArgument("line " + std::to_string(c.line) + ": config " + c.source +
                               " is external: a secure "
                               "service's files come from CAS, give file:");
      }
    }
    f.services.push_back(std::move(s));
  }
  return f;
}

}  // namespace

const StackConfig* StackFile::FindConfig(const std::string& name) const {
  for (const StackConfig& c : configs) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Result<StackFile> ParseStackFile(std::string_view text, const std::string& path) {
  auto f = Parse(text);
  if (!f.ok()) {
    // "line N: what" -> "PATH:N: what"
    std::string m = f.status().message();
    if (m.rfind("line ", 0) == 0)
      m = path + ":" + m.substr(5, m.find(':') - 5) + m.substr(m.find(':'));
    return Status(f.status().code(), m);
  }
  f->path = path;
  return f;
}

}  // namespace scone::stack
