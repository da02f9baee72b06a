// Before the runtime's constructor runs, other libraries' constructors may already open files.
// The entry is not installed yet, so these few C library functions are interposed to start the
// runtime first when the path may lie in a volume; then the C library's own function runs, and
// its system call goes through the entry like every other.
//
// Allocators and other libraries' constructors open files before the runtime starts while
// holding their own locks (jemalloc's); starting the runtime then (it allocates) would deadlock
// them, so a path is first judged against the volume roots' names (SCONE_VOLUME_ROOTS, paths
// only), without allocating.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/config.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

namespace scone::runtime {
namespace {

// Conservative: anything it cannot rule out starts the runtime.
bool MayBeInVolume(int dirfd, const char* path) {
  if (path == nullptr || path[0] != '/' || dirfd != AT_FDCWD) return true;
  const char* roots = getenv(kVolumeRootsEnv);
  if (roots == nullptr) return true;
  while (*roots) {
    const char* end = strchr(roots, ':');
    size_t n = end ? static_cast<size_t>(end - roots) : strlen(roots);
    if (n > 0 && strncmp(path, roots, n) == 0 && (path[n] == '\0' || path[n] == '/')) return true;
    if (end == nullptr) break;
    roots = end + 1;
  }
  return false;
}

void StartFor(int dirfd, const char* path) {
  if (ShieldIfReady() == nullptr && MayBeInVolume(dirfd, path)) Shield();
}

template <typename F>
F* Next(const char* name) {
  return reinterpret_cast<F*>(dlsym(RTLD_NEXT, name));
}

mode_t ModeArg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

}  // namespace
}  // namespace scone::runtime

using scone::runtime::ModeArg;
using scone::runtime::Next;
using scone::runtime::StartFor;

#define SCONE_EARLY_OPEN(name)                                                 \
  SCONE_EXPORT int name(const char* path, int flags, ...) {                    \
    va_list ap;                                                                \
    va_start(ap, flags);                                                       \
    mode_t mode = ModeArg(flags, ap);                                          \
    va_end(ap);                                                                \
    StartFor(AT_FDCWD, path);                                                  \
    static auto* next = Next<int(const char*, int, ...)>(#name);               \
    return next(path, flags, mode);                                            \
  }
#define SCONE_EARLY_OPENAT(name)                                               \
  SCONE_EXPORT int name(int dirfd, const char* path, int flags, ...) {         \
    va_list ap;                                                                \
    va_start(ap, flags);                                                       \
    mode_t mode = ModeArg(flags, ap);                                          \
    va_end(ap);                                                                \
    StartFor(dirfd, path);                                                     \
    static auto* next = Next<int(int, const char*, int, ...)>(#name);          \
    return next(dirfd, path, flags, mode);                                     \
  }
SCONE_EARLY_OPEN(open)
SCONE_EARLY_OPEN(open64)
SCONE_EARLY_OPENAT(openat)
SCONE_EARLY_OPENAT(openat64)

SCONE_EXPORT FILE* fopen(const char* path, const char* mode) {
  StartFor(AT_FDCWD, path);
  static auto* next = Next<FILE*(const char*, const char*)>("fopen");
  return next(path, mode);
}

SCONE_EXPORT FILE* fopen64(const char* path, const char* mode) {
  StartFor(AT_FDCWD, path);
  static auto* next = Next<FILE*(const char*, const char*)>("fopen64");
  return next(path, mode);
}
