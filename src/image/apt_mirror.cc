#include "image/apt_mirror.h"

#include <filesystem>
#include <sstream>

#include "os/file.h"

namespace scone::image {
namespace {

// The archive itself (".../debian"), not the security or ports archives.
bool IsDebianArchive(const std::string& uri) {
  return uri.rfind("http", 0) == 0 && uri.size() >= 7 &&
         (uri.compare(uri.size() - 7, 7, "/debian") == 0 || uri.compare(uri.size() - 8, 8, "/debian/") == 0);
}

}  // namespace

std::string MirrorFromSources(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (first == "deb") {  // deb [options] URI suite components
      std::string w;
      while (words >> w) {
        if (w.front() == '[') {
          while (w.back() != ']' && words >> w) {
          }
          continue;
        }
        if (IsDebianArchive(w)) return w;
        break;
      }
    } else if (first == "URIs:") {  // deb822
      std::string uri;
      while (words >> uri) {
        if (IsDebianArchive(uri)) return uri;
      }
    }
  }
  return "";
}

Result<std::string> HostDebianMirror() {
  std::vector<std::string> files = {"/etc/apt/sources.list"};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/etc/apt/sources.list.d", ec)) {
    std::string p = e.path().string();
    if (p.ends_with(".list") || p.ends_with(".sources")) files.push_back(p);
  }
  for (const std::string& f : files) {
    auto text = os::ReadWholeFile(f, 1 << 20);
    if (!text.ok()) continue;
    std::string mirror = MirrorFromSources(std::string(text->begin(), text->end()));
    if (!mirror.empty()) return mirror;
  }
  return NotFound("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d (give one with --mirror)");
}

}  // namespace scone::image
