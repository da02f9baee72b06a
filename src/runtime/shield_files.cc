// The file system shield's C library surface: file descriptors and paths.
//
// Each function first asks Shield() and the descriptor table; anything no volume covers goes to
// the real function unchanged. A protected file keeps a real descriptor (opened read-only on its
// ciphertext), so descriptor numbers, close-on-exec, locks and poll behave as the kernel's; its
// data goes through fs::ProtectedFile.
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

namespace scone::runtime {
namespace {

bool Writable(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }
bool Readable(int flags) { return (flags & O_ACCMODE) != O_WRONLY; }

bool IsDirectory(const std::string& abs) {
  struct stat st;
  return Real().stat(abs.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// open/openat for a path inside a protected region. `known`: the volume holds it as a file.
int OpenProtected(Runtime& rt, const Target& t, int flags, bool known) {
  if (flags & (O_PATH | O_DIRECTORY)) return -2;  // not data access: the kernel's business
  if ((flags & O_TMPFILE) == O_TMPFILE) {
    errno = EOPNOTSUPP;
    return -1;
  }
  if (!known && IsDirectory(t.absolute)) return -2;
  fs::OpenFileOptions options;
  options.create = flags & O_CREAT;
  options.exclusive = (flags & O_CREAT) && (flags & O_EXCL);
  options.truncate = (flags & O_TRUNC) && Writable(flags);
  auto file = t.volume->volume->OpenFile(t.path, options);
  if (!file.ok()) {
    struct stat st;
    if (file.status().code() == Code::kNotFound && Real().lstat(t.absolute.c_str(), &st) == 0) {
      // On disk but not in the volume's metadata: planted, or its metadata was lost.
      return Fail(DataCorrupted(t.absolute +
                                ": unknown file: not in the volume's metadata (added behind the "
                                "volume's back, or its metadata is missing)"));
    }
    return Fail(file.status());
  }
  // The descriptor's access mode mirrors the program's, so that advisory locks (a write lock
  // needs a writable descriptor) behave as without the shield; data never goes through it.
  int fd = Real().open(t.absolute.c_str(), (flags & O_ACCMODE) | O_NOFOLLOW | (flags & O_CLOEXEC));
  if (fd < 0) return -1;
  auto d = std::make_shared<OpenDescription>();
  d->file = std::move(file).value();
  d->volume = t.volume;
  d->path = t.path;
  d->flags = flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY);
  if (options.truncate) d->written = true;
  rt.Set(fd, std::move(d));
  return fd;
}

// A file CAS injected: a fresh in-memory file with its content, opened with the program's access
// mode (through /proc/self/fd, so that it has its own offset and a read-only descriptor stays
// read-only). Writes stay in memory.
int OpenInjected(const SecretBytes& content, int flags) {
  if (flags & O_DIRECTORY) {
    errno = ENOTDIR;
    return -1;
  }
  if ((flags & O_CREAT) && (flags & O_EXCL)) {
    errno = EEXIST;
    return -1;
  }
  int mem = memfd_create("scone-injected", MFD_CLOEXEC);
  if (mem < 0) return -1;
  bool truncate = (flags & O_TRUNC) && Writable(flags);
  if (!truncate && !content.empty() &&
      Real().pwrite(mem, content.data(), content.size(), 0) != static_cast<ssize_t>(content.size())) {
    Real().close(mem);
    errno = EIO;
    return -1;
  }
  char self[64];
  snprintf(self, sizeof(self), "/proc/self/fd/%d", mem);
  int fd = Real().open(self, flags & (O_ACCMODE | O_APPEND | O_CLOEXEC | O_NONBLOCK), 0);
  int saved = errno;
  Real().close(mem);
  errno = saved;
  return fd;
}

// stat of a file CAS injected; false if the path names none.
bool StatInjected(int dirfd, const char* path, int at_flags, struct stat* st) {
  Runtime* rt = ShieldIfReady();
  if (rt == nullptr || !rt->HasInjectedFiles() || path == nullptr) return false;
  LexicalPath lexical;
  const SecretBytes* content =
      rt->LexicalLookup(dirfd, path, &lexical)
          ? rt->Injected(lexical.absolute)
          : rt->Injected(rt->Resolve(dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW)).absolute);
  if (content == nullptr) return false;
  std::memset(st, 0, sizeof(*st));
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_size = static_cast<off_t>(content->size());
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((content->size() + 511) / 512);
  return true;
}

// open(2) refusing symbolic links anywhere in the path: where it succeeds (or fails for another
// reason), the lexical form of the path was exactly where the kernel looked.
int OpenWithoutLinks(int dirfd, const char* path, int flags, mode_t mode) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path, &how, sizeof(how)));
}

mode_t ModeArg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

ssize_t ReadAt(OpenDescription& d, void* buf, size_t count, uint64_t offset) {
  if (!Readable(d.flags)) {
    errno = EBADF;
    return -1;
  }
  auto n = d.file->Read(offset, MutableByteSpan(static_cast<uint8_t*>(buf), count));
  if (!n.ok()) return Fail(n.status());
  return static_cast<ssize_t>(*n);
}

ssize_t WriteAt(OpenDescription& d, const void* buf, size_t count, uint64_t offset) {
  if (!Writable(d.flags)) {
    errno = EBADF;
    return -1;
  }
  auto n = d.file->Write(offset, ByteSpan(static_cast<const uint8_t*>(buf), count));
  if (!n.ok()) return Fail(n.status());
  d.written = true;
  return static_cast<ssize_t>(*n);
}

ssize_t ReadCurrent(OpenDescription& d, void* buf, size_t count) {
  std::lock_guard lock(d.mu);
  ssize_t n = ReadAt(d, buf, count, d.offset);
  if (n > 0) d.offset += static_cast<uint64_t>(n);
  return n;
}

ssize_t WriteCurrent(OpenDescription& d, const void* buf, size_t count) {
  std::lock_guard lock(d.mu);
  if (d.flags & O_APPEND) d.offset = d.file->size();
  ssize_t n = WriteAt(d, buf, count, d.offset);
  if (n > 0) d.offset += static_cast<uint64_t>(n);
  return n;
}

// Scatter/gather through one bounce buffer: one shield call per vector.
size_t IovTotal(const struct iovec* iov, int count) {
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  return total;
}

ssize_t ReadVector(OpenDescription& d, const struct iovec* iov, int count, const uint64_t* at) {
  std::vector<uint8_t> buffer(IovTotal(iov, count));
  ssize_t n = at ? ReadAt(d, buffer.data(), buffer.size(), *at)
                 : ReadCurrent(d, buffer.data(), buffer.size());
  if (n <= 0) return n;
  size_t done = 0;
  for (int i = 0; i < count && done < static_cast<size_t>(n); ++i) {
    size_t part = std::min(iov[i].iov_len, static_cast<size_t>(n) - done);
    std::memcpy(iov[i].iov_base, buffer.data() + done, part);
    done += part;
  }
  return n;
}

ssize_t WriteVector(OpenDescription& d, const struct iovec* iov, int count, const uint64_t* at) {
  std::vector<uint8_t> buffer;
  buffer.reserve(IovTotal(iov, count));
  for (int i = 0; i < count; ++i) {
    auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    buffer.insert(buffer.end(), p, p + iov[i].iov_len);
  }
  if (at) {
    uint64_t offset = (d.flags & O_APPEND) ? d.file->size() : *at;
    return WriteAt(d, buffer.data(), buffer.size(), offset);
  }
  return WriteCurrent(d, buffer.data(), buffer.size());
}

void PatchStat(OpenDescription& d, struct stat* st) {
  uint64_t size = d.file->size();
  st->st_size = static_cast<off_t>(size);
  st->st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
}

// Whether a path the kernel found on `st`'s device, lexically outside every volume, is outside
// them for certain: on a file system no volume is on, or reached without a symbolic link.
bool CertainlyOutside(const Runtime& rt, int dirfd, const char* path, int at_flags,
                      const struct stat& st) {
  if (!rt.OnVolumeDevice(st.st_dev)) return true;
  int fd = OpenWithoutLinks(dirfd, path, O_PATH | O_CLOEXEC | (at_flags & AT_SYMLINK_NOFOLLOW ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return false;
  Real().close(fd);
  return true;
}

// stat of a path: the plaintext size of protected files.
int PatchPathStat(int dirfd, const char* path, int at_flags, struct stat* st) {
  Runtime* rt = ShieldFor(dirfd, path);
  if (rt == nullptr) return 0;
  LexicalPath lexical;
  const bool judged = rt->LexicalLookup(dirfd, path, &lexical);
  if (judged && lexical.volume == nullptr && CertainlyOutside(*rt, dirfd, path, at_flags, *st)) {
    return 0;
  }
  Target t = rt->Locate(dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW), judged ? &lexical : nullptr);
  if (t.volume == nullptr) return 0;
  if (t.metadata) {
    errno = ENOENT;
    return -1;
  }
  if (t.region == fs::Region::kNotProtected || !S_ISREG(st->st_mode)) return 0;
  auto size = t.volume->volume->FileSize(t.path);
  if (!size.ok()) return 0;  // not a protected file the volume knows: reported when opened
  st->st_size = static_cast<off_t>(*size);
  st->st_blocks = static_cast<blkcnt_t>((*size + 511) / 512);
  return 0;
}

int CommitOnLastClose(std::shared_ptr<OpenDescription> d) {
  if (d == nullptr || !d->written || d.use_count() > 1) return 0;
  Status s = d->file->Sync();
  return s.ok() ? 0 : Fail(s);
}

int DupInto(Runtime* rt, int oldfd, int newfd) {
  if (rt == nullptr || newfd < 0) return newfd;
  if (newfd != oldfd) (void)CommitOnLastClose(rt->Take(newfd));
  if (auto d = rt->Get(oldfd)) rt->Set(newfd, d);
  return newfd;
}

int DoFtruncate(OpenDescription& d, off_t length) {
  if (length < 0) {
    errno = EINVAL;
    return -1;
  }
  if (!Writable(d.flags)) {
    errno = EINVAL;
    return -1;
  }
  Status s = d.file->Truncate(static_cast<uint64_t>(length));
  if (!s.ok()) return Fail(s);
  d.written = true;
  return 0;
}

int DoRename(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
             unsigned int flags, bool* handled) {
  *handled = false;
  Runtime* rt = ShieldFor(olddirfd, oldpath);
  if (rt == nullptr) rt = ShieldFor(newdirfd, newpath);
  if (rt == nullptr) return 0;
  Target from = rt->Locate(olddirfd, oldpath, false);
  Target to = rt->Locate(newdirfd, newpath, false);
  if (from.volume == nullptr && to.volume == nullptr) return 0;
  *handled = true;
  if (from.metadata || to.metadata) {
    errno = EACCES;
    return -1;
  }
  bool from_protected = from.volume && from.region != fs::Region::kNotProtected;
  bool to_protected = to.volume && to.region != fs::Region::kNotProtected;
  if (from.volume != to.volume) {
    if (from_protected || to_protected) {
      errno = EXDEV;  // as between file systems: programs copy instead
      return -1;
    }
    *handled = false;
    return 0;
  }
  if (flags & RENAME_EXCHANGE) {
    errno = EINVAL;
    return -1;
  }
  if ((flags & RENAME_NOREPLACE) && access(to.absolute.c_str(), F_OK) == 0) {
    errno = EEXIST;
    return -1;
  }
  Status s = from.volume->volume->Rename(from.path, to.path);
  return s.ok() ? 0 : Fail(s);
}

int DoUnlink(int dirfd, const char* path, int flags, bool* handled) {
  *handled = false;
  Runtime* rt = ShieldFor(dirfd, path);
  if (rt == nullptr || (flags & AT_REMOVEDIR)) return 0;
  Target t = rt->Locate(dirfd, path, false);
  if (t.volume == nullptr) return 0;
  *handled = true;
  if (t.metadata) {
    errno = ENOENT;
    return -1;
  }
  if (t.region == fs::Region::kNotProtected) {
    *handled = false;
    return 0;
  }
  Status s = t.volume->volume->Unlink(t.path);
  if (s.code() == Code::kNotFound) {  // a link or a file the volume does not know
    *handled = false;
    return 0;
  }
  return s.ok() ? 0 : Fail(s);
}

// A rename may have moved the working directory (or a directory above it): the runtime's copy
// of its name follows, so that relative paths keep being judged where the kernel resolves them.
int AfterRename(int r) {
  if (Runtime* rt = ShieldIfReady(); r == 0 && rt != nullptr) rt->WorkingDirectoryChanged();
  return r;
}

// The shape of every descriptor call: the shield's version for shielded descriptors, the C
// library's for the rest (one atomic load on that path).
template <typename Shielded, typename Passthrough>
auto OnFd(int fd, Shielded shielded, Passthrough passthrough) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  return d ? shielded(*d) : passthrough();
}

int SyncShielded(OpenDescription& d) {
  Status s = d.file->Sync();
  if (!s.ok()) return Fail(s);
  if (Runtime* rt = ShieldIfReady()) rt->Synced();
  return 0;
}

// Copies through the shield with read/write (sendfile, copy_file_range, splice).
ssize_t CopyThrough(int in_fd, off_t* in_off, int out_fd, off_t* out_off, size_t count);

}  // namespace

int ShieldedOpen(int dirfd, const char* path, int flags, mode_t mode) {
  Runtime* rt = ShieldFor(dirfd, path);
  if (rt == nullptr) return -2;
  LexicalPath lexical;
  const bool judged = rt->LexicalLookup(dirfd, path, &lexical);
  if (judged) {
    if (rt->HasInjectedFiles()) {
      if (const SecretBytes* content = rt->Injected(lexical.absolute)) return OpenInjected(*content, flags);
    }
    if (lexical.volume == nullptr) {
      // Lexically outside every volume: the kernel opens it unless a link is on the way (which
      // might lead into a volume); only then the long way.
      int saved = errno;
      int fd = OpenWithoutLinks(dirfd, path, flags, mode);
      if (fd >= 0) return fd;
      if (errno != ELOOP && errno != ENOSYS && errno != EINVAL && errno != E2BIG &&
          errno != EPERM) {
        return -1;
      }
      errno = saved;
    }
  }
  Target t = rt->Locate(dirfd, path, !(flags & O_NOFOLLOW), judged ? &lexical : nullptr);
  if (rt->HasInjectedFiles()) {
    if (const SecretBytes* content = rt->Injected(t.absolute)) return OpenInjected(*content, flags);
  }
  if (t.volume == nullptr) return -2;
  if (t.metadata) {
    errno = ENOENT;  // the volume's own metadata is not part of the program's tree
    return -1;
  }
  if (t.region == fs::Region::kNotProtected) return -2;
  return OpenProtected(*rt, t, flags, t.known_file);
}

}  // namespace scone::runtime

using namespace scone::runtime;  // NOLINT: the exported C functions below
using scone::Status;

// ---- open -------------------------------------------------------------------------------

// The four open entry points differ only in name and in having a directory descriptor; the
// mode argument exists only with O_CREAT or O_TMPFILE.
#define SCONE_OPEN(name)                                      \
  SCONE_EXPORT int name(const char* path, int flags, ...) {   \
    va_list ap;                                               \
    va_start(ap, flags);                                      \
    mode_t mode = ModeArg(flags, ap);                         \
    va_end(ap);                                               \
    int fd = ShieldedOpen(AT_FDCWD, path, flags, mode);       \
    return fd == -2 ? Real().name(path, flags, mode) : fd;    \
  }
#define SCONE_OPENAT(name)                                                \
  SCONE_EXPORT int name(int dirfd, const char* path, int flags, ...) {    \
    va_list ap;                                                           \
    va_start(ap, flags);                                                  \
    mode_t mode = ModeArg(flags, ap);                                     \
    va_end(ap);                                                           \
    int fd = ShieldedOpen(dirfd, path, flags, mode);                      \
    return fd == -2 ? Real().name(dirfd, path, flags, mode) : fd;         \
  }
SCONE_OPEN(open)
SCONE_OPEN(open64)
SCONE_OPENAT(openat)
SCONE_OPENAT(openat64)

// Fortified variants (_FORTIFY_SOURCE): same semantics, mode-less.
SCONE_EXPORT int __open_2(const char* path, int flags) { return open(path, flags); }
SCONE_EXPORT int __open64_2(const char* path, int flags) { return open64(path, flags); }
SCONE_EXPORT int __openat_2(int dirfd, const char* path, int flags) {
  return openat(dirfd, path, flags);
}
SCONE_EXPORT int __openat64_2(int dirfd, const char* path, int flags) {
  return openat64(dirfd, path, flags);
}
SCONE_EXPORT int creat(const char* path, mode_t mode) {
  return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
SCONE_EXPORT int creat64(const char* path, mode_t mode) {
  return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

SCONE_EXPORT int close(int fd) {
  Runtime* rt = ShieldIfReady();
  int committed = rt ? CommitOnLastClose(rt->Take(fd)) : 0;
  int r = Real().close(fd);
  return committed != 0 ? committed : r;
}

// ---- data -------------------------------------------------------------------------------

SCONE_EXPORT ssize_t read(int fd, void* buf, size_t count) {
  return OnFd(fd, [&](OpenDescription& d) { return ReadCurrent(d, buf, count); },
              [&] { return Real().read(fd, buf, count); });
}

SCONE_EXPORT ssize_t write(int fd, const void* buf, size_t count) {
  return OnFd(fd, [&](OpenDescription& d) { return WriteCurrent(d, buf, count); },
              [&] { return Real().write(fd, buf, count); });
}

SCONE_EXPORT ssize_t pread(int fd, void* buf, size_t count, off_t offset) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().pread(fd, buf, count, offset);
  if (offset < 0) return errno = EINVAL, -1;
  return ReadAt(*d, buf, count, static_cast<uint64_t>(offset));
}
SCONE_EXPORT ssize_t pread64(int fd, void* buf, size_t count, off_t offset) {
  return pread(fd, buf, count, offset);
}

SCONE_EXPORT ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().pwrite(fd, buf, count, offset);
  if (offset < 0) return errno = EINVAL, -1;
  // Linux appends with O_APPEND whatever the offset says.
  uint64_t at = (d->flags & O_APPEND) ? d->file->size() : static_cast<uint64_t>(offset);
  return WriteAt(*d, buf, count, at);
}
SCONE_EXPORT ssize_t pwrite64(int fd, const void* buf, size_t count, off_t offset) {
  return pwrite(fd, buf, count, offset);
}

SCONE_EXPORT ssize_t readv(int fd, const struct iovec* iov, int count) {
  return OnFd(fd, [&](OpenDescription& d) { return ReadVector(d, iov, count, nullptr); },
              [&] { return Real().readv(fd, iov, count); });
}

SCONE_EXPORT ssize_t writev(int fd, const struct iovec* iov, int count) {
  return OnFd(fd, [&](OpenDescription& d) { return WriteVector(d, iov, count, nullptr); },
              [&] { return Real().writev(fd, iov, count); });
}

SCONE_EXPORT ssize_t preadv(int fd, const struct iovec* iov, int count, off_t offset) {
  uint64_t at = static_cast<uint64_t>(offset);
  return OnFd(fd, [&](OpenDescription& d) { return ReadVector(d, iov, count, &at); },
              [&] { return Real().preadv(fd, iov, count, offset); });
}
SCONE_EXPORT ssize_t preadv64(int fd, const struct iovec* iov, int count, off_t offset) {
  return preadv(fd, iov, count, offset);
}

SCONE_EXPORT ssize_t pwritev(int fd, const struct iovec* iov, int count, off_t offset) {
  uint64_t at = static_cast<uint64_t>(offset);
  return OnFd(fd, [&](OpenDescription& d) { return WriteVector(d, iov, count, &at); },
              [&] { return Real().pwritev(fd, iov, count, offset); });
}
SCONE_EXPORT ssize_t pwritev64(int fd, const struct iovec* iov, int count, off_t offset) {
  return pwritev(fd, iov, count, offset);
}

SCONE_EXPORT ssize_t preadv2(int fd, const struct iovec* iov, int count, off_t offset, int flags) {
  uint64_t at = static_cast<uint64_t>(offset);
  return OnFd(fd, [&](OpenDescription& d) { return ReadVector(d, iov, count, offset == -1 ? nullptr : &at); },
              [&] { return Real().preadv2(fd, iov, count, offset, flags); });
}
SCONE_EXPORT ssize_t preadv64v2(int fd, const struct iovec* iov, int count, off_t offset,
                                int flags) {
  return preadv2(fd, iov, count, offset, flags);
}

SCONE_EXPORT ssize_t pwritev2(int fd, const struct iovec* iov, int count, off_t offset,
                              int flags) {
  uint64_t at = static_cast<uint64_t>(offset);
  return OnFd(fd, [&](OpenDescription& d) { return WriteVector(d, iov, count, offset == -1 ? nullptr : &at); },
              [&] { return Real().pwritev2(fd, iov, count, offset, flags); });
}
SCONE_EXPORT ssize_t pwritev64v2(int fd, const struct iovec* iov, int count, off_t offset,
                                 int flags) {
  return pwritev2(fd, iov, count, offset, flags);
}

SCONE_EXPORT off_t lseek(int fd, off_t offset, int whence) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().lseek(fd, offset, whence);
  std::lock_guard lock(d->mu);
  int64_t size = static_cast<int64_t>(d->file->size());
  int64_t base;
  switch (whence) {
    case SEEK_SET:
      base = 0;
      break;
    case SEEK_CUR:
      base = static_cast<int64_t>(d->offset);
      break;
    case SEEK_END:
      base = size;
      break;
    case SEEK_DATA:  // holes are not reported: all data
      if (offset >= size) return errno = ENXIO, -1;
      d->offset = static_cast<uint64_t>(offset);
      return offset;
    case SEEK_HOLE:
      if (offset >= size) return errno = ENXIO, -1;
      d->offset = static_cast<uint64_t>(size);
      return size;
    default:
      return errno = EINVAL, -1;
  }
  int64_t target = base + offset;
  if (target < 0) return errno = EINVAL, -1;
  d->offset = static_cast<uint64_t>(target);
  return target;
}
SCONE_EXPORT off_t lseek64(int fd, off_t offset, int whence) { return lseek(fd, offset, whence); }

// ---- metadata ---------------------------------------------------------------------------

SCONE_EXPORT int fstat(int fd, struct stat* st) {
  int r = Real().fstat(fd, st);
  Runtime* rt = ShieldIfReady();
  if (r == 0 && rt) {
    if (auto d = rt->Get(fd)) PatchStat(*d, st);
  }
  return r;
}
SCONE_EXPORT int fstat64(int fd, struct stat64* st) {
  return fstat(fd, reinterpret_cast<struct stat*>(st));
}

SCONE_EXPORT int stat(const char* path, struct stat* st) {
  if (StatInjected(AT_FDCWD, path, 0, st)) return 0;
  int r = Real().stat(path, st);
  return r == 0 ? PatchPathStat(AT_FDCWD, path, 0, st) : r;
}
SCONE_EXPORT int stat64(const char* path, struct stat64* st) {
  return stat(path, reinterpret_cast<struct stat*>(st));
}

SCONE_EXPORT int lstat(const char* path, struct stat* st) {
  if (StatInjected(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, st)) return 0;
  int r = Real().lstat(path, st);
  return r == 0 ? PatchPathStat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, st) : r;
}
SCONE_EXPORT int lstat64(const char* path, struct stat64* st) {
  return lstat(path, reinterpret_cast<struct stat*>(st));
}

SCONE_EXPORT int fstatat(int dirfd, const char* path, struct stat* st, int flags) {
  if (path != nullptr && path[0] != '\0' && StatInjected(dirfd, path, flags, st)) return 0;
  int r = Real().fstatat(dirfd, path, st, flags);
  if (r != 0) return r;
  if ((flags & AT_EMPTY_PATH) && (path == nullptr || path[0] == '\0')) {
    Runtime* rt = ShieldIfReady();
    if (auto d = rt ? rt->Get(dirfd) : nullptr) PatchStat(*d, st);
    return 0;
  }
  return PatchPathStat(dirfd, path, flags, st);
}
SCONE_EXPORT int fstatat64(int dirfd, const char* path, struct stat64* st, int flags) {
  return fstatat(dirfd, path, reinterpret_cast<struct stat*>(st), flags);
}
SCONE_EXPORT int newfstatat(int dirfd, const char* path, struct stat* st, int flags) {
  return fstatat(dirfd, path, st, flags);
}

SCONE_EXPORT int statx(int dirfd, const char* path, int flags, unsigned int mask,
                       struct statx* stx) {
  struct stat injected;
  if (path != nullptr && path[0] != '\0' && StatInjected(dirfd, path, flags, &injected)) {
    std::memset(stx, 0, sizeof(*stx));
    stx->stx_mask = STATX_BASIC_STATS;
    stx->stx_mode = static_cast<uint16_t>(injected.st_mode);
    stx->stx_nlink = 1;
    stx->stx_uid = injected.st_uid;
    stx->stx_gid = injected.st_gid;
    stx->stx_size = static_cast<uint64_t>(injected.st_size);
    stx->stx_blksize = 4096;
    stx->stx_blocks = static_cast<uint64_t>(injected.st_blocks);
    return 0;
  }
  int r = Real().statx(dirfd, path, flags, mask, stx);
  if (r != 0) return r;
  Runtime* rt = ShieldIfReady();
  if (rt == nullptr || !S_ISREG(stx->stx_mode)) return r;
  uint64_t size;
  if ((flags & AT_EMPTY_PATH) && (path == nullptr || path[0] == '\0')) {
    auto d = rt->Get(dirfd);
    if (!d) return 0;
    size = d->file->size();
  } else {
    struct stat st = {};
    st.st_mode = S_IFREG;
    st.st_dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
    st.st_size = static_cast<off_t>(stx->stx_size);
    if (PatchPathStat(dirfd, path, flags, &st) != 0) return -1;
    size = static_cast<uint64_t>(st.st_size);
  }
  stx->stx_size = size;
  stx->stx_blocks = (size + 511) / 512;
  return 0;
}

SCONE_EXPORT int ftruncate(int fd, off_t length) {
  return OnFd(fd, [&](OpenDescription& d) { return DoFtruncate(d, length); },
              [&] { return Real().ftruncate(fd, length); });
}
SCONE_EXPORT int ftruncate64(int fd, off_t length) { return ftruncate(fd, length); }

SCONE_EXPORT int truncate(const char* path, off_t length) {
  int fd = open(path, O_WRONLY);
  Runtime* rt = ShieldIfReady();
  auto d = (fd >= 0 && rt) ? rt->Get(fd) : nullptr;
  if (!d) {
    if (fd >= 0) close(fd);
    return Real().truncate(path, length);
  }
  int r = DoFtruncate(*d, length);
  int saved = errno;
  d.reset();
  close(fd);
  errno = saved;
  return r;
}
SCONE_EXPORT int truncate64(const char* path, off_t length) { return truncate(path, length); }

SCONE_EXPORT int fsync(int fd) {
  return OnFd(fd, SyncShielded, [&] { return Real().fsync(fd); });
}

SCONE_EXPORT int fdatasync(int fd) {
  return OnFd(fd, SyncShielded, [&] { return Real().fdatasync(fd); });
}

SCONE_EXPORT int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags) {
  return OnFd(fd, SyncShielded, [&] { return Real().sync_file_range(fd, offset, nbytes, flags); });
}

SCONE_EXPORT int fallocate(int fd, int mode, off_t offset, off_t len) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().fallocate(fd, mode, offset, len);
  if ((mode & ~FALLOC_FL_KEEP_SIZE) != 0) return errno = EOPNOTSUPP, -1;
  if (offset < 0 || len <= 0) return errno = EINVAL, -1;
  if (!Writable(d->flags)) return errno = EBADF, -1;
  // Space for the ciphertext is reserved as the program asked for the plaintext, so that its
  // later writes do not fail for lack of space (and do not pay for allocation as they go).
  uint64_t end = static_cast<uint64_t>(offset + len);
  Status reserved = d->file->Reserve(end);
  if (!reserved.ok()) return Fail(reserved);
  if ((mode & FALLOC_FL_KEEP_SIZE) || end <= d->file->size()) return 0;
  return DoFtruncate(*d, static_cast<off_t>(end));
}
SCONE_EXPORT int fallocate64(int fd, int mode, off_t offset, off_t len) {
  return fallocate(fd, mode, offset, len);
}

SCONE_EXPORT int posix_fallocate(int fd, off_t offset, off_t len) {
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().posix_fallocate(fd, offset, len);
  int saved = errno;
  int r = fallocate(fd, 0, offset, len) == 0 ? 0 : errno;
  errno = saved;
  return r;
}
SCONE_EXPORT int posix_fallocate64(int fd, off_t offset, off_t len) {
  return posix_fallocate(fd, offset, len);
}

// ---- descriptors ------------------------------------------------------------------------

SCONE_EXPORT int dup(int oldfd) {
  int fd = Real().dup(oldfd);
  return fd >= 0 ? DupInto(ShieldIfReady(), oldfd, fd) : fd;
}

SCONE_EXPORT int dup2(int oldfd, int newfd) {
  int fd = Real().dup2(oldfd, newfd);
  return fd >= 0 ? DupInto(ShieldIfReady(), oldfd, fd) : fd;
}

SCONE_EXPORT int dup3(int oldfd, int newfd, int flags) {
  int fd = Real().dup3(oldfd, newfd, flags);
  return fd >= 0 ? DupInto(ShieldIfReady(), oldfd, fd) : fd;
}

SCONE_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);  // every fcntl argument fits (int or pointer)
  va_end(ap);
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (d && cmd == F_GETFL) {
    int kernel = Real().fcntl(fd, F_GETFL);
    return (kernel & ~(O_ACCMODE | O_APPEND)) | (d->flags & (O_ACCMODE | O_APPEND));
  }
  if (d && cmd == F_SETFL) {
    d->flags = (d->flags & ~(O_APPEND | O_NONBLOCK)) | (static_cast<int>(arg) & (O_APPEND | O_NONBLOCK));
    return Real().fcntl(fd, F_SETFL, arg & ~O_APPEND);
  }
  int r = Real().fcntl(fd, cmd, arg);
  if (d && r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) DupInto(rt, fd, r);
  return r;
}

SCONE_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return fcntl(fd, cmd, arg);
}

// ---- names ------------------------------------------------------------------------------

SCONE_EXPORT int rename(const char* oldpath, const char* newpath) {
  bool handled;
  int r = DoRename(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0, &handled);
  return AfterRename(handled ? r : Real().rename(oldpath, newpath));
}

SCONE_EXPORT int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) {
  bool handled;
  int r = DoRename(olddirfd, oldpath, newdirfd, newpath, 0, &handled);
  return AfterRename(handled ? r : Real().renameat(olddirfd, oldpath, newdirfd, newpath));
}

SCONE_EXPORT int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                           unsigned int flags) {
  bool handled;
  int r = DoRename(olddirfd, oldpath, newdirfd, newpath, flags, &handled);
  return AfterRename(handled ? r : Real().renameat2(olddirfd, oldpath, newdirfd, newpath, flags));
}

SCONE_EXPORT int unlink(const char* path) {
  bool handled;
  int r = DoUnlink(AT_FDCWD, path, 0, &handled);
  return handled ? r : Real().unlink(path);
}

SCONE_EXPORT int unlinkat(int dirfd, const char* path, int flags) {
  bool handled;
  int r = DoUnlink(dirfd, path, flags, &handled);
  return handled ? r : Real().unlinkat(dirfd, path, flags);
}

// ---- copies -----------------------------------------------------------------------------

namespace scone::runtime {
namespace {

ssize_t CopyThrough(int in_fd, off_t* in_off, int out_fd, off_t* out_off, size_t count) {
  std::vector<uint8_t> buffer(std::min<size_t>(count, 1 << 20));
  size_t done = 0;
  while (done < count) {
    size_t want = std::min(buffer.size(), count - done);
    ssize_t n = in_off ? ::pread(in_fd, buffer.data(), want, *in_off) : ::read(in_fd, buffer.data(), want);
    if (n < 0) return done > 0 ? static_cast<ssize_t>(done) : -1;
    if (n == 0) break;
    size_t written = 0;
    while (written < static_cast<size_t>(n)) {
      ssize_t w = out_off ? ::pwrite(out_fd, buffer.data() + written, n - written, *out_off + written)
                          : ::write(out_fd, buffer.data() + written, n - written);
      if (w <= 0) return done + written > 0 ? static_cast<ssize_t>(done + written) : -1;
      written += static_cast<size_t>(w);
    }
    if (in_off) *in_off += n;
    if (out_off) *out_off += n;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

bool AnyShielded(int a, int b) {
  Runtime* rt = ShieldIfReady();
  return rt && (rt->Get(a) || rt->Get(b));
}

}  // namespace
}  // namespace scone::runtime

SCONE_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  if (!AnyShielded(in_fd, out_fd)) return Real().sendfile(out_fd, in_fd, offset, count);
  return CopyThrough(in_fd, offset, out_fd, nullptr, count);
}
SCONE_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off_t* offset, size_t count) {
  return sendfile(out_fd, in_fd, offset, count);
}

SCONE_EXPORT ssize_t copy_file_range(int in_fd, off_t* in_off, int out_fd, off_t* out_off,
                                     size_t len, unsigned int flags) {
  if (!AnyShielded(in_fd, out_fd)) {
    return Real().copy_file_range(in_fd, in_off, out_fd, out_off, len, flags);
  }
  return CopyThrough(in_fd, in_off, out_fd, out_off, len);
}

SCONE_EXPORT ssize_t splice(int in_fd, off_t* in_off, int out_fd, off_t* out_off, size_t len,
                            unsigned int flags) {
  if (!AnyShielded(in_fd, out_fd)) return Real().splice(in_fd, in_off, out_fd, out_off, len, flags);
  return CopyThrough(in_fd, in_off, out_fd, out_off, len);
}
