#include "policy/session.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "common/setting.h"
#include "crypto/secret.h"

namespace scone::policy {
namespace {

constexpr size_t kMaxSessionSize = 1 << 20;
constexpr size_t kMaxSecretSize = 1 << 16;
constexpr size_t kMaxCommonName = 64;  // ub-common-name (RFC 5280)

// Errors carry the line (1-based) of the node they are about.
Status At(const YAML::Node& node, const std::string& what) {
  return InvalidArgument("line " + std::to_string(node.Mark().line + 1) + ": " + what);
}

// Rejects keys other than `allowed` in a mapping.
Status OnlyKeys(const YAML::Node& map, const std::string& where,
                std::initializer_list<const char*> allowed) {
  if (!map.IsMap()) return At(map, where + " must be a mapping");
  for (const auto& kv : map) {
    std::string key = kv.first.Scalar();
    bool ok = false;
    for (const char* a : allowed) ok = ok || key == a;
    if (!ok) return At(kv.first, "unknown key '" + key + "' in " + where);
  }
  return Status::Ok();
}

Result<std::string> String(const YAML::Node& node, const std::string& what) {
  if (!node.IsScalar()) return At(node, what + " must be a string");
  return node.Scalar();
}

Result<std::vector<std::string>> Strings(const YAML::Node& node, const std::string& what) {
  if (!node.IsSequence()) return At(node, what + " must be a list");
  std::vector<std::string> out;
  for (const auto& item : node) {
    SCONE_ASSIGN_OR_RETURN(std::string s, String(item, "each entry of " + what));
    out.push_back(std::move(s));
  }
  return out;
}

Result<uint64_t> Number(const YAML::Node& node, const std::string& what, uint64_t max) {
  if (!node.IsScalar()) return At(node, what + " must be a number");
  const std::string& s = node.Scalar();
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos) {
    return At(node, what + " must be a non-negative integer");
  }
  uint64_t v = std::stoull(s);
  if (v > max) return At(node, what + " must be at most " + std::to_string(max));
  return v;
}

Result<crypto::Hash> HashValue(const YAML::Node& node, const std::string& what) {
  SCONE_ASSIGN_OR_RETURN(std::string s, String(node, what));
  auto h = FromHexArray<crypto::kHashSize>(s);
  if (!h.ok()) return At(node, what + " must be 64 hex digits");
  return *h;
}

bool ValidName(const std::string& s) {
  // "." and ".." would name a directory wherever a name becomes a path component.
  if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

}  // namespace

bool ValidDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = s.rfind("*.", 0) == 0 ? 2 : 0;
  size_t label = 0;
  for (size_t i = start; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '.') {
      if (label == 0 || label > 63) return false;
      label = 0;
      continue;
    }
    char c = s[i];
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
    ++label;
  }
  return true;
}

namespace {

Result<std::string> Name(const YAML::Node& node, const std::string& what) {
  SCONE_ASSIGN_OR_RETURN(std::string s, String(node, what));
  if (!ValidName(s)) {
    return At(node, what + " '" + s + "' may hold only letters, digits, '-', '_' and '.' (and is not '.' or '..')");
  }
  return s;
}

Result<Secret::Kind> SecretKind(const YAML::Node& node) {
  SCONE_ASSIGN_OR_RETURN(std::string s, String(node, "kind"));
  if (s == "ascii") return Secret::Kind::kAscii;
  if (s == "binary") return Secret::Kind::kBinary;
  if (s == "private-key") return Secret::Kind::kPrivateKey;
  if (s == "x509") return Secret::Kind::kX509;
  if (s == "x509-ca") return Secret::Kind::kX509Ca;
  return At(node, "unknown secret kind '" + s + "' (ascii, binary, private-key, x509, x509-ca)");
}

Result<Secret> ParseSecret(const YAML::Node& n) {
  SCONE_RETURN_IF_ERROR(OnlyKeys(n, "a secret", {"name", "kind", "size", "value", "private_key",
                                                   "issuer", "dns", "import", "export"}));
  Secret s;
  s.line = n.Mark().line + 1;
  if (!n["name"]) return At(n, "a secret needs a name");
  SCONE_ASSIGN_OR_RETURN(s.name, Name(n["name"], "secret name"));
  if (n["kind"]) {
    SCONE_ASSIGN_OR_RETURN(s.kind, SecretKind(n["kind"]));
  }
  if (n["size"]) {
    SCONE_ASSIGN_OR_RETURN(s.size, Number(n["size"], "size", kMaxSecretSize));
    // An empty value removes the argument it stands for, and the next one takes its place.
    if (*s.size == 0) return At(n["size"], "secret '" + s.name + "': size 0 (an empty secret)");
  }
  if (n["value"]) {
    SCONE_ASSIGN_OR_RETURN(s.value, String(n["value"], "value"));
  }
  if (n["private_key"]) {
    SCONE_ASSIGN_OR_RETURN(s.private_key, Name(n["private_key"], "private_key"));
  }
  if (n["issuer"]) {
    SCONE_ASSIGN_OR_RETURN(s.issuer, Name(n["issuer"], "issuer"));
  }
  if (n["dns"]) {
    SCONE_ASSIGN_OR_RETURN(s.dns, Strings(n["dns"], "dns"));
    for (const std::string& d : s.dns) {
      if (!ValidDnsName(d)) {
        return At(n["dns"], "dns name '" + d + "' is not a host name (letters, digits, '-' and '.', "
                            "at most 253 characters, an optional leading '*.')");
      }
    }
  }
  if (n["import"]) {
    const YAML::Node& imp = n["import"];
    SCONE_RETURN_IF_ERROR(OnlyKeys(imp, "import", {"session", "secret"}));
    if (!imp["session"]) return At(imp, "import needs a session");
    SCONE_ASSIGN_OR_RETURN(std::string session, Name(imp["session"], "import session"));
    s.import_session = session;
    s.import_secret = s.name;
    if (imp["secret"]) {
      SCONE_ASSIGN_OR_RETURN(s.import_secret, Name(imp["secret"], "import secret"));
    }
  }
  if (n["export"]) {
    const YAML::Node& exp = n["export"];
    if (!exp.IsSequence()) return At(exp, "export must be a list");
    for (const auto& e : exp) {
      SCONE_RETURN_IF_ERROR(OnlyKeys(e, "an export", {"session"}));
      if (!e["session"]) return At(e, "an export needs a session");
      SCONE_ASSIGN_OR_RETURN(std::string to, Name(e["session"], "export session"));
      s.export_to.push_back(std::move(to));
    }
  }
  bool x509 = s.kind == Secret::Kind::kX509 || s.kind == Secret::Kind::kX509Ca;
  if (s.value && s.size) return At(n, "secret '" + s.name + "' has both a value and a size");
  if (s.import_session && (s.value || s.size)) {
    return At(n, "secret '" + s.name + "' is imported: it cannot also be given or generated");
  }
  if (s.value && s.kind == Secret::Kind::kPrivateKey) {
    return At(n, "secret '" + s.name + "': private keys are generated by CAS, never given");
  }
  if (!x509 && (!s.private_key.empty() || !s.issuer.empty() || !s.dns.empty())) {
    return At(n, "secret '" + s.name + "': private_key, issuer and dns apply to x509 secrets only");
  }
  if (x509 && s.CommonName().size() > kMaxCommonName) {
    return At(n, "secret '" + s.name + "': the certificate's common name '" + s.CommonName() + "' is " +
                     std::to_string(s.CommonName().size()) + " characters, more than X.509's " +
                     std::to_string(kMaxCommonName) + " (name the secret shorter or put a shorter name first in dns)");
  }
  return s;
}

Result<Service> ParseService(const YAML::Node& n) {
  SCONE_RETURN_IF_ERROR(OnlyKeys(n, "a service", {"name", "mrenclaves", "mrsigner", "isvprodid",
                                                    "isvsvn", "command", "environment", "pwd",
                                                    "image_name"}));
  Service s;
  s.line = n.Mark().line + 1;
  if (!n["name"]) return At(n, "a service needs a name");
  SCONE_ASSIGN_OR_RETURN(s.name, Name(n["name"], "service name"));
  if (n["mrenclaves"]) {
    if (!n["mrenclaves"].IsSequence()) return At(n["mrenclaves"], "mrenclaves must be a list");
    for (const auto& m : n["mrenclaves"]) {
      SCONE_ASSIGN_OR_RETURN(crypto::Hash h, HashValue(m, "each mrenclave"));
      s.mrenclaves.push_back(h);
    }
  }
  if (n["mrsigner"]) {
    SCONE_ASSIGN_OR_RETURN(s.mrsigner, HashValue(n["mrsigner"], "mrsigner"));
  }
  if (n["isvprodid"]) {
    SCONE_ASSIGN_OR_RETURN(s.isvprodid, Number(n["isvprodid"], "isvprodid", 0xffff));
  }
  if (n["isvsvn"]) {
    SCONE_ASSIGN_OR_RETURN(s.isvsvn, Number(n["isvsvn"], "isvsvn", 0xffff));
  }
  if (n["command"]) {
    SCONE_ASSIGN_OR_RETURN(s.command, String(n["command"], "command"));
  }
  if (n["pwd"]) {
    SCONE_ASSIGN_OR_RETURN(s.pwd, String(n["pwd"], "pwd"));
  }
  if (n["image_name"]) {
    SCONE_ASSIGN_OR_RETURN(s.image_name, Name(n["image_name"], "image_name"));
  }
  if (n["environment"]) {
    const YAML::Node& env = n["environment"];
    if (!env.IsMap()) return At(env, "environment must be a mapping");
    for (const auto& kv : env) {
      const std::string& key = kv.first.Scalar();
      if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos) {
        return At(kv.first, "environment variable name '" + key + "' must be non-empty and hold no '=' "
                            "(it would change another variable)");
      }
      SCONE_ASSIGN_OR_RETURN(std::string value, String(kv.second, "environment value"));
      // The console shield's switch (docs/console-shield.md): a typo must not leave it off.
      if (key == kConsoleShieldVariable) {
        if (auto wanted = ParseConsoleShield(value); !wanted.ok()) return At(kv.second, wanted.status().message());
      }
      s.environment[kv.first.Scalar()] = std::move(value);
    }
  }
  if (s.mrenclaves.empty() && !s.mrsigner) {
    return At(n, "service '" + s.name + "' names neither mrenclaves nor an mrsigner: any code "
                 "could get its secrets");
  }
  return s;
}

Result<Image> ParseImage(const YAML::Node& n) {
  SCONE_RETURN_IF_ERROR(OnlyKeys(n, "an image", {"name", "volumes", "injection_files"}));
  Image img;
  img.line = n.Mark().line + 1;
  if (!n["name"]) return At(n, "an image needs a name");
  SCONE_ASSIGN_OR_RETURN(img.name, Name(n["name"], "image name"));
  if (n["volumes"]) {
    if (!n["volumes"].IsSequence()) return At(n["volumes"], "volumes must be a list");
    for (const auto& v : n["volumes"]) {
      SCONE_RETURN_IF_ERROR(OnlyKeys(v, "an image volume", {"name", "path"}));
      if (!v["name"] || !v["path"]) return At(v, "an image volume needs a name and a path");
      VolumeRef ref;
      SCONE_ASSIGN_OR_RETURN(ref.name, Name(v["name"], "volume name"));
      SCONE_ASSIGN_OR_RETURN(ref.path, String(v["path"], "volume path"));
      img.volumes.push_back(std::move(ref));
    }
  }
  if (n["injection_files"]) {
    if (!n["injection_files"].IsSequence()) return At(n["injection_files"], "injection_files must be a list");
    for (const auto& f : n["injection_files"]) {
      SCONE_RETURN_IF_ERROR(OnlyKeys(f, "an injection file", {"path", "content"}));
      if (!f["path"] || !f["content"]) return At(f, "an injection file needs a path and content");
      InjectionFile file;
      SCONE_ASSIGN_OR_RETURN(file.path, String(f["path"], "path"));
      SCONE_ASSIGN_OR_RETURN(file.content, String(f["content"], "content"));
      if (file.path.empty() || file.path[0] != '/') return At(f["path"], "injection file paths are absolute");
      img.injection_files.push_back(std::move(file));
    }
  }
  return img;
}

template <typename T, typename F>
Status ParseList(const YAML::Node& node, const char* what, std::vector<T>* out, F parse) {
  if (!node) return Status::Ok();
  if (!node.IsSequence()) return At(node, std::string(what) + " must be a list");
  std::set<std::string> names;
  for (const auto& item : node) {
    SCONE_ASSIGN_OR_RETURN(T parsed, parse(item));
    if (!names.insert(parsed.name).second) {
      return At(item, std::string(what) + " has '" + parsed.name + "' twice");
    }
    out->push_back(std::move(parsed));
  }
  return Status::Ok();
}

constexpr std::string_view kReferenceOpen = "$$SCONE::";

// Whether a "$$SCONE::" opens a reference no "$$" closes (Substitute leaves it as text).
bool HasUnterminatedReference(std::string_view text) {
  for (size_t pos = 0;;) {
    size_t start = text.find(kReferenceOpen, pos);
    if (start == std::string_view::npos) return false;
    size_t end = text.find("$$", start + kReferenceOpen.size());
    if (end == std::string_view::npos) return true;
    pos = end + 2;
  }
}

// Cross-references: every $$SCONE::x$$ names a secret; x509 secrets name existing keys and CAs;
// services name existing images; images name declared volumes.
Status CheckReferences(const Session& s) {
  auto missing = [](int line, const std::string& what) {
    return InvalidArgument("line " + std::to_string(line) + ": " + what);
  };
  for (const Secret& sec : s.secrets) {
    if (!sec.private_key.empty()) {
      const Secret* k = s.FindSecret(sec.private_key);
      if (!k || k->kind != Secret::Kind::kPrivateKey) {
        return missing(sec.line, "secret '" + sec.name + "': private_key '" + sec.private_key +
                                     "' is not a private-key secret of this session");
      }
    }
    if (!sec.issuer.empty()) {
      const Secret* ca = s.FindSecret(sec.issuer);
      if (!ca || ca->kind != Secret::Kind::kX509Ca) {
        return missing(sec.line, "secret '" + sec.name + "': issuer '" + sec.issuer +
                                     "' is not an x509-ca secret of this session");
      }
    }
  }
  for (const Service& svc : s.services) {
    std::vector<std::string> texts = {svc.command, svc.pwd};
    for (const auto& [k, v] : svc.environment) texts.push_back(v);
    for (const std::string& t : texts) {
      if (HasUnterminatedReference(t)) {
        return missing(svc.line, "service '" + svc.name + "': a " + std::string(kReferenceOpen) +
                                     " reference without its closing $$ (it would reach the program as text)");
      }
      for (const std::string& ref : ReferencedSecrets(t)) {
        if (!s.ResolveReference(ref)) {
          return missing(svc.line, "service '" + svc.name + "' refers to unknown secret '" + ref + "'");
        }
      }
    }
    if (!svc.image_name.empty()) {
      if (!s.FindImage(svc.image_name)) return missing(svc.line, "service '" + svc.name + "' names unknown image '" + svc.image_name + "'");
    }
  }
  for (const Image& img : s.images) {
    for (const VolumeRef& v : img.volumes) {
      if (std::find(s.volumes.begin(), s.volumes.end(), v.name) == s.volumes.end()) {
        return missing(img.line, "image '" + img.name + "' mounts undeclared volume '" + v.name + "'");
      }
    }
    for (const InjectionFile& f : img.injection_files) {
      if (HasUnterminatedReference(f.content)) {
        return missing(img.line, "injection file " + f.path + ": a " + std::string(kReferenceOpen) +
                                     " reference without its closing $$ (it would reach the program as text)");
      }
      for (const std::string& ref : ReferencedSecrets(f.content)) {
        if (!s.ResolveReference(ref)) {
          return missing(img.line, "injection file " + f.path + " refers to unknown secret '" + ref + "'");
        }
      }
    }
  }
  return Status::Ok();
}

Result<Session> ParseNode(const YAML::Node& root) {
  SCONE_RETURN_IF_ERROR(OnlyKeys(root, "the session", {"name", "version", "predecessor",
                                                         "access_policy", "security", "services",
                                                         "secrets", "images", "volumes"}));
  Session s;
  if (!root["name"]) return At(root, "a session needs a name");
  SCONE_ASSIGN_OR_RETURN(s.name, Name(root["name"], "session name"));
  if (!root["version"]) return At(root, "a session needs a version (\"0.3\")");
  SCONE_ASSIGN_OR_RETURN(s.version, String(root["version"], "version"));
  if (s.version != "0.3") return At(root["version"], "unsupported session version '" + s.version + "' (0.3)");
  if (root["predecessor"] && !root["predecessor"].IsNull()) {
    SCONE_ASSIGN_OR_RETURN(s.predecessor, HashValue(root["predecessor"], "predecessor"));
  }
  if (const YAML::Node& ap = root["access_policy"]) {
    SCONE_RETURN_IF_ERROR(OnlyKeys(ap, "access_policy", {"read", "update"}));
    if (ap["read"]) {
      SCONE_ASSIGN_OR_RETURN(s.read_access, Strings(ap["read"], "access_policy.read"));
    }
    if (ap["update"]) {
      SCONE_ASSIGN_OR_RETURN(s.update_access, Strings(ap["update"], "access_policy.update"));
    }
  }
  if (const YAML::Node& sec = root["security"]) {
    SCONE_RETURN_IF_ERROR(OnlyKeys(sec, "security", {"attestation"}));
    if (const YAML::Node& att = sec["attestation"]) {
      SCONE_RETURN_IF_ERROR(OnlyKeys(att, "security.attestation", {"tolerate", "ignore_advisories", "mode"}));
      if (att["tolerate"]) {
        SCONE_ASSIGN_OR_RETURN(s.tolerate, Strings(att["tolerate"], "tolerate"));
        for (const std::string& t : s.tolerate) {
          if (t != "sim" && t != "debug-mode" && t != "outdated-tcb" && t != "hyperthreading") {
            return At(att["tolerate"], "unknown tolerate value '" + t + "'");
          }
        }
      }
      if (att["ignore_advisories"]) {
        SCONE_ASSIGN_OR_RETURN(s.ignore_advisories, Strings(att["ignore_advisories"], "ignore_advisories"));
      }
      if (att["mode"]) {
        SCONE_ASSIGN_OR_RETURN(s.attestation_mode, String(att["mode"], "mode"));
      }
    }
  }
  if (const YAML::Node& vols = root["volumes"]) {
    if (!vols.IsSequence()) return At(vols, "volumes must be a list");
    for (const auto& v : vols) {
      SCONE_RETURN_IF_ERROR(OnlyKeys(v, "a volume", {"name"}));
      if (!v["name"]) return At(v, "a volume needs a name");
      SCONE_ASSIGN_OR_RETURN(std::string name, Name(v["name"], "volume name"));
      s.volumes.push_back(std::move(name));
    }
  }
  SCONE_RETURN_IF_ERROR(ParseList(root["secrets"], "secrets", &s.secrets, ParseSecret));
  SCONE_RETURN_IF_ERROR(ParseList(root["services"], "services", &s.services, ParseService));
  SCONE_RETURN_IF_ERROR(ParseList(root["images"], "images", &s.images, ParseImage));
  SCONE_RETURN_IF_ERROR(CheckReferences(s));
  return s;
}

}  // namespace

Result<Session> Session::Parse(std::string_view text) {
  if (text.size() > kMaxSessionSize) {
    return InvalidArgument("session is " + std::to_string(text.size()) + " bytes, more than the " +
                           std::to_string(kMaxSessionSize) + " allowed");
  }
  // yaml-cpp reports malformed input by throwing; this is the edge where that becomes a Status.
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsDefined() || root.IsNull()) return InvalidArgument("line 1: the session is empty");
    return ParseNode(root);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("line " + std::to_string(e.mark.line + 1) + ": malformed YAML: " + e.msg);
  }
}

crypto::Hash Session::HashOf(std::string_view text) { return crypto::Sha256({AsBytes(text)}); }

const Secret* Session::FindSecret(std::string_view name) const {
  for (const Secret& s : secrets) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::optional<Session::SecretPart> Session::ResolveReference(std::string_view ref) const {
  if (const Secret* s = FindSecret(ref)) return SecretPart{s, ""};
  size_t dot = ref.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const Secret* s = FindSecret(ref.substr(0, dot));
  std::string part(ref.substr(dot + 1));
  if (s == nullptr) return std::nullopt;
  bool x509 = s->kind == Secret::Kind::kX509 || s->kind == Secret::Kind::kX509Ca;
  if ((x509 && (part == "crt" || part == "key" || part == "chain")) ||
      (s->kind == Secret::Kind::kPrivateKey && part == "key")) {
    return SecretPart{s, part};
  }
  return std::nullopt;
}

const Image* Session::FindImage(std::string_view name) const {
  for (const Image& i : images) {
    if (i.name == name) return &i;
  }
  return nullptr;
}

const Service* Session::FindService(std::string_view name) const {
  for (const Service& s : services) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::vector<std::string> ReferencedSecrets(std::string_view text) {
  std::vector<std::string> out;
  (void)Substitute(text, [&](std::string_view name) -> Result<std::string> {
    out.emplace_back(name);
    return std::string();
  });
  return out;
}

Result<std::string> Substitute(std::string_view text,
                               const std::function<Result<std::string>(std::string_view)>& lookup) {
  static constexpr std::string_view kOpen = "$$SCONE::";
  static constexpr std::string_view kClose = "$$";
  // Values are secrets: the result is built once at its final size (no reallocation leaves a
  // copy behind) and every value looked up is wiped once copied.
  struct Piece {
    std::string_view literal;
    std::string value;
  };
  std::vector<Piece> pieces;
  auto wipe_all = [&] {
    for (Piece& p : pieces) Wipe(p.value);
  };
  size_t total = 0, pos = 0;
  while (pos < text.size()) {
    size_t start = text.find(kOpen, pos);
    if (start == std::string_view::npos) break;
    size_t end = text.find(kClose, start + kOpen.size());
    if (end == std::string_view::npos) break;
    std::string_view name = text.substr(start + kOpen.size(), end - start - kOpen.size());
    Result<std::string> value = lookup(name);
    if (!value.ok()) {
      wipe_all();
      return value.status();
    }
    pieces.push_back({text.substr(pos, start - pos), std::move(value).value()});
    total += pieces.back().literal.size() + pieces.back().value.size();
    pos = end + kClose.size();
  }
  std::string out;
  out.reserve(total + text.size() - pos);
  for (const Piece& p : pieces) out.append(p.literal).append(p.value);
  out.append(text.substr(pos));
  wipe_all();
  return out;
}

}  // namespace scone::policy
