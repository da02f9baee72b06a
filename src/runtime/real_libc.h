// The C library's own functions, found once with dlsym(RTLD_NEXT): the shield calls these for
// every object it does not cover, and libscone's OS seam is pointed at them so the runtime's
// own I/O never re-enters the shield.
#pragma once

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace scone::runtime {

struct RealLibc {
  int (*open)(const char*, int, ...);
  int (*open64)(const char*, int, ...);
  int (*openat)(int, const char*, int, ...);
  int (*openat64)(int, const char*, int, ...);
  int (*close)(int);
  ssize_t (*read)(int, void*, size_t);
  ssize_t (*write)(int, const void*, size_t);
  ssize_t (*pread)(int, void*, size_t, off_t);
  ssize_t (*pwrite)(int, const void*, size_t, off_t);
  ssize_t (*readv)(int, const struct iovec*, int);
  ssize_t (*writev)(int, const struct iovec*, int);
  ssize_t (*preadv)(int, const struct iovec*, int, off_t);
  ssize_t (*pwritev)(int, const struct iovec*, int, off_t);
  ssize_t (*preadv2)(int, const struct iovec*, int, off_t, int);
  ssize_t (*pwritev2)(int, const struct iovec*, int, off_t, int);
  off_t (*lseek)(int, off_t, int);
  int (*fstat)(int, struct stat*);
  int (*stat)(const char*, struct stat*);
  int (*lstat)(const char*, struct stat*);
  int (*fstatat)(int, const char*, struct stat*, int);
  int (*statx)(int, const char*, int, unsigned int, struct statx*);
  int (*ftruncate)(int, off_t);
  int (*truncate)(const char*, off_t);
  int (*fsync)(int);
  int (*fdatasync)(int);
  int (*sync_file_range)(int, off_t, off_t, unsigned int);
  int (*dup)(int);
  int (*dup2)(int, int);
  int (*dup3)(int, int, int);
  int (*fcntl)(int, int, ...);
  int (*rename)(const char*, const char*);
  int (*renameat)(int, const char*, int, const char*);
  int (*renameat2)(int, const char*, int, const char*, unsigned int);
  int (*unlink)(const char*);
  int (*unlinkat)(int, const char*, int);
  int (*fallocate)(int, int, off_t, off_t);
  int (*posix_fallocate)(int, off_t, off_t);
  ssize_t (*sendfile)(int, int, off_t*, size_t);
  ssize_t (*copy_file_range)(int, off_t*, int, off_t*, size_t, unsigned int);
  ssize_t (*splice)(int, off_t*, int, off_t*, size_t, unsigned int);
  void* (*mmap)(void*, size_t, int, int, int, off_t);
  FILE* (*fopen)(const char*, const char*);
  FILE* (*fdopen)(int, const char*);
  FILE* (*freopen)(const char*, const char*, FILE*);
  int (*fclose)(FILE*);
  DIR* (*opendir)(const char*);
  DIR* (*fdopendir)(int);
  int (*closedir)(DIR*);
  int (*chdir)(const char*);
  int (*fchdir)(int);
  struct dirent* (*readdir)(DIR*);
  struct dirent64* (*readdir64)(DIR*);
  int (*mkdir)(const char*, mode_t);
  int (*flock)(int, int);
  int (*execve)(const char*, char* const[], char* const[]);
};

// Resolved on first use; safe to call from any thread and from within the dynamic loader's
// constructors.
const RealLibc& Real();

}  // namespace scone::runtime
