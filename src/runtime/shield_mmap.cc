// Mappings of protected files. The page cache holds ciphertext, so a mapping is emulated: a
// private or read-only mapping becomes anonymous memory filled with the plaintext. A shared
// writable mapping would need write-back through the shield and is refused with ENODEV.
#include <errno.h>
#include <sys/mman.h>

#include <algorithm>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

using namespace scone::runtime;  // NOLINT

SCONE_EXPORT void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  // Anonymous mappings (every allocator's) never touch the shield, not even its start-up.
  if ((flags & MAP_ANONYMOUS) || fd < 0) return Real().mmap(addr, length, prot, flags, fd, offset);
  Runtime* rt = ShieldIfReady();
  auto d = rt ? rt->Get(fd) : nullptr;
  if (!d) return Real().mmap(addr, length, prot, flags, fd, offset);
  if ((flags & MAP_SHARED) && (prot & PROT_WRITE)) {
    Log("shared writable mapping of protected file " + d->path + " refused");
    errno = ENODEV;
    return MAP_FAILED;
  }
  if (offset < 0 || length == 0) {
    errno = EINVAL;
    return MAP_FAILED;
  }
  int anon_flags = MAP_PRIVATE | MAP_ANONYMOUS | (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE));
  void* p = Real().mmap(addr, length, PROT_READ | PROT_WRITE, anon_flags, -1, 0);
  if (p == MAP_FAILED) return p;
  uint64_t size = d->file->size();
  if (static_cast<uint64_t>(offset) < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length, size - offset));
    auto n = d->file->Read(static_cast<uint64_t>(offset),
                           scone::MutableByteSpan(static_cast<uint8_t*>(p), want));
    if (!n.ok()) {
      munmap(p, length);
      Fail(n.status());
      return MAP_FAILED;
    }
  }
  if (prot != (PROT_READ | PROT_WRITE) && mprotect(p, length, prot) != 0) {
    int saved = errno;
    munmap(p, length);
    errno = saved;
    return MAP_FAILED;
  }
  return p;
}

SCONE_EXPORT void* mmap64(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  return mmap(addr, length, prot, flags, fd, offset);
}
