// A secure service's image for a stack: its image sconified (image/sconify.h) into
// scone-stack/STACK-SERVICE, and what the session needs of it. Sconify's work (unpacking,
// measuring, building) is skipped when that image already exists and its labels say it was made
// from the same source image (by id) with the same runtime; the labels carry what the session
// needs (the measurement and the image's command, environment, working directory and entry
// scripts: nothing secret, all of it from the image itself).
#pragma once

#include <string>

#include "common/status.h"
#include "image/docker_client.h"
#include "stack/translate.h"

namespace scone::stack {

inline constexpr char kStackLabel[] = "scone.stack";  // on every image a stack deploy made

struct StackImage {
  ServiceImage facts;
  bool built = false;  // by this call (a rollback removes it)
};

// "scone-stack/shop-web": Docker's repository names are lower case.
std::string StackImageName(const std::string& stack, const std::string& service);

// REQUIRES: `runtime_hash` is the hex SHA-256 of `runtime_library`.
Result<StackImage> ImageForService(const image::DockerClient& docker, const std::string& stack,
                                   const StackService& service, const std::string& runtime_library,
                                   const std::string& runtime_hash, bool quiet);

}  // namespace scone::stack
