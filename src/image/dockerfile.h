// The Dockerfile that makes a sconified image from its original: the runtime copied in, the
// environment that preloads it and names the service's configuration, the encrypted volumes
// declared, and the command kept (or replaced by --command). Values are written as JSON strings.
// REQUIRES: keys are plain names, and values hold no '$', '"', '\\' or control character
// (Docker would expand or unescape them differently from JSON): sconify checks every value it
// takes from its options (SafeWord).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace scone::image {

struct SconeDockerfile {
  std::string from;                       // image id
  std::string runtime_dir;                // in the build context: the runtime and its libraries
  std::string runtime_path;               // their directory in the image (ends with '/')
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> volumes;
  std::vector<std::string> entrypoint;    // set when the command is replaced
  bool replace_command = false;
  std::vector<std::pair<std::string, std::string>> labels;
};

std::string WriteDockerfile(const SconeDockerfile& d);

}  // namespace scone::image
