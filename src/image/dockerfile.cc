#include "image/dockerfile.h"

#include <nlohmann/json.hpp>

namespace scone::image {
namespace {

std::string Quoted(const std::string& s) { return nlohmann::json(s).dump(); }

std::string JsonList(const std::vector<std::string>& words) { return nlohmann::json(words).dump(); }

}  // namespace

std::string WriteDockerfile(const SconeDockerfile& d) {
  std::string out = "FROM " + d.from + "\n";
  out += "COPY " + JsonList({d.runtime_dir, d.runtime_path}) + "\n";
  for (const auto& [k, v] : d.labels) out += "LABEL " + k + "=" + Quoted(v) + "\n";
  for (const std::string& v : d.volumes) out += "VOLUME " + JsonList({v}) + "\n";
  if (d.replace_command) {
    out += "ENTRYPOINT " + JsonList(d.entrypoint) + "\n";
    out += "CMD []\n";
  }
  // Last: from here on every program in the image starts with the runtime.
  for (const auto& [k, v] : d.env) out += "ENV " + k + "=" + Quoted(v) + "\n";
  return out;
}

}  // namespace scone::image
