// Directory listings: the volume's own `.scone` directory is hidden from the program. And the
// working directory, which the runtime keeps.
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include <mutex>
#include <unordered_set>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

namespace scone::runtime {
namespace {

// Streams open on a volume's root, whose listing hides `.scone`. Counted, so that readdir on
// any other directory takes no lock while none is open.
std::mutex roots_mu;
std::atomic<int> open_roots{0};

// Function-local: the runtime starts from a constructor that may run before this file's
// static initializers. Never destroyed: readdir may run during exit.
std::unordered_set<DIR*>& VolumeRoots() {
  static auto* roots = new std::unordered_set<DIR*>();
  return *roots;
}

// The directory's identity tells whether it is a volume's root, however it was named.
void Remember(const Runtime* rt, DIR* dir) {
  struct stat st;
  if (dir == nullptr || rt == nullptr || Real().fstat(dirfd(dir), &st) != 0 ||
      !rt->IsVolumeRootDirectory(st.st_dev, st.st_ino)) {
    return;
  }
  std::lock_guard lock(roots_mu);
  if (VolumeRoots().insert(dir).second) open_roots.fetch_add(1, std::memory_order_relaxed);
}

bool IsVolumeRoot(DIR* dir) {
  if (open_roots.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard lock(roots_mu);
  return VolumeRoots().count(dir) != 0;
}

void Forget(DIR* dir) {
  if (open_roots.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(roots_mu);
  if (VolumeRoots().erase(dir) != 0) open_roots.fetch_sub(1, std::memory_order_relaxed);
}

template <typename Entry, typename Next>
Entry* ReadHiding(DIR* dir, Next next) {
  Entry* e = next(dir);
  if (e == nullptr || !IsVolumeRoot(dir)) return e;
  while (e != nullptr && strcmp(e->d_name, fs::kMetaDirName) == 0) e = next(dir);
  return e;
}

}  // namespace
}  // namespace scone::runtime

using namespace scone::runtime;  // NOLINT

SCONE_EXPORT DIR* opendir(const char* path) {
  DIR* dir = Real().opendir(path);
  Remember(ShieldIfReady(), dir);
  return dir;
}

SCONE_EXPORT DIR* fdopendir(int fd) {
  DIR* dir = Real().fdopendir(fd);
  Remember(ShieldIfReady(), dir);
  return dir;
}

SCONE_EXPORT int closedir(DIR* dir) {
  Forget(dir);
  return Real().closedir(dir);
}

SCONE_EXPORT struct dirent* readdir(DIR* dir) {
  return ReadHiding<struct dirent>(dir, Real().readdir);
}

SCONE_EXPORT struct dirent64* readdir64(DIR* dir) {
  return ReadHiding<struct dirent64>(dir, Real().readdir64);
}

// The working directory: kept by the runtime so that relative paths are judged without asking
// the kernel (Runtime::LexicalLookup).
SCONE_EXPORT int chdir(const char* path) {
  int r = Real().chdir(path);
  if (Runtime* rt = ShieldIfReady(); r == 0 && rt != nullptr) rt->WorkingDirectoryChanged();
  return r;
}

SCONE_EXPORT int fchdir(int fd) {
  int r = Real().fchdir(fd);
  if (Runtime* rt = ShieldIfReady(); r == 0 && rt != nullptr) rt->WorkingDirectoryChanged();
  return r;
}
