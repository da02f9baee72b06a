// What an image runs, as `docker image inspect` reports it: the parts of its configuration that
// sconify must keep (entrypoint, command, environment, working directory, user) and the volumes
// it declares. Parsing is pure; the JSON is the engine's, read strictly (a missing image or a
// reply of another shape is an error naming the image).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace scone::image {

struct ImageConfig {
  std::string id;                       // sha256:...
  std::vector<std::string> entrypoint;  // Config.Entrypoint (may be empty)
  std::vector<std::string> cmd;         // Config.Cmd (may be empty)
  std::vector<std::string> env;         // Config.Env, "K=V"
  std::string working_dir;
  std::string user;
  std::vector<std::string> volumes;     // Config.Volumes' paths, sorted
  std::map<std::string, std::string> labels;  // Config.Labels

  // ENTRYPOINT followed by CMD: what a container of the image runs by default.
  std::vector<std::string> Command() const;
  // The value of `name` in env, or `fallback`.
  std::string EnvValue(std::string_view name, std::string_view fallback = "") const;
};

// From the JSON array `docker image inspect IMAGE` prints (one element).
Result<ImageConfig> ParseInspect(std::string_view json, const std::string& image);

}  // namespace scone::image
