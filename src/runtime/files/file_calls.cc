#include "runtime/files/file_calls.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "fs/volume_path.h"
#include "os/syscalls.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/user_memory.h"
#include "runtime/files/mapped_files.h"
#include "runtime/files/protected_fd.h"
#include "runtime/lexical_path.h"
#include "runtime/process/signal_calls.h"
#include "runtime/runtime.h"

namespace scone::runtime::files {
namespace {

bool Writable(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

long RawOpenAt2(int dirfd, const char* path, int flags, mode_t mode, uint64_t resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0;
  how.resolve = resolve;
  return RawSyscall(SYS_openat2, dirfd, Arg(path), Arg(&how), sizeof(how));
}

// open(2) refusing symbolic links anywhere in the path: where it succeeds (or fails for another
// reason), the lexical form of the path was exactly where the kernel looked.
long OpenWithoutLinks(int dirfd, const char* path, int flags, mode_t mode) {
  return RawOpenAt2(dirfd, path, flags, mode, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

// Whether a failure of OpenWithoutLinks means "a link on the way" (or no openat2): then the long
// way decides.
bool LinkOnTheWay(long r) { return r == -ELOOP || r == -ENOSYS || r == -EINVAL || r == -E2BIG || r == -EPERM; }

long RawLstat(const char* path, struct stat* st) {
  return RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(path), Arg(st), AT_SYMLINK_NOFOLLOW);
}

const char* TypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "something else";
}

// A file CAS injected: a fresh in-memory file with its content, opened with the program's
// access mode (through /proc/self/fd, so that it has its own offset and a read-only descriptor
// stays read-only). Writes stay in memory.
long OpenInjected(const SecretBytes& content, int flags) {
  if (flags & O_DIRECTORY) return -ENOTDIR;
  if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
  long mem = RawSyscall(SYS_memfd_create, Arg("scone-injected"), MFD_CLOEXEC);
  if (mem < 0) return mem;
  bool truncate = (flags & O_TRUNC) && Writable(flags);
  if (!truncate && !content.empty() &&
      RawSyscall(SYS_pwrite64, mem, Arg(content.data()), static_cast<long>(content.size()), 0) !=
          static_cast<long>(content.size())) {
    RawSyscall(SYS_close, mem);
    return -EIO;
  }
  char self[64];
  snprintf(self, sizeof(self), "/proc/self/fd/%ld", mem);
  long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(self), flags & (O_ACCMODE | O_APPEND | O_CLOEXEC | O_NONBLOCK), 0);
  RawSyscall(SYS_close, mem);
  return fd;
}

void FillInjectedStat(const SecretBytes& content, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_uid = static_cast<uid_t>(RawSyscall(SYS_getuid));
  st->st_gid = static_cast<gid_t>(RawSyscall(SYS_getgid));
  st->st_size = static_cast<off_t>(content.size());
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((content.size() + 511) / 512);
}

// The content CAS injected at this path, or nullptr. REQUIRES: a RuntimeSection (the long way
// resolves links with the C library).
const SecretBytes* InjectedAt(Runtime& rt, int dirfd, const char* path, bool follow_last) {
  if (!rt.HasInjectedFiles() || path == nullptr || path[0] == '\0') return nullptr;
  LexicalPath lexical;
  if (rt.LexicalLookup(dirfd, path, &lexical)) {
    if (const SecretBytes* c = rt.Injected(lexical.absolute)) return c;
  }
  return rt.Injected(rt.Resolve(dirfd, path, follow_last).absolute);
}

// A file the shield just created with `mode | 0600` (so that the volume and the program's
// descriptor could open it) gets the permissions the kernel would have given it: `mode`, less the
// umask, which the kernel applied to the rest.
long FinishCreatedMode(int fd, mode_t mode) {
  constexpr mode_t kOwnerReadWrite = S_IRUSR | S_IWUSR;
  if ((mode & kOwnerReadWrite) == kOwnerReadWrite) return 0;
  struct stat st;
  long r = RawSyscall(SYS_fstat, fd, Arg(&st));
  if (r != 0) return r;
  return RawSyscall(SYS_fchmod, fd, (st.st_mode & 07777) & ~(kOwnerReadWrite & ~mode));
}

// open of a path inside a protected region. REQUIRES: a RuntimeSection.
long OpenProtected(Runtime& rt, const Target& t, int flags, mode_t mode, bool for_runtime) {
  fs::Volume* volume = t.volume->Get();
  if (volume == nullptr) return -t.volume->UnavailableErrno();
  auto replaced = [&t](const struct stat& st) {
    return FailWith(DataCorrupted(t.absolute + ": a protected file of the volume was replaced by " + TypeName(st.st_mode)));
  };
  // A file this process has open (or keeps: recent_files.h) was a regular file at its name: no
  // lstat first (nginx opens the file it serves for every request; a system call is 3 us here).
  // Where the name no longer leads to it, the lstat is made then (below), with the same answers.
  const bool held = !(flags & (O_PATH | O_DIRECTORY | O_CREAT | O_TRUNC)) && volume->OpenedFile(t.path) != nullptr;
  struct stat st = {};
  st.st_mode = S_IFREG;
  bool exists = held || (!t.absent && RawLstat(t.absolute.c_str(), &st) == 0);
  bool known = held || t.known_file || volume->Knows(t.path);
  if (exists && known && !S_ISREG(st.st_mode)) return replaced(st);
  if (exists && (flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;  // whatever has the name
  if (flags & O_PATH) {
    if (!known) return kNotMine;
    long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(t.absolute.c_str()), flags | O_NOFOLLOW, 0);
    if (fd < 0 || fd >= FdTable::kMaxFds) {
      if (fd >= 0) RawSyscall(SYS_close, fd);
      return fd < 0 ? fd : -EMFILE;
    }
    rt.fds().Set(static_cast<int>(fd), std::make_shared<PathOnlyFd>(t.volume, t.path));
    return fd;
  }
  // O_NOFOLLOW on a symbolic link: as the kernel answers (the volume knows no file by that name).
  if (exists && S_ISLNK(st.st_mode) && (flags & O_NOFOLLOW)) return -ELOOP;
  // Directories, FIFOs, sockets and devices are the kernel's business, as are O_DIRECTORY opens:
  // opened by the kernel, but never made by it. Without O_CREAT, so that a name that lost its
  // FIFO meanwhile does not become a plaintext file inside the volume (hostile finding: the
  // host flickering a FIFO at a name being created); gone, the name is created the shield's
  // way; a regular file there now takes the shield's way too (known, or planted: EIO).
  if ((exists && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) || (flags & O_DIRECTORY)) {
    if (!(flags & O_CREAT)) return kNotMine;
    long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(t.absolute.c_str()), (flags & ~O_CREAT) | O_NOFOLLOW, mode);
    struct stat opened;
    if (fd >= 0 && (RawSyscall(SYS_fstat, fd, Arg(&opened)) != 0 || !S_ISREG(opened.st_mode))) return fd;
    if (fd >= 0) RawSyscall(SYS_close, fd);
    if (fd < 0 && fd != -ENOENT) return fd;
    exists = fd >= 0;  // (flags has no O_DIRECTORY here: with O_CREAT, the kernel said EINVAL)
    st.st_mode = S_IFREG;
  }
  fs::OpenFileOptions options;
  options.create = flags & O_CREAT;
  options.exclusive = (flags & O_CREAT) && (flags & O_EXCL);
  options.truncate = (flags & O_TRUNC) && Writable(flags);
  options.mode = (mode & 07777) | S_IRUSR | S_IWUSR;  // the kernel applies the umask
  options.absent = !exists;
  bool created = false;
  auto file = volume->OpenFile(t.path, options, &created);
  // What lstat saw may be stale: another process may have unlinked the file since, or created
  // it after this one caught up with the volume. Asked again before anything is called planted.
  for (int again = 0; again < 2 && !file.ok() && file.status().code() == Code::kNotFound && exists; ++again) {
    exists = RawLstat(t.absolute.c_str(), &st) == 0;
    if (exists) file = volume->OpenFile(t.path, options, &created);
  }
  if (!file.ok()) {
    if (file.status().code() == Code::kNotFound && exists) {
      // On disk but not in the volume's metadata: planted, or its metadata was lost.
      return FailWith(DataCorrupted(t.absolute +
                                    ": unknown file: not in the volume's metadata (added behind the "
                                    "volume's back, or its metadata is missing)"));
    }
    return FailWith(file.status());
  }
  // The program's descriptor is an open of the very inode the volume's file reads. Another
  // process may have unlinked the file or put a new one in its place since the lookup (an open
  // by name then failed with ENOENT, or gave a descriptor of the new file: hostile finding):
  // then the inode is opened through the runtime's descriptor in /proc (2 us more than by name,
  // so only then). Its access mode mirrors the program's, so that advisory locks (a write lock
  // needs a writable descriptor) behave as without the shield; data never goes through it.
  const int open_flags = (for_runtime ? O_PATH : flags & O_ACCMODE) | (flags & O_CLOEXEC);
  const std::optional<uint64_t> journal_changes = volume->JournalChanges();  // before the stat
  long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(t.absolute.c_str()), open_flags | O_NOFOLLOW, 0);
  struct stat opened = {};
  bool stat_of_open = fd >= 0 && journal_changes.has_value();
  if (fd >= 0 && !(*file)->IsDataFile(static_cast<int>(fd), &opened)) {
    RawSyscall(SYS_close, fd);
    fd = -ENOENT;
  }
  if (held && fd < 0 && RawLstat(t.absolute.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return replaced(st);
  if (fd == -ENOENT) {
    stat_of_open = false;
    const std::string inode = "/proc/self/fd/" + std::to_string((*file)->data_fd());
    fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(inode.c_str()), open_flags, 0);
  }
  if (fd < 0 || fd >= FdTable::kMaxFds) {
    if (fd >= 0) RawSyscall(SYS_close, fd);
    // No descriptor for the program (EMFILE): a file this open created goes again, as the
    // kernel creates nothing then (it stayed: a retry of O_EXCL found it, hostile finding).
    if (created) {
      std::shared_ptr<fs::ProtectedFile> made = std::move(file).value();
      made.reset();
      (void)volume->Unlink(t.path);
    }
    return fd < 0 ? fd : -EMFILE;
  }
  // The kernel let the program open it for writing (a chmod since the file was loaded read-only).
  if (!for_runtime && Writable(flags)) {
    if (Status s = (*file)->MakeWritable(); !s.ok()) {
      RawSyscall(SYS_close, fd);
      return FailWith(s);
    }
  }
  if (created) {
    if (long r = FinishCreatedMode(static_cast<int>(fd), mode); r != 0) {
      RawSyscall(SYS_close, fd);
      return r;
    }
  }
  t.volume->recent.Note(*file);
  auto d = std::make_shared<ProtectedFd>(std::move(file).value(), t.volume, t.path,
                                         flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC));
  if (options.truncate) d->MarkWritten();
  // Not where the shield changed the inode since (its mode, a truncation's times).
  if (stat_of_open && !created && !options.truncate) d->KeepStatOfOpen(opened, *journal_changes);
  rt.fds().Set(static_cast<int>(fd), std::move(d));
  return fd;
}

// An open of a descriptor's link (/proc/self/fd/N, /dev/fd/N, /dev/stdin...) reopens the file the
// descriptor has open, even where no name leads to it any more: bash writes a here-document to a
// temporary file, opens it, unlinks it, and `cat /dev/stdin` reopens it. Where N is a protected
// descriptor, the new one shares its protected file, with its own flags and offset (resolving
// the link's text found a "(deleted)" name: ENOENT). The kernel opens the path itself, so that
// its answer (permissions, a link that is no link here) is the native one; the result is the
// shield's only where that lands on the file's data file.
// `absolute`: the path's lexical form. nullopt: not such an open, the caller goes on; kNotMine:
// the kernel's (a descriptor on no volume's file system, without the long way).
std::optional<long> OpenDescriptorLink(Runtime& rt, int dirfd, const char* path, const char* absolute, int flags,
                                       bool for_runtime) {
  // O_PATH, O_DIRECTORY and O_TMPFILE opens, and O_NOFOLLOW (ELOOP on the link): as before.
  if (flags & (O_PATH | O_DIRECTORY | O_NOFOLLOW)) return std::nullopt;
  const DescriptorLink link = ParseDescriptorLink(absolute);
  if (link.fd < 0 || rt.fds().IsOwn(link.fd)) return std::nullopt;
  if (link.pid != 0 && link.pid != RawSyscall(SYS_getpid)) return std::nullopt;
  if (!rt.fds().Has(link.fd)) {
    struct stat st;
    const bool elsewhere = RawSyscall(SYS_fstat, link.fd, Arg(&st)) != 0 || !rt.OnVolumeDevice(st.st_dev);
    return elsewhere ? std::optional<long>(kNotMine) : std::nullopt;
  }
  RuntimeSection section;
  std::shared_ptr<ShieldedFd> shielded = rt.fds().Get(link.fd);
  ProtectedFd* original = shielded != nullptr ? shielded->AsProtectedFile() : nullptr;
  if (original == nullptr) return std::nullopt;  // the console's, a connection: their own ways
  if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
  const int open_flags = (for_runtime ? O_PATH : flags & O_ACCMODE) | (flags & O_CLOEXEC);
  long fd = RawSyscall(SYS_openat, dirfd, Arg(path), open_flags, 0);
  if (fd < 0) return fd;
  if (!original->IsDataFile(static_cast<int>(fd))) {
    RawSyscall(SYS_close, fd);
    return std::nullopt;
  }
  if (fd >= FdTable::kMaxFds) {
    RawSyscall(SYS_close, fd);
    return -EMFILE;
  }
  std::shared_ptr<ProtectedFd> reopened;
  const bool truncate = (flags & O_TRUNC) && Writable(flags);
  if (long r = original->Reopen(flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC), truncate, &reopened);
      r < 0) {
    RawSyscall(SYS_close, fd);
    return r;
  }
  rt.fds().Set(static_cast<int>(fd), std::move(reopened));
  return fd;
}

// Whether a path the kernel found on `st`'s device, lexically outside every volume, is outside
// them for certain: on a file system no volume is on, or reached without a symbolic link.
bool CertainlyOutside(const Runtime& rt, int dirfd, const char* path, int at_flags, const struct stat& st) {
  if (!rt.OnVolumeDevice(st.st_dev)) return true;
  long fd = OpenWithoutLinks(dirfd, path, O_PATH | O_CLOEXEC | (at_flags & AT_SYMLINK_NOFOLLOW ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return false;
  RawSyscall(SYS_close, fd);
  return true;
}

// Whether a name whose last component the call does not follow (rename, unlink, link) lies
// outside every volume for certain: lexically outside, and its directory reached without a
// symbolic link (so its lexical name is where it is).
bool NameCertainlyOutside(Runtime& rt, int dirfd, const char* path) {
  LexicalPath lexical;
  if (!rt.LexicalLookup(dirfd, path, &lexical) || lexical.volume != nullptr) return false;
  char* slash = std::strrchr(lexical.absolute, '/');
  if (slash == nullptr) return false;
  char saved = slash[slash == lexical.absolute ? 1 : 0];
  slash[slash == lexical.absolute ? 1 : 0] = '\0';
  long fd = OpenWithoutLinks(AT_FDCWD, lexical.absolute, O_PATH | O_CLOEXEC | O_DIRECTORY, 0);
  slash[slash == lexical.absolute ? 1 : 0] = saved;
  if (fd < 0) return false;
  RawSyscall(SYS_close, fd);
  return true;
}

// The protected descriptor whose link (/proc/self/fd/N, /dev/stdin...) `link` is, if the
// kernel's stat `st` of the path found its file; else nullptr. REQUIRES: a RuntimeSection.
std::shared_ptr<ShieldedFd> LinkedProtectedFd(Runtime& rt, const DescriptorLink& link, const struct stat& st) {
  if (link.pid != 0 && link.pid != RawSyscall(SYS_getpid)) return nullptr;
  struct stat own;
  if (RawSyscall(SYS_fstat, link.fd, Arg(&own)) != 0 || own.st_dev != st.st_dev || own.st_ino != st.st_ino) {
    return nullptr;
  }
  std::shared_ptr<ShieldedFd> d = rt.fds().Get(link.fd);
  return d != nullptr && d->AsProtectedFile() != nullptr ? d : nullptr;
}

// stat of a path the kernel answered: the plaintext size of protected files.
long PatchPathStat(Runtime& rt, int dirfd, const char* path, int at_flags, struct stat* st) {
  // Not on a file system any volume lies on: not a protected file, whatever the path.
  if (!rt.OnVolumeDevice(st->st_dev)) return 0;
  LexicalPath lexical;
  const bool judged = rt.LexicalLookup(dirfd, path, &lexical);
  if (judged && lexical.volume == nullptr && !(at_flags & AT_SYMLINK_NOFOLLOW)) {
    // A descriptor's link: the descriptor's file, which may have no name left (its link's text
    // then names the volume's trash, which the program does not see: ENOENT before).
    const DescriptorLink link = ParseDescriptorLink(lexical.absolute);
    if (link.fd >= 0 && rt.fds().Has(link.fd)) {
      RuntimeSection section;
      if (auto d = LinkedProtectedFd(rt, link, *st)) {
        d->PatchStat(st);
        return 0;
      }
    }
  }
  if (judged && lexical.volume == nullptr &&
      ((lexical.one_name && (at_flags & AT_SYMLINK_NOFOLLOW)) || CertainlyOutside(rt, dirfd, path, at_flags, *st))) {
    return 0;
  }
  RuntimeSection section;
  Target t = rt.Locate(dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW), judged ? &lexical : nullptr);
  if (t.volume == nullptr) return 0;
  if (t.metadata) return -ENOENT;
  if (t.unavailable) return -t.UnavailableErrno();
  if (t.region == fs::Region::kNotProtected || !S_ISREG(st->st_mode)) return 0;
  fs::Volume* volume = t.volume->Get();
  auto size = volume->FileSize(t.path);
  if (!size.ok()) return 0;  // not a protected file the volume knows: reported when opened
  st->st_size = static_cast<off_t>(*size);  // st_blocks: the ciphertext's, what the disk holds
  if (auto open = volume->OpenedFile(t.path)) ShowUnwrittenChange(*open, st);
  return 0;
}

std::shared_ptr<ShieldedFd> Shielded(Runtime& rt, int fd) { return rt.fds().Get(fd); }

// Reads or writes through the shield if the descriptor is shielded, else through the kernel.
long FdRead(Runtime& rt, int fd, void* buf, size_t count, long* offset) {
  if (auto d = Shielded(rt, fd)) return offset ? d->ReadAt(buf, count, static_cast<uint64_t>(*offset)) : d->Read(fd, buf, count);
  return offset ? RawSyscall(SYS_pread64, fd, Arg(buf), static_cast<long>(count), *offset)
                : RawSyscall(SYS_read, fd, Arg(buf), static_cast<long>(count));
}

long FdWrite(Runtime& rt, int fd, const void* buf, size_t count, long* offset) {
  if (auto d = Shielded(rt, fd)) {
    return offset ? d->WriteAt(buf, count, static_cast<uint64_t>(*offset)) : d->Write(fd, buf, count);
  }
  return offset ? RawSyscall(SYS_pwrite64, fd, Arg(buf), static_cast<long>(count), *offset)
                : RawSyscall(SYS_write, fd, Arg(buf), static_cast<long>(count));
}

size_t IovTotal(const struct iovec* iov, int count) {
  size_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  return total;
}

// A write, truncation or allocation of a protected file that met the program's file-size limit
// (ulimit -f; the data file meets it a little before the plaintext does): SIGXFSZ, as the kernel
// signals it for the program's own files (the runtime's own write dropped the kernel's). Held
// back until the call returns.
long SignalPastLimit(long r) {
  if (r == -EFBIG && os::FileSizeLimit()) RawSyscall(SYS_tgkill, RawSyscall(SYS_getpid), RawSyscall(SYS_gettid), SIGXFSZ);
  return r;
}

// The program's buffer, cut where the kernel's copy would stop at a fault (entry/user_memory.h):
// false when not one of the asked bytes can be moved (EFAULT).
bool CutToProgramMemory(const void* buf, size_t* count, bool runtime_writes) {
  if (!InProgramSpace(buf, *count)) return false;  // the kernel's access_ok, before any byte moves
  const size_t usable = runtime_writes ? WritableBytes(const_cast<void*>(buf), *count) : ReadableBytes(buf, *count);
  if (usable == 0 && *count != 0) return false;
  *count = usable;
  return true;
}

// The program's iovec array, cut likewise; a few vectors stay on the stack.
class ProgramVectors {
 public:
  ProgramVectors(const struct iovec* given, int count, bool runtime_writes) : count_(count) {
    if (count_ > kInline) heap_ = std::make_unique<struct iovec[]>(static_cast<size_t>(count_));
    error_ = UsableVectors(given, &count_, runtime_writes, data());
  }
  struct iovec* data() { return heap_ ? heap_.get() : inline_; }
  int count() const { return count_; }
  long error() const { return error_; }

 private:
  static constexpr int kInline = 8;
  struct iovec inline_[kInline];
  std::unique_ptr<struct iovec[]> heap_;
  int count_;
  long error_ = 0;
};

// Commits the description `newfd` referred to if this was its last descriptor (dup2 over it).
void ReleaseReplaced(std::shared_ptr<ShieldedFd> replaced) {
  if (replaced != nullptr && replaced.use_count() == 1) (void)replaced->LastClose();
}

// fstat of a descriptor: `kernel_stat` (the kernel's answer, into st), patched where the
// descriptor is shielded; a protected file's open may have the answer already.
template <typename KernelStat>
long StatOfDescriptor(Runtime& rt, int fd, struct stat* st, const KernelStat& kernel_stat) {
  if (!rt.fds().Has(fd)) return kernel_stat();
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  ProtectedFd* protected_fd = d != nullptr ? d->AsProtectedFile() : nullptr;
  if (protected_fd == nullptr || !protected_fd->StatOfOpen(st)) {
    if (long r = kernel_stat(); r != 0) return r;
  }
  if (d != nullptr) d->PatchStat(st);
  return 0;
}

}  // namespace

// ---- paths ------------------------------------------------------------------------------

namespace {

// A directory the shield does not serve, opened by the kernel; its path recorded for the calls
// relative to it.
long OpenDirectory(Runtime& rt, int dirfd, const char* path, int flags, mode_t mode, const std::string& absolute) {
  long fd = RawSyscall(SYS_openat, dirfd, Arg(path), flags, mode);
  if (fd >= 0) rt.dirs().Set(static_cast<int>(fd), absolute.data(), absolute.size());
  return fd;
}

}  // namespace

long OpenAt(Runtime& rt, int dirfd, const char* path, int flags, mode_t mode, bool for_runtime) {
  if (path == nullptr) return kNotMine;
  LexicalPath lexical;
  const bool judged = rt.LexicalLookup(dirfd, path, &lexical);
  if (judged) {
    if (const SecretBytes* content = rt.HasInjectedFiles() ? rt.Injected(lexical.absolute) : nullptr) {
      RuntimeSection section;
      return OpenInjected(*content, flags);
    }
    if (lexical.volume == nullptr) {
      // Lexically outside every volume: the kernel opens it unless a link is on the way (which
      // might lead into a volume); only then the long way.
      long fd = OpenWithoutLinks(dirfd, path, flags, mode);
      if (fd >= 0 && (flags & O_DIRECTORY)) rt.dirs().Set(static_cast<int>(fd), lexical.absolute, std::strlen(lexical.absolute));
      if (!LinkOnTheWay(fd)) return fd;
      if (auto reopened = OpenDescriptorLink(rt, dirfd, path, lexical.absolute, flags, for_runtime)) return *reopened;
    }
  }
  RuntimeSection section;
  if (const SecretBytes* content = InjectedAt(rt, dirfd, path, !(flags & O_NOFOLLOW))) {
    return OpenInjected(*content, flags);
  }
  // O_CREAT|O_EXCL never follows the last name: whatever has it (a link, even dangling) fails
  // the open, as the kernel's (hostile finding: it created the link's target as a protected file).
  const bool exclusive = (flags & O_CREAT) && (flags & O_EXCL);
  Target t = rt.Locate(dirfd, path, !(flags & O_NOFOLLOW) && !exclusive, judged ? &lexical : nullptr);
  if (t.metadata) return -ENOENT;  // the volume's own metadata is not part of the program's tree
  if (t.volume != nullptr && (flags & O_TMPFILE) == O_TMPFILE) {
    // A nameless file in a protected directory cannot be protected (the volume names its files):
    // programs fall back to a named temporary file.
    std::string inside = t.path.empty() ? std::string("tmpfile") : t.path + "/tmpfile";
    fs::Volume* volume = t.volume->Get();
    if (volume == nullptr) return -t.volume->UnavailableErrno();
    return volume->RegionOf(inside) == fs::Region::kNotProtected ? kNotMine : -EOPNOTSUPP;
  }
  if (t.unavailable) return -t.UnavailableErrno();
  if (t.volume == nullptr && (flags & O_CREAT) && !t.absolute.empty() &&
      (judged ? lexical.volume != nullptr : rt.Locate(dirfd, path, /*follow_last=*/false).volume != nullptr)) {
    // A name in a volume whose link leads out of it: opened where the link led, not by the
    // name, which the host may turn into nothing meanwhile (O_CREAT would then make a plaintext
    // file inside the volume: hostile finding).
    return RawSyscall(SYS_openat, AT_FDCWD, Arg(t.absolute.c_str()), flags, mode);
  }
  if (t.volume == nullptr || t.region == fs::Region::kNotProtected || t.path.empty()) {
    return (flags & O_DIRECTORY) && !t.absolute.empty() ? OpenDirectory(rt, dirfd, path, flags, mode, t.absolute)
                                                        : kNotMine;
  }
  if (flags & O_DIRECTORY) return OpenDirectory(rt, dirfd, path, flags, mode, t.absolute);
  return OpenProtected(rt, t, flags, mode, for_runtime);
}

long OpenAt2(Runtime& rt, int dirfd, const char* path, const struct open_how* how, size_t size) {
  if (how == nullptr || size < sizeof(struct open_how)) return kNotMine;  // the kernel's EINVAL
  if (how->resolve != 0) {
    // Resolution constraints the shield does not apply: served only outside every volume.
    RuntimeSection section;
    Target t = rt.Resolve(dirfd, path, !(how->flags & O_NOFOLLOW));
    if (t.volume == nullptr && !InjectedAt(rt, dirfd, path, true)) return kNotMine;
    return -EXDEV;
  }
  return OpenAt(rt, dirfd, path, static_cast<int>(how->flags), static_cast<mode_t>(how->mode));
}

long StatAt(Runtime& rt, int dirfd, const char* path, struct stat* st, int at_flags) {
  if ((at_flags & AT_EMPTY_PATH) && path != nullptr && path[0] == '\0') {
    return StatOfDescriptor(rt, dirfd, st, [&] { return RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(st), at_flags); });
  }
  if (rt.HasInjectedFiles() && path != nullptr) {
    // Injected files shadow the disk: found by name first, by where links lead if the disk
    // has nothing there.
    LexicalPath lexical;
    const SecretBytes* content = rt.LexicalLookup(dirfd, path, &lexical) ? rt.Injected(lexical.absolute) : nullptr;
    if (content == nullptr &&
        RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(st), at_flags) == -ENOENT) {
      RuntimeSection section;
      content = InjectedAt(rt, dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW));
    }
    if (content != nullptr) {
      FillInjectedStat(*content, st);
      return 0;
    }
  }
  long r = RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(st), at_flags);
  if (r != 0 || path == nullptr) return r;
  return PatchPathStat(rt, dirfd, path, at_flags, st);
}

long Statx(Runtime& rt, int dirfd, const char* path, int at_flags, unsigned mask, struct statx* stx) {
  const bool on_fd = (at_flags & AT_EMPTY_PATH) && path != nullptr && path[0] == '\0';
  if (!on_fd && rt.HasInjectedFiles()) {
    RuntimeSection section;
    if (const SecretBytes* content = InjectedAt(rt, dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW))) {
      struct stat st;
      FillInjectedStat(*content, &st);
      std::memset(stx, 0, sizeof(*stx));
      stx->stx_mask = STATX_BASIC_STATS;
      stx->stx_mode = static_cast<uint16_t>(st.st_mode);
      stx->stx_nlink = 1;
      stx->stx_uid = st.st_uid;
      stx->stx_gid = st.st_gid;
      stx->stx_size = static_cast<uint64_t>(st.st_size);
      stx->stx_blksize = 4096;
      stx->stx_blocks = static_cast<uint64_t>(st.st_blocks);
      return 0;
    }
  }
  long r = RawSyscall(SYS_statx, dirfd, Arg(path), at_flags, mask, Arg(stx));
  if (r != 0 || path == nullptr || !S_ISREG(stx->stx_mode)) return r;
  // What fstat and stat report, patched the same way: the plaintext size, no link left once
  // unlinked, the times of writes this process still buffers (statx on a descriptor reported
  // the ciphertext's link count and times before).
  struct stat st = {};
  st.st_mode = S_IFREG;
  st.st_dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
  st.st_ino = static_cast<ino_t>(stx->stx_ino);
  st.st_nlink = stx->stx_nlink;
  st.st_size = static_cast<off_t>(stx->stx_size);
  st.st_mtim = {stx->stx_mtime.tv_sec, stx->stx_mtime.tv_nsec};
  st.st_ctim = {stx->stx_ctime.tv_sec, stx->stx_ctime.tv_nsec};
  if (on_fd) {
    if (!rt.fds().Has(dirfd)) return 0;
    RuntimeSection section;
    auto d = Shielded(rt, dirfd);
    if (d == nullptr) return 0;
    d->PatchStat(&st);
  } else if (long p = PatchPathStat(rt, dirfd, path, at_flags, &st); p != 0) {
    return p;
  }
  stx->stx_size = static_cast<uint64_t>(st.st_size);
  stx->stx_nlink = static_cast<uint32_t>(st.st_nlink);
  stx->stx_mtime = {st.st_mtim.tv_sec, static_cast<uint32_t>(st.st_mtim.tv_nsec), 0};
  stx->stx_ctime = {st.st_ctim.tv_sec, static_cast<uint32_t>(st.st_ctim.tv_nsec), 0};
  return 0;
}

long Access(Runtime& rt, int dirfd, const char* path, int mode, int at_flags) {
  if (!rt.HasInjectedFiles()) return kNotMine;
  RuntimeSection section;
  if (InjectedAt(rt, dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW)) == nullptr) return kNotMine;
  return (mode & X_OK) ? -EACCES : 0;  // injected files are readable and writable, never executable
}

namespace {

// Closes a descriptor OpenAt(for_runtime) gave: the shield's, or the kernel's.
long CloseOpened(Runtime& rt, long fd) {
  return rt.fds().Has(static_cast<int>(fd)) ? Close(rt, static_cast<int>(fd)) : RawSyscall(SYS_close, fd);
}

}  // namespace

long MakeRegularNode(Runtime& rt, int dirfd, const char* path, mode_t mode) {
  long fd = OpenAt(rt, dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777, /*for_runtime=*/true);
  if (fd == kNotMine || fd < 0) return fd;
  long closed = CloseOpened(rt, fd);
  return closed < 0 ? closed : 0;
}

long Truncate(Runtime& rt, const char* path, long length) {
  LexicalPath lexical;
  if (rt.LexicalLookup(AT_FDCWD, path, &lexical) && lexical.volume == nullptr && !rt.HasInjectedFiles()) {
    struct stat st;
    if (RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(path), Arg(&st), 0) == 0 &&
        CertainlyOutside(rt, AT_FDCWD, path, 0, st)) {
      return kNotMine;
    }
  }
  // The kernel's descriptor is an O_PATH one (its close keeps the program's locks): the write
  // permission truncate(2) needs is asked for apart.
  if (long allowed = RawSyscall(SYS_faccessat2, AT_FDCWD, Arg(path), W_OK, AT_EACCESS); allowed != 0) return allowed;
  long fd = OpenAt(rt, AT_FDCWD, path, O_WRONLY | O_CLOEXEC, 0, /*for_runtime=*/true);
  if (fd == kNotMine) return kNotMine;
  if (fd < 0) return fd;
  long r = rt.fds().Has(static_cast<int>(fd)) ? FileTruncate(rt, static_cast<int>(fd), length)
                                               : RawSyscall(SYS_ftruncate, fd, length);
  long closed = CloseOpened(rt, fd);
  return r != 0 ? r : closed;
}

// Whether the directory at `path` (not followed) holds a volume: its root or a directory above.
bool HoldsVolume(const Runtime& rt, int dirfd, const char* path) {
  struct stat st;
  return RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
         rt.HoldsVolume(st.st_dev, st.st_ino);
}

long RenameAt(Runtime& rt, int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned flags) {
  if (oldpath == nullptr || newpath == nullptr) return kNotMine;
  if (rt.HasVolumes() && (HoldsVolume(rt, olddirfd, oldpath) ||
                          ((flags & RENAME_EXCHANGE) && HoldsVolume(rt, newdirfd, newpath)))) {
    return -EBUSY;
  }
  if (NameCertainlyOutside(rt, olddirfd, oldpath) && NameCertainlyOutside(rt, newdirfd, newpath)) return kNotMine;
  RuntimeSection section;
  Target from = rt.Locate(olddirfd, oldpath, false);
  Target to = rt.Locate(newdirfd, newpath, false);
  if (from.volume == nullptr && to.volume == nullptr) return kNotMine;
  if (from.metadata || to.metadata) return -EACCES;
  if (from.unavailable || to.unavailable) return -(from.unavailable ? from : to).UnavailableErrno();
  if (from.volume != to.volume) {
    // As between file systems: programs copy instead.
    return from.Protected() || to.Protected() ? -EXDEV : kNotMine;
  }
  if (flags & RENAME_EXCHANGE) return -EINVAL;
  struct stat st;
  if ((flags & RENAME_NOREPLACE) && RawLstat(to.absolute.c_str(), &st) == 0) return -EEXIST;
  fs::Volume* volume = from.volume->Get();
  if (volume == nullptr) return -from.UnavailableErrno();
  // A file the rename replaces loses its last name: what this process still buffers of it is
  // published first, as before an unlink (see UnlinkAt).
  if (auto replaced = volume->OpenedFile(to.path)) (void)replaced->Close();
  Status s = volume->Rename(from.path, to.path);
  if (s.ok()) from.volume->recent.ForgetUnlinked();  // a file it replaced
  return s.ok() ? 0 : FailWith(s);
}

void AfterRename(Runtime& rt, int newdirfd, const char* newpath) {
  struct stat st;
  if (RawSyscall(SYS_newfstatat, newdirfd, Arg(newpath), Arg(&st), AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
    return;
  }
  // A directory moved: recorded paths under it, the working directory among them, may be stale.
  rt.dirs().ForgetAll();
  RuntimeSection section;
  rt.WorkingDirectoryChanged();
}

void AfterChown(Runtime& rt, int dirfd, const char* path, uid_t uid, gid_t gid, int at_flags) {
  if (!rt.HasVolumes()) return;
  const bool by_descriptor = path == nullptr || (path[0] == '\0' && (at_flags & AT_EMPTY_PATH));
  // A shielded descriptor (a protected file, a console, a socket) is no directory: no fstat
  // (tar -x chowns every file it makes).
  if (by_descriptor && rt.fds().Has(dirfd)) return;
  struct stat st;
  const long r = by_descriptor
                     ? RawSyscall(SYS_fstat, dirfd, Arg(&st))
                     : RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), at_flags & AT_SYMLINK_NOFOLLOW);
  if (r != 0 || !S_ISDIR(st.st_mode)) return;
  RuntimeSection section;
  MountedVolume* mounted = rt.VolumeWithRoot(st.st_dev, st.st_ino);
  if (mounted == nullptr) return;
  Status s = fs::Volume::ChownMetadata(mounted->root, uid, gid);
  if (!s.ok()) Log("volume " + mounted->root + ": its metadata keeps its owner: " + s.message());
}

long AfterReadlink(Runtime& rt, int dirfd, const char* path, char* buf, size_t size, long n) {
  static constexpr char kTrash[] = "/.scone/trash/";
  if (n <= 0 || !rt.HasVolumes() || memmem(buf, static_cast<size_t>(n), kTrash, sizeof(kTrash) - 1) == nullptr) {
    return n;
  }
  LexicalPath lexical;
  if (!rt.LexicalLookup(dirfd, path, &lexical)) return n;
  const DescriptorLink link = ParseDescriptorLink(lexical.absolute);
  if (link.fd < 0 || (link.pid != 0 && link.pid != RawSyscall(SYS_getpid))) return n;
  RuntimeSection section;
  std::shared_ptr<ShieldedFd> d = rt.fds().Get(link.fd);
  ProtectedFd* p = d != nullptr ? d->AsProtectedFile() : nullptr;
  const std::string text = p != nullptr ? p->DeletedLinkText() : "";
  if (text.empty()) return n;
  const size_t copied = std::min(size, text.size());  // cut short as the kernel does, no NUL
  std::memcpy(buf, text.data(), copied);
  return static_cast<long>(copied);
}

long UnlinkAt(Runtime& rt, int dirfd, const char* path, int flags) {
  if (path == nullptr || (flags & AT_REMOVEDIR) || NameCertainlyOutside(rt, dirfd, path)) return kNotMine;
  RuntimeSection section;
  Target t = rt.Locate(dirfd, path, false);
  if (t.volume == nullptr) return kNotMine;
  if (t.metadata) return -ENOENT;
  if (t.unavailable) return -t.UnavailableErrno();
  if (t.region == fs::Region::kNotProtected) return kNotMine;
  fs::Volume* volume = t.volume->Get();
  if (volume == nullptr) return -t.volume->UnavailableErrno();
  // What this process wrote to the file and still buffers is published first: another process
  // that has it open reads it after the unlink (natively, from the page cache); once no name is
  // left, nothing carries it to them.
  if (auto open = volume->OpenedFile(t.path)) (void)open->Close();
  Status s = volume->Unlink(t.path);  // a link or a file the volume does not know as well
  if (s.ok()) t.volume->recent.ForgetUnlinked();
  return s.ok() ? 0 : FailWith(s);
}

long LinkAt(Runtime& rt, int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
  if (oldpath == nullptr || newpath == nullptr) return kNotMine;
  const bool follow = flags & AT_SYMLINK_FOLLOW;
  if (!follow && NameCertainlyOutside(rt, olddirfd, oldpath) && NameCertainlyOutside(rt, newdirfd, newpath)) {
    return kNotMine;
  }
  RuntimeSection section;
  Target from = (flags & AT_EMPTY_PATH) && oldpath[0] == '\0'
                    ? rt.Resolve(AT_FDCWD, ("/proc/self/fd/" + std::to_string(olddirfd)).c_str(), true)
                    : rt.Locate(olddirfd, oldpath, follow);
  Target to = rt.Locate(newdirfd, newpath, false);
  if (from.metadata || to.metadata) return -EACCES;
  if (!from.Protected() && !to.Protected()) return kNotMine;
  // Into or out of a volume, or between its regions, the name would serve the file in another
  // format (ciphertext as plaintext, or unprotected): as between file systems, programs copy.
  if (from.volume != to.volume || from.region != to.region) return -EXDEV;
  if (from.unavailable || to.unavailable) return -(from.unavailable ? from : to).UnavailableErrno();
  if (from.path.empty()) return -EPERM;  // the volume's root: a directory
  if (to.path.empty()) return -EEXIST;
  Status s = from.volume->Get()->Link(from.path, to.path);
  if (s.code() == Code::kNotFound) {
    // Not a protected file: directories, symbolic links, FIFOs are the kernel's business; a
    // regular file the volume does not know is reported as when it is opened.
    struct stat st;
    if (RawLstat(from.absolute.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      return FailWith(DataCorrupted(from.absolute + ": unknown file: not in the volume's metadata "
                                                    "(added behind the volume's back)"));
    }
    return kNotMine;
  }
  return s.ok() ? 0 : FailWith(s);
}

long SetTimes(Runtime& rt, int dirfd, const char* path, const struct timespec* times, int at_flags) {
  const bool by_descriptor = path == nullptr || (path[0] == '\0' && (at_flags & AT_EMPTY_PATH));
  if (by_descriptor && rt.fds().Has(dirfd)) {
    RuntimeSection section;
    if (auto d = Shielded(rt, dirfd); d != nullptr) {
      if (long c = d->CommitBeforeTimes(); c < 0) return c;
    }
  }
  long r = RawSyscall(SYS_utimensat, dirfd, Arg(path), Arg(times), at_flags);
  if (r != 0 || !rt.HasVolumes()) return r;
  const bool atime = times == nullptr || times[0].tv_nsec != UTIME_OMIT;
  const bool mtime = times == nullptr || times[1].tv_nsec != UTIME_OMIT;
  if (by_descriptor) {
    if (!rt.fds().Has(dirfd)) return 0;
    RuntimeSection section;
    auto d = Shielded(rt, dirfd);
    return d != nullptr ? d->KeepTimes(atime, mtime) : 0;
  }
  // By name: only a file this process holds open can have writes still to commit.
  LexicalPath lexical;
  const bool judged = rt.LexicalLookup(dirfd, path, &lexical);
  if (judged && lexical.volume == nullptr) {
    struct stat st;
    if (RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), at_flags & AT_SYMLINK_NOFOLLOW) != 0 ||
        CertainlyOutside(rt, dirfd, path, at_flags, st)) {
      return 0;
    }
  }
  RuntimeSection section;
  Target t = rt.Locate(dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW), judged ? &lexical : nullptr);
  if (!t.Protected() || t.unavailable) return 0;
  fs::Volume* volume = t.volume->IfOpen();
  auto file = volume != nullptr ? volume->OpenedFile(t.path) : nullptr;
  if (file == nullptr) return 0;
  Status s = file->KeepTimes(atime, mtime);
  return s.ok() ? 0 : FailWith(s);
}

long SetTimesOldStyle(Runtime& rt, int dirfd, const char* path, const void* given, bool whole_seconds) {
  if (given == nullptr) return SetTimes(rt, dirfd, path, nullptr, 0);
  struct timespec times[2];
  if (whole_seconds) {
    struct utimbuf b;
    if (ReadableBytes(given, sizeof(b)) != sizeof(b)) return -EFAULT;
    std::memcpy(&b, given, sizeof(b));
    times[0] = {b.actime, 0};
    times[1] = {b.modtime, 0};
  } else {
    struct timeval tv[2];
    if (ReadableBytes(given, sizeof(tv)) != sizeof(tv)) return -EFAULT;
    std::memcpy(tv, given, sizeof(tv));
    for (int i = 0; i < 2; ++i) {
      if (tv[i].tv_usec < 0 || tv[i].tv_usec >= 1'000'000) return -EINVAL;  // as the kernel's utimes
      times[i] = {tv[i].tv_sec, tv[i].tv_usec * 1000};
    }
  }
  return SetTimes(rt, dirfd, path, times, 0);
}

long ChangeDirectory(Runtime& rt, long nr, long arg) {
  long r = RawSyscall(nr, arg);
  if (r == 0 && nr == SYS_fchdir) {
    char path[DirectoryTable::kMaxPath];
    if (size_t n = rt.dirs().Get(static_cast<int>(arg), path, sizeof(path)); n != 0) {
      rt.WorkingDirectoryIs(path);
      return r;
    }
  }
  if (r == 0) {
    RuntimeSection section;
    rt.WorkingDirectoryChanged();
  }
  return r;
}

long GetDents64(Runtime& rt, int fd, void* buf, size_t size) {
  for (;;) {
    long n = RawSyscall(SYS_getdents64, fd, Arg(buf), static_cast<long>(size));
    if (n <= 0 || !rt.HasVolumes()) return n;
    // Only a listing that holds a `.scone` is looked at twice.
    auto* base = static_cast<char*>(buf);
    bool has_meta = false;
    for (long at = 0; at < n;) {
      auto* e = reinterpret_cast<struct dirent64*>(base + at);
      if (std::strcmp(e->d_name, fs::kMetaDirName) == 0) has_meta = true;
      at += e->d_reclen;
    }
    struct stat st;
    if (!has_meta || RawSyscall(SYS_fstat, fd, Arg(&st)) != 0 || !rt.IsVolumeRootDirectory(st.st_dev, st.st_ino)) {
      return n;
    }
    long out = 0;
    for (long at = 0; at < n;) {
      auto* e = reinterpret_cast<struct dirent64*>(base + at);
      unsigned short len = e->d_reclen;
      if (std::strcmp(e->d_name, fs::kMetaDirName) != 0) {
        if (out != at) std::memmove(base + out, base + at, len);
        out += len;
      }
      at += len;
    }
    if (out > 0) return out;  // else the batch held only `.scone`: read on
  }
}

// ---- shielded descriptors ------------------------------------------------------------------

long Close(Runtime& rt, int fd) {
  long committed = 0;
  {
    RuntimeSection section;
    auto d = rt.fds().Take(fd);
    if (d != nullptr && d.use_count() == 1) committed = d->LastClose();
  }
  long r = RawSyscall(SYS_close, fd);
  return committed != 0 ? committed : r;
}

long Read(Runtime& rt, int fd, void* buf, size_t count) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_read, fd, Arg(buf), static_cast<long>(count));
  if (!CutToProgramMemory(buf, &count, /*runtime_writes=*/true)) return -EFAULT;
  return d->Read(fd, buf, count);
}

long Write(Runtime& rt, int fd, const void* buf, size_t count) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_write, fd, Arg(buf), static_cast<long>(count));
  if (!CutToProgramMemory(buf, &count, /*runtime_writes=*/false)) return -EFAULT;
  return SignalPastLimit(d->Write(fd, buf, count));
}

long ReadAt(Runtime& rt, int fd, void* buf, size_t count, long offset) {
  if (offset < 0) return -EINVAL;
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_pread64, fd, Arg(buf), static_cast<long>(count), offset);
  if (!CutToProgramMemory(buf, &count, /*runtime_writes=*/true)) return -EFAULT;
  return d->ReadAt(buf, count, static_cast<uint64_t>(offset));
}

long WriteAt(Runtime& rt, int fd, const void* buf, size_t count, long offset) {
  if (offset < 0) return -EINVAL;
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return RawSyscall(SYS_pwrite64, fd, Arg(buf), static_cast<long>(count), offset);
  if (!CutToProgramMemory(buf, &count, /*runtime_writes=*/false)) return -EFAULT;
  return SignalPastLimit(d->WriteAt(buf, count, static_cast<uint64_t>(offset)));
}

// Scatter/gather through one bounce buffer: one shield call per vector.
long ReadVector(Runtime& rt, int fd, const struct iovec* given, int count, long offset) {
  if (count < 0 || count > IOV_MAX) return -EINVAL;
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return -EBADF;
  if (offset < -1) return -EINVAL;
  ProgramVectors vectors(given, count, /*runtime_writes=*/true);
  if (vectors.error() != 0) return vectors.error();
  const struct iovec* iov = vectors.data();
  count = vectors.count();
  auto read = [&](void* into, size_t size) {
    return offset == -1 ? d->Read(fd, into, size) : d->ReadAt(into, size, static_cast<uint64_t>(offset));
  };
  if (count == 1) return read(iov[0].iov_base, iov[0].iov_len);  // no bounce needed
  const size_t total = IovTotal(iov, count);
  auto buffer = std::make_unique_for_overwrite<uint8_t[]>(total);  // only what was read is copied out
  long n = read(buffer.get(), total);
  if (n <= 0) return n;
  size_t done = 0;
  for (int i = 0; i < count && done < static_cast<size_t>(n); ++i) {
    size_t part = std::min(iov[i].iov_len, static_cast<size_t>(n) - done);
    std::memcpy(iov[i].iov_base, buffer.get() + done, part);
    done += part;
  }
  return n;
}

long WriteVector(Runtime& rt, int fd, const struct iovec* given, int count, long offset) {
  if (count < 0 || count > IOV_MAX) return -EINVAL;
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d == nullptr) return -EBADF;
  ProgramVectors vectors(given, count, /*runtime_writes=*/false);
  if (vectors.error() != 0) return vectors.error();
  const struct iovec* iov = vectors.data();
  count = vectors.count();
  if (offset < -1) return -EINVAL;
  auto write = [&](const void* from, size_t size) {
    return SignalPastLimit(offset == -1 ? d->Write(fd, from, size) : d->WriteAt(from, size, static_cast<uint64_t>(offset)));
  };
  if (count == 1) return write(iov[0].iov_base, iov[0].iov_len);  // no bounce needed
  std::vector<uint8_t> buffer;
  buffer.reserve(IovTotal(iov, count));
  for (int i = 0; i < count; ++i) {
    auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    buffer.insert(buffer.end(), p, p + iov[i].iov_len);
  }
  return write(buffer.data(), buffer.size());
}

long WriteVectorFlags(Runtime& rt, int fd, const struct iovec* iov, int count, long offset, int flags) {
  if (flags & (RWF_APPEND | RWF_NOAPPEND)) {
    const long status = RawSyscall(SYS_fcntl, fd, F_GETFL);
    if (status < 0) return status;
    const bool appends = (status & O_APPEND) != 0;
    // Only where the flag changes nothing: an O_APPEND descriptor's RWF_APPEND, another's
    // RWF_NOAPPEND.
    if (((flags & RWF_APPEND) && !appends) || ((flags & RWF_NOAPPEND) && appends)) return -EOPNOTSUPP;
  }
  long written = WriteVector(rt, fd, iov, count, offset);
  if (written > 0 && (flags & (RWF_DSYNC | RWF_SYNC))) {
    if (long synced = Sync(rt, fd); synced < 0) return synced;
  }
  return written;
}

long Seek(Runtime& rt, int fd, long offset, int whence) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  return d ? d->Seek(fd, offset, whence) : RawSyscall(SYS_lseek, fd, offset, whence);
}

long FileStat(Runtime& rt, int fd, struct stat* st) {
  return StatOfDescriptor(rt, fd, st, [&] { return RawSyscall(SYS_fstat, fd, Arg(st)); });
}

long FileTruncate(Runtime& rt, int fd, long length) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  return d ? SignalPastLimit(d->Truncate(length)) : RawSyscall(SYS_ftruncate, fd, length);
}

long Allocate(Runtime& rt, int fd, int mode, long offset, long length) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  return d ? SignalPastLimit(d->Allocate(mode, offset, length)) : RawSyscall(SYS_fallocate, fd, mode, offset, length);
}

long Sync(Runtime& rt, int fd) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  return d ? d->Sync() : RawSyscall(SYS_fsync, fd);
}

long Map(Runtime& rt, void* addr, size_t length, int prot, int flags, int fd, long offset) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  return d ? d->Map(addr, length, prot, flags, offset)
           : RawSyscall6(SYS_mmap, Arg(addr), static_cast<long>(length), prot, flags, fd, offset);
}

long MemoryCall(Runtime&, long nr, const long* a) {
  RuntimeSection section;
  MappedFiles& mapped = MappedFiles::Get();
  switch (nr) {
    case SYS_munmap:
      return mapped.Unmap(a[0], a[1]);
    case SYS_msync:
      return mapped.Sync(a[0], a[1], static_cast<int>(a[2]));
    case SYS_mremap:
      return mapped.Remap(a[0], a[1], a[2], static_cast<int>(a[3]), a[4]);
    default:
      return mapped.Protect(a[0], a[1], static_cast<int>(a[2]));
  }
}

long Dup(Runtime& rt, long nr, int oldfd, int newfd, int flags) {
  long r = nr == SYS_dup ? RawSyscall(SYS_dup, oldfd) : RawSyscall(nr, oldfd, newfd, flags);
  if (r < 0) return r;
  if (nr != SYS_dup && r == oldfd) return r;  // dup2(fd, fd)
  rt.dirs().Copy(oldfd, static_cast<int>(r));
  if (!rt.fds().Has(oldfd) && !rt.fds().Has(static_cast<int>(r))) return r;
  RuntimeSection section;
  std::shared_ptr<ShieldedFd> replaced = rt.fds().Take(static_cast<int>(r));
  if (auto d = Shielded(rt, oldfd)) rt.fds().Set(static_cast<int>(r), d);
  ReleaseReplaced(std::move(replaced));
  return r;
}

namespace {
bool IsRecordLock(int cmd) {
  return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW ||
         cmd == F_OFD_GETLK;
}
}  // namespace

long Fcntl(Runtime& rt, int fd, int cmd, long arg) {
  RuntimeSection section;
  auto d = Shielded(rt, fd);
  if (d != nullptr && cmd == F_GETFL) {
    long kernel = RawSyscall(SYS_fcntl, fd, F_GETFL);
    return kernel < 0 ? kernel : d->StatusFlags(static_cast<int>(kernel));
  }
  if (d != nullptr && cmd == F_SETFL) return RawSyscall(SYS_fcntl, fd, F_SETFL, d->SetStatusFlags(static_cast<int>(arg)));
  if (d != nullptr && d->AsTlsSocket() == nullptr && IsRecordLock(cmd) && arg != 0) {
    // The kernel resolves SEEK_CUR and SEEK_END against its descriptor, the ciphertext's (its
    // position stays 0, its size is the ciphertext's): the range is made absolute in plaintext
    // first, so that every process of the volume locks the same bytes.
    auto* program = reinterpret_cast<struct flock*>(arg);
    struct flock lock = *program;
    if (lock.l_whence == SEEK_CUR || lock.l_whence == SEEK_END) {
      const int64_t from = lock.l_whence == SEEK_CUR ? d->Seek(fd, 0, SEEK_CUR) : static_cast<int64_t>(d->PlaintextSize());
      if (from < 0) return from;
      if (__builtin_add_overflow(static_cast<int64_t>(lock.l_start), from, &lock.l_start)) return -EOVERFLOW;
      lock.l_whence = SEEK_SET;
    }
    long r = RawSyscall(SYS_fcntl, fd, cmd, Arg(&lock));
    if (r == 0 && (cmd == F_GETLK || cmd == F_OFD_GETLK)) *program = lock;
    return r;
  }
  long r = RawSyscall(SYS_fcntl, fd, cmd, arg);
  if (d != nullptr && r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
    if (r >= FdTable::kMaxFds) {
      RawSyscall(SYS_close, r);
      return -EMFILE;
    }
    rt.fds().Set(static_cast<int>(r), d);
  }
  return r;
}

namespace {
// Moves the input's position back by `count` bytes it read but the copy did not write: false
// when it has none (a pipe or a socket).
bool GiveBack(Runtime& rt, int fd, size_t count) {
  const long back = -static_cast<long>(count);
  if (auto d = Shielded(rt, fd)) return d->Seek(fd, back, SEEK_CUR) >= 0;
  return RawSyscall(SYS_lseek, fd, back, SEEK_CUR) >= 0;
}

// A copy's write to the kernel's socket `fd` (the copy runs in a RuntimeSection, where a signal
// is held back): never a blocking write, which the kernel would restart after the signal and
// which would then wait with the signal held, past SIGTERM. The wait is a ppoll, which a signal
// ends (-EINTR). -ENOTSOCK: not a socket (the caller writes as for any descriptor).
long WriteToSocket(int fd, const void* buf, size_t count) {
  for (;;) {
    long w = RawSyscall6(SYS_sendto, fd, Arg(buf), static_cast<long>(count), MSG_DONTWAIT, 0, 0);
    if (w != -EAGAIN) return w;
    long flags = RawSyscall(SYS_fcntl, fd, F_GETFL);
    if (flags < 0 || (flags & O_NONBLOCK)) return -EAGAIN;
    // A signal held back already (it came during the send) would not end the wait.
    if (HeldSignals() != 0) return -EINTR;
    struct pollfd p = {fd, POLLOUT, 0};
    if (long r = RawSyscall(SYS_ppoll, Arg(&p), 1, 0, 0, 0); r < 0) return r;
  }
}

// A pipe or socket the runtime reads for a copy, with nothing in it: the wait is a ppoll, which a
// signal ends (-EINTR), never a blocking read in the section, which would wait with the signal
// held back (SIGTERM did not end a process waiting in splice). 0 once there is something to
// read, or when the descriptor does not block (its read says EAGAIN).
long WaitReadable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  const struct timespec now = {0, 0};
  if (RawSyscall(SYS_ppoll, Arg(&p), 1, Arg(&now), 0, 0) != 0) return 0;  // readable, or the read tells
  long flags = RawSyscall(SYS_fcntl, fd, F_GETFL);
  if (flags < 0 || (flags & O_NONBLOCK)) return 0;
  for (;;) {
    if (HeldSignals() != 0) return -EINTR;
    long r = RawSyscall(SYS_ppoll, Arg(&p), 1, 0, 0, 0);
    if (r != 0) return r < 0 ? r : 0;
  }
}

// One sendfile/splice/copy_file_range, in a section: the bytes copied, or -errno; with -EINTR,
// `*held` the signals that ended it.
long CopyOnce(Runtime& rt, int in_fd, long* in_offset, int out_fd, long* out_offset, size_t count, uint64_t* held) {
  RuntimeSection section;
  // Not zeroed: every byte written is one just read (a web server sends a file per request).
  // Small enough for the private heap to keep for the next call (memory/private_heap.h).
  const size_t buffer_size = std::min<size_t>(count, 128 << 10);
  auto buffer = std::make_unique_for_overwrite<uint8_t[]>(buffer_size);
  bool maybe_socket = out_offset == nullptr && Shielded(rt, out_fd) == nullptr;
  auto write_out = [&](const uint8_t* from, size_t size, long* at) {
    if (maybe_socket) {
      long w = WriteToSocket(out_fd, from, size);
      if (w != -ENOTSOCK) return w;
      maybe_socket = false;
    }
    return FdWrite(rt, out_fd, from, size, at);
  };
  const bool in_may_block = in_offset == nullptr && Shielded(rt, in_fd) == nullptr;
  size_t done = 0;
  while (done < count) {
    size_t want = std::min(buffer_size, count - done);
    if (in_may_block) {
      if (long w = WaitReadable(in_fd); w < 0) {
        if (w == -EINTR) *held = HeldSignals();
        return done > 0 ? static_cast<long>(done) : w;
      }
    }
    long n = FdRead(rt, in_fd, buffer.get(), want, in_offset);
    if (n < 0) return done > 0 ? static_cast<long>(done) : n;
    if (n == 0) break;
    size_t written = 0;
    while (written < static_cast<size_t>(n)) {
      long at = out_offset ? *out_offset + static_cast<long>(written) : 0;
      long w = write_out(buffer.get() + written, static_cast<size_t>(n) - written, out_offset ? &at : nullptr);
      if (w > 0) {
        written += static_cast<size_t>(w);
        // A signal arrived (held back until the section ends): the call ends with what it
        // copied, as the kernel's does.
        if (written == static_cast<size_t>(n) || HeldSignals() == 0) continue;
        w = -EINTR;
      }
      if (w == -EINTR) *held = HeldSignals();
      const bool stopped = w == -EAGAIN || w == -EINTR;
      if (stopped && !in_offset && !GiveBack(rt, in_fd, static_cast<size_t>(n) - written)) {
        // Read from a pipe or socket: those bytes cannot go back, so they go out once the
        // output takes them (natively splice never takes more than it delivers).
        if (long r = WaitWritable(out_fd); r < 0) w = r;
        else continue;
      }
      if (w <= 0) {
        // The call copied `written` bytes of this chunk: the offsets say so, as the kernel's would.
        if (in_offset) *in_offset += static_cast<long>(written);
        else if (written < static_cast<size_t>(n) && !stopped) GiveBack(rt, in_fd, static_cast<size_t>(n) - written);
        if (out_offset) *out_offset += static_cast<long>(written);
        size_t total = done + written;
        return total > 0 ? static_cast<long>(total) : (w < 0 ? w : -EIO);
      }
    }
    if (in_offset) *in_offset += n;
    if (out_offset) *out_offset += n;
    done += static_cast<size_t>(n);
    // A short read: the end of a file, or all a pipe holds now (splice returns with it natively,
    // where another read would wait for a writer).
    if (static_cast<size_t>(n) < want) break;
    if (HeldSignals() != 0) break;  // a signal: what was copied
  }
  return static_cast<long>(done);
}
}  // namespace

long Copy(Runtime& rt, int in_fd, long* in_offset, int out_fd, long* out_offset, size_t count) {
  // The offsets are read and written back by the runtime (a bad one faulted inside it).
  for (long* offset : {in_offset, out_offset}) {
    if (offset != nullptr && WritableBytes(offset, sizeof(*offset)) != sizeof(*offset)) return -EFAULT;
  }
  for (;;) {
    uint64_t held = 0;
    long r = CopyOnce(rt, in_fd, in_offset, out_fd, out_offset, count, &held);
    if (r == -EFBIG && rt.fds().Has(out_fd)) return SignalPastLimit(r);  // cp's copy_file_range
    // Interrupted before a byte was copied: the section's end ran the program's handlers. As
    // the kernel does, the call restarts after handlers installed with SA_RESTART.
    if (r != -EINTR || ThisThread().depth > 0 || !process::RestartsAfter(held)) return r;
  }
}

}  // namespace scone::runtime::files
