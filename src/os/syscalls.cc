#include "os/syscalls.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>

namespace scone::os {
namespace {

Syscalls& Table() {
  static Syscalls table = LibcSyscalls();
  return table;
}

}  // namespace

Syscalls LibcSyscalls() {
  Syscalls s;
  s.open = ::open;
  s.close = ::close;
  s.pread = ::pread;
  s.pwrite = ::pwrite;
  s.pwritev = ::pwritev;
  s.fsync = ::fsync;
  s.fdatasync = ::fdatasync;
  s.ftruncate = ::ftruncate;
  s.fstat = ::fstat;
  s.statx = ::statx;
  s.futimens = ::futimens;
  s.lstat = ::lstat;
  s.rename = ::rename;
  s.exchange = [](const char* a, const char* b) { return ::renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE); };
  s.unlink = ::unlink;
  s.link = ::link;
  s.mkdir = ::mkdir;
  s.flock = ::flock;
  s.fcntl = ::fcntl;
  s.fallocate = ::fallocate;
  s.fstatfs = ::fstatfs;
  s.getrlimit = [](int resource, struct rlimit* limit) { return ::getrlimit(static_cast<__rlimit_resource>(resource), limit); };
  return s;
}

const Syscalls& Sys() { return Table(); }

std::optional<uint64_t> FileSizeLimit() {
  struct rlimit limit;
  if (Sys().getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return std::nullopt;
  return limit.rlim_cur;
}
void InstallSyscalls(const Syscalls& table) { Table() = table; }

}  // namespace scone::os
