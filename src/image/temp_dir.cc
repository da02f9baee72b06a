#include "image/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <filesystem>

namespace scone::image {

Result<TempDir> TempDir::Create(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) return IoError("mkdtemp " + pattern, errno);
  return TempDir(pattern);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace scone::image
