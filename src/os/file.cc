#include "os/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "os/syscalls.h"

namespace scone::os {

File::~File() {
  if (fd_ >= 0) Sys().close(fd_);
}

File::File(File&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) Sys().close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

Result<File> File::Open(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = Sys().open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return Status(Code::kNotFound, "open " + path + ": no such file", e);
    return IoError("open " + path, e);
  }
  return File(fd, path);
}

Result<size_t> File::ReadAtLeast(uint64_t offset, MutableByteSpan out, size_t least) const {
  size_t done = 0;
  while (done < least && done < out.size()) {
    ssize_t n = Sys().pread(fd_, out.data() + done, out.size() - done,
                            static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("read " + path_, errno);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status File::WriteAt(uint64_t offset, ByteSpan data) const {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = Sys().pwrite(fd_, data.data() + done, data.size() - done,
                             static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("write " + path_, errno);
    }
    if (n == 0) return IoError("write " + path_, EIO);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status File::WriteVectorAt(uint64_t offset, std::span<const ByteSpan> pieces) const {
  constexpr size_t kMaxIov = 512;  // well under IOV_MAX
  std::vector<struct iovec> iov;
  iov.reserve(std::min(pieces.size(), kMaxIov));
  size_t i = 0;
  while (i < pieces.size()) {
    iov.clear();
    uint64_t batch = 0;
    for (; i < pieces.size() && iov.size() < kMaxIov; ++i) {
      if (pieces[i].empty()) continue;
      iov.push_back({const_cast<uint8_t*>(pieces[i].data()), pieces[i].size()});
      batch += pieces[i].size();
    }
    size_t first = 0;
    uint64_t done = 0;
    while (first < iov.size()) {
      ssize_t n = Sys().pwritev(fd_, iov.data() + first, static_cast<int>(iov.size() - first),
                                static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return IoError("write " + path_, errno);
      }
      if (n == 0) return IoError("write " + path_, EIO);
      done += static_cast<uint64_t>(n);
      // Skip what was written; a short write may end inside a piece.
      size_t left = static_cast<size_t>(n);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (first < iov.size() && left > 0) {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    offset += batch;
  }
  return Status::Ok();
}

Status File::Truncate(uint64_t size) const {
  int r;
  do {
    r = Sys().ftruncate(fd_, static_cast<off_t>(size));
  } while (r < 0 && errno == EINTR);
  return r == 0 ? Status::Ok() : IoError("truncate " + path_, errno);
}

Status File::Allocate(uint64_t offset, uint64_t length) const {
  int r;
  do {
    r = Sys().fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(length));
  } while (r < 0 && errno == EINTR);
  if (r == 0 || errno == EOPNOTSUPP || errno == ENOSYS) return Status::Ok();
  return IoError("allocate " + path_, errno);
}

bool File::HasNoHoleIn(uint64_t offset, uint64_t end) const {
  const off_t hole = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
  return hole >= 0 && static_cast<uint64_t>(hole) >= end;
}

Status File::Sync() const {
  return Sys().fsync(fd_) == 0 ? Status::Ok() : IoError("fsync " + path_, errno);
}

Status File::DataSync() const {
  return Sys().fdatasync(fd_) == 0 ? Status::Ok() : IoError("fdatasync " + path_, errno);
}

Result<uint64_t> File::Size() const {
  struct statx st;
  if (Sys().statx(fd_, "", AT_EMPTY_PATH, STATX_SIZE, &st) != 0) return IoError("stat " + path_, errno);
  return static_cast<uint64_t>(st.stx_size);
}

Result<uint64_t> File::FreeSpace() const {
  struct statfs st;
  if (Sys().fstatfs(fd_, &st) != 0) return IoError("statfs " + path_, errno);
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize != 0 ? st.f_frsize : st.f_bsize);
}

Result<std::array<struct timespec, 2>> File::Times() const {
  struct stat st;
  if (Sys().fstat(fd_, &st) != 0) return IoError("stat " + path_, errno);
  return std::array<struct timespec, 2>{st.st_atim, st.st_mtim};
}

Status File::SetTimes(const std::array<struct timespec, 2>& times) const {
  return Sys().futimens(fd_, times.data()) == 0 ? Status::Ok() : IoError("setting the times of " + path_, errno);
}

Status File::Close() {
  if (fd_ < 0) return Status::Ok();
  int r = Sys().close(fd_);
  fd_ = -1;
  return r == 0 ? Status::Ok() : IoError("close " + path_, errno);
}

namespace {
// Read to the end rather than trusting the size: /proc files report 0.
Result<Bytes> ReadAll(const File& f, const std::string& path, size_t max_size) {
  Bytes data;
  uint8_t buffer[16384];
  for (;;) {
    SCONE_ASSIGN_OR_RETURN(size_t n, f.ReadAt(data.size(), buffer));
    if (n == 0) break;
    if (data.size() + n > max_size) {
      return DataCorrupted(path + ": more than the " + std::to_string(max_size) + " bytes allowed");
    }
    data.insert(data.end(), buffer, buffer + n);
  }
  return data;
}
}  // namespace

Result<Bytes> ReadWholeFile(const std::string& path, size_t max_size) {
  SCONE_ASSIGN_OR_RETURN(File f, File::Open(path, O_RDONLY));
  return ReadAll(f, path, max_size);
}

Result<File> OpenRegularFile(const std::string& path, int flags, mode_t mode) {
  // Not blocked by a FIFO put in its place (the open would wait for a writer or reader forever).
  SCONE_ASSIGN_OR_RETURN(File f, File::Open(path, flags | O_NONBLOCK, mode));
  struct stat st;
  if (Sys().fstat(f.fd(), &st) != 0) return IoError("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Status(Code::kDataCorrupted, path + ": not a regular file", EINVAL);
  return f;
}

Result<Bytes> ReadWholeRegularFile(const std::string& path, size_t max_size) {
  SCONE_ASSIGN_OR_RETURN(File f, OpenRegularFile(path, O_RDONLY));
  return ReadAll(f, path, max_size);
}

static std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status SyncDirectory(const std::string& dir) {
  SCONE_ASSIGN_OR_RETURN(File d, File::Open(dir, O_RDONLY | O_DIRECTORY));
  return d.Sync();
}

namespace {

// Writes `data` durably into `f` from its start, cut to that length, with the owner and mode of
// the file at `path` it is to replace: root running `scone volume verify` on a volume of the
// postgres user must not leave it a file that user cannot read.
Status WriteReplacement(const File& f, const std::string& path, ByteSpan data) {
  struct stat old;
  if (Sys().lstat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode)) {
    if (fchown(f.fd(), old.st_uid, old.st_gid) != 0 && errno != EPERM) return IoError("chown " + f.path(), errno);
    if (fchmod(f.fd(), old.st_mode & 07777) != 0) return IoError("chmod " + f.path(), errno);
  }
  SCONE_RETURN_IF_ERROR(f.WriteAt(0, data));
  SCONE_ASSIGN_OR_RETURN(uint64_t size, f.Size());
  if (size > data.size()) SCONE_RETURN_IF_ERROR(f.Truncate(data.size()));
  return f.Sync();
}

}  // namespace

Status WriteFileAtomically(const std::string& path, ByteSpan data, mode_t mode) {
  std::string tmp = path + ".tmp";
  {
    SCONE_ASSIGN_OR_RETURN(File f, File::Open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    Status written = WriteReplacement(f, path, data);
    if (written.ok()) written = f.Close();
    if (!written.ok()) {
      (void)Sys().unlink(tmp.c_str());  // a full disk keeps no half copy
      return written;
    }
  }
  if (Sys().rename(tmp.c_str(), path.c_str()) != 0) return IoError("rename " + tmp, errno);
  return SyncDirectory(DirName(path));
}

Status WriteFileAtomicallyViaSpare(const std::string& path, const std::string& spare, ByteSpan data, mode_t mode) {
  {
    // A failed write leaves the spare as it is: its blocks serve the next try.
    SCONE_ASSIGN_OR_RETURN(File f, File::Open(spare, O_WRONLY | O_CREAT | O_NOFOLLOW, mode));
    SCONE_RETURN_IF_ERROR(WriteReplacement(f, path, data));
    SCONE_RETURN_IF_ERROR(f.Close());
  }
  if (Sys().exchange(spare.c_str(), path.c_str()) != 0) {
    // No old content to keep (the first write), or a file system without the exchange: the
    // spare becomes the file, and the next write makes a new one.
    if (errno != ENOENT && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      return IoError("exchange " + spare + " with " + path, errno);
    }
    if (Sys().rename(spare.c_str(), path.c_str()) != 0) return IoError("rename " + spare, errno);
  }
  SCONE_RETURN_IF_ERROR(SyncDirectory(DirName(path)));
  if (DirName(spare) != DirName(path)) return SyncDirectory(DirName(spare));
  return Status::Ok();
}

Result<bool> Exists(const std::string& path) {
  struct stat st;
  if (Sys().lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return IoError("stat " + path, errno);
}

Status MakeDirectories(const std::string& path, mode_t mode) {
  if (path.empty()) return Status::Ok();
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (Sys().mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) {
      return IoError("mkdir " + partial, errno);
    }
  }
  return Status::Ok();
}

}  // namespace scone::os
