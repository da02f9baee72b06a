// Every allocation of the runtime's C++ code (its own, and the statically linked C++ library's)
// and of its statically linked OpenSSL goes to the private heap (private_heap.h). The operators
// are local to libscone-runtime.so (exports.map): the program's own stay the C library's.
#include <openssl/crypto.h>

#include <cstddef>
#include <new>

#include "runtime/memory/private_heap.h"

namespace {

using scone::runtime::memory::Allocate;
using scone::runtime::memory::AllocateAligned;
using scone::runtime::memory::Free;

void* OrThrow(void* p) {
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void* OpenSslAllocate(size_t size, const char*, int) { return Allocate(size); }
void* OpenSslReallocate(void* p, size_t size, const char*, int) {
  return scone::runtime::memory::Reallocate(p, size);
}
void OpenSslFree(void* p, const char*, int) { Free(p); }

// Before anything in the runtime asks OpenSSL for memory (it accepts the functions only then).
__attribute__((constructor(101))) void UsePrivateHeapForOpenSsl() {
  (void)CRYPTO_set_mem_functions(OpenSslAllocate, OpenSslReallocate, OpenSslFree);
}

}  // namespace

void* operator new(size_t size) { return OrThrow(Allocate(size)); }
void* operator new[](size_t size) { return OrThrow(Allocate(size)); }
void* operator new(size_t size, const std::nothrow_t&) noexcept { return Allocate(size); }
void* operator new[](size_t size, const std::nothrow_t&) noexcept { return Allocate(size); }
void* operator new(size_t size, std::align_val_t a) { return OrThrow(AllocateAligned(size, static_cast<size_t>(a))); }
void* operator new[](size_t size, std::align_val_t a) { return OrThrow(AllocateAligned(size, static_cast<size_t>(a))); }
void* operator new(size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return AllocateAligned(size, static_cast<size_t>(a));
}
void* operator new[](size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return AllocateAligned(size, static_cast<size_t>(a));
}

void operator delete(void* p) noexcept { Free(p); }
void operator delete[](void* p) noexcept { Free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { Free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { Free(p); }
void operator delete(void* p, size_t) noexcept { Free(p); }
void operator delete[](void* p, size_t) noexcept { Free(p); }
void operator delete(void* p, std::align_val_t) noexcept { Free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { Free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { Free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { Free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { Free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { Free(p); }
