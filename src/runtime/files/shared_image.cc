#include "runtime/files/shared_image.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"

namespace scone::runtime {
namespace {

constexpr uint64_t kChunk = fs::kChunkSize;
constexpr uint64_t kSealBatch = 64;  // chunks compared per read of the image and of the file

Status Failed(const std::string& what, long r) { return IoError(what, static_cast<int>(-r)); }

// A memory file as a source of data: its holes found with SEEK_DATA and SEEK_HOLE, up to `size`.
struct MemoryReader {
  const os::File& file;
  uint64_t size = 0;
  Result<size_t> Read(uint64_t at, MutableByteSpan out) { return file.ReadAt(at, out); }
  uint64_t SeekData(uint64_t at) const { return Seek(at, SEEK_DATA); }
  uint64_t SeekHole(uint64_t at) const { return Seek(at, SEEK_HOLE); }
  uint64_t Seek(uint64_t at, int whence) const {
    long r = RawSyscall(SYS_lseek, file.fd(), static_cast<long>(at), whence);
    return r < 0 ? size : std::min(static_cast<uint64_t>(r), size);  // ENXIO: no data left
  }
};

// Copies what `source` (the protected file, a memory file) holds below `size` into each of
// `into`, run by run: holes stay unallocated in the copies too.
template <typename Source>
Status CopyDataRuns(Source& source, uint64_t size, std::initializer_list<const os::File*> into) {
  std::vector<uint8_t> buffer(256 * kChunk);
  for (uint64_t at = source.SeekData(0); at < size;) {
    const uint64_t hole = source.SeekHole(at);
    while (at < hole) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), hole - at));
      SCONE_ASSIGN_OR_RETURN(size_t n, source.Read(at, MutableByteSpan(buffer.data(), want)));
      if (n == 0) break;
      for (const os::File* f : into) SCONE_RETURN_IF_ERROR(f->WriteAt(at, ByteSpan(buffer.data(), n)));
      at += n;
    }
    at = source.SeekData(hole);
  }
  return Status::Ok();
}

}  // namespace

Result<int> SharedImage::MemoryFile(const std::string& path) {
  long fd = RawSyscall(SYS_memfd_create, Arg("scone-shared-image"), MFD_CLOEXEC);
  if (fd < 0) return Failed("memfd_create for " + path, fd);
  return files::KeepOwn(static_cast<int>(fd));
}

Result<std::shared_ptr<SharedImage>> SharedImage::WithBase(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file,
                                                           int memfd) {
  Result<int> basefd = MemoryFile(file->path());
  if (!basefd.ok()) {
    files::CloseOwn(memfd);
    return basefd.status();
  }
  return std::shared_ptr<SharedImage>(new SharedImage(volume, std::move(file), memfd, *basefd));
}

Result<std::shared_ptr<SharedImage>> SharedImage::Create(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file) {
  SCONE_ASSIGN_OR_RETURN(int memfd, MemoryFile(file->path()));
  return WithBase(volume, std::move(file), memfd);
}

Status SharedImage::Load() {
  std::lock_guard lock(mu_);
  SCONE_RETURN_IF_ERROR(file_->Refresh());
  return Fill({&memory_, &base_});  // one decryption for both
}

Result<std::shared_ptr<SharedImage>> SharedImage::Adopt(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file,
                                                        int memfd, int holder_base) {
  if (holder_base < 0) {
    // A holder without a base: what the image holds beyond the file counts as stores.
    SCONE_ASSIGN_OR_RETURN(std::shared_ptr<SharedImage> image, WithBase(volume, std::move(file), memfd));
    SCONE_RETURN_IF_ERROR(image->Fill({&image->base_}));
    return image;
  }
  // The holders' base itself, not a copy: a copy falls behind at the next seal of another holder.
  std::shared_ptr<SharedImage> image(new SharedImage(volume, std::move(file), memfd, holder_base));
  std::lock_guard lock(image->mu_);
  SCONE_RETURN_IF_ERROR(image->SealLocked(/*durable=*/false, Scope::kAll));
  return image;
}

Status SharedImage::Fill(std::initializer_list<const os::File*> into) {
  const uint64_t size = file_->size();
  for (const os::File* f : into) SCONE_RETURN_IF_ERROR(f->Truncate(size));
  return CopyDataRuns(*file_, size, into);
}

Result<size_t> SharedImage::Read(uint64_t offset, MutableByteSpan out) { return memory_.ReadAt(offset, out); }

void SharedImage::NoteWritten(uint64_t offset, size_t count) {
  if (count == 0) return;
  for (uint64_t c = offset / kChunk; c <= (offset + count - 1) / kChunk; ++c) dirty_.insert(c);
}

Result<const os::File*> SharedImage::Appending() {
  // A second open file description of the memory file, appending: the kernel places each write
  // at the end every process sees, atomically.
  if (!appending_.valid()) {
    SCONE_ASSIGN_OR_RETURN(appending_, os::File::Open("/proc/self/fd/" + std::to_string(fd()), O_RDWR | O_APPEND));
  }
  return &appending_;
}

Result<size_t> SharedImage::Write(uint64_t offset, ByteSpan data, uint64_t* appended_at) {
  std::lock_guard lock(mu_);
  if (appended_at == nullptr) {
    SCONE_RETURN_IF_ERROR(memory_.WriteAt(offset, data));
    NoteWritten(offset, data.size());
    return data.size();
  }
  SCONE_ASSIGN_OR_RETURN(const os::File* appending, Appending());
  const int fd = appending->fd();
  long n;
  do {
    n = RawSyscall(SYS_write, fd, Arg(data.data()), static_cast<long>(data.size()));
  } while (n == -EINTR);
  if (n < 0) return Failed("append to a shared image", n);
  long end = RawSyscall(SYS_lseek, fd, 0, SEEK_CUR);  // this description's own position
  if (end < 0) return Failed("lseek of a shared image", end);
  *appended_at = static_cast<uint64_t>(end - n);
  NoteWritten(*appended_at, static_cast<size_t>(n));
  return static_cast<size_t>(n);
}

Status SharedImage::Truncate(uint64_t size) {
  std::lock_guard lock(mu_);
  SCONE_RETURN_IF_ERROR(memory_.Truncate(size));
  resized_ = true;
  if (size % kChunk != 0) dirty_.insert(size / kChunk);  // the last chunk's tail is zeros now
  return Status::Ok();
}

namespace {

// Reads [begin, begin + length) of a memory file or the protected file, zeros past its end.
template <typename Source>
Status ReadPadded(Source& source, uint64_t begin, uint8_t* out, size_t length) {
  SCONE_ASSIGN_OR_RETURN(size_t got, source.Read(begin, MutableByteSpan(out, length)));
  std::memset(out + got, 0, length - got);
  return Status::Ok();
}

// Writes the runs of `to` that differ from `from` (both `length` bytes at `begin`) with `write`.
template <typename Write>
Status WriteDifferences(const uint8_t* from, const uint8_t* to, size_t length, uint64_t begin, Write write) {
  for (size_t at = 0; at < length;) {
    if (from[at] == to[at]) {
      ++at;
      continue;
    }
    size_t end = at + 1;
    // Runs a little apart are one write: fewer records (a chunk is sealed whole anyway).
    for (size_t same = 0; end < length && same < 64; ++end) same = from[end] == to[end] ? same + 1 : 0;
    while (end > at && from[end - 1] == to[end - 1]) --end;
    SCONE_RETURN_IF_ERROR(write(begin + at, ByteSpan(to + at, end - at)));
    at = end;
  }
  return Status::Ok();
}

}  // namespace

Status SharedImage::SealChunks(uint64_t first, uint64_t last, uint64_t size, bool stored_only) {
  if (first >= last) return Status::Ok();
  // As large as the batch needs, not zeroed: a seal of the chunk one write changed (every write
  // through an image seals) paid for a MiB of fresh, zeroed buffers.
  const size_t batch_bytes = static_cast<size_t>(std::min(last - first, kSealBatch) * kChunk);
  std::unique_ptr<uint8_t[]> buffers(new uint8_t[4 * batch_bytes]);
  uint8_t* const image = buffers.get();
  uint8_t* const base = image + batch_bytes;
  uint8_t* const sealed = base + batch_bytes;
  uint8_t* const merged = sealed + batch_bytes;
  MemoryReader image_reader{memory_}, base_reader{base_};
  for (uint64_t batch = first; batch < last; batch += kSealBatch) {
    const uint64_t end_chunk = std::min(last, batch + kSealBatch);
    const uint64_t begin = batch * kChunk;
    const size_t length = static_cast<size_t>(std::min(end_chunk * kChunk, size) - begin);
    SCONE_RETURN_IF_ERROR(ReadPadded(image_reader, begin, image, length));  // shrunk meanwhile: zeros
    SCONE_RETURN_IF_ERROR(ReadPadded(base_reader, begin, base, length));
    if (stored_only && std::memcmp(image, base, length) == 0) continue;
    SCONE_RETURN_IF_ERROR(ReadPadded(*file_, begin, sealed, length));
    if (std::memcmp(image, sealed, length) == 0) {
      if (std::memcmp(base, image, length) != 0) {
        SCONE_RETURN_IF_ERROR(base_.WriteAt(begin, ByteSpan(image, length)));
      }
      continue;
    }
    for (size_t i = 0; i < length; ++i) merged[i] = image[i] == base[i] ? sealed[i] : image[i];
    // Whole: a write on a nearly full disk keeps the prefix that fits and says how much (a
    // short count taken for the whole lost the rest of the stores, close returning 0).
    SCONE_RETURN_IF_ERROR(WriteDifferences(sealed, merged, length, begin,
                                           [&](uint64_t at, ByteSpan data) { return file_->WriteAll(at, data); }));
    // Only the bytes another process wrote: a store through a mapping meanwhile stays.
    SCONE_RETURN_IF_ERROR(WriteDifferences(image, merged, length, begin,
                                           [&](uint64_t at, ByteSpan data) { return memory_.WriteAt(at, data); }));
    SCONE_RETURN_IF_ERROR(base_.WriteAt(begin, ByteSpan(merged, length)));
  }
  return Status::Ok();
}

Status SharedImage::Seal(bool durable) {
  std::lock_guard lock(mu_);
  return SealUnderImagesLock(durable, Scope::kStored);
}

Status SharedImage::PublishWrites() {
  std::lock_guard lock(mu_);
  if (dirty_.empty() && !resized_) return Status::Ok();
  return SealUnderImagesLock(/*durable=*/false, Scope::kWritten);
}

Status SharedImage::SealUnderImagesLock(bool durable, Scope scope) {
  if (file_->Gone()) {
    // Unlinked (SQLite's last connection removes the -shm file another process still maps):
    // as the kernel drops an unlinked file's pages, there is nothing left to write back.
    dirty_.clear();
    resized_ = false;
    seal_failed_.store(false, std::memory_order_release);
    return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(volume_->LockImages());
  Status s = SealLocked(durable, scope);
  volume_->UnlockImages();
  seal_failed_.store(!s.ok(), std::memory_order_release);
  return s;
}

Status SharedImage::SealLocked(bool durable, Scope scope) {
  SCONE_RETURN_IF_ERROR(file_->Refresh());  // what other processes published: its size too
  SCONE_ASSIGN_OR_RETURN(uint64_t size, Size());
  SCONE_ASSIGN_OR_RETURN(uint64_t base_size, base_.Size());
  if (scope == Scope::kWritten && dirty_.empty() && !resized_ && file_->size() == size) {
    return durable ? file_->Sync() : Status::Ok();
  }
  if (file_->size() != size) {
    if (size == base_size && !resized_) {
      // Only another process changed the size (appended, truncated): the image follows.
      size = file_->size();
      SCONE_RETURN_IF_ERROR(memory_.Truncate(size));
    } else {
      SCONE_RETURN_IF_ERROR(file_->Truncate(size));
    }
  }
  if (base_size != size) SCONE_RETURN_IF_ERROR(base_.Truncate(size));
  const uint64_t chunks = fs::ChunkCount(size);
  if (scope != Scope::kWritten) {
    SCONE_RETURN_IF_ERROR(SealChunks(0, chunks, size, /*stored_only=*/scope == Scope::kStored));
  } else {
    for (auto it = dirty_.begin(); it != dirty_.end() && *it < chunks;) {
      uint64_t run_end = *it + 1;  // consecutive dirty chunks, compared in one go
      auto next = std::next(it);
      while (next != dirty_.end() && *next == run_end && run_end < chunks) ++run_end, ++next;
      SCONE_RETURN_IF_ERROR(SealChunks(*it, run_end, size, /*stored_only=*/false));
      it = next;
    }
  }
  dirty_.clear();
  resized_ = false;
  return durable ? file_->Sync() : file_->Close();
}

}  // namespace scone::runtime
