// System calls made by the runtime itself, with its own `syscall` instructions.
//
// These are the runtime's way to the kernel: they never enter the shields (the instructions lie
// in the runtime's own code, which Syscall User Dispatch lets through, and no patch redirects
// them). Results follow the kernel's convention: a value >= 0, or -errno. No errno is touched.
#pragma once

#include <errno.h>
#include <poll.h>
#include <sys/syscall.h>

#include <type_traits>

namespace scone::runtime {

inline long RawSyscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
  long ret;
  register long r10 __asm__("r10") = a4;
  register long r8 __asm__("r8") = a5;
  register long r9 __asm__("r9") = a6;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

inline long RawSyscall(long nr) { return RawSyscall6(nr, 0, 0, 0, 0, 0, 0); }
inline long RawSyscall(long nr, long a1) { return RawSyscall6(nr, a1, 0, 0, 0, 0, 0); }
inline long RawSyscall(long nr, long a1, long a2) { return RawSyscall6(nr, a1, a2, 0, 0, 0, 0); }
inline long RawSyscall(long nr, long a1, long a2, long a3) {
  return RawSyscall6(nr, a1, a2, a3, 0, 0, 0);
}
inline long RawSyscall(long nr, long a1, long a2, long a3, long a4) {
  return RawSyscall6(nr, a1, a2, a3, a4, 0, 0);
}
inline long RawSyscall(long nr, long a1, long a2, long a3, long a4, long a5) {
  return RawSyscall6(nr, a1, a2, a3, a4, a5, 0);
}

// Arguments of the kernel's calls as longs (pointers and descriptors alike).
template <typename T>
inline long Arg(T value) {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<long>(value);
  } else {
    return static_cast<long>(value);
  }
}

// Waits until `fd` takes output (a full pipe or socket): 0 or -errno. In a RuntimeSection, a
// signal that ends the wait is held back and the wait goes on; its handler runs after the call.
inline long WaitWritable(int fd) {
  for (;;) {
    struct pollfd p = {fd, POLLOUT, 0};
    long r = RawSyscall(SYS_ppoll, Arg(&p), 1, 0, 0, 0);
    if (r != -EINTR) return r < 0 ? r : 0;
  }
}

}  // namespace scone::runtime
