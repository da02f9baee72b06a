// Curated images, built here from Debian 12's packages (no registry is reachable):
// scone-native/NAME, a minimal Debian image with the program, and scone-curated/NAME, the same
// sconified with the volume and command of its example (session written beside, for the
// operator). The catalogue is data: one entry per program.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "image/docker_client.h"
#include "image/sconify.h"

namespace scone::image {

struct CuratedImage {
  std::string name;
  std::string description;
  std::vector<std::string> packages;  // Debian packages
  std::vector<std::string> setup;     // extra Dockerfile RUN commands (fixed text of our own)
  std::vector<std::string> cmd;       // CMD of the native image
  std::vector<std::string> fs_dirs;   // encrypted volumes of the curated one
};

const std::vector<CuratedImage>& CuratedCatalogue();
const CuratedImage* FindCurated(const std::string& name);

inline std::string NativeImageName(const std::string& name) { return "scone-native/" + name; }
inline std::string CuratedImageName(const std::string& name) { return "scone-curated/" + name; }

// Builds both images (the base first if missing); the sconified one with `sconify` settings
// (runtime, CAS and LAS addresses). Returns what sconify returned for the curated image.
Result<SconifyResult> BuildCurated(const DockerClient& docker, const CuratedImage& image, SconifyOptions sconify,
                                   const std::string& mirror, bool quiet);

}  // namespace scone::image
