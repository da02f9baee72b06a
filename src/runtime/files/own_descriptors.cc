#include "runtime/files/own_descriptors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <algorithm>

#include "os/syscalls.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/fd_table.h"

namespace scone::runtime::files {
namespace {

constexpr rlim_t kRoom = 1 << 16;  // how far above the limit the runtime's descriptors may go

FdTable* own_table = nullptr;

// Moves `fd` out of the program's reach; returns its new number (or `fd` if it cannot move).
long PlaceOutOfReach(long fd) {
  struct rlimit limit;
  if (RawSyscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, Arg(&limit)) != 0) return fd;
  rlim_t target = limit.rlim_cur;
  bool widened = false;
  if (limit.rlim_cur < limit.rlim_max && limit.rlim_cur < static_cast<rlim_t>(FdTable::kMaxFds)) {
    struct rlimit wider = {std::min(limit.rlim_max, limit.rlim_cur + kRoom), limit.rlim_max};
    widened = RawSyscall(SYS_prlimit64, 0, RLIMIT_NOFILE, Arg(&wider), 0) == 0;
  }
  // Not widened (the hard limit is reached, as in containers that set both to 2^20): the top
  // quarter of the first thousand; higher would make the kernel's table for the process large.
  if (!widened) target = std::min<rlim_t>(limit.rlim_cur, 1024) * 3 / 4;
  long moved = fd >= static_cast<long>(target) ? -1 : RawSyscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, static_cast<long>(target));
  if (widened) RawSyscall(SYS_prlimit64, 0, RLIMIT_NOFILE, Arg(&limit), 0);
  if (moved < 0) return fd;
  RawSyscall(SYS_close, fd);
  return moved;
}

int OwnOpen(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(path), flags, mode);
  if (fd < 0) {
    errno = static_cast<int>(-fd);
    return -1;
  }
  fd = PlaceOutOfReach(fd);
  own_table->MarkOwn(static_cast<int>(fd));
  return static_cast<int>(fd);
}

int OwnClose(int fd) {
  own_table->UnmarkOwn(fd);
  long r = RawSyscall(SYS_close, fd);
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return 0;
}

}  // namespace

void InstallOwnDescriptors(FdTable& table) {
  own_table = &table;
  os::Syscalls calls = os::Sys();
  calls.open = OwnOpen;
  calls.close = OwnClose;
  os::InstallSyscalls(calls);
}

}  // namespace scone::runtime::files
