#include "runtime/memory/private_heap.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
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

// Size classes: 16-byte steps up to 128 bytes, then four steps per doubling (at most 25 % of a
// block unused), up to the largest pooled block: 52 classes.
constexpr size_t kSmallClasses = 8;
constexpr size_t kClasses = kSmallClasses + 4 * (18 - 7);  // 2^18 = kLargestPooled
static_assert(kLargestPooled == size_t{1} << 18);

constexpr size_t ClassOf(size_t bytes) {  // 1 <= bytes <= kLargestPooled
  if (bytes <= 128) return (bytes + 15) / 16 - 1;
  const size_t k = 63 - static_cast<size_t>(__builtin_clzll(bytes - 1));  // 2^k < bytes <= 2^(k+1)
  return kSmallClasses + (k - 7) * 4 + (bytes - 1 - (size_t{1} << k)) / (size_t{1} << (k - 2));
}
constexpr size_t ClassSize(size_t c) {
  if (c < kSmallClasses) return (c + 1) * 16;
  const size_t k = (c - kSmallClasses) / 4 + 7;
  return (size_t{1} << k) + ((c - kSmallClasses) % 4 + 1) * (size_t{1} << (k - 2));
}
static_assert(ClassOf(1) == 0 && ClassSize(ClassOf(129)) == 160 && ClassSize(ClassOf(256)) == 256 &&
              ClassSize(ClassOf(257)) == 320 && ClassOf(kLargestPooled) == kClasses - 1 &&
              ClassSize(kClasses - 1) == kLargestPooled);

// A free list per size class over slabs mapped from the kernel: allocation and release are a
// pop and a push. (The standard library's pool scanned every chunk of a class once its newest
// was full: with the many small blocks a shared volume's state keeps, that scan was a fifth of
// an nginx worker's time.) Freed blocks are kept for their class, never given back: the heap
// follows the runtime's peak use. Blocks larger than any class are mappings of their own.
class Pools {
 public:
  void* Allocate(size_t bytes) {
    if (bytes > kLargestPooled) return Map(bytes);
    const size_t c = ClassOf(bytes);
    if (FreeBlock* block = free_[c]) {
      free_[c] = block->next;
      return block;
    }
    return Carve(ClassSize(c));
  }
  void Free(void* p, size_t bytes) {
    if (bytes > kLargestPooled) {
      RawSyscall(SYS_munmap, Arg(p), static_cast<long>(bytes));
      return;
    }
    const size_t c = ClassOf(bytes);
    free_[c] = new (p) FreeBlock{free_[c]};
  }

 private:
  static constexpr size_t kSlab = size_t{2} << 20;
  struct FreeBlock {
    FreeBlock* next;
  };
  static void* Map(size_t bytes) {
    long p = RawSyscall6(SYS_mmap, 0, static_cast<long>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p < 0 && p > -4096 ? nullptr : reinterpret_cast<void*>(p);
  }
  void* Carve(size_t bytes) {  // a multiple of 16; slabs are page-aligned
    if (slab_next_ == 0 || slab_next_ + bytes > slab_end_) {
      // The rest of the old slab goes to the free lists of the classes it fits.
      for (size_t c = kClasses; c-- > 0 && slab_next_ != 0;) {
        while (slab_next_ + ClassSize(c) <= slab_end_) {
          free_[c] = new (reinterpret_cast<void*>(slab_next_)) FreeBlock{free_[c]};
          slab_next_ += ClassSize(c);
        }
      }
      // Near the end of the address space the program may have (ulimit -v), a smaller slab:
      // a block of a class nothing freed yet must not fail while pages are left.
      size_t slab_size = kSlab;
      void* slab = Map(slab_size);
      if (slab == nullptr) {
        slab_size = std::max<size_t>(size_t{64} << 10, bytes + 4095) & ~size_t{4095};
        slab = Map(slab_size);
      }
      if (slab == nullptr) return nullptr;
      slab_next_ = reinterpret_cast<uintptr_t>(slab);
      slab_end_ = slab_next_ + slab_size;
    }
    void* block = reinterpret_cast<void*>(slab_next_);
    slab_next_ += bytes;
    return block;
  }

  FreeBlock* free_[kClasses] = {};
  uintptr_t slab_next_ = 0, slab_end_ = 0;
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
  Pools pools;  // under the lock
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
  {
    std::lock_guard guard(heap.lock);
    block = heap.pools.Allocate(length);
  }
  if (block == nullptr) return nullptr;
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
  heap.pools.Free(header.block, header.length);
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
