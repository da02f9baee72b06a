#include "runtime/real_libc.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>

namespace scone::runtime {
namespace {

template <typename F>
void Resolve(F*& slot, const char* name) {
  slot = reinterpret_cast<F*>(dlsym(RTLD_NEXT, name));
  if (slot == nullptr) {
    static const char kMsg[] = "scone: fatal: the C library lacks a function the runtime needs\n";
    (void)!::write(2, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
}

RealLibc ResolveAll() {
  RealLibc r;
#define SCONE_RESOLVE(name) Resolve(r.name, #name)
  SCONE_RESOLVE(open);
  SCONE_RESOLVE(open64);
  SCONE_RESOLVE(openat);
  SCONE_RESOLVE(openat64);
  SCONE_RESOLVE(close);
  SCONE_RESOLVE(read);
  SCONE_RESOLVE(write);
  SCONE_RESOLVE(pread);
  SCONE_RESOLVE(pwrite);
  SCONE_RESOLVE(readv);
  SCONE_RESOLVE(writev);
  SCONE_RESOLVE(preadv);
  SCONE_RESOLVE(pwritev);
  SCONE_RESOLVE(preadv2);
  SCONE_RESOLVE(pwritev2);
  SCONE_RESOLVE(lseek);
  SCONE_RESOLVE(fstat);
  SCONE_RESOLVE(stat);
  SCONE_RESOLVE(lstat);
  SCONE_RESOLVE(fstatat);
  SCONE_RESOLVE(statx);
  SCONE_RESOLVE(ftruncate);
  SCONE_RESOLVE(truncate);
  SCONE_RESOLVE(fsync);
  SCONE_RESOLVE(fdatasync);
  SCONE_RESOLVE(sync_file_range);
  SCONE_RESOLVE(dup);
  SCONE_RESOLVE(dup2);
  SCONE_RESOLVE(dup3);
  SCONE_RESOLVE(fcntl);
  SCONE_RESOLVE(rename);
  SCONE_RESOLVE(renameat);
  SCONE_RESOLVE(renameat2);
  SCONE_RESOLVE(unlink);
  SCONE_RESOLVE(unlinkat);
  SCONE_RESOLVE(fallocate);
  SCONE_RESOLVE(posix_fallocate);
  SCONE_RESOLVE(sendfile);
  SCONE_RESOLVE(copy_file_range);
  SCONE_RESOLVE(splice);
  SCONE_RESOLVE(mmap);
  SCONE_RESOLVE(fopen);
  SCONE_RESOLVE(fdopen);
  SCONE_RESOLVE(freopen);
  SCONE_RESOLVE(fclose);
  SCONE_RESOLVE(opendir);
  SCONE_RESOLVE(fdopendir);
  SCONE_RESOLVE(closedir);
  SCONE_RESOLVE(chdir);
  SCONE_RESOLVE(fchdir);
  SCONE_RESOLVE(readdir);
  SCONE_RESOLVE(readdir64);
  SCONE_RESOLVE(mkdir);
  SCONE_RESOLVE(flock);
  SCONE_RESOLVE(execve);
#undef SCONE_RESOLVE
  return r;
}

}  // namespace

const RealLibc& Real() {
  static const RealLibc real = ResolveAll();
  return real;
}

}  // namespace scone::runtime
