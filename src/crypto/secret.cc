#include "crypto/secret.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "crypto/fork_gate.h"

namespace scone {
namespace {

// 64 KiB of locked memory is enough for every key a process holds (a few hundred at most);
// servers reserve more (ReserveSecureHeap).
size_t secure_heap_size = 64 * 1024;

void InitSecureHeapOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (CRYPTO_secure_malloc_initialized() == 0) CRYPTO_secure_malloc_init(secure_heap_size, 32);
  });
}

}  // namespace

void ReserveSecureHeap(size_t size) {
  secure_heap_size = size;
  InitSecureHeapOnce();
}

void ReserveSecureHeapWithinLimit(size_t size) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    size = std::min<size_t>(size, limit.rlim_cur / 2);
  }
  size_t power = 1;  // OpenSSL's secure heap is a power of two
  while (power * 2 <= size) power *= 2;
  ReserveSecureHeap(std::max(power, secure_heap_size));
}

SecretBytes::SecretBytes(size_t size) {
  if (size == 0) return;
  crypto::InsideOpenSsl inside;  // the secure heap's lock
  InitSecureHeapOnce();
  data_ = static_cast<uint8_t*>(OPENSSL_secure_zalloc(size));
  if (data_ == nullptr) {
    // The locked heap is full (a process holding thousands of files open, each with its key):
    // ordinary memory, locked where the limit allows. Processes holding keys are not dumpable,
    // so it does not reach a core file either.
    data_ = static_cast<uint8_t*>(OPENSSL_zalloc(size));
    if (data_ == nullptr) abort();  // out of memory for a key: nothing sensible to continue with
    (void)mlock(data_, size);
  }
  size_ = size;
}

SecretBytes::SecretBytes(std::span<const uint8_t> bytes) : SecretBytes(bytes.size()) {
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
}

SecretBytes::~SecretBytes() { Release(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void SecretBytes::Release() {
  if (data_ == nullptr) return;
  crypto::InsideOpenSsl inside;  // the secure heap's lock
  if (CRYPTO_secure_allocated(data_)) {
    OPENSSL_secure_clear_free(data_, size_);
  } else {
    OPENSSL_cleanse(data_, size_);
    (void)munlock(data_, size_);
    OPENSSL_free(data_);
  }
  data_ = nullptr;
  size_ = 0;
}

bool SecretBytes::Equals(const SecretBytes& other) const {
  return size_ == other.size_ && CRYPTO_memcmp(data_, other.data_, size_) == 0;
}

void Wipe(void* data, size_t size) {
  if (size != 0) OPENSSL_cleanse(data, size);
}

__attribute__((noinline)) void WipeStackBelow(size_t size) {
  constexpr size_t kChunk = 4096;
  uint8_t buf[kChunk];
  Wipe(buf, sizeof(buf));
  if (size > kChunk) WipeStackBelow(size - kChunk);
  __asm__ __volatile__("" : : "r"(buf) : "memory");  // keeps the frame: no tail call
}

}  // namespace scone
