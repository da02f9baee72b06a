#include "runtime/fd_table.h"

#include <sys/mman.h>

namespace scone::runtime {

FdTable::FdTable() {
  void* p = mmap(nullptr, kMaxFds * sizeof(slots_[0]), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  // Zero pages: every slot empty. Without them the runtime refuses to start (ok()).
  slots_ = p == MAP_FAILED ? nullptr : static_cast<std::atomic<ShieldedFd*>*>(p);
}

FdTable::~FdTable() {
  if (slots_ != nullptr) munmap(slots_, kMaxFds * sizeof(slots_[0]));
}

std::shared_ptr<ShieldedFd> FdTable::Get(int fd) const {
  if (!Has(fd)) return nullptr;
  std::lock_guard lock(mu_);
  auto it = owners_.find(fd);
  return it == owners_.end() ? nullptr : it->second;
}

void FdTable::Set(int fd, std::shared_ptr<ShieldedFd> d) {
  if (fd < 0 || fd >= kMaxFds) return;
  std::lock_guard lock(mu_);
  slots_[fd].store(d.get(), std::memory_order_release);
  if (d) {
    owners_[fd] = std::move(d);
  } else {
    owners_.erase(fd);
  }
}

std::shared_ptr<ShieldedFd> FdTable::Take(int fd) {
  if (!Has(fd)) return nullptr;
  std::lock_guard lock(mu_);
  slots_[fd].store(nullptr, std::memory_order_release);
  auto it = owners_.find(fd);
  if (it == owners_.end()) return nullptr;
  auto d = std::move(it->second);
  owners_.erase(it);
  return d;
}

std::vector<std::pair<int, std::shared_ptr<ShieldedFd>>> FdTable::All() const {
  std::lock_guard lock(mu_);
  return {owners_.begin(), owners_.end()};
}

}  // namespace scone::runtime
