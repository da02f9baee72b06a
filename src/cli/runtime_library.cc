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

}  // namespace scone::cli
