// A file descriptor owned by libscone, with the loops every caller needs (EINTR, short reads and
// writes) done once. Errors name the file.
#pragma once

#include <time.h>

#include <array>
#include <initializer_list>
#include <span>
#include <string>

#include "common/bytes.h"
#include "common/status.h"

namespace scone::os {

class File {
 public:
  File() = default;
  File(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~File();
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // open(2) with O_CLOEXEC added.
  static Result<File> Open(const std::string& path, int flags, mode_t mode = 0600);

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  // Reads up to out.size() bytes at offset; fewer only at end of file. Returns the count.
  Result<size_t> ReadAt(uint64_t offset, MutableByteSpan out) const { return ReadAtLeast(offset, out, out.size()); }
  // Reads at least `least` bytes of out.size() at offset (fewer only at end of file), in as few
  // system calls: a read that filled `least` asks no more, as one that met the end may not
  // have known it (a read ahead of what must be had: one pread, not one more to find the end).
  Result<size_t> ReadAtLeast(uint64_t offset, MutableByteSpan out, size_t least) const;
  // Writes all of data at offset.
  Status WriteAt(uint64_t offset, ByteSpan data) const;
  // Writes the pieces back to back starting at offset, with as few system calls as possible.
  Status WriteVectorAt(uint64_t offset, std::span<const ByteSpan> pieces) const;
  Status WriteVectorAt(uint64_t offset, std::initializer_list<ByteSpan> pieces) const {
    return WriteVectorAt(offset, std::span<const ByteSpan>(pieces.begin(), pieces.size()));
  }
  Status Truncate(uint64_t size) const;
  // Allocates the disk space of [offset, offset + length) without changing the size, so that
  // writes there cannot fail for want of space (ENOSPC now instead). A file system without
  // fallocate passes.
  Status Allocate(uint64_t offset, uint64_t length) const;
  // Whether [offset, end) lies below the file's end with no hole in it (lseek's SEEK_HOLE), so
  // that overwriting it takes no new room. Moves the descriptor's file offset (callers use
  // pread/pwrite). False where the file system cannot tell.
  bool HasNoHoleIn(uint64_t offset, uint64_t end) const;
  Status Sync() const;      // fsync
  Status DataSync() const;  // fdatasync
  // The length, asked for alone (statx with STATX_SIZE). An fstat reads the file's times too,
  // and on Linux 6.13 and later (multigrain timestamps) a file whose times were read takes a
  // fine-grained mtime at its next write, which moves the clock every file's next change sees:
  // writes then changed their inodes at every call instead of once per tick, and ext4 without
  // a journal wrote an inode table block at each fdatasync (twice the writes per commit for
  // pgbench in a volume).
  Result<uint64_t> Size() const;
  // Room on the file's file system that an unprivileged writer may still take (statfs(2)).
  Result<uint64_t> FreeSpace() const;
  // The access and modification times, as futimens(2) takes them.
  Result<std::array<struct timespec, 2>> Times() const;
  // futimens(2): a time of UTIME_OMIT is left as it is.
  Status SetTimes(const std::array<struct timespec, 2>& times) const;
  Status Close();

 private:
  int fd_ = -1;
  std::string path_;
};

// open(2) of a file that must be a regular one (a volume's metadata, which the host may replace
// with a FIFO or a device): anything else is refused without waiting on it.
Result<File> OpenRegularFile(const std::string& path, int flags, mode_t mode = 0600);

// Whole-file helpers for small metadata files.
Result<Bytes> ReadWholeFile(const std::string& path, size_t max_size);
// The same through OpenRegularFile.
Result<Bytes> ReadWholeRegularFile(const std::string& path, size_t max_size);
// Writes data to path atomically: temporary file, fsync, rename, fsync of the directory.
Status WriteFileAtomically(const std::string& path, ByteSpan data, mode_t mode = 0600);
// As WriteFileAtomically, but written in place over `spare` (a file on the same file system),
// which then swaps names with `path` (renameat2 RENAME_EXCHANGE): the old content's blocks are the
// next write's spare. So a file rewritten whole (a volume's state) needs no new room on a full
// disk while it does not grow. Where the file system cannot swap, the spare is renamed over.
Status WriteFileAtomicallyViaSpare(const std::string& path, const std::string& spare, ByteSpan data,
                                   mode_t mode = 0600);
Status SyncDirectory(const std::string& dir);
Result<bool> Exists(const std::string& path);
Status MakeDirectories(const std::string& path, mode_t mode = 0700);

}  // namespace scone::os
