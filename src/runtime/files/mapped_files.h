// The process's shared mappings of protected files and the images behind them
// (shared_image.h): mmap with MAP_SHARED maps the file's image, which this process finds at
// another process that maps the file (image_broker.h) or makes; munmap, msync, mremap and
// mprotect of those ranges keep track, and seal the image where the kernel would write back.
//
// While any process maps a file, every descriptor of it, in every process of the volume, reads
// and writes the image (ImageForDescriptor), as every process reads and writes the kernel's one
// page cache: a process that does not map the file adopts the image from a holder at its
// descriptor's next call, and holds (and serves) it until that descriptor's last close. A process
// lets go of an image (sealed, withdrawn) once no mapping and no descriptor of its uses it.
//
// Cost: a process that maps no protected file shared pays one atomic load per read, write,
// munmap, msync, mremap and mprotect, and two more per read and write of a volume where images
// were ever made; it looks for holders of a file's image (one scan of /proc/net/unix per process
// for all its files) only when another process made an image since it last looked.
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
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
  // What a descriptor of a protected file keeps about the image it reads and writes through
  // (runtime/files/protected_fd.h).
  struct DescriptorUse {
    std::atomic<bool> holds{false};    // it keeps this process's image of the file held
    std::atomic<uint64_t> checked{0};  // fs::Volume::ImagesMade when it last found no holder
  };
  // The image a descriptor of `file` reads and writes through: this process's, or the one another
  // process holds (adopted, and served from then on); nullptr when no process holds one. Once it
  // returned an image, the descriptor keeps it held until Unuse.
  Result<std::shared_ptr<SharedImage>> ImageForDescriptor(fs::Volume& volume,
                                                          const std::shared_ptr<fs::ProtectedFile>& file,
                                                          DescriptorUse& use);
  // The descriptor's last close: the image goes once no mapping and no descriptor uses it.
  void Unuse(const fs::ProtectedFile* file, DescriptorUse& use);

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
  // Fork: no other thread binds, maps or seals across it (an image another thread was sealing
  // stayed locked in the child, whose exit then waited for good). Taken before the image
  // broker's lock and the volumes' (which a thread holding these takes).
  void BeforeFork();
  void AfterFork();

 private:
  struct Held {
    const fs::ProtectedFile* file;
    std::shared_ptr<SharedImage> image;
    uint64_t served;  // the broker's handle
    int descriptors = 0;  // descriptors that read and write through the image (DescriptorUse)
  };
  // Which files' images other processes served when this one last looked, per volume: looked
  // again once the volume's count of images made moved.
  struct ServedScan {
    const fs::Volume* volume;
    uint64_t made;
    std::set<std::string> prefixes;  // ImageBroker::ServedPrefixes
  };
  struct Mapping {
    uintptr_t start, end;
    std::shared_ptr<SharedImage> image;
    bool writable;
  };
  MappedFiles() = default;
  std::shared_ptr<SharedImage> FindImage(const fs::ProtectedFile* file);
  // This process's image of `file`: held already, fetched from another process, or (`make`)
  // made; nullptr if no process holds one and not `make`. REQUIRES: mu_.
  Result<std::shared_ptr<SharedImage>> Bind(fs::Volume& volume, const std::shared_ptr<fs::ProtectedFile>& file,
                                            bool make);
  // Whether another process may serve an image of `file`: its listener was there when this
  // process last looked, at `made` images made or later. REQUIRES: mu_.
  bool MayBeServedLocked(const fs::Volume& volume, const fs::ProtectedFile& file, uint64_t made);
  // A holder was looked for and none answered. REQUIRES: mu_.
  void NotServedLocked(const fs::Volume& volume, const fs::ProtectedFile& file);
  // Images no mapping and no descriptor uses: taken out (sealed and withdrawn by the caller,
  // unlocked).
  std::vector<Held> TakeUnusedLocked();
  void Release(std::vector<Held> released);
  std::vector<std::shared_ptr<SharedImage>> WritableImagesIn(uintptr_t start, uintptr_t end);
  // Forgets [start, end) of every mapping. REQUIRES: mu_.
  void CutLocked(uintptr_t start, uintptr_t end);

  std::atomic<int> images_held_{0};
  std::mutex mu_;
  std::vector<Held> held_;
  std::vector<Mapping> mappings_;
  std::vector<ServedScan> scans_;
};

}  // namespace scone::runtime
