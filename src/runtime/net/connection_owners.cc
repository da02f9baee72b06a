#include "runtime/net/connection_owners.h"

#include <sys/mman.h>
#include <sys/syscall.h>

#include <mutex>
#include <vector>

#include "runtime/entry/raw_syscall.h"

namespace scone::runtime::sockets {
namespace {

constexpr size_t kPageSize = 4096;
constexpr size_t kSlotsPerPage = kPageSize / sizeof(OwnerSlot);

// The pages this process maps (its parent's among them); a page mapped after a fork is shared
// only with the children forked after it. A slot is taken by turning its holders from 0 to 1,
// so processes sharing a page never take one slot twice.
std::mutex pages_mu;
std::vector<OwnerSlot*>& Pages() {
  static auto* pages = new std::vector<OwnerSlot*>();  // never destroyed: used until exit
  return *pages;
}

OwnerSlot* TakeFreeSlot(OwnerSlot* page) {
  for (size_t i = 0; i < kSlotsPerPage; ++i) {
    int32_t free = 0;
    if (page[i].holders.compare_exchange_strong(free, 1, std::memory_order_acq_rel)) {
      page[i].owner.store(0, std::memory_order_release);
      return &page[i];
    }
  }
  return nullptr;
}

}  // namespace

OwnerSlot* AllocateOwnerSlot() {
  std::lock_guard lock(pages_mu);
  for (OwnerSlot* page : Pages()) {
    if (OwnerSlot* slot = TakeFreeSlot(page)) return slot;
  }
  long mapped = RawSyscall6(SYS_mmap, 0, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapped < 0) return nullptr;
  auto* page = reinterpret_cast<OwnerSlot*>(mapped);  // zero-filled: every slot free
  Pages().push_back(page);
  return TakeFreeSlot(page);
}

}  // namespace scone::runtime::sockets
