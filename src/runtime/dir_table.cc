#include "runtime/dir_table.h"

#include <sys/mman.h>

#include <cstring>

#include "runtime/entry/entry.h"

namespace scone::runtime {

DirectoryTable::DirectoryTable() {
  void* p = mmap(nullptr, kMaxFds * sizeof(Slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  slots_ = p == MAP_FAILED ? nullptr : static_cast<Slot*>(p);  // without it, nothing is recorded
}

DirectoryTable::~DirectoryTable() {
  if (slots_ != nullptr) munmap(slots_, kMaxFds * sizeof(Slot));
}

size_t DirectoryTable::Get(int fd, char* out, size_t out_size) const {
  if (!Recorded(fd)) return 0;
  const Slot& s = slots_[fd];
  for (int attempt = 0; attempt < 4; ++attempt) {
    uint32_t before = s.seq.load(std::memory_order_acquire);
    if (before & 1) continue;
    size_t length = s.length.load(std::memory_order_relaxed);
    if (length == 0 || length + 1 > out_size || s.generation != generation_.load(std::memory_order_acquire)) {
      return 0;
    }
    std::memcpy(out, s.path, length);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) == before) {
      out[length] = '\0';
      return length;
    }
  }
  return 0;  // written meanwhile: the long way
}

void DirectoryTable::Set(int fd, const char* absolute, size_t length) {
  if (slots_ == nullptr || fd < 0 || fd >= kMaxFds) return;
  if (length == 0 || length >= kMaxPath) {
    Forget(fd);
    return;
  }
  RuntimeSection section;  // no handler that needs the table interrupts its lock's holder
  std::lock_guard lock(write_mu_);
  Slot& s = slots_[fd];
  s.seq.fetch_add(1, std::memory_order_acq_rel);
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(s.path, absolute, length);
  s.generation = generation_.load(std::memory_order_acquire);
  s.length.store(static_cast<uint16_t>(length), std::memory_order_relaxed);
  s.seq.fetch_add(1, std::memory_order_release);
}

void DirectoryTable::Copy(int from, int to) {
  char path[kMaxPath];
  size_t length = Get(from, path, sizeof(path));
  if (length != 0) {
    Set(to, path, length);
  } else {
    Forget(to);
  }
}

void DirectoryTable::Clear(int fd) {
  RuntimeSection section;  // no handler that needs the table interrupts its lock's holder
  std::lock_guard lock(write_mu_);
  Slot& s = slots_[fd];
  s.seq.fetch_add(1, std::memory_order_acq_rel);
  s.length.store(0, std::memory_order_relaxed);
  s.seq.fetch_add(1, std::memory_order_release);
}

}  // namespace scone::runtime
