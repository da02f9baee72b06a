#include "runtime/process/signal_calls.h"

#include <errno.h>
#include <sys/syscall.h>

#include <mutex>

#include "runtime/entry/raw_syscall.h"

namespace scone::runtime::process {
namespace {

constexpr uint64_t kSigsysBit = uint64_t{1} << (SIGSYS - 1);

std::mutex sigsys_mu;
KernelSigaction program_sigsys = {};  // SIG_DFL

}  // namespace

const KernelSigaction& ProgramSigsys() { return program_sigsys; }

long SigAction(int sig, const KernelSigaction* act, KernelSigaction* old, unsigned long size) {
  if (size != sizeof(uint64_t)) return -EINVAL;
  if (sig == SIGSYS) {
    std::lock_guard lock(sigsys_mu);
    if (old != nullptr) *old = program_sigsys;
    if (act != nullptr) program_sigsys = *act;
    return 0;
  }
  if (act == nullptr || !(act->mask & kSigsysBit)) {
    return RawSyscall(SYS_rt_sigaction, sig, Arg(act), Arg(old), static_cast<long>(size));
  }
  KernelSigaction copy = *act;
  copy.mask &= ~kSigsysBit;
  return RawSyscall(SYS_rt_sigaction, sig, Arg(&copy), Arg(old), static_cast<long>(size));
}

long SigProcMask(int how, const uint64_t* set, uint64_t* old, unsigned long size) {
  if (set == nullptr || how == SIG_UNBLOCK || size != sizeof(uint64_t) || !(*set & kSigsysBit)) {
    return RawSyscall(SYS_rt_sigprocmask, how, Arg(set), Arg(old), static_cast<long>(size));
  }
  uint64_t copy = *set & ~kSigsysBit;
  return RawSyscall(SYS_rt_sigprocmask, how, Arg(&copy), Arg(old), static_cast<long>(size));
}

long WithMask(long nr, const long args[6]) {
  long a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]};
  uint64_t copy;
  // pselect6's sixth argument points to {const sigset_t* mask; size_t size}.
  struct MaskArg {
    const uint64_t* mask;
    size_t size;
  } mask_arg;
  // Where each call keeps its mask (and the mask's size).
  switch (nr) {
    case SYS_rt_sigsuspend:
      if (a[0] != 0 && a[1] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[0]) & ~kSigsysBit;
        a[0] = Arg(&copy);
      }
      break;
    case SYS_ppoll:
      if (a[3] != 0 && a[4] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[3]) & ~kSigsysBit;
        a[3] = Arg(&copy);
      }
      break;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      if (a[4] != 0 && a[5] == sizeof(uint64_t)) {
        copy = *reinterpret_cast<const uint64_t*>(a[4]) & ~kSigsysBit;
        a[4] = Arg(&copy);
      }
      break;
    case SYS_pselect6: {
      const auto* given = reinterpret_cast<const MaskArg*>(a[5]);
      if (given != nullptr && given->mask != nullptr && given->size == sizeof(uint64_t)) {
        copy = *given->mask & ~kSigsysBit;
        mask_arg = {&copy, sizeof(uint64_t)};
        a[5] = Arg(&mask_arg);
      }
      break;
    }
    default:
      break;
  }
  return RawSyscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // namespace scone::runtime::process
