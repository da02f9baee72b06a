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

}  // namespace

Result<std::shared_ptr<SharedImage>> SharedImage::Create(std::shared_ptr<fs::ProtectedFile> file) {
  long fd = RawSyscall(SYS_memfd_create, Arg("scone-shared-image"), MFD_CLOEXEC);
  if (fd < 0) return Failed("memfd_create for " + file->path(), fd);
  std::shared_ptr<SharedImage> image(new SharedImage(std::move(file), files::KeepOwn(static_cast<int>(fd))));
  SCONE_RETURN_IF_ERROR(image->Fill());
  return image;
}

std::shared_ptr<SharedImage> SharedImage::Adopt(std::shared_ptr<fs::ProtectedFile> file, int memfd) {
  return std::shared_ptr<SharedImage>(new SharedImage(std::move(file), memfd));
}

Status SharedImage::Fill() {
  const uint64_t size = file_->size();
  SCONE_RETURN_IF_ERROR(memory_.Truncate(size));
  // Only the chunks that hold data: holes stay unallocated in the memory file too.
  std::vector<uint8_t> buffer(256 * kChunk);
  for (uint64_t at = file_->SeekData(0); at < size;) {
    const uint64_t hole = file_->SeekHole(at);
    while (at < hole) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), hole - at));
      SCONE_ASSIGN_OR_RETURN(size_t n, file_->Read(at, MutableByteSpan(buffer.data(), want)));
      if (n == 0) break;
      SCONE_RETURN_IF_ERROR(memory_.WriteAt(at, ByteSpan(buffer.data(), n)));
      at += n;
    }
    at = file_->SeekData(hole);
  }
  return Status::Ok();
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

Status SharedImage::SealChunks(uint64_t first, uint64_t last, uint64_t size) {
  std::vector<uint8_t> image(kSealBatch * kChunk), sealed(kSealBatch * kChunk);
  for (uint64_t batch = first; batch < last; batch += kSealBatch) {
    const uint64_t end_chunk = std::min(last, batch + kSealBatch);
    const uint64_t begin = batch * kChunk;
    const size_t length = static_cast<size_t>(std::min(end_chunk * kChunk, size) - begin);
    SCONE_ASSIGN_OR_RETURN(size_t got, memory_.ReadAt(begin, MutableByteSpan(image.data(), length)));
    std::memset(image.data() + got, 0, length - got);  // shrunk meanwhile by another process
    SCONE_ASSIGN_OR_RETURN(size_t have, file_->Read(begin, MutableByteSpan(sealed.data(), length)));
    std::memset(sealed.data() + have, 0, length - have);
    // Runs of chunks that differ, one write each.
    size_t run_start = length;
    for (size_t at = 0;; at += kChunk) {
      const bool past_end = at >= length;
      const size_t end = std::min(at, length);
      const bool differs = !past_end && std::memcmp(image.data() + at, sealed.data() + at,
                                                    std::min<size_t>(kChunk, length - at)) != 0;
      if (differs && run_start == length) run_start = at;
      if (!differs && run_start != length) {
        SCONE_RETURN_IF_ERROR(
            file_->Write(begin + run_start, ByteSpan(image.data() + run_start, end - run_start)).status());
        run_start = length;
      }
      if (past_end) break;
    }
  }
  return Status::Ok();
}

Status SharedImage::Seal(bool durable) {
  std::lock_guard lock(mu_);
  if (file_->Gone()) {
    // Unlinked (SQLite's last connection removes the -shm file another process still maps):
    // as the kernel drops an unlinked file's pages, there is nothing left to write back.
    dirty_.clear();
    resized_ = false;
    return Status::Ok();
  }
  SCONE_ASSIGN_OR_RETURN(uint64_t size, Size());
  const bool whole = writable_mapping_.load(std::memory_order_relaxed);
  if (!whole && dirty_.empty() && !resized_ && file_->size() == size) {
    return durable ? file_->Sync() : Status::Ok();
  }
  if (file_->size() != size) SCONE_RETURN_IF_ERROR(file_->Truncate(size));
  const uint64_t chunks = fs::ChunkCount(size);
  if (whole) {
    SCONE_RETURN_IF_ERROR(SealChunks(0, chunks, size));
  } else {
    for (auto it = dirty_.begin(); it != dirty_.end() && *it < chunks;) {
      uint64_t run_end = *it + 1;  // consecutive dirty chunks, compared in one go
      auto next = std::next(it);
      while (next != dirty_.end() && *next == run_end && run_end < chunks) ++run_end, ++next;
      SCONE_RETURN_IF_ERROR(SealChunks(*it, run_end, size));
      it = next;
    }
  }
  dirty_.clear();
  resized_ = false;
  return durable ? file_->Sync() : file_->Close();
}

}  // namespace scone::runtime
