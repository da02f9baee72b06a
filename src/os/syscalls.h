// The one seam between libscone and the operating system.
//
// Every file-system call libscone makes goes through this table. Programs linking libscone get
// the C library's functions; the runtime, which interposes those same functions, installs the
// next definitions (dlsym(RTLD_NEXT)) so its own I/O never recurses into the shield; tests
// install wrappers to inject faults (short reads, EINTR, ENOSPC, EIO).
#pragma once

#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <optional>

namespace scone::os {

struct Syscalls {
  int (*open)(const char* path, int flags, ...);
  int (*close)(int fd);
  ssize_t (*pread)(int fd, void* buf, size_t count, off_t offset);
  ssize_t (*pwrite)(int fd, const void* buf, size_t count, off_t offset);
  ssize_t (*pwritev)(int fd, const struct iovec* iov, int iovcnt, off_t offset);
  int (*fsync)(int fd);
  int (*fdatasync)(int fd);
  int (*ftruncate)(int fd, off_t length);
  int (*fstat)(int fd, struct stat* st);
  // statx(2): asks for `mask` alone (see File::Size for why that matters).
  int (*statx)(int dirfd, const char* path, int flags, unsigned int mask, struct statx* out);
  int (*futimens)(int fd, const struct timespec times[2]);
  int (*lstat)(const char* path, struct stat* st);
  int (*rename)(const char* from, const char* to);
  // renameat2(RENAME_EXCHANGE): swaps two names atomically (EINVAL where the file system cannot).
  int (*exchange)(const char* a, const char* b);
  int (*unlink)(const char* path);
  int (*link)(const char* from, const char* to);
  int (*mkdir)(const char* path, mode_t mode);
  int (*flock)(int fd, int operation);
  int (*fcntl)(int fd, int cmd, ...);
  int (*fallocate)(int fd, int mode, off_t offset, off_t length);
  int (*fstatfs)(int fd, struct statfs* st);
  int (*getrlimit)(int resource, struct rlimit* limit);
};

// The program's file-size limit (RLIMIT_FSIZE's soft value, through the table), which binds the
// runtime's own writes too; nullopt when there is none.
std::optional<uint64_t> FileSizeLimit();

// The table in use. Thread-safety: read freely; replace only while no other thread uses libscone
// (at start-up, or in a test's set-up).
const Syscalls& Sys();
void InstallSyscalls(const Syscalls& table);
// The C library's own functions.
Syscalls LibcSyscalls();

}  // namespace scone::os
