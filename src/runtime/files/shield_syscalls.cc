#include "runtime/files/shield_syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <climits>

#include "os/syscalls.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/fd_table.h"

namespace scone::runtime::files {
namespace {

constexpr rlim_t kRoom = 1 << 16;  // how far above the limit the runtime's descriptors may go

FdTable* own_table = nullptr;
// The lowest number the runtime's descriptors were last placed at: below it, the program's.
std::atomic<long> reach_floor{LONG_MAX};

// The process's limits as last read, asked of the kernel again once the program set one
// (LimitsChanged): every protected file the runtime opens or grows asks two of them.
std::atomic<uint64_t> limit_changes{1};
struct CachedLimit {
  std::atomic<uint64_t> seen{0};  // the limit_changes it was read at
  std::atomic<rlim_t> cur{0}, max{0};
};
CachedLimit cached_nofile, cached_fsize;

long GetLimit(int resource, struct rlimit* out) {
  CachedLimit* c = resource == RLIMIT_NOFILE ? &cached_nofile : resource == RLIMIT_FSIZE ? &cached_fsize : nullptr;
  if (c == nullptr) return RawSyscall(SYS_prlimit64, 0, resource, 0, Arg(out));
  const uint64_t changes = limit_changes.load(std::memory_order_acquire);
  if (c->seen.load(std::memory_order_acquire) == changes) {
    out->rlim_cur = c->cur.load(std::memory_order_relaxed);
    out->rlim_max = c->max.load(std::memory_order_relaxed);
    return 0;
  }
  long r = RawSyscall(SYS_prlimit64, 0, resource, 0, Arg(out));
  if (r != 0) return r;
  c->cur.store(out->rlim_cur, std::memory_order_relaxed);
  c->max.store(out->rlim_max, std::memory_order_relaxed);
  c->seen.store(changes, std::memory_order_release);
  return 0;
}

// Moves `fd` out of the program's reach; returns its new number (or `fd` if it cannot move).
long PlaceOutOfReach(long fd) {
  struct rlimit limit;
  if (GetLimit(RLIMIT_NOFILE, &limit) != 0) return fd;
  rlim_t target = limit.rlim_cur;
  bool widened = false;
  if (limit.rlim_cur < limit.rlim_max && limit.rlim_cur < static_cast<rlim_t>(FdTable::kMaxFds)) {
    struct rlimit wider = {std::min(limit.rlim_max, limit.rlim_cur + kRoom), limit.rlim_max};
    widened = RawSyscall(SYS_prlimit64, 0, RLIMIT_NOFILE, Arg(&wider), 0) == 0;
  }
  // Not widened (the hard limit is reached, as in containers that set both to 2^20): the top
  // quarter of the first thousand; higher would make the kernel's table for the process large.
  if (!widened) target = std::min<rlim_t>(limit.rlim_cur, 1024) * 3 / 4;
  reach_floor.store(static_cast<long>(target), std::memory_order_relaxed);
  long moved = fd >= static_cast<long>(target) ? -1 : RawSyscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, static_cast<long>(target));
  if (widened) RawSyscall(SYS_prlimit64, 0, RLIMIT_NOFILE, Arg(&limit), 0);
  if (moved < 0) return fd;
  RawSyscall(SYS_close, fd);
  return moved;
}

// The C library's convention, from the kernel's.
long Result(long r) {
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

int OwnOpen(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  long fd = Result(RawSyscall(SYS_openat, AT_FDCWD, Arg(path), flags, mode));
  if (fd < 0) return -1;
  fd = PlaceOutOfReach(fd);
  own_table->MarkOwn(static_cast<int>(fd));
  return static_cast<int>(fd);
}

int OwnClose(int fd) {
  own_table->UnmarkOwn(fd);
  return static_cast<int>(Result(RawSyscall(SYS_close, fd)));
}

ssize_t Pread(int fd, void* buf, size_t n, off_t at) { return Result(RawSyscall(SYS_pread64, fd, Arg(buf), Arg(n), at)); }
// A call that may lengthen one of the runtime's files. Past the program's file-size limit the
// kernel fails it with EFBIG and signals SIGXFSZ, as for the program's own write, which would end
// a program that wrote nothing large: the caller reports EFBIG, and the signal is dropped
// (HoldBack) or, pending behind a mask (the SIGSYS handler's, a fork's preparation), taken here.
// With a finite limit the signal is blocked around the write: before the runtime's handlers are
// in place (a volume recovered at start-up), the kernel's SIG_DFL would end the process at once.
template <typename Call>
long OwnWrite(Call call) {
  const uint64_t xfsz = uint64_t{1} << (SIGXFSZ - 1);
  const bool limited = os::FileSizeLimit().has_value();
  uint64_t mask = 0;
  if (limited) RawSyscall(SYS_rt_sigprocmask, SIG_BLOCK, Arg(&xfsz), Arg(&mask), sizeof(uint64_t));
  EntryThread& t = ThisThread();
  t.own_write = true;
  const long r = call();
  t.own_write = false;
  if (r == -EFBIG) {
    const struct timespec now = {0, 0};
    RawSyscall(SYS_rt_sigtimedwait, Arg(&xfsz), 0, Arg(&now), sizeof(uint64_t));
  }
  if (limited) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&mask), 0, sizeof(uint64_t));
  return r;
}

ssize_t Pwrite(int fd, const void* buf, size_t n, off_t at) {
  return Result(OwnWrite([&] { return RawSyscall(SYS_pwrite64, fd, Arg(buf), Arg(n), at); }));
}
ssize_t Pwritev(int fd, const struct iovec* iov, int count, off_t at) {
  return Result(OwnWrite([&] { return RawSyscall(SYS_pwritev, fd, Arg(iov), count, at, 0); }));
}
int Fsync(int fd) { return static_cast<int>(Result(RawSyscall(SYS_fsync, fd))); }
int Fdatasync(int fd) { return static_cast<int>(Result(RawSyscall(SYS_fdatasync, fd))); }
int Ftruncate(int fd, off_t length) {
  return static_cast<int>(Result(OwnWrite([&] { return RawSyscall(SYS_ftruncate, fd, length); })));
}
int Fstat(int fd, struct stat* st) { return static_cast<int>(Result(RawSyscall(SYS_fstat, fd, Arg(st)))); }
int Statx(int dirfd, const char* path, int flags, unsigned int mask, struct statx* out) {
  return static_cast<int>(Result(RawSyscall(SYS_statx, dirfd, Arg(path), flags, mask, Arg(out))));
}
int Futimens(int fd, const struct timespec times[2]) {
  return static_cast<int>(Result(RawSyscall(SYS_utimensat, fd, 0, Arg(times), 0)));
}
int Lstat(const char* path, struct stat* st) {
  return static_cast<int>(Result(RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(path), Arg(st), AT_SYMLINK_NOFOLLOW)));
}
int Rename(const char* from, const char* to) {
  return static_cast<int>(Result(RawSyscall(SYS_renameat, AT_FDCWD, Arg(from), AT_FDCWD, Arg(to))));
}
int Exchange(const char* a, const char* b) {
  return static_cast<int>(Result(RawSyscall(SYS_renameat2, AT_FDCWD, Arg(a), AT_FDCWD, Arg(b), RENAME_EXCHANGE)));
}
int Fstatfs(int fd, struct statfs* st) { return static_cast<int>(Result(RawSyscall(SYS_fstatfs, fd, Arg(st)))); }
int Unlink(const char* path) { return static_cast<int>(Result(RawSyscall(SYS_unlinkat, AT_FDCWD, Arg(path), 0))); }
int Link(const char* from, const char* to) {
  return static_cast<int>(Result(RawSyscall(SYS_linkat, AT_FDCWD, Arg(from), AT_FDCWD, Arg(to), 0)));
}
int Mkdir(const char* path, mode_t mode) { return static_cast<int>(Result(RawSyscall(SYS_mkdirat, AT_FDCWD, Arg(path), mode))); }
int Flock(int fd, int operation) { return static_cast<int>(Result(RawSyscall(SYS_flock, fd, operation))); }
int Fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);  // every command the shield uses takes one argument or none
  va_end(ap);
  return static_cast<int>(Result(RawSyscall(SYS_fcntl, fd, cmd, arg)));
}

int Fallocate(int fd, int mode, off_t offset, off_t length) {
  return static_cast<int>(Result(OwnWrite([&] { return RawSyscall(SYS_fallocate, fd, mode, offset, length); })));
}

int GetRlimit(int resource, struct rlimit* limit) { return static_cast<int>(Result(GetLimit(resource, limit))); }

}  // namespace

void LimitsChanged() { limit_changes.fetch_add(1, std::memory_order_acq_rel); }

bool InProgramsReach(int fd) { return fd < reach_floor.load(std::memory_order_relaxed); }

int KeepOwn(int fd) {
  fd = static_cast<int>(PlaceOutOfReach(fd));
  own_table->MarkOwn(fd);
  return fd;
}

void CloseOwn(int fd) {
  if (fd < 0) return;
  own_table->UnmarkOwn(fd);
  RawSyscall(SYS_close, fd);
}

void InstallShieldSyscalls(FdTable& table) {
  own_table = &table;
  os::Syscalls calls = os::LibcSyscalls();  // a call added to the seam later works at least
  calls.open = OwnOpen;
  calls.close = OwnClose;
  calls.pread = Pread;
  calls.pwrite = Pwrite;
  calls.pwritev = Pwritev;
  calls.fsync = Fsync;
  calls.fdatasync = Fdatasync;
  calls.ftruncate = Ftruncate;
  calls.fstat = Fstat;
  calls.statx = Statx;
  calls.futimens = Futimens;
  calls.lstat = Lstat;
  calls.rename = Rename;
  calls.exchange = Exchange;
  calls.unlink = Unlink;
  calls.link = Link;
  calls.mkdir = Mkdir;
  calls.flock = Flock;
  calls.fcntl = Fcntl;
  calls.fallocate = Fallocate;
  calls.fstatfs = Fstatfs;
  calls.getrlimit = GetRlimit;
  os::InstallSyscalls(calls);
}

}  // namespace scone::runtime::files
