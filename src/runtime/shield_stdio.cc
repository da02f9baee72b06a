// stdio on protected files. glibc's fopen opens with its internal open, past the interposed
// one, so fopen itself is interposed: a protected path becomes a shielded descriptor wrapped in
// an fopencookie stream whose callbacks go through the shield. The stream's _fileno is set to
// the descriptor, so fileno(), fstat() and fcntl() on it keep working through the shield too.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>
#include <vector>

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

// A shielded stream's cookie: the descriptor it reads and writes, which freopen may replace.
// The registry maps each such stream to its cookie; the cookie's close removes it, so a FILE*
// reused later for another stream is never taken for one of ours.
struct StreamCookie {
  int fd;
  FILE* stream;
};
std::mutex cookies_mu;
std::unordered_map<FILE*, StreamCookie*>& Cookies() {
  static auto* cookies = new std::unordered_map<FILE*, StreamCookie*>();  // never destroyed
  return *cookies;
}

StreamCookie* CookieOf(FILE* stream) {
  std::lock_guard lock(cookies_mu);
  auto it = Cookies().find(stream);
  return it == Cookies().end() ? nullptr : it->second;
}

ssize_t CookieRead(void* cookie, char* buf, size_t size) {
  return ::read(static_cast<StreamCookie*>(cookie)->fd, buf, size);
}

ssize_t CookieWrite(void* cookie, const char* buf, size_t size) {
  ssize_t n = ::write(static_cast<StreamCookie*>(cookie)->fd, buf, size);
  return n < 0 ? 0 : n;  // fopencookie: 0 reports an error
}

int CookieSeek(void* cookie, off64_t* offset, int whence) {
  off_t r = ::lseek(static_cast<StreamCookie*>(cookie)->fd, *offset, whence);
  if (r < 0) return -1;
  *offset = r;
  return 0;
}

int CookieClose(void* cookie) {
  auto* c = static_cast<StreamCookie*>(cookie);
  {
    std::lock_guard lock(cookies_mu);
    Cookies().erase(c->stream);
  }
  int r = ::close(c->fd);
  delete c;
  return r;
}

FILE* StreamFor(int fd, const char* mode) {
  cookie_io_functions_t io = {CookieRead, CookieWrite, CookieSeek, CookieClose};
  auto* cookie = new StreamCookie{fd, nullptr};
  FILE* f = fopencookie(cookie, mode, io);
  if (f == nullptr) {
    int saved = errno;
    ::close(fd);
    delete cookie;
    errno = saved;
    return nullptr;
  }
  f->_fileno = fd;  // glibc's cookie streams never use it for I/O
  cookie->stream = f;
  std::lock_guard lock(cookies_mu);
  Cookies()[f] = cookie;
  return f;
}

// freopen of one of our streams: the same FILE (the program keeps using its pointer) on a new
// descriptor, protected or not; the cookie simply points at it. glibc's own freopen cannot
// reopen a cookie stream.
FILE* ReopenCookieStream(StreamCookie* cookie, const char* path, const char* mode, FILE* stream) {
  int flags = FlagsOf(mode);
  fflush(stream);
  int fd;
  if (path == nullptr) {  // same file, new mode: the kernel's own rule is "as by open of the file"
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", cookie->fd);
    fd = flags < 0 ? -1 : ::open(self, flags, 0666);
  } else {
    fd = flags < 0 ? -1 : ::open(path, flags, 0666);
  }
  if (flags < 0) errno = EINVAL;
  if (fd < 0) {  // as glibc: a failed freopen closes the stream
    int saved = errno;
    fclose(stream);
    errno = saved;
    return nullptr;
  }
  int old = cookie->fd;
  cookie->fd = fd;
  stream->_fileno = fd;
  (void)::close(old);  // commits the old file if this was its last descriptor
  // Read and write permissions of the stream follow the new mode (glibc's _IO_NO_READS and
  // _IO_NO_WRITES, stable since libio).
  constexpr int kNoReads = 0x0004, kNoWrites = 0x0008;
  stream->_flags &= ~(kNoReads | kNoWrites);
  if ((flags & O_ACCMODE) == O_RDONLY) stream->_flags |= kNoWrites;
  if ((flags & O_ACCMODE) == O_WRONLY) stream->_flags |= kNoReads;
  clearerr(stream);
  fseeko(stream, 0, (flags & O_APPEND) ? SEEK_END : SEEK_SET);
  return stream;
}

bool IsProtectedPath(const char* path) {
  Runtime* rt = ShieldFor(AT_FDCWD, path);
  if (rt == nullptr) return false;
  Target t = rt->Locate(AT_FDCWD, path, true);
  return t.volume != nullptr && (t.metadata || t.region != fs::Region::kNotProtected);
}

// freopen of a protected path. An existing stream (stdin, stdout) cannot become a cookie stream
// in place, so it is reopened on an anonymous in-memory file (memfd) holding the plaintext;
// a writable one is written back through the shield when it is closed, and at exit.
struct Reopened {
  int shielded_fd;
  int memfd;
};
std::mutex reopened_mu;
std::unordered_map<FILE*, Reopened>& ReopenedStreams() {
  static auto* streams = new std::unordered_map<FILE*, Reopened>();  // never destroyed
  return *streams;
}

int WriteBack(FILE* stream, const Reopened& r) {
  fflush(stream);
  std::vector<uint8_t> buffer(1 << 16);
  if (::ftruncate(r.shielded_fd, 0) != 0) return -1;
  for (off_t at = 0;;) {
    ssize_t n = Real().pread(r.memfd, buffer.data(), buffer.size(), at);
    if (n < 0) return -1;
    if (n == 0) break;
    if (::pwrite(r.shielded_fd, buffer.data(), static_cast<size_t>(n), at) != n) return -1;
    at += n;
  }
  return ::fsync(r.shielded_fd);
}

FILE* ReopenProtected(const char* path, const char* mode, FILE* stream) {
  int flags = FlagsOf(mode);
  if (flags < 0) {
    errno = EINVAL;
    return nullptr;
  }
  // Read access too: the current plaintext goes into memory first.
  int open_flags = (flags & ~(O_APPEND | O_ACCMODE)) |
                   ((flags & O_ACCMODE) == O_RDONLY ? O_RDONLY : O_RDWR);
  int fd = ::open(path, open_flags, 0666);
  if (fd < 0) return nullptr;
  int memfd = memfd_create("scone-freopen", MFD_CLOEXEC);
  if (memfd < 0) {
    ::close(fd);
    return nullptr;
  }
  // Plaintext into memory: all of it unless the mode truncates.
  if (!(flags & O_TRUNC)) {
    std::vector<uint8_t> buffer(1 << 16);
    for (off_t at = 0;;) {
      ssize_t n = ::pread(fd, buffer.data(), buffer.size(), at);
      if (n < 0) {
        int saved = errno;
        ::close(fd);
        Real().close(memfd);
        errno = saved;
        return nullptr;
      }
      if (n == 0) break;
      (void)!Real().pwrite(memfd, buffer.data(), static_cast<size_t>(n), at);
      at += n;
    }
  }
  std::string memfd_path = "/proc/self/fd/" + std::to_string(memfd);
  std::string real_mode;
  for (const char* m = mode; *m; ++m) {
    if (*m != 'x') real_mode.push_back(*m == 'w' ? 'r' : *m);  // 'w' would truncate: the memfd holds it
  }
  if ((flags & O_ACCMODE) != O_RDONLY && real_mode.find('+') == std::string::npos &&
      real_mode[0] == 'r') {
    real_mode = "r+";
  }
  FILE* f = Real().freopen(memfd_path.c_str(), real_mode.c_str(), stream);
  if (f == nullptr) {
    int saved = errno;
    ::close(fd);
    Real().close(memfd);
    errno = saved;
    return nullptr;
  }
  if ((flags & O_ACCMODE) == O_RDONLY) {
    ::close(fd);
    Real().close(memfd);
    return f;
  }
  if (flags & O_APPEND) fseek(f, 0, SEEK_END);
  std::lock_guard lock(reopened_mu);
  ReopenedStreams()[f] = {fd, memfd};
  return f;
}

}  // namespace

void WriteBackReopenedStreams() {
  std::lock_guard lock(reopened_mu);
  for (auto& [stream, r] : ReopenedStreams()) {
    if (WriteBack(stream, r) != 0) Log("writing back a reopened protected stream failed");
  }
}

}  // namespace scone::runtime

using namespace scone::runtime;  // NOLINT

SCONE_EXPORT FILE* fopen(const char* path, const char* mode) {
  int flags = mode == nullptr ? -1 : FlagsOf(mode);
  if (flags < 0 || ShieldFor(AT_FDCWD, path) == nullptr) return Real().fopen(path, mode);
  // One open decides: a shielded descriptor becomes a cookie stream, any other a plain stream.
  int fd = ShieldedOpen(AT_FDCWD, path, flags, 0666);
  if (fd == -2) return Real().fopen(path, mode);
  if (fd < 0) return nullptr;
  Runtime* rt = ShieldIfReady();
  if (rt != nullptr && rt->Get(fd)) return StreamFor(fd, mode);
  FILE* f = Real().fdopen(fd, mode);
  if (f == nullptr) {
    int saved = errno;
    Real().close(fd);
    errno = saved;
  }
  return f;
}

SCONE_EXPORT FILE* fopen64(const char* path, const char* mode) { return fopen(path, mode); }

SCONE_EXPORT FILE* fdopen(int fd, const char* mode) {
  Runtime* rt = ShieldIfReady();
  if (rt != nullptr && rt->Get(fd)) return StreamFor(fd, mode);
  return Real().fdopen(fd, mode);
}

SCONE_EXPORT FILE* freopen(const char* path, const char* mode, FILE* stream) {
  if (StreamCookie* cookie = CookieOf(stream)) return ReopenCookieStream(cookie, path, mode, stream);
  if (path != nullptr && IsProtectedPath(path)) return ReopenProtected(path, mode, stream);
  return Real().freopen(path, mode, stream);
}
SCONE_EXPORT int fclose(FILE* stream) {
  Reopened r{-1, -1};
  {
    std::lock_guard lock(reopened_mu);
    auto it = ReopenedStreams().find(stream);
    if (it != ReopenedStreams().end()) {
      r = it->second;
      ReopenedStreams().erase(it);
    }
  }
  if (r.shielded_fd < 0) return Real().fclose(stream);
  int wrote = WriteBack(stream, r);
  int closed = Real().fclose(stream);
  int close_fd = ::close(r.shielded_fd);
  Real().close(r.memfd);
  return wrote != 0 || closed != 0 || close_fd != 0 ? EOF : 0;
}

SCONE_EXPORT FILE* freopen64(const char* path, const char* mode, FILE* stream) {
  return freopen(path, mode, stream);
}
