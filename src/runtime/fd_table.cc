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

namespace {

constexpr size_t kSlotsBytes = FdTable::kMaxFds * sizeof(std::atomic<ShieldedFd*>);
constexpr size_t kOwnBytes = FdTable::kMaxFds / 8;

}  // namespace

FdTable::FdTable() {
  // Zero pages: every slot empty, no descriptor the runtime's. Without them the runtime refuses
  // to start (ok()).
  void* p = mmap(nullptr, kSlotsBytes + kOwnBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    slots_ = nullptr;
    own_ = nullptr;
    return;
  }
  slots_ = static_cast<std::atomic<ShieldedFd*>*>(p);
  own_ = reinterpret_cast<std::atomic<uint64_t>*>(static_cast<char*>(p) + kSlotsBytes);
}

FdTable::~FdTable() {
  if (slots_ != nullptr) munmap(slots_, kSlotsBytes + kOwnBytes);
}

std::shared_ptr<ShieldedFd> FdTable::Get(int fd) const {
  if (!Has(fd)) return nullptr;
  Locked lock(mu_);
  auto it = owners_.find(fd);
  return it == owners_.end() ? nullptr : it->second;
}

void FdTable::Set(int fd, std::shared_ptr<ShieldedFd> d) {
  if (fd < 0 || fd >= kMaxFds) return;
  RuntimeSection section;                 // around the release below too
  std::shared_ptr<ShieldedFd> replaced;  // dropped after the lock: a last reference commits
  Locked lock(mu_);
  slots_[fd].store(d.get(), std::memory_order_release);
  auto it = owners_.find(fd);
  if (it != owners_.end()) {
    replaced = std::move(it->second);
    if (d) {
      it->second = std::move(d);
    } else {
      owners_.erase(it);
    }
  } else if (d) {
    owners_.emplace(fd, std::move(d));
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
  if (fd < 0 || fd >= kMaxFds) return;
  own_[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_acq_rel);
  int highest = highest_own_.load(std::memory_order_relaxed);
  while (fd > highest && !highest_own_.compare_exchange_weak(highest, fd, std::memory_order_acq_rel)) {
  }
}

void FdTable::UnmarkOwn(int fd) {
  if (fd < 0 || fd >= kMaxFds) return;
  own_[fd / 64].fetch_and(~(uint64_t{1} << (fd % 64)), std::memory_order_acq_rel);
}

std::vector<int> FdTable::OwnIn(unsigned first, unsigned last) const {
  std::vector<int> out;
  const int highest = highest_own_.load(std::memory_order_acquire);
  if (highest < 0) return out;
  last = std::min(last, static_cast<unsigned>(highest));
  for (unsigned fd = first; fd <= last;) {
    const uint64_t word = own_[fd / 64].load(std::memory_order_acquire) >> (fd % 64);
    if (word == 0) {
      fd = (fd / 64 + 1) * 64;  // the rest of this word is clear
      continue;
    }
    if (word & 1) out.push_back(static_cast<int>(fd));
    ++fd;
  }
  return out;
}

}  // namespace scone::runtime
