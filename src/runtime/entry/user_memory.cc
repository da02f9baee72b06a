#include "runtime/entry/user_memory.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <ucontext.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/process/signal_calls.h"

// Each probe touches one byte at its `_at` label and returns 0; a fault there resumes at
// scone_probe_failed, which returns -EFAULT.
extern "C" {
long scone_probe_read(const void* p);
long scone_probe_write(void* p);
extern const char scone_probe_read_at[], scone_probe_write_at[], scone_probe_failed[];
}

asm(R"(
  .text
  .p2align 4
  .globl scone_probe_read, scone_probe_read_at, scone_probe_write, scone_probe_write_at, scone_probe_failed
  .hidden scone_probe_read, scone_probe_read_at, scone_probe_write, scone_probe_write_at, scone_probe_failed
  .type scone_probe_read, @function
scone_probe_read:
scone_probe_read_at:
  movb (%rdi), %al
  xorl %eax, %eax
  ret
  .size scone_probe_read, .-scone_probe_read
  .type scone_probe_write, @function
scone_probe_write:
scone_probe_write_at:
  lock orb $0, (%rdi)
  xorl %eax, %eax
  ret
  .size scone_probe_write, .-scone_probe_write
  .type scone_probe_failed, @function
scone_probe_failed:
  movq $-14, %rax
  ret
  .size scone_probe_failed, .-scone_probe_failed
)");

namespace scone::runtime {
namespace {

constexpr uintptr_t kPage = 4096;
constexpr uint64_t kProbeFaults = (uint64_t{1} << (SIGSEGV - 1)) | (uint64_t{1} << (SIGBUS - 1));

// Whether the kernel may block SIGSEGV or SIGBUS on this thread now: inside the SIGSYS handler
// (sud.h) every signal is, inside a program handler what its action blocks, and what the program
// blocked itself (a fault whose SIG_DFL the runtime stands for is never blocked in the kernel,
// signal_calls.h, but one with the program's handler is).
bool MayBlockFaults(const EntryThread& t) {
  return t.handler_mask != nullptr || ((t.blocked_faults | t.handler_blocked_faults) & kProbeFaults) != 0;
}

// The kernel ends a process whose fault signal is blocked, handler or not: the probes let
// SIGSEGV and SIGBUS through meanwhile.
class ProbeScope {
 public:
  ProbeScope() : unblock_(MayBlockFaults(ThisThread())) {
    process::CatchFaults();
    if (unblock_) RawSyscall(SYS_rt_sigprocmask, SIG_UNBLOCK, Arg(&kProbeFaults), Arg(&before_), sizeof(uint64_t));
  }
  ~ProbeScope() {
    if (unblock_) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&before_), 0, sizeof(uint64_t));
  }
  ProbeScope(const ProbeScope&) = delete;
  ProbeScope& operator=(const ProbeScope&) = delete;

 private:
  const bool unblock_;
  uint64_t before_ = 0;
};

template <typename Probe>
size_t UsableBytes(uintptr_t p, size_t n, Probe probe) {
  if (n == 0) return 0;
  ProbeScope scope;
  // One byte in each page the range touches: the first, then every page start after it.
  if (probe(p) != 0) return 0;
  const uintptr_t end = p + n < p ? UINTPTR_MAX : p + n;
  for (uintptr_t page = (p & ~(kPage - 1)) + kPage; page < end && page != 0; page += kPage) {
    if (probe(page) != 0) return page - p;
  }
  return n;
}

}  // namespace

bool InProgramSpace(const void* p, size_t n) {
  constexpr uintptr_t kTaskSize = (uintptr_t{1} << 47) - kPage;  // x86-64, four-level paging
  const auto at = reinterpret_cast<uintptr_t>(p);
  return n <= kTaskSize && at <= kTaskSize - n;
}

size_t ReadableBytes(const void* p, size_t n) {
  return UsableBytes(reinterpret_cast<uintptr_t>(p), n,
                     [](uintptr_t at) { return scone_probe_read(reinterpret_cast<const void*>(at)); });
}

size_t WritableBytes(void* p, size_t n) {
  return UsableBytes(reinterpret_cast<uintptr_t>(p), n,
                     [](uintptr_t at) { return scone_probe_write(reinterpret_cast<void*>(at)); });
}

bool ReadableString(const char* s, size_t max) {
  auto at = reinterpret_cast<uintptr_t>(s);
  ProbeScope scope;
  for (size_t scanned = 0; scanned < max;) {
    if (scone_probe_read(reinterpret_cast<const void*>(at)) != 0) return false;
    // The rest of this page is readable: look for the end there.
    const size_t in_page = std::min<size_t>(kPage - (at & (kPage - 1)), max - scanned);
    if (std::memchr(reinterpret_cast<const void*>(at), 0, in_page) != nullptr) return true;
    at += in_page;
    scanned += in_page;
  }
  return true;  // longer than `max`: the call itself says ENAMETOOLONG
}

long UsableVectors(const struct iovec* iov, int* count, bool write, struct iovec* out) {
  const size_t array = static_cast<size_t>(*count) * sizeof(struct iovec);
  if (ReadableBytes(iov, array) != array) return -EFAULT;
  bool asked = false;
  // As the kernel imports the array: a negative length is invalid, and each segment, cut to what
  // one call moves at most, must lie in the program's space.
  constexpr size_t kMaxTransfer = INT_MAX & ~(kPage - 1);
  for (int i = 0; i < *count; ++i) {
    if (static_cast<ssize_t>(iov[i].iov_len) < 0) return -EINVAL;
    if (!InProgramSpace(iov[i].iov_base, std::min(iov[i].iov_len, kMaxTransfer))) return -EFAULT;
  }
  int kept = 0;
  size_t total = 0;
  for (int i = 0; i < *count; ++i) {
    const size_t len = iov[i].iov_len;
    asked = asked || len != 0;
    const size_t usable = write ? WritableBytes(iov[i].iov_base, len) : ReadableBytes(iov[i].iov_base, len);
    if (usable != 0 || len == 0) out[kept++] = {iov[i].iov_base, usable};
    total += usable;
    if (usable != len) break;
  }
  *count = kept;
  return asked && total == 0 ? -EFAULT : 0;
}

bool RecoverProbeFault(void* context) {
  greg_t* g = static_cast<ucontext_t*>(context)->uc_mcontext.gregs;
  const auto ip = static_cast<uintptr_t>(g[REG_RIP]);
  if (ip != reinterpret_cast<uintptr_t>(scone_probe_read_at) && ip != reinterpret_cast<uintptr_t>(scone_probe_write_at)) {
    return false;
  }
  g[REG_RIP] = static_cast<greg_t>(reinterpret_cast<uintptr_t>(scone_probe_failed));
  return true;
}

}  // namespace scone::runtime
