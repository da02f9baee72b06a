#include "cli/runtime_library.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

namespace scone::cli {

Result<std::string> RuntimeLibrary() {
  if (const char* env = getenv("SCONE_RUNTIME_LIBRARY")) return std::string(env);
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return Internal("cannot find the scone executable");
  exe[n] = '\0';
  std::filesystem::path dir = std::filesystem::path(exe).parent_path();
  for (const auto& candidate : {dir / "libscone-runtime.so", dir / "../lib/scone/libscone-runtime.so"}) {
    if (access(candidate.c_str(), R_OK) == 0) return std::filesystem::canonical(candidate).string();
  }
  return NotFound("libscone-runtime.so not found next to " + std::string(exe));
}

Result<std::string> FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t pos = 0; pos <= dirs.size();) {
    size_t colon = dirs.find(':', pos);
    if (colon == std::string::npos) colon = dirs.size();
    std::string candidate = dirs.substr(pos, colon - pos) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    pos = colon + 1;
  }
  return NotFound(name + ": command not found");
}

}  // namespace scone::cli
