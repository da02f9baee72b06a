#include "runtime/files/protected_fd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>

#include "runtime/config.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/mapped_files.h"
#include "runtime/runtime.h"

namespace scone::runtime {
namespace {

bool Writable(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }
bool Readable(int flags) { return (flags & O_ACCMODE) != O_WRONLY; }

}  // namespace

long FailWith(const Status& status) {
  Code c = status.code();
  // Once the volumes closed (exit, or a signal ending the process), a call another thread still
  // makes fails because they did: nothing to report.
  const Runtime* rt = ShieldIfReady();
  if (rt != nullptr && rt->closed()) return -status.ToErrno();
  if (c == Code::kDataCorrupted || c == Code::kRolledBack || c == Code::kInternal ||
      c == Code::kPermissionDenied) {
    Log(status.message());
  }
  return -status.ToErrno();
}

ProtectedFd::ProtectedFd(std::shared_ptr<fs::ProtectedFile> file, MountedVolume* volume, std::string path,
                         int flags, bool shared)
    : file_(std::move(file)), volume_(volume), path_(std::move(path)), flags_(flags), shared_(shared) {}

void ProtectedFd::KeepStatOfOpen(const struct stat& st, uint64_t journal_changes) {
  stat_of_open_ = st;
  stat_of_open_changes_ = journal_changes;
  stat_of_open_ticket_.store(OfferTicketToNextCall(), std::memory_order_relaxed);
}

bool ProtectedFd::StatOfOpen(struct stat* st) {
  uint64_t kept = stat_of_open_ticket_.load(std::memory_order_relaxed);
  if (kept == 0 || !stat_of_open_ticket_.compare_exchange_strong(kept, 0)) return false;
  if (kept != TicketOfThisCall()) return false;
  fs::Volume* volume = volume_->IfOpen();
  const std::optional<uint64_t> changes = volume != nullptr ? volume->JournalChanges() : std::nullopt;
  if (!changes || *changes != stat_of_open_changes_) return false;
  *st = stat_of_open_;
  return true;
}

long ProtectedFd::GetImage(std::shared_ptr<SharedImage>* image) {
  fs::Volume* volume = volume_->IfOpen();  // open: the file is
  if (volume == nullptr) {
    image->reset();
    return 0;
  }
  auto got = MappedFiles::Get().ImageForDescriptor(*volume, file_, image_use_);
  if (!got.ok()) return FailWith(got.status());
  *image = std::move(*got);
  return 0;
}

std::shared_ptr<SharedImage> ProtectedFd::ImageOrNone() {
  std::shared_ptr<SharedImage> image;
  return GetImage(&image) < 0 ? nullptr : image;
}

long ProtectedFd::CatchUpAlways() {
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0 || image) return r;  // the image is what every process sees
  Status s = file_->Refresh();
  return s.ok() ? 0 : FailWith(s);
}

long ProtectedFd::CurrentOffset(int fd) {
  return shared_ ? RawSyscall(SYS_lseek, fd, 0, SEEK_CUR) : static_cast<long>(offset_);
}

long ProtectedFd::SetOffset(int fd, uint64_t offset) {
  if (!shared_) {
    offset_ = offset;
    return 0;
  }
  long r = RawSyscall(SYS_lseek, fd, static_cast<long>(offset), SEEK_SET);
  return r < 0 ? r : 0;
}

void ProtectedFd::ShareWithOtherProcesses(int fd) {
  // What this process wrote is committed first: the other process starts from it, and this one
  // then has nothing of its own to lay over what the other commits later.
  (void)file_->Close();  // publishes (lazily) whatever it changed, a truncation included
  std::lock_guard lock(offset_mu_);
  if (shared_) return;
  if (RawSyscall(SYS_lseek, fd, static_cast<long>(offset_), SEEK_SET) >= 0) shared_ = true;
}

long ProtectedFd::ReadLocked(void* buf, size_t count, uint64_t offset) {
  if (!Readable(flags_.load(std::memory_order_relaxed))) return -EBADF;
  MutableByteSpan out(static_cast<uint8_t*>(buf), count);
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  auto n = image ? image->Read(offset, out) : file_->Read(offset, out);
  if (!n.ok()) return FailWith(n.status());
  return static_cast<long>(*n);
}

long ProtectedFd::RefusedWrite() {
  Log(refused_writes_ + ": the file was unlinked in the program that passed it on; writing it here is not "
      "supported (each program holds its own copy: the write would never reach the other)");
  return -EIO;
}

long ProtectedFd::WriteLocked(const void* buf, size_t count, uint64_t offset, uint64_t* appended_at,
                              const fs::SharedPosition* position) {
  if (!Writable(flags_.load(std::memory_order_relaxed))) return -EBADF;
  if (!refused_writes_.empty()) return RefusedWrite();
  ByteSpan data(static_cast<const uint8_t*>(buf), count);
  Result<size_t> n = size_t{0};
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  if (image) {
    // While a process maps the file, writes go to the image the mappings show, and are
    // published at once (in the protected file when the write returns, as without an image).
    Result<uint64_t> at = position != nullptr ? position->get() : Result<uint64_t>(offset);
    if (!at.ok()) return FailWith(at.status());
    n = image->Write(*at, data, appended_at);
    if (n.ok() && position != nullptr) {
      if (Status moved = position->set(*at + *n); !moved.ok()) return FailWith(moved);
    }
    if (n.ok()) {
      if (Status published = image->PublishWrites(); !published.ok()) return FailWith(published);
    }
  } else {
    n = position != nullptr ? file_->WriteAtSharedPosition(data, *position) : file_->Write(offset, data, appended_at);
    // A process that made an image meanwhile may have loaded the file before this write: the
    // image is adopted now, which brings the write into it before the write returns.
    if (n.ok()) {
      if (long r = GetImage(&image); r < 0) return r;
    }
  }
  if (!n.ok()) return FailWith(n.status());
  written_ = true;
  // O_DSYNC, O_SYNC: each write is durable when it returns (LMDB writes its meta page so).
  if (flags_.load(std::memory_order_relaxed) & O_DSYNC) {
    if (long r = Sync(); r < 0) return r;
  }
  return static_cast<long>(*n);
}

long ProtectedFd::Read(int fd, void* buf, size_t count) {
  std::lock_guard lock(offset_mu_);
  long offset = CurrentOffset(fd);
  if (offset < 0) return offset;
  if (long r = CatchUpAtEnd(static_cast<uint64_t>(offset), count); r < 0) return r;
  long n = ReadLocked(buf, count, static_cast<uint64_t>(offset));
  if (n > 0) SetOffset(fd, static_cast<uint64_t>(offset + n));
  return n;
}

long ProtectedFd::Write(int fd, const void* buf, size_t count) {
  const bool append = flags_.load(std::memory_order_relaxed) & O_APPEND;
  std::lock_guard lock(offset_mu_);
  if (!append && shared_) {
    // The position lives in the kernel's description, which other processes move too: it is
    // read and moved inside the write's transaction.
    fs::SharedPosition position{
        [fd]() -> Result<uint64_t> {
          long r = RawSyscall(SYS_lseek, fd, 0, SEEK_CUR);
          if (r < 0) return IoError("lseek", static_cast<int>(-r));
          return static_cast<uint64_t>(r);
        },
        [fd](uint64_t at) -> Status {
          long r = RawSyscall(SYS_lseek, fd, static_cast<long>(at), SEEK_SET);
          return r < 0 ? IoError("lseek", static_cast<int>(-r)) : Status::Ok();
        }};
    return WriteLocked(buf, count, 0, nullptr, &position);
  }
  // An append lands where the file ends when it is written (the shield decides, atomically
  // with the write, across threads and processes).
  uint64_t at = 0;
  long offset = append ? 0 : CurrentOffset(fd);
  if (offset < 0) return offset;
  long n = WriteLocked(buf, count, static_cast<uint64_t>(offset), append ? &at : nullptr);
  if (n > 0) SetOffset(fd, (append ? at : static_cast<uint64_t>(offset)) + static_cast<uint64_t>(n));
  return n;
}

long ProtectedFd::ReadAt(void* buf, size_t count, uint64_t offset) {
  if (long r = CatchUpAtEnd(offset, count); r < 0) return r;
  return ReadLocked(buf, count, offset);
}

long ProtectedFd::WriteAt(const void* buf, size_t count, uint64_t offset) {
  // Linux appends with O_APPEND whatever the offset says.
  const bool append = flags_.load(std::memory_order_relaxed) & O_APPEND;
  uint64_t at = 0;
  return WriteLocked(buf, count, offset, append ? &at : nullptr);
}

long ProtectedFd::CatchUpAtEnd(uint64_t offset, size_t count) {
  // A description shared with another process means a shared volume, where every read of the
  // file catches up first.
  if (shared_.load(std::memory_order_relaxed)) return 0;
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0 || image) return r;
  uint64_t end;
  if (__builtin_add_overflow(offset, count, &end) || end >= file_->size()) return CatchUpAlways();
  return 0;
}

long ProtectedFd::Seek(int fd, int64_t offset, int whence) {
  if (whence != SEEK_SET && whence != SEEK_CUR) {
    if (long r = CatchUpAlways(); r < 0) return r;
  }
  std::lock_guard lock(offset_mu_);
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  auto size = static_cast<int64_t>(PlaintextSizeNow(image.get()));
  int64_t base;
  switch (whence) {
    case SEEK_SET:
      base = 0;
      break;
    case SEEK_CUR:
      base = CurrentOffset(fd);
      if (base < 0) return base;
      break;
    case SEEK_END:
      base = size;
      break;
    case SEEK_DATA:  // at chunk granularity, as a file system reports at block granularity
      if (offset < 0 || offset >= size) return -ENXIO;
      base = 0;
      if (!image) offset = static_cast<int64_t>(file_->SeekData(static_cast<uint64_t>(offset)));
      if (offset >= size) return -ENXIO;
      break;
    case SEEK_HOLE:
      if (offset < 0 || offset >= size) return -ENXIO;
      base = 0;
      offset = image ? size : static_cast<int64_t>(file_->SeekHole(static_cast<uint64_t>(offset)));
      break;
    default:
      return -EINVAL;
  }
  int64_t target;
  if (__builtin_add_overflow(base, offset, &target) || target < 0) return -EINVAL;
  long r = SetOffset(fd, static_cast<uint64_t>(target));
  return r < 0 ? r : target;
}

void ProtectedFd::PatchStat(struct stat* st) {
  // st_blocks stays the kernel's: the ciphertext's allocation is what the file takes on disk
  // (a sparse file stays sparse).
  st->st_size = static_cast<off_t>(PlaintextSize());
  // Unlinked while open, the data waits in the volume's trash under a name of the runtime's:
  // the program sees no name left, as the kernel reports it (SQLite and log tailers check).
  if (file_->unlinked()) st->st_nlink = 0;
  ShowUnwrittenChange(*file_, st);
}

std::string ProtectedFd::DeletedLinkText() const {
  if (!file_->unlinked()) return "";
  return volume_->root + "/" + file_->path() + " (deleted)";
}

void ShowUnwrittenChange(const fs::ProtectedFile& file, struct stat* st) {
  // Writes this process still buffers moved the file's times, as the kernel would have at each
  // write (a writer's own fstat or stat showed the time of before until its close).
  auto changed = file.UnwrittenChangeTime();
  if (!changed) return;
  auto later = [](const struct timespec& a, const struct timespec& b) {
    return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
  };
  if (later(*changed, st->st_mtim)) st->st_mtim = *changed;
  if (later(*changed, st->st_ctim)) st->st_ctim = *changed;
}

uint64_t ProtectedFd::PlaintextSize() {
  if (auto image = ImageOrNone()) return PlaintextSizeNow(image.get());
  (void)CatchUpAlways();
  return file_->size();
}

uint64_t ProtectedFd::PlaintextSizeNow(SharedImage* image) {
  if (image == nullptr) return file_->size();
  auto size = image->Size();
  return size.ok() ? *size : file_->size();
}

long ProtectedFd::Truncate(int64_t length) {
  if (length < 0) return -EINVAL;
  if (!Writable(flags_.load(std::memory_order_relaxed))) return -EINVAL;
  if (!refused_writes_.empty()) return RefusedWrite();
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  Status s = image ? image->Truncate(static_cast<uint64_t>(length)) : file_->Truncate(static_cast<uint64_t>(length));
  if (s.ok() && image) s = image->PublishWrites();
  if (!s.ok()) return FailWith(s);
  written_ = true;
  return 0;
}

long ProtectedFd::Allocate(int mode, int64_t offset, int64_t length) {
  constexpr int kZeroing = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  // Collapse, insert, unshare: as on file systems without them.
  if ((mode & ~(FALLOC_FL_KEEP_SIZE | kZeroing)) != 0) return -EOPNOTSUPP;
  // As the kernel (vfs_fallocate): a hole is punched within the size, and a range is punched
  // or zeroed, not both.
  if ((mode & FALLOC_FL_PUNCH_HOLE) && (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & FALLOC_FL_ZERO_RANGE))) {
    return -EOPNOTSUPP;
  }
  if (offset < 0 || length <= 0) return -EINVAL;
  if (!Writable(flags_.load(std::memory_order_relaxed))) return -EBADF;
  int64_t end;
  if (__builtin_add_overflow(offset, length, &end)) return -EFBIG;
  if (mode & kZeroing) {
    return WriteZeros(static_cast<uint64_t>(offset), static_cast<uint64_t>(end), mode & FALLOC_FL_KEEP_SIZE);
  }
  // The size first: growing it cuts the data file back to its length after probing, which
  // freed what a reservation had allocated past it (fallocate(1) reported success, and the
  // writes into the file met a full disk later: hostile finding).
  const uint64_t size = PlaintextSizeNow(ImageOrNone().get());
  const bool grows = !(mode & FALLOC_FL_KEEP_SIZE) && static_cast<uint64_t>(end) > size;
  if (grows) {
    if (long r = Truncate(end); r < 0) return r;
  }
  // Space for the ciphertext is reserved as the program asked for the plaintext, so that its
  // later writes do not fail for lack of space (and do not pay for allocation as they go).
  Status reserved = file_->Reserve(static_cast<uint64_t>(end));
  if (!reserved.ok()) {
    if (grows) (void)Truncate(static_cast<int64_t>(size));  // a failed fallocate leaves the size
    return FailWith(reserved);
  }
  return 0;
}

// A punched or zeroed range reads as zeros, as the kernel's: written as zeros through the
// shield, so its chunks are sealed anew (the ciphertext keeps its space: no chunk of the table
// becomes a hole). It was EOPNOTSUPP (`fallocate --punch-hole`, `--zero-range`).
long ProtectedFd::WriteZeros(uint64_t offset, uint64_t end, bool keep_size) {
  static const uint8_t kZeros[64 << 10] = {};
  const uint64_t stop = keep_size ? std::min<uint64_t>(end, PlaintextSizeNow(ImageOrNone().get())) : end;
  for (uint64_t at = offset; at < stop;) {
    const long n = WriteLocked(kZeros, static_cast<size_t>(std::min<uint64_t>(sizeof(kZeros), stop - at)), at);
    if (n <= 0) return n < 0 ? n : -EIO;
    at += static_cast<uint64_t>(n);
  }
  return 0;
}

long ProtectedFd::Sync() {
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  Status s = image ? image->Seal(/*durable=*/true) : file_->Sync();
  if (!s.ok()) return FailWith(s);
  if (Runtime* rt = ShieldIfReady()) rt->Synced();
  return 0;
}

long ProtectedFd::CommitBeforeTimes() {
  // Published as at close (a mapped file's image publishes its writes at once): tar sets each
  // file's times before it closes it, and times kept across a commit cost a stat and a
  // utimensat more per file.
  if (!written_ || MappedFiles::Get().ImageOf(file_.get()) != nullptr) return 0;
  Status s = file_->Close();
  return s.ok() ? 0 : FailWith(s);
}

long ProtectedFd::KeepTimes(bool atime, bool mtime) {
  Status s = file_->KeepTimes(atime, mtime);
  return s.ok() ? 0 : FailWith(s);
}

long ProtectedFd::Map(void* addr, size_t length, int prot, int flags, int64_t offset) {
  const int access = flags_.load(std::memory_order_relaxed);
  if (!Readable(access)) return -EACCES;  // as the kernel answers for a descriptor opened O_WRONLY
  if ((flags & MAP_TYPE) != MAP_PRIVATE) {
    if ((prot & PROT_WRITE) && (!Writable(access) || (access & O_APPEND))) return -EACCES;
    fs::Volume* volume = volume_->Get();
    if (volume == nullptr) return -volume_->UnavailableErrno();
    return MappedFiles::Get().MapShared(*volume, file_, addr, length, prot, flags, offset);
  }
  // A private mapping: a copy on write of the image where this process maps the file shared,
  // else anonymous memory holding the plaintext (the page cache holds ciphertext).
  std::shared_ptr<SharedImage> image;
  if (long r = GetImage(&image); r < 0) return r;
  if (image) return RawSyscall6(SYS_mmap, Arg(addr), static_cast<long>(length), prot, flags, image->fd(), offset);
  if (offset < 0 || length == 0 || (offset & 4095) != 0) return -EINVAL;
  int anon_flags = MAP_PRIVATE | MAP_ANONYMOUS | (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE));
  long p = RawSyscall6(SYS_mmap, Arg(addr), static_cast<long>(length), PROT_READ | PROT_WRITE, anon_flags, -1, 0);
  if (p < 0 && p > -4096) return p;
  uint64_t size = file_->size();
  if (static_cast<uint64_t>(offset) < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length, size - static_cast<uint64_t>(offset)));
    auto n = file_->Read(static_cast<uint64_t>(offset), MutableByteSpan(reinterpret_cast<uint8_t*>(p), want));
    if (!n.ok()) {
      RawSyscall(SYS_munmap, p, static_cast<long>(length));
      return FailWith(n.status());
    }
  }
  if (prot != (PROT_READ | PROT_WRITE)) {
    long r = RawSyscall(SYS_mprotect, p, static_cast<long>(length), prot);
    if (r != 0) {
      RawSyscall(SYS_munmap, p, static_cast<long>(length));
      return r;
    }
  }
  return p;
}

int ProtectedFd::StatusFlags(int kernel_flags) {
  return (kernel_flags & ~(O_ACCMODE | O_APPEND)) | (flags_.load() & (O_ACCMODE | O_APPEND));
}

int ProtectedFd::SetStatusFlags(int flags) {
  int old = flags_.load();
  flags_.store((old & ~(O_APPEND | O_NONBLOCK)) | (flags & (O_APPEND | O_NONBLOCK)));
  return flags & ~O_APPEND;  // the kernel's descriptor never appends: the shield places writes
}

long ProtectedFd::LastClose() {
  // The image goes with the last descriptor and mapping that use it (sealed then).
  struct Unuse {
    ProtectedFd* fd;
    ~Unuse() { MappedFiles::Get().Unuse(fd->file_.get(), fd->image_use_); }
  } unuse{this};
  auto image = MappedFiles::Get().ImageOf(file_.get());
  // Stores a seal could not take (a full disk) are tried again, and the failure told, here.
  const bool unsealed = image != nullptr && image->SealFailed();
  if (!written_ && !unsealed) return 0;
  if (!image_use_.holds.load() && !unsealed) image = nullptr;
  // Published, not synced: close(2) promises no durability (fsync does), and a sync per
  // closed file made `tar -x` pay one fdatasync per file, which a file system does not.
  Status s = image ? image->Seal(/*durable=*/false) : file_->Close();
  // A read-only descriptor's close reports nothing, as natively (the failure was told at munmap).
  if (!s.ok() && !written_ && !Writable(flags_.load())) return 0;
  return s.ok() ? 0 : FailWith(s);
}

bool ProtectedFd::Describe(int fd, InheritedFd* out) {
  ShareWithOtherProcesses(fd);
  (void)file_->Refresh();  // learns of an unlink by another process
  if (file_->unlinked()) {
    // The program gets it through its inode (a here-document's temporary file, a
    // TemporaryFile as a child's stdin): it loads the state found there.
    if (Status s = file_->PutStateInPlace(); !s.ok()) Log("handing over the unlinked " + path_ + ": " + s.message());
  }
  out->fd = fd;
  out->volume_dir = volume_->root;
  out->path = file_->path();  // where it is now, for messages
  out->flags = flags_.load();
  out->offset = 0;  // the kernel's: shared
  out->entry = file_->CommittedEntry();  // committed by ShareWithOtherProcesses
  return true;
}

long ProtectedFd::Reopen(int flags, bool truncate, std::shared_ptr<ProtectedFd>* out) {
  auto d = std::make_shared<ProtectedFd>(file_, volume_, path_, flags);
  d->refused_writes_ = refused_writes_;
  if (truncate) {
    if (long r = d->Truncate(0); r < 0) {
      (void)d->LastClose();  // lets go of the image the truncation may have taken up
      return r;
    }
  }
  *out = std::move(d);
  return 0;
}

void PathOnlyFd::PatchStat(struct stat* st) {
  if (S_ISREG(st->st_mode)) st->st_size = static_cast<off_t>(PlaintextSize());
}

uint64_t PathOnlyFd::PlaintextSize() {
  fs::Volume* volume = volume_->Get();
  auto size = volume != nullptr ? volume->FileSize(path_) : Result<uint64_t>(NotFound(path_));
  return size.ok() ? *size : 0;
}

long PathOnlyFd::KeepTimes(bool atime, bool mtime) {
  // The file may be open for writing through another descriptor of this process.
  fs::Volume* volume = volume_->IfOpen();
  auto file = volume != nullptr ? volume->OpenedFile(path_) : nullptr;
  if (file == nullptr) return 0;
  Status s = file->KeepTimes(atime, mtime);
  return s.ok() ? 0 : FailWith(s);
}

bool PathOnlyFd::Describe(int fd, InheritedFd* out) {
  out->fd = fd;
  out->volume_dir = volume_->root;
  out->path = path_;
  out->flags = O_PATH;
  out->offset = 0;
  return true;
}

}  // namespace scone::runtime
