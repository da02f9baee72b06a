// stdio on protected files. glibc's fopen opens with its internal open, past the interposed
// one, so fopen itself is interposed: a protected path becomes a shielded descriptor wrapped in
// an fopencookie stream whose callbacks go through the shield. The stream's _fileno is set to
// the descriptor, so fileno(), fstat() and fcntl() on it keep working through the shield too.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

namespace scone::runtime {
namespace {

// fopen mode -> open flags, or -1.
int FlagsOf(const char* mode) {
  int flags;
  switch (mode[0]) {
    case 'r':
      flags = O_RDONLY;
      break;
    case 'w':
      flags = O_WRONLY | O_CREAT | O_TRUNC;
      break;
    case 'a':
      flags = O_WRONLY | O_CREAT | O_APPEND;
      break;
    default:
      return -1;
  }
  for (const char* m = mode + 1; *m; ++m) {
    if (*m == '+') flags = (flags & ~O_ACCMODE) | O_RDWR;
    if (*m == 'e') flags |= O_CLOEXEC;
    if (*m == 'x') flags |= O_EXCL;
  }
  return flags;
}

ssize_t CookieRead(void* cookie, char* buf, size_t size) {
  return ::read(static_cast<int>(reinterpret_cast<intptr_t>(cookie)), buf, size);
}

ssize_t CookieWrite(void* cookie, const char* buf, size_t size) {
  ssize_t n = ::write(static_cast<int>(reinterpret_cast<intptr_t>(cookie)), buf, size);
  return n < 0 ? 0 : n;  // fopencookie: 0 reports an error
}

int CookieSeek(void* cookie, off64_t* offset, int whence) {
  off_t r = ::lseek(static_cast<int>(reinterpret_cast<intptr_t>(cookie)), *offset, whence);
  if (r < 0) return -1;
  *offset = r;
  return 0;
}

int CookieClose(void* cookie) { return ::close(static_cast<int>(reinterpret_cast<intptr_t>(cookie))); }

FILE* StreamFor(int fd, const char* mode) {
  cookie_io_functions_t io = {CookieRead, CookieWrite, CookieSeek, CookieClose};
  FILE* f = fopencookie(reinterpret_cast<void*>(static_cast<intptr_t>(fd)), mode, io);
  if (f == nullptr) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return nullptr;
  }
  f->_fileno = fd;  // glibc's cookie streams never use it for I/O
  return f;
}

bool IsProtectedPath(const char* path) {
  Runtime* rt = ShieldFor(AT_FDCWD, path);
  if (rt == nullptr) return false;
  Target t = rt->Resolve(AT_FDCWD, path, true);
  return t.volume != nullptr && (t.metadata || t.region != fs::Region::kNotProtected);
}

FILE* OpenStream(const char* path, const char* mode) {
  int flags = FlagsOf(mode);
  if (flags < 0) {
    errno = EINVAL;
    return nullptr;
  }
  int fd = ::open(path, flags, 0666);
  if (fd < 0) return nullptr;
  Runtime* rt = ShieldIfReady();
  if (rt == nullptr || !rt->Get(fd)) {  // a directory or other object the kernel serves
    ::close(fd);
    return Real().fopen(path, mode);
  }
  return StreamFor(fd, mode);
}

}  // namespace
}  // namespace scone::runtime

using namespace scone::runtime;  // NOLINT

SCONE_EXPORT FILE* fopen(const char* path, const char* mode) {
  return IsProtectedPath(path) ? OpenStream(path, mode) : Real().fopen(path, mode);
}

SCONE_EXPORT FILE* fopen64(const char* path, const char* mode) { return fopen(path, mode); }

SCONE_EXPORT FILE* fdopen(int fd, const char* mode) {
  Runtime* rt = ShieldIfReady();
  if (rt != nullptr && rt->Get(fd)) return StreamFor(fd, mode);
  return Real().fdopen(fd, mode);
}

SCONE_EXPORT FILE* freopen(const char* path, const char* mode, FILE* stream) {
  if (path != nullptr && IsProtectedPath(path)) {
    // A stream cannot be turned into a cookie stream in place.
    Log(std::string("freopen of protected file ") + path + " is not supported");
    errno = ENOTSUP;
    return nullptr;
  }
  return Real().freopen(path, mode, stream);
}
SCONE_EXPORT FILE* freopen64(const char* path, const char* mode, FILE* stream) {
  return freopen(path, mode, stream);
}
