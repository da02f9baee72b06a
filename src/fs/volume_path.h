// Paths inside a volume: relative, '/'-separated, normalized ("a/b/c"), never escaping the
// volume and never naming the volume's own metadata directory.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace scone::fs {

// Normalizes `path` (relative to the volume root): collapses "//" and ".", resolves "..".
// Fails for an empty result, for ".." above the root, and for anything under ".scone".
Result<std::string> NormalizeVolumePath(std::string_view path);

// True when `path` equals `prefix` or lies under it as a directory ("a/b" is under "a").
bool PathHasPrefix(std::string_view path, std::string_view prefix);

}  // namespace scone::fs
