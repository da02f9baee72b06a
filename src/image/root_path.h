// Paths inside an image's unpacked file system, resolved as the container would resolve them:
// absolute symbolic links and ".." stay inside the root (openat2 RESOLVE_IN_ROOT), never reach
// the host's files.
#pragma once

#include <string>

#include "common/status.h"

namespace scone::image {

// The host path of the file `path` names inside `root` (links followed inside the root).
// NotFound if it does not exist there.
Result<std::string> ResolveInRoot(const std::string& root, const std::string& path);

// `path` as the image knows it (root prefix removed). REQUIRES: host_path is under root.
std::string PathInImage(const std::string& root, const std::string& host_path);

}  // namespace scone::image
