// An open protected file, as the file system shield serves it to a program: the kernel
// descriptor stays on the ciphertext (opened with the program's access mode, so locks behave),
// the data goes through fs::ProtectedFile. Once the description is shared with another process
// (fork, exec), its offset is kept in that descriptor's own file position, which the kernel
// shares: a shell and the programs it starts write one after another into the same file.
//
// Thread-safety: all methods may be called concurrently; the offset has its own lock, the file
// serializes its own writes.
#pragma once

#include <errno.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "fs/protected_file.h"
#include "runtime/fd_table.h"
#include "runtime/files/mapped_files.h"
#include "runtime/files/shared_image.h"

namespace scone::runtime {

struct MountedVolume;

class ProtectedFd final : public ShieldedFd {
 public:
  // `flags`: the program's open flags (access mode, O_APPEND, O_NONBLOCK...). An inherited
  // description (`shared`) keeps its offset in the kernel's.
  ProtectedFd(std::shared_ptr<fs::ProtectedFile> file, MountedVolume* volume, std::string path, int flags,
              bool shared = false);

  long Read(int fd, void* buf, size_t count) override;
  long Write(int fd, const void* buf, size_t count) override;
  long ReadAt(void* buf, size_t count, uint64_t offset) override;
  long WriteAt(const void* buf, size_t count, uint64_t offset) override;
  long Seek(int fd, int64_t offset, int whence) override;
  void ShareWithOtherProcesses(int fd) override;
  void PatchStat(struct stat* st) override;
  uint64_t PlaintextSize() override;
  long Truncate(int64_t length) override;
  long Allocate(int mode, int64_t offset, int64_t length) override;
  long Sync() override;
  long CommitBeforeTimes() override;
  long KeepTimes(bool atime, bool mtime) override;
  long Map(void* addr, size_t length, int prot, int flags, int64_t offset) override;
  int StatusFlags(int kernel_flags) override;
  int SetStatusFlags(int flags) override;
  long LastClose() override;
  void ForgetParentWrites() override { written_ = false; }
  // Fork (process/fork.cc): the offset's lock is held across it, so that no thread is inside a
  // read or write of the descriptor when the child is made (the child would wait for good).
  void BeforeFork() { offset_mu_.lock(); }
  void AfterFork() { offset_mu_.unlock(); }
  bool Describe(int fd, InheritedFd* out) override;
  ProtectedFd* AsProtectedFile() override { return this; }
  // The text of the descriptor's link as the kernel writes it for a file with no name left:
  // "<its last path> (deleted)"; "" while it has a name.
  std::string DeletedLinkText() const;

  // Whether the kernel's descriptor `fd` is open on this file's data file (an open of a link to
  // this descriptor, /proc/self/fd/N, landed there).
  bool IsDataFile(int fd) const { return file_->IsDataFile(fd); }
  // The kernel's stat of the program's descriptor, taken by the open that made it (to check
  // that it landed on the data file), the volume's journal at `journal_changes` before it. It
  // answers the program's fstat if that is the process's very next call (nginx, cat, cp and
  // python open, then fstat: the call holds the ticket the open offered, entry.h) and the
  // journal is unchanged: no call of the program's, and no commit or publish of any process
  // (this one's runtime threads publish too), came in between. Once at most; false otherwise
  // (ask the kernel).
  void KeepStatOfOpen(const struct stat& st, uint64_t journal_changes);
  bool StatOfOpen(struct stat* st);
  // A new open file description of the same protected file, as the kernel makes for an open of
  // /proc/self/fd/N: `flags` its own, its offset at 0; `truncate` empties the file through the
  // shield. A refusal of writes (an unlinked file inherited across exec) holds for it too.
  // 0 and `*out`, or -errno.
  long Reopen(int flags, bool truncate, std::shared_ptr<ProtectedFd>* out);

  // The file was truncated by the open itself (O_TRUNC): it has changes to commit.
  void MarkWritten() { written_ = true; }
  // Writes through this descriptor fail with EIO and a scone: line naming `what` (an unlinked
  // file inherited across exec, of which this process holds its own copy).
  void RefuseWrites(std::string what) { refused_writes_ = std::move(what); }

 private:
  long ReadLocked(void* buf, size_t count, uint64_t offset);
  // With `appended_at`: an O_APPEND write (offset ignored); says where it landed.
  // With `position`: at a position other processes share (offset ignored).
  long WriteZeros(uint64_t offset, uint64_t end, bool keep_size);
  long WriteLocked(const void* buf, size_t count, uint64_t offset, uint64_t* appended_at = nullptr,
                   const fs::SharedPosition* position = nullptr);
  // The image this descriptor reads and writes through while any process maps the file shared
  // (mapped_files.h), else nullptr: in `*image`, or -errno (no holder answered, damage).
  long GetImage(std::shared_ptr<SharedImage>* image);
  // Where the answer cannot fail (fstat's size): nullptr on failure, the protected file's.
  std::shared_ptr<SharedImage> ImageOrNone();
  uint64_t PlaintextSizeNow(SharedImage* image);
  // The offset: private until the description is shared, then the kernel's descriptor's.
  // REQUIRES: offset_mu_.
  long CurrentOffset(int fd);
  long SetOffset(int fd, uint64_t offset);
  // Any description sees it where the answer depends on where the file ends (appends, reads
  // that reach the end, fstat, SEEK_END): a file another process appended to and closed is
  // longer (tail -f, logs). A description used by this process alone pays nothing else.
  long CatchUpAlways();
  // A read of [offset, offset + count) that reaches the end of the file.
  long CatchUpAtEnd(uint64_t offset, size_t count);

  const std::shared_ptr<fs::ProtectedFile> file_;
  MountedVolume* const volume_;
  const std::string path_;  // inside the volume
  std::atomic<int> flags_;
  std::mutex offset_mu_;
  uint64_t offset_ = 0;
  std::atomic<bool> shared_;  // the offset lives in the kernel (set under offset_mu_)
  std::atomic<bool> written_{false};
  MappedFiles::DescriptorUse image_use_;
  std::string refused_writes_;  // set once, before the descriptor is in the table
  struct stat stat_of_open_ = {};  // set once, before the descriptor is in the table
  uint64_t stat_of_open_changes_ = 0;  //   with the journal's changes before it
  std::atomic<uint64_t> stat_of_open_ticket_{0};  // its ticket; 0: none (any more)
  // The refusal's scone: line: -EIO.
  long RefusedWrite();
};

// A protected file opened with O_PATH: no data access (as the kernel's O_PATH descriptors),
// but fstat and statx report its plaintext size.
class PathOnlyFd final : public ShieldedFd {
 public:
  PathOnlyFd(MountedVolume* volume, std::string path) : volume_(volume), path_(std::move(path)) {}

  long Read(int, void*, size_t) override { return -EBADF; }
  long Write(int, const void*, size_t) override { return -EBADF; }
  long ReadAt(void*, size_t, uint64_t) override { return -EBADF; }
  long WriteAt(const void*, size_t, uint64_t) override { return -EBADF; }
  long Seek(int, int64_t, int) override { return -EBADF; }
  void ShareWithOtherProcesses(int) override {}
  void PatchStat(struct stat* st) override;
  uint64_t PlaintextSize() override;
  long Truncate(int64_t) override { return -EBADF; }
  long Allocate(int, int64_t, int64_t) override { return -EBADF; }
  long Sync() override { return -EBADF; }
  long KeepTimes(bool atime, bool mtime) override;
  long Map(void*, size_t, int, int, int64_t) override { return -EBADF; }
  int StatusFlags(int kernel_flags) override { return kernel_flags; }
  int SetStatusFlags(int flags) override { return flags; }
  long LastClose() override { return 0; }
  void ForgetParentWrites() override {}
  bool Describe(int fd, InheritedFd* out) override;

 private:
  MountedVolume* const volume_;
  const std::string path_;
};

// The kernel's convention for a shield's failure: -errno, and a `scone:` line on stderr for
// integrity failures (tampering, rollback) and broken invariants.
// The times a stat reports for a protected file this process changed and still buffers.
void ShowUnwrittenChange(const fs::ProtectedFile& file, struct stat* st);
long FailWith(const Status& status);

}  // namespace scone::runtime
