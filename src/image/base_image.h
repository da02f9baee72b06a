// The base of every image built here: Debian 12 (bookworm), bootstrapped from the host's Debian
// mirror (`debootstrap --variant=minbase`) and imported as one layer. No registry is reachable
// from these machines, so nothing is pulled. Built once per engine, reused while it exists.
#pragma once

#include <string>

#include "common/status.h"
#include "image/docker_client.h"

namespace scone::image {

inline constexpr char kBaseImage[] = "scone-base/debian:12";

// kBaseImage, built first if the engine lacks it. `mirror` "" means the host's (apt_mirror.h).
Result<std::string> EnsureBaseImage(const DockerClient& docker, const std::string& mirror, bool quiet);

}  // namespace scone::image
