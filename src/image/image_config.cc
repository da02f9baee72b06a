#include "image/image_config.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace scone::image {
namespace {

using nlohmann::json;

Result<std::vector<std::string>> StringList(const json& config, const char* key, const std::string& image) {
  std::vector<std::string> out;
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return out;
  if (!it->is_array()) return InvalidArgument("image " + image + ": Config." + key + " is not a list");
  for (const json& v : *it) {
    if (!v.is_string()) return InvalidArgument("image " + image + ": Config." + key + " holds a non-string");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string StringField(const json& config, const char* key) {
  auto it = config.find(key);
  return it != config.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::vector<std::string> ImageConfig::Command() const {
  std::vector<std::string> out = entrypoint;
  out.insert(out.end(), cmd.begin(), cmd.end());
  return out;
}

std::string ImageConfig::EnvValue(std::string_view name, std::string_view fallback) const {
  for (const std::string& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') {
      return e.substr(name.size() + 1);
    }
  }
  return std::string(fallback);
}

Result<ImageConfig> ParseInspect(std::string_view text, const std::string& image) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_array() || doc.size() != 1 || !doc[0].is_object()) {
    return InvalidArgument("image " + image + ": docker image inspect gave no single image description");
  }
  const json& top = doc[0];
  ImageConfig c;
  c.id = StringField(top, "Id");
  auto config_it = top.find("Config");
  if (config_it == top.end() || !config_it->is_object()) {
    return InvalidArgument("image " + image + ": its description has no Config");
  }
  const json& config = *config_it;
  SCONE_ASSIGN_OR_RETURN(c.entrypoint, StringList(config, "Entrypoint", image));
  SCONE_ASSIGN_OR_RETURN(c.cmd, StringList(config, "Cmd", image));
  SCONE_ASSIGN_OR_RETURN(c.env, StringList(config, "Env", image));
  c.working_dir = StringField(config, "WorkingDir");
  c.user = StringField(config, "User");
  auto volumes = config.find("Volumes");
  if (volumes != config.end() && volumes->is_object()) {
    for (const auto& [path, _] : volumes->items()) c.volumes.push_back(path);
    std::sort(c.volumes.begin(), c.volumes.end());
  }
  auto labels = config.find("Labels");
  if (labels != config.end() && labels->is_object()) {
    for (const auto& [key, value] : labels->items()) {
      if (value.is_string()) c.labels[key] = value.get<std::string>();
    }
  }
  return c;
}

}  // namespace scone::image
