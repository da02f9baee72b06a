// Directory listings: the volume's own `.scone` directory is hidden from the program.
#include <dirent.h>
#include <fcntl.h>
#include <string.h>

#include <mutex>
#include <unordered_set>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

namespace scone::runtime {
namespace {

std::mutex roots_mu;

// Function-local: the runtime starts from a constructor that may run before this file's
// static initializers. Never destroyed: readdir may run during exit.
std::unordered_set<DIR*>& VolumeRoots() {
  static auto* roots = new std::unordered_set<DIR*>();
  return *roots;
}

void Remember(DIR* dir, const Target& t) {
  if (dir == nullptr || t.volume == nullptr || !t.path.empty()) return;
  std::lock_guard lock(roots_mu);
  VolumeRoots().insert(dir);
}

bool IsVolumeRoot(DIR* dir) {
  std::lock_guard lock(roots_mu);
  return VolumeRoots().count(dir) != 0;
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
  Runtime* rt = ShieldFor(AT_FDCWD, path);
  if (dir != nullptr && rt != nullptr) Remember(dir, rt->Resolve(AT_FDCWD, path, true));
  return dir;
}

SCONE_EXPORT DIR* fdopendir(int fd) {
  DIR* dir = Real().fdopendir(fd);
  Runtime* rt = ShieldIfReady();
  if (dir != nullptr && rt != nullptr) Remember(dir, rt->Resolve(fd, ".", true));
  return dir;
}

SCONE_EXPORT int closedir(DIR* dir) {
  {
    std::lock_guard lock(roots_mu);
    VolumeRoots().erase(dir);
  }
  return Real().closedir(dir);
}

SCONE_EXPORT struct dirent* readdir(DIR* dir) {
  return ReadHiding<struct dirent>(dir, Real().readdir);
}

SCONE_EXPORT struct dirent64* readdir64(DIR* dir) {
  return ReadHiding<struct dirent64>(dir, Real().readdir64);
}
