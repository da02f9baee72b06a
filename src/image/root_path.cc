#include "image/root_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace scone::image {

Result<std::string> ResolveInRoot(const std::string& root, const std::string& path) {
  int root_fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return IoError("open " + root, errno);
  open_how how = {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof(how)));
  int saved = errno;
  close(root_fd);
  if (fd < 0) {
    if (saved == ENOENT || saved == ENOTDIR) return NotFound(path + " does not exist in the image");
    return IoError("resolve " + path + " in the image", saved);
  }
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  close(fd);
  if (n <= 0) return IoError("readlink " + std::string(link), errno);
  return std::string(target, static_cast<size_t>(n));
}

std::string PathInImage(const std::string& root, const std::string& host_path) {
  if (host_path.size() > root.size() && host_path.compare(0, root.size(), root) == 0) {
    return host_path.substr(root.size());
  }
  return host_path == root ? "/" : host_path;
}

}  // namespace scone::image
