// The process's shared mappings of protected files and the images behind them
// (shared_image.h): mmap with MAP_SHARED maps the file's image, which this process finds at
// another process that maps the file (image_broker.h) or makes; munmap, msync, mremap and
// mprotect of those ranges keep track, and seal the image where the kernel would write back.
//
// While the process maps a file, every descriptor of it in the process reads and writes the
// image (so read and write stay coherent with the mappings); when its last mapping goes, the
// image is sealed and the descriptors go back to the protected file.
//
// Cost: a process that maps no protected file shared pays one atomic load per read, write,
// munmap, msync, mremap and mprotect. Thread-safety: all methods may be called concurrently.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "fs/protected_file.h"
#include "fs/volume.h"
#include "runtime/files/shared_image.h"

namespace scone::runtime {

class MappedFiles {
 public:
  static MappedFiles& Get();

  // The image this process holds of `file`, or nullptr.
  std::shared_ptr<SharedImage> ImageOf(const fs::ProtectedFile* file) {
    return images_held_.load(std::memory_order_acquire) == 0 ? nullptr : FindImage(file);
  }
  // mmap(MAP_SHARED) of a protected file: the kernel's convention (an address or -errno).
  long MapShared(fs::Volume& volume, const std::shared_ptr<fs::ProtectedFile>& file, void* addr, size_t length,
                 int prot, int flags, int64_t offset);

  // Whether [addr, addr + length) may hold a tracked mapping: one atomic load when none exist.
  bool Tracks() const { return images_held_.load(std::memory_order_acquire) != 0; }
  long Unmap(long addr, long length);
  long Sync(long addr, long length, int flags);
  long Remap(long old_addr, long old_size, long new_size, int flags, long new_addr);
  long Protect(long addr, long length, int prot);
  // A MAP_FIXED mapping of anything else replaced [addr, addr + length).
  void Replaced(long addr, long length);

  // Exit, exec: every image sealed (published to the other processes).
  void SealAll();

 private:
  struct Held {
    const fs::ProtectedFile* file;
    std::shared_ptr<SharedImage> image;
    uint64_t served;  // the broker's handle
  };
  struct Mapping {
    uintptr_t start, end;
    std::shared_ptr<SharedImage> image;
    bool writable;
  };
  MappedFiles() = default;
  std::shared_ptr<SharedImage> FindImage(const fs::ProtectedFile* file);
  // This process's image of `file`: held already, fetched from another process, or made.
  Result<std::shared_ptr<SharedImage>> Bind(fs::Volume& volume, const std::shared_ptr<fs::ProtectedFile>& file);
  // Images with no mapping left: taken out (sealed and withdrawn by the caller, unlocked).
  std::vector<Held> TakeUnmappedLocked();
  void Release(std::vector<Held> released);
  std::vector<std::shared_ptr<SharedImage>> WritableImagesIn(uintptr_t start, uintptr_t end);
  // Forgets [start, end) of every mapping. REQUIRES: mu_.
  void CutLocked(uintptr_t start, uintptr_t end);

  std::atomic<int> images_held_{0};
  std::mutex mu_;
  std::vector<Held> held_;
  std::vector<Mapping> mappings_;
};

}  // namespace scone::runtime
