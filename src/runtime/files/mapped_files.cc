#include "runtime/files/mapped_files.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>

#include "runtime/config.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/image_broker.h"
#include "runtime/files/protected_fd.h"
#include "runtime/runtime.h"

namespace scone::runtime {
namespace {

constexpr uintptr_t kPage = 4096;
uintptr_t PageEnd(uintptr_t start, uintptr_t length) { return start + ((length + kPage - 1) & ~(kPage - 1)); }
bool Overlaps(uintptr_t a_start, uintptr_t a_end, uintptr_t b_start, uintptr_t b_end) {
  return a_start < b_end && b_start < a_end;
}

// Seals where nobody waits for the answer (munmap, the last use of an image). A failure (a full
// disk) leaves the stores in the image, which is kept (Release) and sealed again at the file's
// next fsync or close in this process, at the next munmap, and at exit; told once.
bool SealOrLog(SharedImage& image) {
  const bool failed_before = image.SealFailed();
  Status s = image.Seal(/*durable=*/false);
  if (!s.ok() && !failed_before) {
    Log("sealing the shared mapping of " + image.file()->path() + ": " + s.message() +
        " (the stores stay in memory, sealed again at the file's next fsync or close, or at exit)");
  }
  return s.ok();
}

}  // namespace

MappedFiles& MappedFiles::Get() {
  static MappedFiles* files = new MappedFiles();  // used until the last exit handler
  return *files;
}

std::shared_ptr<SharedImage> MappedFiles::FindImage(const fs::ProtectedFile* file) {
  std::lock_guard lock(mu_);
  for (const Held& h : held_) {
    if (h.file == file) return h.image;
  }
  return nullptr;
}

Result<std::shared_ptr<SharedImage>> MappedFiles::Bind(fs::Volume& volume,
                                                       const std::shared_ptr<fs::ProtectedFile>& file, bool make) {
  // One thread binds at a time (mu_); another process is kept out by the volume's images lock,
  // so that two processes never make two images of one file.
  for (const Held& h : held_) {
    if (h.file == file.get()) return h.image;
  }
  SecretBytes key = volume.SharingKey(file->id());
  SCONE_RETURN_IF_ERROR(volume.LockImages());
  bool made = false;
  Result<std::shared_ptr<SharedImage>> image = [&]() -> Result<std::shared_ptr<SharedImage>> {
    SCONE_ASSIGN_OR_RETURN(ImageBroker::Fetched held, ImageBroker::Get().Fetch(key));
    if (held.memfd >= 0) return SharedImage::Adopt(&volume, file, held.memfd, held.basefd);
    if (!make) return std::shared_ptr<SharedImage>();
    made = true;
    return SharedImage::Create(&volume, file);
  }();
  Result<uint64_t> served = uint64_t{0};
  if (image.ok() && *image != nullptr) {
    served = ImageBroker::Get().Serve(key, (*image)->fd(), (*image)->base_fd());
    if (served.ok() && made) {
      // Served and counted before it is filled: a process whose descriptors write the file
      // meanwhile finds it once its write is done (it looks when the count moved) and waits for
      // this lock; a write done before the count moved is in the file that Load reads.
      Status loaded = volume.NoteImageMade();
      if (loaded.ok()) loaded = (*image)->Load();
      if (!loaded.ok()) {
        ImageBroker::Get().Withdraw(*served);
        served = loaded;
      }
    }
  }
  volume.UnlockImages();
  if (!image.ok()) return image.status();
  if (!served.ok()) return served.status();
  if (*image == nullptr) return image;
  held_.push_back(Held{file.get(), *image, *served});
  images_held_.fetch_add(1, std::memory_order_release);
  return image;
}

bool MappedFiles::MayBeServedLocked(const fs::Volume& volume, const fs::ProtectedFile& file, uint64_t made) {
  auto scan = std::find_if(scans_.begin(), scans_.end(), [&](const ServedScan& s) { return s.volume == &volume; });
  if (scan == scans_.end()) scan = scans_.insert(scans_.end(), ServedScan{&volume, made - 1, {}});
  if (scan->made != made) {
    // `made` was read before this scan: an image counted by then has its listener already.
    scan->prefixes = ImageBroker::ServedPrefixes();
    scan->made = made;
  }
  if (scan->prefixes.empty()) return false;
  return scan->prefixes.count(ImageBroker::NamePrefix(volume.SharingKey(file.id()))) != 0;
}

void MappedFiles::NotServedLocked(const fs::Volume& volume, const fs::ProtectedFile& file) {
  for (ServedScan& scan : scans_) {
    if (scan.volume == &volume) scan.prefixes.erase(ImageBroker::NamePrefix(volume.SharingKey(file.id())));
  }
}

Result<std::shared_ptr<SharedImage>> MappedFiles::ImageForDescriptor(fs::Volume& volume,
                                                                     const std::shared_ptr<fs::ProtectedFile>& file,
                                                                     DescriptorUse& use) {
  if (use.holds.load(std::memory_order_acquire)) {
    if (auto image = ImageOf(file.get())) return image;
  }
  const uint64_t made = volume.ImagesMade();
  if (images_held_.load(std::memory_order_acquire) == 0 && made == use.checked.load(std::memory_order_relaxed)) {
    return std::shared_ptr<SharedImage>();
  }
  std::lock_guard lock(mu_);
  for (Held& h : held_) {
    if (h.file != file.get()) continue;
    if (!use.holds.exchange(true)) ++h.descriptors;
    return h.image;
  }
  if (made == use.checked.load(std::memory_order_relaxed)) return std::shared_ptr<SharedImage>();
  if (!MayBeServedLocked(volume, *file, made)) {
    use.checked.store(made, std::memory_order_relaxed);
    return std::shared_ptr<SharedImage>();
  }
  SCONE_ASSIGN_OR_RETURN(std::shared_ptr<SharedImage> image, Bind(volume, file, /*make=*/false));
  if (image == nullptr) {
    NotServedLocked(volume, *file);  // its holders let go since
    use.checked.store(made, std::memory_order_relaxed);
    return image;
  }
  held_.back().descriptors = 1;
  use.holds.store(true, std::memory_order_release);
  return image;
}

void MappedFiles::Unuse(const fs::ProtectedFile* file, DescriptorUse& use) {
  if (!use.holds.exchange(false)) return;
  std::vector<Held> released;
  {
    std::lock_guard lock(mu_);
    for (Held& h : held_) {
      if (h.file == file && h.descriptors > 0) --h.descriptors;
    }
    released = TakeUnusedLocked();
  }
  Release(std::move(released));
}

long MappedFiles::MapShared(fs::Volume& volume, const std::shared_ptr<fs::ProtectedFile>& file, void* addr,
                            size_t length, int prot, int flags, int64_t offset) {
  if (offset < 0 || (offset & (kPage - 1)) != 0 || length == 0) return -EINVAL;
  std::vector<Held> released;
  long p;
  {
    std::lock_guard lock(mu_);
    auto image = Bind(volume, file, /*make=*/true);
    if (!image.ok()) {
      Log("shared mapping of " + file->path() + " refused: " + image.status().message());
      return -image.status().ToErrno();
    }
    p = RawSyscall6(SYS_mmap, Arg(addr), static_cast<long>(length), prot, flags, (*image)->fd(), offset);
    if (p >= 0 || p <= -4096) {
      const uintptr_t start = static_cast<uintptr_t>(p);
      const uintptr_t end = PageEnd(start, length);
      // MAP_FIXED over a mapping of ours replaced it (its stores are in its image already).
      CutLocked(start, end);
      mappings_.push_back(Mapping{start, end, *image, (prot & PROT_WRITE) != 0});
    }
    released = TakeUnusedLocked();
  }
  Release(std::move(released));
  return p;
}

std::vector<MappedFiles::Held> MappedFiles::TakeUnusedLocked() {
  std::vector<Held> released;
  std::erase_if(held_, [&](const Held& h) {
    bool used = h.descriptors > 0 ||
                std::any_of(mappings_.begin(), mappings_.end(), [&](const Mapping& m) { return m.image == h.image; });
    if (!used) released.push_back(h);
    return !used;
  });
  return released;
}

void MappedFiles::Release(std::vector<Held> released) {
  for (Held& h : released) {
    // Sealed before the listener goes: a process that finds no holder makes its image from
    // the protected file, which then holds what this one changed.
    if (!SealOrLog(*h.image)) {
      // The stores are only in the image: it stays held and served (other processes read them
      // there, as from the kernel's page cache), unused until a seal succeeds.
      std::lock_guard lock(mu_);
      held_.push_back(std::move(h));
      continue;
    }
    ImageBroker::Get().Withdraw(h.served);
    images_held_.fetch_sub(1, std::memory_order_release);
  }
}

std::vector<std::shared_ptr<SharedImage>> MappedFiles::WritableImagesIn(uintptr_t start, uintptr_t end) {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<SharedImage>> images;
  for (const Mapping& m : mappings_) {
    if (m.writable && Overlaps(m.start, m.end, start, end) &&
        std::find(images.begin(), images.end(), m.image) == images.end()) {
      images.push_back(m.image);
    }
  }
  return images;
}

long MappedFiles::Unmap(long addr, long length) {
  const auto start = static_cast<uintptr_t>(addr);
  const uintptr_t end = PageEnd(start, static_cast<uintptr_t>(length));
  // What the program stored is sealed as the kernel writes a shared mapping back when it goes.
  for (auto& image : WritableImagesIn(start, end)) SealOrLog(*image);
  long r = RawSyscall(SYS_munmap, addr, length);
  if (r != 0) return r;
  std::vector<Held> released;
  {
    std::lock_guard lock(mu_);
    CutLocked(start, end);
    released = TakeUnusedLocked();
  }
  Release(std::move(released));
  return 0;
}

long MappedFiles::Sync(long addr, long length, int flags) {
  long r = RawSyscall(SYS_msync, addr, length, flags);
  if (r != 0 || (flags & MS_INVALIDATE && !(flags & (MS_SYNC | MS_ASYNC)))) return r;
  const auto start = static_cast<uintptr_t>(addr);
  for (auto& image : WritableImagesIn(start, PageEnd(start, static_cast<uintptr_t>(length)))) {
    Status s = image->Seal(/*durable=*/(flags & MS_SYNC) != 0);
    if (!s.ok()) return FailWith(s);
  }
  return 0;
}

long MappedFiles::Remap(long old_addr, long old_size, long new_size, int flags, long new_addr) {
  long r = RawSyscall(SYS_mremap, old_addr, old_size, new_size, flags, new_addr);
  if (r < 0 && r > -4096) return r;
  std::lock_guard lock(mu_);
  // The kernel moves (or resizes) part of one mapping: what stays keeps its place.
  const auto old_start = static_cast<uintptr_t>(old_addr);
  const uintptr_t old_end = PageEnd(old_start, static_cast<uintptr_t>(old_size));
  for (size_t i = 0; i < mappings_.size(); ++i) {
    Mapping m = mappings_[i];
    if (!(m.start <= old_start && old_start < m.end)) continue;
    mappings_.erase(mappings_.begin() + static_cast<long>(i));
    if (m.start < old_start) mappings_.push_back(Mapping{m.start, old_start, m.image, m.writable});
    if (old_end < m.end && !(flags & MREMAP_DONTUNMAP)) mappings_.push_back(Mapping{old_end, m.end, m.image, m.writable});
    if (flags & MREMAP_DONTUNMAP) mappings_.push_back(Mapping{old_start, old_end, m.image, m.writable});
    const auto start = static_cast<uintptr_t>(r);
    mappings_.push_back(Mapping{start, PageEnd(start, static_cast<uintptr_t>(new_size)), m.image, m.writable});
    break;
  }
  return r;
}

void MappedFiles::Replaced(long addr, long length) {
  // MAP_FIXED over a tracked range: the kernel unmapped it (the image holds its stores).
  std::vector<Held> released;
  {
    std::lock_guard lock(mu_);
    CutLocked(static_cast<uintptr_t>(addr), PageEnd(static_cast<uintptr_t>(addr), static_cast<uintptr_t>(length)));
    released = TakeUnusedLocked();
  }
  Release(std::move(released));
}

void MappedFiles::CutLocked(uintptr_t start, uintptr_t end) {
  std::vector<Mapping> kept;
  for (Mapping& m : mappings_) {
    if (!Overlaps(m.start, m.end, start, end)) {
      kept.push_back(std::move(m));
      continue;
    }
    if (m.start < start) kept.push_back(Mapping{m.start, start, m.image, m.writable});
    if (m.end > end) kept.push_back(Mapping{end, m.end, m.image, m.writable});
  }
  mappings_ = std::move(kept);
}

long MappedFiles::Protect(long addr, long length, int prot) {
  long r = RawSyscall(SYS_mprotect, addr, length, prot);
  if (r != 0 || !(prot & PROT_WRITE)) return r;
  std::lock_guard lock(mu_);
  const auto start = static_cast<uintptr_t>(addr);
  const uintptr_t end = PageEnd(start, static_cast<uintptr_t>(length));
  for (Mapping& m : mappings_) {
    if (Overlaps(m.start, m.end, start, end)) {
      m.writable = true;
    }
  }
  return r;
}

void MappedFiles::BeforeFork() {
  mu_.lock();
  for (Held& h : held_) h.image->BeforeFork();
}

void MappedFiles::AfterFork() {
  for (Held& h : held_) h.image->AfterFork();
  mu_.unlock();
}

void MappedFiles::SealAll() {
  if (!Tracks()) return;
  std::vector<std::shared_ptr<SharedImage>> images;
  {
    std::lock_guard lock(mu_);
    for (const Held& h : held_) images.push_back(h.image);
  }
  for (auto& image : images) {
    if (Status s = image->Seal(/*durable=*/false); !s.ok()) {
      Log("sealing the shared mapping of " + image->file()->path() + " at exit or exec: " + s.message() +
          ": what was stored through it since its last seal is lost");
    }
  }
}

}  // namespace scone::runtime
