#include "fs/volume_path.h"

#include <vector>

#include "fs/format.h"

namespace scone::fs {

Result<std::string> NormalizeVolumePath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) return InvalidArgument("path '" + std::string(path) + "' leaves the volume");
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  if (parts.empty()) return InvalidArgument("path '" + std::string(path) + "' names the volume root");
  if (parts.front() == kMetaDirName) {
    return InvalidArgument("path '" + std::string(path) + "' is inside the volume's metadata");
  }
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
}

bool PathHasPrefix(std::string_view path, std::string_view prefix) {
  if (prefix.empty()) return true;
  if (path.size() < prefix.size() || path.substr(0, prefix.size()) != prefix) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

}  // namespace scone::fs
