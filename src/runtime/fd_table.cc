#include "runtime/fd_table.h"

#include <sys/mman.h>

#include <algorithm>

#include "runtime/entry/entry.h"

namespace scone::runtime {
namespace {

// The table's lock, held in a runtime section: no handler that needs the table (a signal's
// commit, a program handler's close) interrupts its holder.
struct Locked {
  explicit Locked(std::mutex& mu) : lock(mu) {}
  RuntimeSection section;
  std::lock_guard<std::mutex> lock;
};

}  // namespace

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
  Locked lock(mu_);
  auto it = owners_.find(fd);
  return it == owners_.end() ? nullptr : it->second;
}

void FdTable::Set(int fd, std::shared_ptr<ShieldedFd> d) {
  if (fd < 0 || fd >= kMaxFds) return;
  Locked lock(mu_);
  slots_[fd].store(d.get(), std::memory_order_release);
  if (d) {
    owners_[fd] = std::move(d);
  } else {
    owners_.erase(fd);
  }
}

std::shared_ptr<ShieldedFd> FdTable::Take(int fd) {
  if (!Has(fd)) return nullptr;
  Locked lock(mu_);
  slots_[fd].store(nullptr, std::memory_order_release);
  auto it = owners_.find(fd);
  if (it == owners_.end()) return nullptr;
  auto d = std::move(it->second);
  owners_.erase(it);
  return d;
}

std::vector<std::pair<int, std::shared_ptr<ShieldedFd>>> FdTable::All() const {
  Locked lock(mu_);
  return {owners_.begin(), owners_.end()};
}

void FdTable::MarkOwn(int fd) {
  Locked lock(mu_);
  own_.insert(fd);
  lowest_own_.store(*own_.begin(), std::memory_order_release);
}

void FdTable::UnmarkOwn(int fd) {
  Locked lock(mu_);
  own_.erase(fd);
  lowest_own_.store(own_.empty() ? INT_MAX : *own_.begin(), std::memory_order_release);
}

bool FdTable::IsOwnSlow(int fd) const {
  Locked lock(mu_);
  return own_.count(fd) != 0;
}

std::vector<int> FdTable::OwnIn(unsigned first, unsigned last) const {
  Locked lock(mu_);
  std::vector<int> out;
  for (auto it = own_.lower_bound(static_cast<int>(std::min<unsigned>(first, INT_MAX)));
       it != own_.end() && static_cast<unsigned>(*it) <= last; ++it) {
    out.push_back(*it);
  }
  return out;
}

}  // namespace scone::runtime
