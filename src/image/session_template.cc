#include "image/session_template.h"

#include <map>
#include <set>

#include <yaml-cpp/yaml.h>

#include "policy/session.h"

namespace scone::image {
namespace {

std::string CommandLine(const ServiceTemplate& s) {
  std::string command;
  for (const std::string& w : s.command) command += (command.empty() ? "" : " ") + w;
  return command;
}

void WriteService(YAML::Emitter& out, const ServiceTemplate& s) {
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : s.environment) env[k] = v;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << s.service_name;
  out << YAML::Key << "mrenclaves" << YAML::Value << YAML::Flow << YAML::BeginSeq << ToHex(s.measurement) << YAML::EndSeq;
  out << YAML::Key << "command" << YAML::Value << CommandLine(s);
  if (!env.empty()) {
    out << YAML::Key << "environment" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : env) out << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
    out << YAML::EndMap;
  }
  out << YAML::Key << "pwd" << YAML::Value << (s.pwd.empty() ? "/" : s.pwd);
  out << YAML::Key << "image_name" << YAML::Value << s.service_name;
  out << YAML::EndMap;
}

void WriteImage(YAML::Emitter& out, const ServiceTemplate& s) {
  out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << s.service_name;
  if (!s.volumes.empty()) {
    out << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq;
    for (const SessionVolume& v : s.volumes) {
      out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << v.name << YAML::Key << "path" << YAML::Value
          << v.path << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  if (!s.injected.empty()) {
    out << YAML::Key << "injection_files" << YAML::Value << YAML::BeginSeq;
    for (const SessionFile& f : s.injected) {
      out << YAML::BeginMap << YAML::Key << "path" << YAML::Value << f.path << YAML::Key << "content" << YAML::Value
          << YAML::Literal << f.content << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

void WriteSecret(YAML::Emitter& out, const SessionSecret& s) {
  out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << s.name << YAML::Key << "kind" << YAML::Value << s.kind;
  if (s.size) out << YAML::Key << "size" << YAML::Value << *s.size;
  if (s.value) out << YAML::Key << "value" << YAML::Value << YAML::DoubleQuoted << *s.value;
  if (!s.private_key.empty()) out << YAML::Key << "private_key" << YAML::Value << s.private_key;
  if (!s.issuer.empty()) out << YAML::Key << "issuer" << YAML::Value << s.issuer;
  if (!s.dns.empty()) {
    out << YAML::Key << "dns" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::string& d : s.dns) out << d;
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

}  // namespace

Result<std::string> WriteSession(const SessionTemplate& t) {
  std::set<std::string> declared;
  for (const SessionSecret& s : t.secrets) declared.insert(s.name);
  std::set<std::string> placeholders;
  for (const ServiceTemplate& s : t.services) {
    std::vector<std::string> refs = policy::ReferencedSecrets(CommandLine(s));
    for (const auto& [k, v] : s.environment) {
      for (const std::string& ref : policy::ReferencedSecrets(v)) refs.push_back(ref);
    }
    for (const std::string& ref : refs) {
      if (!declared.count(ref)) placeholders.insert(ref);
    }
  }
  YAML::Emitter out;
  out << YAML::Comment("Written by " + t.written_by + ". Review, then: scone session create FILE");
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << t.session_name;
  out << YAML::Key << "version" << YAML::Value << YAML::DoubleQuoted << "0.3";
  if (t.predecessor) out << YAML::Key << "predecessor" << YAML::Value << ToHex(*t.predecessor);
  out << YAML::Key << "security" << YAML::Value << YAML::BeginMap << YAML::Key << "attestation" << YAML::Value
      << YAML::BeginMap << YAML::Key << "tolerate" << YAML::Value << YAML::Flow << YAML::BeginSeq << "sim"
      << "debug-mode" << YAML::EndSeq << YAML::EndMap << YAML::EndMap;
  out << YAML::Comment("sim: this machine has no TEE; remove it where the platform has one");
  std::vector<std::string> volumes;
  for (const ServiceTemplate& s : t.services) {
    for (const SessionVolume& v : s.volumes) volumes.push_back(v.name);
  }
  if (!volumes.empty()) {
    out << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq;
    for (const std::string& v : volumes) out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << v << YAML::EndMap;
    out << YAML::EndSeq;
  }
  out << YAML::Key << "services" << YAML::Value << YAML::BeginSeq;
  for (const ServiceTemplate& s : t.services) WriteService(out, s);
  out << YAML::EndSeq;
  out << YAML::Key << "images" << YAML::Value << YAML::BeginSeq;
  for (const ServiceTemplate& s : t.services) WriteImage(out, s);
  out << YAML::EndSeq;
  if (!t.secrets.empty() || !placeholders.empty()) {
    out << YAML::Key << "secrets" << YAML::Value << YAML::BeginSeq;
    for (const SessionSecret& s : t.secrets) WriteSecret(out, s);
    for (const std::string& name : placeholders) WriteSecret(out, {name, "ascii", 32, std::nullopt, "", "", {}});
    out << YAML::EndSeq;
    if (!placeholders.empty()) {
      out << YAML::Comment("placeholders: generated by CAS; give a value: instead of size: to set one");
    }
  }
  out << YAML::EndMap;
  if (!out.good()) return Internal("cannot write the session: " + out.GetLastError());
  std::string text = std::string(out.c_str()) + "\n";
  auto parsed = policy::Session::Parse(text);
  if (!parsed.ok()) return parsed.status().Annotate("the session written for " + t.session_name);
  return text;
}

}  // namespace scone::image
