// The keys a Compose v3 stack file may hold where SCONE reads it, so that a misspelt key (or a
// SCONE extension in the wrong place) is an error with its line, never silently ignored. Keys
// starting with `x-` are Compose's own extension fields and always allowed.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "common/status.h"

namespace scone::stack {

// SCONE's per-service keys (removed from the file given to Docker).
inline constexpr const char* kSconeServiceKeys[] = {"not_scone", "file_shield", "network_shield",
                                                    "console_shield"};

// Checks `map`'s keys against Compose's for `where` ("top", "service", "deploy", "port", "volume",
// "config-ref", "config"): recursively for the parts whose layout SCONE reads. Errors say
// "line N: unknown key 'K' in WHERE" (the caller adds the file).
Status CheckComposeKeys(const YAML::Node& map, const std::string& where, const std::string& what);

// A key given twice in any mapping of the file (as Docker refuses it: the YAML library keeps the
// last, so a secret's reference or a shield setting could be overridden unnoticed): "line N:
// mapping key 'K' already defined at line M".
Status CheckNoDuplicateKeys(const YAML::Node& node);

// "line N: WHAT" for a node: every stack file error names its line.
Status At(const YAML::Node& node, const std::string& what);

}  // namespace scone::stack
