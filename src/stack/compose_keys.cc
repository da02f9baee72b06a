#include "stack/compose_keys.h"

#include <map>
#include <set>

namespace scone::stack {
namespace {

// Compose file format 3.x (docs.docker.com/compose/compose-file/compose-file-v3), by section.
const std::map<std::string, std::set<std::string>>& Tables() {
  static const std::map<std::string, std::set<std::string>> tables = {
      {"top", {"version", "services", "networks", "volumes", "secrets", "configs"}},
      {"service",
       {"build",
        "cap_add",
        "cap_drop",
        "cgroup_parent",
        "command",
        "configs",
        "container_name",
        "credential_spec",
        "depends_on",
        "deploy",
        "devices",
        "dns",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "environment",
        "expose",
        "external_links",
        "extra_hosts",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "labels",
        "links",
        "logging",
        "mac_address",
        "network_mode",
        "networks",
        "pid",
        "ports",
        "privileged",
        "read_only",
        "restart",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "user",
        "userns_mode",
        "volumes",
        "working_dir",
        "not_scone",
        "file_shield",
        "network_shield",
        "console_shield"}},
      {"deploy",
       {"endpoint_mode", "labels", "mode", "placement", "replicas", "resources", "restart_policy",
        "rollback_config", "update_config", "max_replicas_per_node"}},
      {"port", {"target", "published", "protocol", "mode"}},
      {"volume",
       {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"}},
      {"config-ref", {"source", "target", "uid", "gid", "mode"}},
      {"config", {"file", "external", "name", "template_driver"}},
      {"secret",
       {"kind", "length", "value", "file", "external", "name", "driver", "driver_opts", "labels",
        "template_driver"}},
  };
  return tables;
}

}  // namespace

Status At(const YAML::Node& node, const std::string& what) {
  return InvalidArgument("line " + std::to_string(node.Mark().line + 1) + ": " + what);
}

Status CheckNoDuplicateKeys(const YAML::Node& node) {
  if (node.IsSequence()) {
    for (const auto& item : node) SCONE_RETURN_IF_ERROR(CheckNoDuplicateKeys(item));
  } else if (node.IsMap()) {
    std::map<std::string, int> lines;
    for (const auto& kv : node) {
      const int line = kv.first.Mark().line + 1;
      if (kv.first.IsScalar()) {
        auto [at, fresh] = lines.emplace(kv.first.Scalar(), line);
        if (!fresh) {
          return At(kv.first, "mapping key '" + kv.first.Scalar() + "' already defined at line " +
                                  std::to_string(at->second));
        }
      }
      SCONE_RETURN_IF_ERROR(CheckNoDuplicateKeys(kv.second));
    }
  }
  return Status::Ok();
}

Status CheckComposeKeys(const YAML::Node& map, const std::string& where, const std::string& what) {
  if (!map.IsMap()) return At(map, what + " must be a mapping");
  const std::set<std::string>& allowed = Tables().at(where);
  for (const auto& kv : map) {
    const std::string& key = kv.first.Scalar();
    if (key.rfind("x-", 0) == 0 || allowed.count(key)) continue;
    return At(kv.first, "unknown key '" + key + "' in " + what);
  }
  return Status::Ok();
}

}  // namespace scone::stack
