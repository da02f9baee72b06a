// `scone build`: a Dockerfile built by the engine into a native image, then sconified into the
// secure one (sconify.h). The native image stays, tagged IMAGE's repository + "-native" (or
// --native-tag), so the two can be compared and the secure one rebuilt without a new build.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "image/docker_client.h"
#include "image/sconify.h"

namespace scone::image {

struct BuildOptions {
  std::string context_dir = ".";
  std::string dockerfile;                // "" : CONTEXT/Dockerfile
  std::string native_tag;                // "" : NativeTagOf(sconify.to)
  std::vector<std::string> build_args;   // K=V
  bool no_cache = false;
  SconifyOptions sconify;                // .from is set to the native image
};

// "myapp:1.0" -> "myapp-native:1.0"; "host:5000/team/app" -> "host:5000/team/app-native".
std::string NativeTagOf(const std::string& image);

// Checks the Dockerfile and context before the engine runs, builds, sconifies.
Result<SconifyResult> BuildAndSconify(const DockerClient& docker, BuildOptions options, bool quiet);

}  // namespace scone::image
