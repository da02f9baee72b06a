#include "runtime/files/xattr_calls.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <sys/syscall.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/user_memory.h"
#include "runtime/fd_table.h"
#include "runtime/runtime.h"

namespace scone::runtime::files {
namespace {

// The namespaces whose values are the program's data: user. (curl --xattr keeps a download's
// URL there, query and signature included) and trusted.
bool ProgramData(std::string_view name) { return name.starts_with("user.") || name.starts_with("trusted."); }

// What lies in a protected region of a volume, and the volume's own directory (its region
// may be any: a hostile pass found its attributes on disk, `tar --xattrs -C V` restoring the
// archive's "." onto it).
bool InProtectedPlace(const Target& t) { return t.volume != nullptr && !t.metadata && (t.path.empty() || t.Protected()); }

bool ProtectedPath(Runtime& rt, int dirfd, const char* path, bool follow) {
  if (!ReadableString(path, PATH_MAX)) return false;  // the kernel's EFAULT
  RuntimeSection section;
  return InProtectedPlace(rt.Locate(dirfd, path, follow));
}

bool ProtectedDescriptor(Runtime& rt, int fd) {
  if (rt.fds().Has(fd)) {
    RuntimeSection section;
    std::shared_ptr<ShieldedFd> d = rt.fds().Get(fd);
    if (d != nullptr && d->AsProtectedFile() != nullptr) return true;
  }
  // A directory of a volume, a protected file opened with O_PATH: where the kernel says the
  // descriptor leads (a socket's or a pipe's link is no path).
  char link[PATH_MAX];
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  const long n = RawSyscall(SYS_readlink, Arg(proc.c_str()), Arg(link), sizeof(link) - 1);
  if (n <= 0 || link[0] != '/') return false;
  link[n] = '\0';
  RuntimeSection section;
  return InProtectedPlace(rt.Locate(AT_FDCWD, link, /*follow_last=*/false));
}

// A list of names (NUL-terminated, one after the other) without the program-data ones; the
// program's buffer gets it as the kernel's call would (its length for a size of 0, ERANGE
// where it does not fit).
template <typename ListCall>
long FilteredList(const ListCall& list, char* out, size_t size) {
  std::vector<char> all;
  long n = 0;
  for (int tries = 0; tries < 8; ++tries) {  // the list may grow between the two calls
    n = list(nullptr, 0);
    if (n <= 0) return n;
    all.resize(static_cast<size_t>(n));
    n = list(all.data(), all.size());
    if (n != -ERANGE) break;
  }
  if (n < 0) return n;
  std::string kept;
  for (size_t at = 0; at < static_cast<size_t>(n);) {
    const size_t len = strnlen(all.data() + at, static_cast<size_t>(n) - at);
    std::string_view name(all.data() + at, len);
    if (!ProgramData(name)) kept.append(name).push_back('\0');
    at += len + 1;
  }
  if (size == 0) return static_cast<long>(kept.size());
  if (kept.size() > size) return -ERANGE;
  if (WritableBytes(out, kept.size()) != kept.size()) return -EFAULT;
  std::memcpy(out, kept.data(), kept.size());
  return static_cast<long>(kept.size());
}

}  // namespace

long XattrCall(Runtime& rt, long nr, const long* a) {
  if (!rt.HasVolumes()) return kNotMine;
  const char* name = nullptr;
  bool in_volume = false;
  switch (nr) {
    case SYS_setxattr:
    case SYS_getxattr:
    case SYS_removexattr:
    case SYS_lsetxattr:
    case SYS_lgetxattr:
    case SYS_lremovexattr: {
      const bool follow = nr == SYS_setxattr || nr == SYS_getxattr || nr == SYS_removexattr;
      in_volume = ProtectedPath(rt, AT_FDCWD, reinterpret_cast<const char*>(a[0]), follow);
      name = reinterpret_cast<const char*>(a[1]);
      break;
    }
    case SYS_fsetxattr:
    case SYS_fgetxattr:
    case SYS_fremovexattr:
      in_volume = ProtectedDescriptor(rt, static_cast<int>(a[0]));
      name = reinterpret_cast<const char*>(a[1]);
      break;
    case SYS_listxattr:
    case SYS_llistxattr:
      in_volume = ProtectedPath(rt, AT_FDCWD, reinterpret_cast<const char*>(a[0]), nr == SYS_listxattr);
      break;
    case SYS_flistxattr:
      in_volume = ProtectedDescriptor(rt, static_cast<int>(a[0]));
      break;
    case kSetXattrAt:
    case kGetXattrAt:
    case kListXattrAt:
    case kRemoveXattrAt: {  // (dirfd, path, at_flags, name or list, ...)
      const int dirfd = static_cast<int>(a[0]);
      const char* path = reinterpret_cast<const char*>(a[1]);
      const unsigned at_flags = static_cast<unsigned>(a[2]);
      const bool by_descriptor = (at_flags & AT_EMPTY_PATH) && ReadableString(path, 1) && path[0] == '\0';
      in_volume = by_descriptor ? ProtectedDescriptor(rt, dirfd)
                                : ProtectedPath(rt, dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW));
      if (nr != kListXattrAt) name = reinterpret_cast<const char*>(a[3]);
      break;
    }
    default:
      return kNotMine;
  }
  if (!in_volume) return kNotMine;
  if (name != nullptr) {
    if (!ReadableString(name, XATTR_NAME_MAX + 1)) return kNotMine;  // the kernel's EFAULT
    return ProgramData(name) ? -EOPNOTSUPP : kNotMine;
  }
  // A list: what the host may have planted in those namespaces is no attribute of the file.
  if (nr == kListXattrAt) {
    return FilteredList(
        [&](char* buf, size_t size) { return RawSyscall(nr, a[0], a[1], a[2], Arg(buf), static_cast<long>(size)); },
        reinterpret_cast<char*>(a[3]), static_cast<size_t>(a[4]));
  }
  return FilteredList([&](char* buf, size_t size) { return RawSyscall(nr, a[0], Arg(buf), static_cast<long>(size)); },
                      reinterpret_cast<char*>(a[1]), static_cast<size_t>(a[2]));
}

}  // namespace scone::runtime::files
