#include "runtime/memory/private_heap.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <new>

#include "runtime/entry/raw_syscall.h"

namespace scone::runtime {
// entry/entry.h; absent where the heap is linked alone (its unit tests).
__attribute__((weak)) void EnterRuntimeSection();
__attribute__((weak)) void LeaveRuntimeSection();
}  // namespace scone::runtime

namespace scone::runtime::memory {
namespace {

// A lock that waits in the kernel with raw futex calls (a pthread mutex would wait through the
// C library, whose calls enter the runtime).
class FutexLock {
 public:
  void lock() {
    int seen = 0;
    if (state_.compare_exchange_strong(seen, 1, std::memory_order_acquire)) return;
    if (seen != 2) seen = state_.exchange(2, std::memory_order_acquire);
    while (seen != 0) {
      RawSyscall(SYS_futex, Arg(&state_), FUTEX_WAIT_PRIVATE, 2, 0);
      seen = state_.exchange(2, std::memory_order_acquire);
    }
  }
  void unlock() {
    if (state_.exchange(0, std::memory_order_release) == 2) RawSyscall(SYS_futex, Arg(&state_), FUTEX_WAKE_PRIVATE, 1);
  }

 private:
  std::atomic<int> state_{0};  // 0 free, 1 held, 2 held with waiters
};

// Blocks up to this size are pooled (kept for reuse by their size class); larger ones are
// mapped at allocation and unmapped when freed, so a rare large buffer holds no memory after.
constexpr size_t kLargestPooled = size_t{256} << 10;

// The pool's source: pages from the kernel. Requests up to the largest pooled block (the small
// size classes' chunks, the pool's own arrays) are carved from slabs, one mapping for many, and
// never given back; larger ones (blocks too large to pool, the large classes' chunks) are
// mappings of their own, unmapped when the pool gives them back.
class KernelPages final : public std::pmr::memory_resource {
 public:
  static constexpr size_t kSlab = size_t{2} << 20;

 private:
  static void* Map(size_t bytes) {
    long p = RawSyscall6(SYS_mmap, 0, static_cast<long>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p < 0 && p > -4096) throw std::bad_alloc();
    return reinterpret_cast<void*>(p);
  }
  void* do_allocate(size_t bytes, size_t alignment) override {
    if (bytes > kLargestPooled) return Map(bytes);
    alignment = alignment < 16 ? 16 : alignment;
    uintptr_t at = (slab_next_ + alignment - 1) & ~(uintptr_t{alignment} - 1);
    if (slab_next_ == 0 || at + bytes > slab_end_) {
      const auto slab = reinterpret_cast<uintptr_t>(Map(kSlab));
      slab_next_ = slab;
      slab_end_ = slab + kSlab;
      at = slab;
    }
    slab_next_ = at + bytes;
    return reinterpret_cast<void*>(at);
  }
  void do_deallocate(void* p, size_t bytes, size_t) override {
    // A slab's pieces stay (of those the pool gives back only its own arrays, when they grow).
    if (bytes > kLargestPooled) RawSyscall(SYS_munmap, Arg(p), static_cast<long>(bytes));
  }
  bool do_is_equal(const memory_resource& other) const noexcept override { return this == &other; }

  uintptr_t slab_next_ = 0, slab_end_ = 0;  // under the heap's lock, as every pool call is
};

// Before every block: where it begins in the pool and how long it is there.
struct alignas(16) Header {
  void* block;
  size_t length;
};
constexpr size_t kPoolAlignment = alignof(Header);

// Made at first use and never destroyed: the runtime allocates until the process's last
// exit handler.
struct Heap {
  FutexLock lock;
  KernelPages pages;
  std::pmr::unsynchronized_pool_resource pool{
      // A buffer the runtime takes per call (a sendfile's, a record's) costs no mapping and no
      // page faults after the first; a size class grows by chunks of at most 32 blocks (8 MiB
      // for the largest), so a process's memory follows its peak use, not a multiple of it.
      std::pmr::pool_options{.max_blocks_per_chunk = 32, .largest_required_pool_block = kLargestPooled}, &pages};
};
alignas(Heap) unsigned char heap_storage[sizeof(Heap)];
std::atomic<Heap*> the_heap{nullptr};
FutexLock creation;

Heap& GetHeap() {
  Heap* heap = the_heap.load(std::memory_order_acquire);
  if (heap != nullptr) return *heap;
  std::lock_guard guard(creation);
  heap = the_heap.load(std::memory_order_relaxed);
  if (heap == nullptr) {
    heap = new (heap_storage) Heap();
    the_heap.store(heap, std::memory_order_release);
  }
  return *heap;
}

// The thread is inside the heap (termination.cc does not end the process there).
__attribute__((tls_model("initial-exec"))) thread_local int inside = 0;

// In a runtime section (entry.h): a program's signal handler, which may call into the runtime
// and allocate, never runs while this thread holds the heap's lock.
struct Inside {
  Inside() {
    inside += 1;
    if (&EnterRuntimeSection != nullptr) EnterRuntimeSection();
  }
  ~Inside() {
    if (&LeaveRuntimeSection != nullptr) LeaveRuntimeSection();
    inside -= 1;
  }
};

void* Carve(size_t size, size_t alignment) {
  if (alignment < kPoolAlignment) alignment = kPoolAlignment;
  // Room for the header and for moving the start up to the alignment asked for: the pool's
  // blocks are aligned to no more than their size class allows (a 24-byte class: 8 bytes).
  const size_t extra = sizeof(Header) + alignment - 1;
  if (size > SIZE_MAX - extra) return nullptr;
  const size_t length = size + extra;
  Inside in;
  Heap& heap = GetHeap();
  void* block;
  try {
    std::lock_guard guard(heap.lock);
    block = heap.pool.allocate(length, kPoolAlignment);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  auto start = reinterpret_cast<uintptr_t>(block) + sizeof(Header);
  start = (start + alignment - 1) & ~(uintptr_t{alignment} - 1);
  auto* header = reinterpret_cast<Header*>(start) - 1;
  header->block = block;
  header->length = length;
  return reinterpret_cast<void*>(start);
}

}  // namespace

bool InsideHeap() { return inside > 0; }

void* Allocate(size_t size) { return Carve(size, kPoolAlignment); }

void* AllocateAligned(size_t size, size_t alignment) { return Carve(size, alignment); }

void Free(void* p) {
  if (p == nullptr) return;
  const Header header = *(static_cast<Header*>(p) - 1);
  Inside in;
  Heap& heap = GetHeap();
  std::lock_guard guard(heap.lock);
  heap.pool.deallocate(header.block, header.length, kPoolAlignment);
}

void* Reallocate(void* p, size_t size) {
  if (p == nullptr) return Allocate(size);
  if (size == 0) {
    Free(p);
    return nullptr;
  }
  const Header& header = *(static_cast<Header*>(p) - 1);
  const size_t old_size = header.length - static_cast<size_t>(static_cast<char*>(p) - static_cast<char*>(header.block));
  if (size <= old_size) return p;
  void* moved = Allocate(size);
  if (moved == nullptr) return nullptr;
  std::memcpy(moved, p, old_size);
  Free(p);
  return moved;
}

void BeforeFork() {
  inside += 1;
  GetHeap().lock.lock();
}

void AfterFork() {
  // A futex lock has no owner: the child lets go of it as the parent does.
  GetHeap().lock.unlock();
  inside -= 1;
}

}  // namespace scone::runtime::memory
