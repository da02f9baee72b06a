#include "runtime/entry/dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <atomic>
#include <new>
#include <string>
#include <vector>

#include "runtime/alone_watcher.h"
#include "runtime/console/kept_locks.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/entry/user_memory.h"
#include "runtime/files/file_calls.h"
#include "runtime/files/mapped_files.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/files/xattr_calls.h"
#include "runtime/net/passed_descriptors.h"
#include "runtime/net/socket_calls.h"
#include "runtime/net/tls_socket.h"
#include "runtime/process/fork.h"
#include "runtime/process/process_calls.h"
#include "runtime/process/signal_calls.h"
#include "runtime/process/termination.h"
#include "runtime/runtime.h"

namespace scone::runtime {
namespace {

DispatchResult Done(long value) { return {value, Action::kDone}; }
DispatchResult Native() { return {0, Action::kNative}; }

long Raw(const SyscallFrame& f) {
  return RawSyscall6(f.nr, f.args[0], f.args[1], f.args[2], f.args[3], f.args[4], f.args[5]);
}

// The shield's answer, or the program's call unchanged where the shield has none.
DispatchResult Served(const SyscallFrame& f, long result) { return Done(result == kNotMine ? Raw(f) : result); }

template <typename T>
T* Ptr(long v) {
  return reinterpret_cast<T*>(v);
}
const char* Str(long v) { return reinterpret_cast<const char*>(v); }
int Fd(long v) { return static_cast<int>(v); }

// The program's call the thread is in, while the dispatcher serves it: whether a signal that
// ends the process may commit there depends on it, and the call's start and end may be the safe
// point such a signal waits for (process/termination.h).
class CallInProgress {
 public:
  CallInProgress(EntryThread& t, long nr) : t_(t), outer_(t.call) {
    t.call = nr;
    if (process::TerminationHeld()) process::AtSystemCall(nr);
  }
  ~CallInProgress() {
    if (process::TerminationHeld()) process::AtSystemCall(t_.call);
    t_.call = outer_;
  }
  CallInProgress(const CallInProgress&) = delete;
  CallInProgress& operator=(const CallInProgress&) = delete;

 private:
  EntryThread& t_;
  const long outer_;
};

// The ticket offered to the program's next call (entry.h), 0 when none is; and the last one made.
std::atomic<uint64_t> g_offered_ticket{0};
std::atomic<uint64_t> g_last_ticket{0};

bool CloneFamily(long nr) { return nr == SYS_clone || nr == SYS_clone3 || nr == SYS_fork || nr == SYS_vfork; }

// rt_sigreturn restores the signal mask from the frame at the stack pointer: never one that
// blocks SIGSYS.
void UnblockSigsysInFrame(long stack_pointer) {
  constexpr size_t kSigmaskInUcontext = 296;  // struct ucontext: flags, link, stack, mcontext
  auto* mask = reinterpret_cast<uint64_t*>(stack_pointer + kSigmaskInUcontext);
  *mask &= ~(uint64_t{1} << (SIGSYS - 1));
}

// What a program's descriptor is, as far as a read while a console lock is kept needs to know
// (ReadKeepingConsoleLocks): learnt by one fstat at the first such read, forgotten when the
// number is closed or replaced (close, close_range, dup2, dup3: every way a number changes its
// file passes the dispatcher).
enum class ReadKind : uint8_t { kUnknown, kFile, kPipe, kOther };
constexpr int kMaxReadKinds = DirectoryTable::kMaxFds;
std::atomic<ReadKind> read_kinds[kMaxReadKinds];

void ForgetReadKind(int fd) {
  if (fd >= 0 && fd < kMaxReadKinds) read_kinds[fd].store(ReadKind::kUnknown, std::memory_order_relaxed);
}

// A descriptor number closed: what the dispatcher learnt of its file (a directory's path, a
// read's kind) goes with it.
void ForgetDescriptor(Runtime& rt, int fd) {
  rt.dirs().Forget(fd);
  ForgetReadKind(fd);
}

// close_range: the shielded descriptors in the range commit and leave the table first.
// The runtime's own descriptors in the range stay open: the kernel's call is made on the gaps
// between them.
long CloseRange(Runtime& rt, const SyscallFrame& f) {
  auto first = static_cast<unsigned>(f.args[0]);
  auto last = static_cast<unsigned>(f.args[1]);
  if (first > last) return -EINVAL;
  if (!(f.args[2] & CLOSE_RANGE_CLOEXEC)) {
    for (unsigned fd = first; fd <= last && fd < DirectoryTable::kMaxFds; ++fd) ForgetDescriptor(rt, static_cast<int>(fd));
    std::vector<int> shielded;
    for (auto& [fd, d] : rt.fds().All()) {
      if (static_cast<unsigned>(fd) < first || static_cast<unsigned>(fd) > last) continue;
      sockets::SendHeld(*d, fd);  // a TLS connection ends here without close_notify, its data sent
      shielded.push_back(fd);
    }
    // Closed once the list's references are gone, so that the last close commits, in the runtime.
    for (int fd : shielded) (void)files::Close(rt, fd);
  }
  for (int own : rt.fds().OwnIn(first, last)) {
    if (static_cast<unsigned>(own) > first) {
      long r = RawSyscall(SYS_close_range, first, own - 1, f.args[2]);
      if (r < 0) return r;
    }
    first = static_cast<unsigned>(own) + 1;
    if (first == 0) return 0;  // wrapped past the largest number
  }
  return first <= last ? RawSyscall(SYS_close_range, first, last, f.args[2]) : 0;
}

// An open the kernel made: a descriptor of the console's file, pipe or terminal (/dev/stdout,
// /proc/self/fd/2, a FIFO's name) writes through the console's stream.
DispatchResult Opened(Runtime& rt, DispatchResult r) {
  if (r.value >= 0 && rt.console().Active()) rt.console().AdoptIfConsole(r.value, rt.fds());
  return r;
}

// open, creat, openat, openat2. With O_TRUNC on the console's file, without it: the records
// sealed so far stay (ConsoleShield::OpenFlags); the kernel then makes the call so changed where
// no shield serves the path.
DispatchResult Open(Runtime& rt, const SyscallFrame& given) {
  SyscallFrame f = given;
  long* a = f.args;
  open_how how{};
  const bool console = rt.console().Active();
  switch (f.nr) {
    case SYS_creat:  // open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)
      f.nr = SYS_open;
      a[2] = a[1];
      a[1] = O_CREAT | O_WRONLY | O_TRUNC;
      [[fallthrough]];
    case SYS_open:
      if (console && (a[1] & O_TRUNC)) a[1] = rt.console().OpenFlags(AT_FDCWD, Str(a[0]), Fd(a[1]));
      return Opened(rt, Served(f, files::OpenAt(rt, AT_FDCWD, Str(a[0]), Fd(a[1]), static_cast<mode_t>(a[2]))));
    case SYS_openat:
      if (console && (a[2] & O_TRUNC)) a[2] = rt.console().OpenFlags(Fd(a[0]), Str(a[1]), Fd(a[2]));
      return Opened(rt, Served(f, files::OpenAt(rt, Fd(a[0]), Str(a[1]), Fd(a[2]), static_cast<mode_t>(a[3]))));
    default: {  // SYS_openat2
      const auto* given_how = Ptr<const open_how>(a[2]);
      if (console && given_how != nullptr && a[3] >= static_cast<long>(sizeof(open_how)) &&
          (given_how->flags & O_TRUNC) && rt.console().OpenFlags(Fd(a[0]), Str(a[1]), O_TRUNC) == 0) {
        how = *given_how;
        how.flags &= ~static_cast<uint64_t>(O_TRUNC);
        a[2] = reinterpret_cast<long>(&how);
        a[3] = sizeof(how);
      }
      return Opened(rt, Served(f, files::OpenAt2(rt, Fd(a[0]), Str(a[1]), Ptr<const open_how>(a[2]), a[3])));
    }
  }
}

// Calls that move data onto a descriptor without write(2): on the console they are writes
// (sendto, sendmsg) or refused (vmsplice would hand the kernel the program's pages, tee another
// pipe's bytes).
long ConsoleTransfer(Runtime& rt, long nr, const long* a) {
  switch (nr) {
    case SYS_sendto:
      if (a[4] != 0) return -EISCONN;
      return files::Write(rt, Fd(a[0]), Ptr<const void>(a[1]), a[2]);
    case SYS_sendmsg: {
      const auto* m = Ptr<const struct msghdr>(a[1]);
      if (m->msg_name != nullptr || m->msg_controllen != 0) return -EOPNOTSUPP;
      return files::WriteVector(rt, Fd(a[0]), m->msg_iov, static_cast<int>(m->msg_iovlen), -1);
    }
    case SYS_vmsplice:
      return files::WriteVector(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]), -1);
    default:  // tee, sendmmsg
      return -EINVAL;
  }
}

bool IsConsole(Runtime& rt, int fd) {
  // A TLS connection's every send would otherwise take the table's lock twice.
  if (!rt.console().Active() || !rt.fds().Has(fd)) return false;
  auto d = rt.fds().Get(fd);
  return d != nullptr && d->IsConsole();
}

// A console pipe's lock this process keeps between records (console/kept_locks.h) is let go
// before a call that could wait for another process, which may be waiting for the lock. Kept
// across: writes to the console, reads of the program's own descriptors (tried without waiting
// first: ReadKeepingConsoleLocks), and calls on memory, time and ids.
void KeepOrLetGoConsoleLocks(const SyscallFrame& f) {
  const int fd = Fd(f.args[0]);
  Runtime* rt = ShieldIfReady();
  switch (f.nr) {
    case SYS_brk:
    case SYS_munmap:
    case SYS_mprotect:
    case SYS_madvise:
    case SYS_mremap:
    case SYS_getpid:
    case SYS_gettid:
    case SYS_getppid:
    case SYS_clock_gettime:
    case SYS_gettimeofday:
    case SYS_getrusage:
      return;
    case SYS_mmap:
      if (f.args[3] & MAP_ANONYMOUS) return;
      break;
    case SYS_read:
    case SYS_pread64:
    case SYS_lseek:
    case SYS_fstat:
      if (rt != nullptr && !rt->closed() && !rt->fds().Has(fd)) return;
      break;
    case SYS_write:
    case SYS_writev:
    case SYS_pwrite64:
    case SYS_pwritev:
    case SYS_pwritev2:
      if (rt != nullptr && !rt->closed() && IsConsole(*rt, fd)) return;
      break;
    default:
      break;
  }
  KeptConsoleLocks::LetGoAll();
}

ReadKind ReadKindOf(int fd) {
  ReadKind kind = fd >= 0 && fd < kMaxReadKinds ? read_kinds[fd].load(std::memory_order_relaxed) : ReadKind::kUnknown;
  if (kind != ReadKind::kUnknown) return kind;
  struct stat st;
  if (RawSyscall(SYS_fstat, fd, Arg(&st)) != 0) return ReadKind::kOther;
  kind = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) ? ReadKind::kFile
         : S_ISFIFO(st.st_mode)                      ? ReadKind::kPipe
                                                     : ReadKind::kOther;
  if (fd < kMaxReadKinds) read_kinds[fd].store(kind, std::memory_order_relaxed);
  return kind;
}

// read(2) of a descriptor no shield serves while a console lock is kept. A regular file's read
// waits for no other process: made as it is. A pipe's is tried without waiting (RWF_NOWAIT, the
// same result where bytes are there) and lets go of the lock first where it would wait. Any
// other (a socket, whose SO_RCVLOWAT a read without waiting would not honour; a terminal; an
// eventfd) lets go first.
long ReadKeepingConsoleLocks(const SyscallFrame& f) {
  switch (ReadKindOf(Fd(f.args[0]))) {
    case ReadKind::kFile:
      return Raw(f);
    case ReadKind::kPipe: {
      iovec v{Ptr<void>(f.args[1]), static_cast<size_t>(f.args[2])};
      long r = RawSyscall6(SYS_preadv2, f.args[0], Arg(&v), 1, -1, -1, RWF_NOWAIT);
      if (r != -EAGAIN && r != -EOPNOTSUPP && r != -EINVAL) return r;
      break;
    }
    default:
      break;
  }
  KeptConsoleLocks::LetGoAll();
  return Raw(f);
}

// Where a path call keeps its paths: {path argument, its directory argument or -1}.
struct PathArgs {
  int path[2];
  int dir[2];
};
bool PathArguments(long nr, PathArgs* out) {
  switch (nr) {
    case SYS_open:
    case SYS_creat:
    case SYS_stat:
    case SYS_lstat:
    case SYS_access:
    case SYS_truncate:
    case SYS_unlink:
    case SYS_chdir:
    case SYS_execve:
      *out = {{0, -1}, {-1, -1}};
      return true;
    case SYS_rename:
    case SYS_link:
      *out = {{0, 1}, {-1, -1}};
      return true;
    case SYS_openat:
    case SYS_openat2:
    case SYS_newfstatat:
    case SYS_statx:
    case SYS_faccessat:
    case SYS_faccessat2:
    case SYS_unlinkat:
    case SYS_execveat:
      *out = {{1, -1}, {0, -1}};
      return true;
    case SYS_renameat:
    case SYS_renameat2:
    case SYS_linkat:
      *out = {{1, 3}, {0, 2}};
      return true;
    default:
      return false;
  }
}

// Whether the paths a call names can be read (entry/user_memory.h): the runtime judges them
// itself, where a bad pointer faulted; the kernel fails such a call with EFAULT.
bool PathsReadable(long nr, const long* a) {
  PathArgs p = {{-1, -1}, {-1, -1}};
  if (!PathArguments(nr, &p)) {
    switch (nr) {
      case SYS_mkdir:
      case SYS_rmdir:
      case SYS_chmod:
      case SYS_chown:
      case SYS_lchown:
      case SYS_readlink:
      case SYS_mknod:
        p.path[0] = 0;
        break;
      case SYS_mkdirat:
      case SYS_fchmodat:
      case SYS_fchownat:
      case SYS_readlinkat:
      case SYS_mknodat:
        p.path[0] = 1;
        break;
      case SYS_utimensat:  // NULL: the descriptor itself
        p.path[0] = a[1] != 0 ? 1 : -1;
        break;
      case SYS_symlink:
        p.path[0] = 0;
        p.path[1] = 1;
        break;
      case SYS_symlinkat:
        p.path[0] = 0;
        p.path[1] = 2;
        break;
      default:
        return true;
    }
  }
  for (int i : p.path) {
    if (i >= 0 && !ReadableString(Str(a[i]), PATH_MAX)) return false;
  }
  return true;
}

// After the volumes closed at exit: what would have been shielded fails (EIO), never reaches the
// kernel unshielded; the rest is the kernel's.
DispatchResult DispatchAfterClose(Runtime& rt, const SyscallFrame& f) {
  const long* a = f.args;
  if (f.nr == SYS_close) {
    (void)rt.fds().Take(Fd(a[0]));
    return Done(Raw(f));
  }
  if (f.nr == SYS_execve || f.nr == SYS_execveat) {
    Log("exec refused: the process is exiting and its volumes are closed");
    return Done(-EACCES);
  }
  PathArgs p;
  if (PathArguments(f.nr, &p)) {
    for (int i = 0; i < 2 && p.path[i] >= 0; ++i) {
      const char* path = Str(a[p.path[i]]);
      if (path == nullptr || path[0] == '\0') continue;
      int dirfd = p.dir[i] >= 0 ? Fd(a[p.dir[i]]) : AT_FDCWD;
      LexicalPath lexical;
      if (!rt.LexicalLookup(dirfd, path, &lexical) || lexical.volume != nullptr) return Done(-EIO);
    }
    return Done(Raw(f));
  }
  // A descriptor call: the first argument names the descriptor, except for a few.
  int fd = Fd(a[0]);
  if (f.nr == SYS_mmap) fd = (a[3] & MAP_ANONYMOUS) ? -1 : Fd(a[4]);
  if (f.nr == SYS_sendfile && rt.fds().Has(Fd(a[1]))) return Done(-EIO);
  if ((f.nr == SYS_copy_file_range || f.nr == SYS_splice) && rt.fds().Has(Fd(a[2]))) return Done(-EIO);
  if ((f.nr == SYS_dup2 || f.nr == SYS_dup3) && rt.fds().Has(Fd(a[1]))) return Done(-EIO);
  return Done(rt.fds().Has(fd) ? -EIO : Raw(f));
}

// A call by which something the program did leaves it (bytes to a pipe, a socket, the console,
// a file that is not protected; a signal; a file created, truncated, renamed or given times,
// modes, owners or attributes; a socket bound or connected), as opposed to a write to a
// protected file, which keeps program order itself (fs/buffered_files.h).
bool SendsOut(Runtime& rt, const SyscallFrame& f) {
  int fd;
  switch (f.nr) {
    case SYS_open:
      return (f.args[1] & O_CREAT) != 0;
    case SYS_openat:
      return (f.args[2] & O_CREAT) != 0;
    case SYS_openat2:  // rare: its flags are not read from the program's memory here
      return true;
    case SYS_utimensat:  // (dirfd, path or NULL for dirfd itself, times, flags)
      if (f.args[1] != 0) return true;
      fd = Fd(f.args[0]);
      break;
    case SYS_ftruncate:
    case SYS_fallocate:
    case SYS_fchown:
    case SYS_fchmod:
    case SYS_fsetxattr:
    case SYS_fremovexattr:
    case SYS_write:
    case SYS_pwrite64:
    case SYS_writev:
    case SYS_pwritev:
    case SYS_pwritev2:
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_vmsplice:
    case SYS_sendfile:
      fd = Fd(f.args[0]);
      break;
    case SYS_tee:
      fd = Fd(f.args[1]);
      break;
    case SYS_splice:
    case SYS_copy_file_range:
      fd = Fd(f.args[2]);
      break;
    case SYS_kill:
    case SYS_tkill:
    case SYS_tgkill:
    case SYS_rt_sigqueueinfo:
    case SYS_rt_tgsigqueueinfo:
    case SYS_pidfd_send_signal:
    case SYS_mkdir:
    case SYS_mkdirat:
    case SYS_rmdir:
    case SYS_symlink:
    case SYS_symlinkat:
    case SYS_mknod:
    case SYS_mknodat:
    case SYS_rename:
    case SYS_renameat:
    case SYS_renameat2:
    case SYS_link:
    case SYS_linkat:
    case SYS_unlink:
    case SYS_unlinkat:
    case SYS_creat:
    case SYS_truncate:
    case SYS_utime:
    case SYS_utimes:
    case SYS_futimesat:
    case SYS_chmod:
    case SYS_fchmodat:
    case SYS_chown:
    case SYS_lchown:
    case SYS_fchownat:
    case SYS_setxattr:
    case SYS_lsetxattr:
    case SYS_removexattr:
    case SYS_lremovexattr:
    case SYS_bind:
    case SYS_connect:
      return true;
    default:
      return false;
  }
  if (!rt.fds().Has(fd)) return true;
  auto d = rt.fds().Get(fd);
  return d == nullptr || d->AsProtectedFile() == nullptr;
}

bool IsTlsSocket(Runtime& rt, int fd) {
  if (!rt.fds().Has(fd)) return false;
  auto d = rt.fds().Get(fd);
  return d != nullptr && d->AsTlsSocket() != nullptr;
}

// poll, ppoll, select and pselect6 over a set holding a TLS connection: the network shield's
// readiness; else kNotMine.
long ReadinessCall(Runtime& rt, const SyscallFrame& f) {
  const long* a = f.args;
  if (rt.network() == nullptr) return kNotMine;
  switch (f.nr) {
    case SYS_poll: {
      auto* fds = Ptr<struct pollfd>(a[0]);
      if (!sockets::AnyTls(rt, fds, static_cast<unsigned long>(a[1]))) return kNotMine;
      struct timespec ts = {a[2] / 1000, (a[2] % 1000) * 1000000};
      return sockets::Poll(rt, fds, static_cast<unsigned long>(a[1]), a[2] < 0 ? nullptr : &ts, nullptr, 0);
    }
    case SYS_ppoll: {
      auto* fds = Ptr<struct pollfd>(a[0]);
      if (!sockets::AnyTls(rt, fds, static_cast<unsigned long>(a[1]))) return kNotMine;
      return sockets::Poll(rt, fds, static_cast<unsigned long>(a[1]), Ptr<const struct timespec>(a[2]),
                           Ptr<const void>(a[3]), static_cast<size_t>(a[4]));
    }
    case SYS_select: {
      int nfds = Fd(a[0]);
      auto *r = Ptr<fd_set>(a[1]), *w = Ptr<fd_set>(a[2]), *e = Ptr<fd_set>(a[3]);
      if (!sockets::AnyTls(rt, nfds, r, w, e)) return kNotMine;
      auto* tv = Ptr<struct timeval>(a[4]);
      struct timespec ts = {};
      if (tv != nullptr) ts = {tv->tv_sec, tv->tv_usec * 1000};
      long n = sockets::Select(rt, nfds, r, w, e, tv != nullptr ? &ts : nullptr, nullptr, 0);
      if (tv != nullptr) *tv = {ts.tv_sec, ts.tv_nsec / 1000};
      return n;
    }
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2: {
      if (!sockets::EpollHoldsTls(Fd(a[0]))) return kNotMine;
      struct timespec ts = {};
      const struct timespec* timeout = &ts;
      if (f.nr == SYS_epoll_pwait2) {
        timeout = Ptr<const struct timespec>(a[3]);
      } else if (a[3] < 0) {
        timeout = nullptr;
      } else {
        ts = {a[3] / 1000, (a[3] % 1000) * 1000000};
      }
      bool masked = f.nr != SYS_epoll_wait;
      return sockets::EpollWait(rt, Fd(a[0]), Ptr<struct epoll_event>(a[1]), Fd(a[2]), timeout,
                                masked ? Ptr<const void>(a[4]) : nullptr, masked ? static_cast<size_t>(a[5]) : 0);
    }
    case SYS_pselect6: {
      int nfds = Fd(a[0]);
      auto *r = Ptr<fd_set>(a[1]), *w = Ptr<fd_set>(a[2]), *e = Ptr<fd_set>(a[3]);
      if (!sockets::AnyTls(rt, nfds, r, w, e)) return kNotMine;
      struct MaskArg {
        const void* mask;
        size_t size;
      };
      const auto* m = Ptr<const MaskArg>(a[5]);
      return sockets::Select(rt, nfds, r, w, e, Ptr<struct timespec>(a[4]), m ? m->mask : nullptr, m ? m->size : 0);
    }
    default:
      return kNotMine;
  }
}

// Calls on sockets: the network shield's (only when it is on).
// A send with MSG_FASTOPEN connects as it sends: with the network shield on, never past it.
bool FastOpen(Runtime& rt, long flags) { return (flags & MSG_FASTOPEN) != 0 && rt.network() != nullptr; }

long DispatchSockets(Runtime& rt, const SyscallFrame& f) {
  const long* a = f.args;
  FdTable& fds = rt.fds();
  switch (f.nr) {
    case SYS_socket:
      return rt.network() ? sockets::Socket(rt, Fd(a[0]), Fd(a[1]), Fd(a[2])) : kNotMine;
    case SYS_bind:
      return rt.network() ? sockets::Bind(rt, Fd(a[0]), Ptr<const struct sockaddr>(a[1]), static_cast<socklen_t>(a[2]))
                          : kNotMine;
    case SYS_connect:
      return rt.network() ? sockets::Connect(rt, Fd(a[0]), Ptr<const struct sockaddr>(a[1]), static_cast<socklen_t>(a[2]))
                          : kNotMine;
    case SYS_accept:
    case SYS_accept4:
      return rt.network() ? sockets::Accept(rt, Fd(a[0]), Ptr<struct sockaddr>(a[1]), Ptr<socklen_t>(a[2]),
                                            f.nr == SYS_accept4 ? Fd(a[3]) : 0)
                          : kNotMine;
    case SYS_recvfrom:
      return fds.Has(Fd(a[0])) ? sockets::ReceiveFrom(rt, Fd(a[0]), Ptr<void>(a[1]), a[2], Fd(a[3]),
                                                      Ptr<struct sockaddr>(a[4]), Ptr<socklen_t>(a[5]))
                               : kNotMine;
    case SYS_sendto:
      // A TLS connection's, or TCP Fast Open's connect (MSG_FASTOPEN) that the rules must judge.
      return fds.Has(Fd(a[0])) || FastOpen(rt, a[3]) ? sockets::SendTo(rt, Fd(a[0]), Ptr<const void>(a[1]), a[2], Fd(a[3]),
                                                 Ptr<const struct sockaddr>(a[4]), static_cast<socklen_t>(a[5]))
                               : kNotMine;
    case SYS_recvmsg: {
      if (fds.Has(Fd(a[0]))) return sockets::ReceiveMessage(rt, Fd(a[0]), Ptr<struct msghdr>(a[1]), Fd(a[2]));
      if (!rt.network()) return kNotMine;
      long r = Raw(f);
      if (r >= 0) sockets::CheckReceivedDescriptors(rt, Ptr<const struct msghdr>(a[1]));
      return r;
    }
    case SYS_sendmsg:
      if (long r = sockets::CheckPassedDescriptors(rt, Ptr<const struct msghdr>(a[1])); r < 0) return r;
      return fds.Has(Fd(a[0])) || FastOpen(rt, a[2]) ? sockets::SendMessage(rt, Fd(a[0]), Ptr<const struct msghdr>(a[1]), Fd(a[2])) : kNotMine;
    case SYS_recvmmsg: {
      if (fds.Has(Fd(a[0]))) return -EOPNOTSUPP;  // datagram batches: no TLS stream has them
      if (!rt.network()) return kNotMine;
      long r = Raw(f);
      for (long i = 0; i < r; ++i) sockets::CheckReceivedDescriptors(rt, &Ptr<const struct mmsghdr>(a[1])[i].msg_hdr);
      return r;
    }
    case SYS_sendmmsg:
      for (long i = 0; a[1] != 0 && i < static_cast<long>(static_cast<unsigned>(a[2])); ++i) {
        if (long r = sockets::CheckPassedDescriptors(rt, &Ptr<const struct mmsghdr>(a[1])[i].msg_hdr); r < 0) return r;
      }
      return fds.Has(Fd(a[0])) || FastOpen(rt, a[3]) ? -EOPNOTSUPP : kNotMine;
    case SYS_pidfd_getfd: {
      if (!rt.network()) return kNotMine;
      long r = Raw(f);
      if (r >= 0) sockets::CheckArrivedDescriptor(rt, static_cast<int>(r), "taken with pidfd_getfd");
      return r;
    }
    case SYS_shutdown:
      return fds.Has(Fd(a[0])) ? sockets::Shutdown(rt, Fd(a[0]), Fd(a[1])) : kNotMine;
    case SYS_setsockopt:
    case SYS_getsockopt:
      return fds.Has(Fd(a[0])) ? sockets::SocketOption(rt, f.nr, Fd(a[0]), Fd(a[1]), Fd(a[2]), Ptr<void>(a[3]),
                                                       static_cast<socklen_t>(a[4]), Ptr<socklen_t>(a[4]))
                               : kNotMine;
    case SYS_ioctl:
      return fds.Has(Fd(a[0])) && static_cast<unsigned long>(a[1]) == FIONREAD
                 ? sockets::ReadableBytes(rt, Fd(a[0]), Ptr<int>(a[2]))
                 : kNotMine;
    case SYS_poll:
    case SYS_select:
    case SYS_epoll_wait:
      return ReadinessCall(rt, f);
    case SYS_epoll_ctl:
      return rt.network() ? sockets::EpollCtl(rt, Fd(a[0]), Fd(a[1]), Fd(a[2]), Ptr<struct epoll_event>(a[3])) : kNotMine;
    case SYS_epoll_create:
    case SYS_epoll_create1: {
      if (!rt.network()) return kNotMine;
      long r = Raw(f);
      if (r >= 0) sockets::EpollCreated(static_cast<int>(r));
      return r;
    }
    default:
      return kNotMine;
  }
}

// Calls on descriptors and paths: the file system shield's.
void ForgetLinkFreeDirectories(Runtime& rt, int dirfd, const char* path) {
  RuntimeSection section;
  rt.ForgetLinkFreeDirectories(dirfd, path);
}

// A call that removed a name or made a link (`r`), then the forgetting where it succeeded.
DispatchResult ForgetAfter(Runtime& rt, DispatchResult r, int dirfd, const char* path) {
  if (r.value == 0) ForgetLinkFreeDirectories(rt, dirfd, path);
  return r;
}

DispatchResult DispatchFiles(Runtime& rt, SyscallFrame& f) {
  if (process::ForkChildPending() && !process::BeforeChildReset(f.nr, f.args[3])) process::CompleteForkInChild();
  if (!PathsReadable(f.nr, f.args)) return Done(-EFAULT);
  if (rt.closed()) return DispatchAfterClose(rt, f);
  // What the program buffered in a volume it has alone goes first (fs/buffered_files.h).
  if (fs::Volume::AnyBuffered() && SendsOut(rt, f)) PublishBufferedWrites();
  const long* a = f.args;
  FdTable& fds = rt.fds();
  switch (f.nr) {
    case SYS_read:
      if (fds.Has(Fd(a[0]))) return Done(files::Read(rt, Fd(a[0]), Ptr<void>(a[1]), a[2]));
      return Done(KeptConsoleLocks::Any() ? ReadKeepingConsoleLocks(f) : Raw(f));
    case SYS_write:
      return Done(fds.Has(Fd(a[0])) ? files::Write(rt, Fd(a[0]), Ptr<const void>(a[1]), a[2]) : Raw(f));
    case SYS_pread64:
      return Done(fds.Has(Fd(a[0])) ? files::ReadAt(rt, Fd(a[0]), Ptr<void>(a[1]), a[2], a[3]) : Raw(f));
    case SYS_pwrite64:
      return Done(fds.Has(Fd(a[0])) ? files::WriteAt(rt, Fd(a[0]), Ptr<const void>(a[1]), a[2], a[3]) : Raw(f));
    case SYS_readv:
      return Done(fds.Has(Fd(a[0])) ? files::ReadVector(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]), -1) : Raw(f));
    case SYS_writev:
      return Done(fds.Has(Fd(a[0])) ? files::WriteVector(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]), -1) : Raw(f));
    case SYS_preadv:
    case SYS_preadv2:  // (fd, iov, count, pos_l, pos_h[, flags]); pos_l is the whole offset here
      return Done(fds.Has(Fd(a[0])) ? files::ReadVector(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]),
                                                         f.nr == SYS_preadv && a[3] == -1 ? -2 : a[3])
                                     : Raw(f));
    case SYS_pwritev:
    case SYS_pwritev2:
      if (!fds.Has(Fd(a[0]))) return Done(Raw(f));
      if (f.nr == SYS_pwritev2 && a[5] != 0) {
        return Done(files::WriteVectorFlags(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]), a[3], Fd(a[5])));
      }
      return Done(files::WriteVector(rt, Fd(a[0]), Ptr<const iovec>(a[1]), Fd(a[2]),
                                     f.nr == SYS_pwritev && a[3] == -1 ? -2 : a[3]));
    case SYS_lseek:
      return Done(fds.Has(Fd(a[0])) ? files::Seek(rt, Fd(a[0]), a[1], Fd(a[2])) : Raw(f));
    case SYS_fstat:
      return Done(fds.Has(Fd(a[0])) ? files::FileStat(rt, Fd(a[0]), Ptr<struct stat>(a[1])) : Raw(f));
    case SYS_ftruncate:
      return Done(fds.Has(Fd(a[0])) ? files::FileTruncate(rt, Fd(a[0]), a[1]) : Raw(f));
    case SYS_fallocate:
      return Done(fds.Has(Fd(a[0])) ? files::Allocate(rt, Fd(a[0]), Fd(a[1]), a[2], a[3]) : Raw(f));
    case SYS_fsync:
    case SYS_fdatasync:
    case SYS_sync_file_range:
      return Done(fds.Has(Fd(a[0])) ? files::Sync(rt, Fd(a[0])) : Raw(f));
    case SYS_close:
      if (fds.IsOwn(Fd(a[0]))) return Done(-EBADF);  // not the program's
      ForgetDescriptor(rt, Fd(a[0]));
      if (!fds.Has(Fd(a[0]))) return Done(Raw(f));
      return Done(IsTlsSocket(rt, Fd(a[0])) ? sockets::Close(rt, Fd(a[0])) : files::Close(rt, Fd(a[0])));
    case SYS_close_range:
      return Done(CloseRange(rt, f));
    case SYS_dup:
    case SYS_dup2:
    case SYS_dup3:
      if (fds.IsOwn(Fd(a[0])) || (f.nr != SYS_dup && fds.IsOwn(Fd(a[1])))) return Done(-EBADF);
      if (f.nr != SYS_dup) ForgetReadKind(Fd(a[1]));
      return Done(files::Dup(rt, f.nr, Fd(a[0]), Fd(a[1]), Fd(a[2])));
    case SYS_fcntl:
      if (fds.IsOwn(Fd(a[0]))) return Done(-EBADF);
      if (fds.Has(Fd(a[0]))) return Done(files::Fcntl(rt, Fd(a[0]), Fd(a[1]), a[2]));
      if (a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC) {
        long r = Raw(f);
        if (r >= 0) rt.dirs().Copy(Fd(a[0]), Fd(r));
        return Done(r);
      }
      return Done(Raw(f));
    case SYS_mmap:
      if ((a[3] & MAP_ANONYMOUS) || !fds.Has(Fd(a[4]))) {
        long r = Raw(f);
        if ((a[3] & MAP_FIXED) && (r >= 0 || r <= -4096) && MappedFiles::Get().Tracks()) MappedFiles::Get().Replaced(a[0], a[1]);
        return Done(r);
      }
      return Done(files::Map(rt, Ptr<void>(a[0]), a[1], Fd(a[2]), Fd(a[3]), Fd(a[4]), a[5]));
    case SYS_munmap:
    case SYS_msync:
    case SYS_mremap:
    case SYS_mprotect:
      // Memory calls: the shield's only where they touch a shared mapping of a protected file.
      return Done(MappedFiles::Get().Tracks() ? files::MemoryCall(rt, f.nr, a) : Raw(f));
    case SYS_sendfile:  // (out, in, offset*, count)
      if (!fds.Has(Fd(a[0])) && !fds.Has(Fd(a[1]))) return Done(Raw(f));
      return Done(files::Copy(rt, Fd(a[1]), Ptr<long>(a[2]), Fd(a[0]), nullptr, a[3]));
    case SYS_copy_file_range:  // (in, in_offset*, out, out_offset*, count, flags)
    case SYS_splice:
      if (!fds.Has(Fd(a[0])) && !fds.Has(Fd(a[2]))) return Done(Raw(f));
      return Done(files::Copy(rt, Fd(a[0]), Ptr<long>(a[1]), Fd(a[2]), Ptr<long>(a[3]), a[4]));
    case SYS_getdents64:
      return Done(files::GetDents64(rt, Fd(a[0]), Ptr<void>(a[1]), a[2]));
    case SYS_chdir:
    case SYS_fchdir:
      return Done(files::ChangeDirectory(rt, f.nr, a[0]));
    case SYS_open:
    case SYS_creat:
    case SYS_openat:
    case SYS_openat2:
      return Open(rt, f);
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_vmsplice:
      // The console's, else a TLS connection's (or the kernel's).
      if (IsConsole(rt, Fd(a[0]))) return Done(ConsoleTransfer(rt, f.nr, a));
      return Served(f, DispatchSockets(rt, f));
    case SYS_tee:
      return Done(IsConsole(rt, Fd(a[1])) ? ConsoleTransfer(rt, f.nr, a) : Raw(f));
    case SYS_stat:
      return Done(files::StatAt(rt, AT_FDCWD, Str(a[0]), Ptr<struct stat>(a[1]), 0));
    case SYS_lstat:
      return Done(files::StatAt(rt, AT_FDCWD, Str(a[0]), Ptr<struct stat>(a[1]), AT_SYMLINK_NOFOLLOW));
    case SYS_newfstatat:
      return Done(files::StatAt(rt, Fd(a[0]), Str(a[1]), Ptr<struct stat>(a[2]), Fd(a[3])));
    case SYS_statx:
      return Done(files::Statx(rt, Fd(a[0]), Str(a[1]), Fd(a[2]), static_cast<unsigned>(a[3]), Ptr<struct statx>(a[4])));
    case SYS_access:
      return Served(f, files::Access(rt, AT_FDCWD, Str(a[0]), Fd(a[1]), 0));
    case SYS_faccessat:
      return Served(f, files::Access(rt, Fd(a[0]), Str(a[1]), Fd(a[2]), 0));
    case SYS_faccessat2:
      return Served(f, files::Access(rt, Fd(a[0]), Str(a[1]), Fd(a[2]), Fd(a[3])));
    case SYS_truncate:
      if (rt.console().Active() && rt.console().IsConsoleFile(AT_FDCWD, Str(a[0]))) return Done(-EINVAL);
      return Served(f, files::Truncate(rt, Str(a[0]), a[1]));
    case SYS_rename:
    case SYS_renameat:
    case SYS_renameat2: {
      const bool at = f.nr != SYS_rename;
      int newdirfd = at ? Fd(a[2]) : AT_FDCWD;
      const char* newpath = Str(at ? a[3] : a[1]);
      DispatchResult r = Served(f, files::RenameAt(rt, at ? Fd(a[0]) : AT_FDCWD, Str(at ? a[1] : a[0]), newdirfd, newpath,
                                                   f.nr == SYS_renameat2 ? static_cast<unsigned>(a[4]) : 0));
      if (r.value == 0) {
        ForgetLinkFreeDirectories(rt, at ? Fd(a[0]) : AT_FDCWD, Str(at ? a[1] : a[0]));
        files::AfterRename(rt, newdirfd, newpath);
      }
      return r;
    }
    // A name removed or a link made: Locate's knowledge of link-free directories goes
    // (runtime.h); the kernel's answer is the call's.
    case SYS_unlink:
      return ForgetAfter(rt, Served(f, files::UnlinkAt(rt, AT_FDCWD, Str(a[0]), 0)), AT_FDCWD, Str(a[0]));
    case SYS_unlinkat:
      return ForgetAfter(rt, Served(f, files::UnlinkAt(rt, Fd(a[0]), Str(a[1]), Fd(a[2]))), Fd(a[0]), Str(a[1]));
    case SYS_rmdir:
      return ForgetAfter(rt, Done(Raw(f)), AT_FDCWD, Str(a[0]));
    case SYS_symlink:
      return ForgetAfter(rt, Done(Raw(f)), AT_FDCWD, Str(a[1]));
    case SYS_symlinkat:
      return ForgetAfter(rt, Done(Raw(f)), Fd(a[1]), Str(a[2]));
    case SYS_link:
      return Served(f, files::LinkAt(rt, AT_FDCWD, Str(a[0]), AT_FDCWD, Str(a[1]), 0));
    case SYS_linkat:
      return Served(f, files::LinkAt(rt, Fd(a[0]), Str(a[1]), Fd(a[2]), Str(a[3]), Fd(a[4])));
    case SYS_chown:
    case SYS_lchown:
    case SYS_fchown:
    case SYS_fchownat: {
      const long r = Raw(f);
      if (r != 0) return Done(r);
      if (f.nr == SYS_fchown) {
        files::AfterChown(rt, Fd(a[0]), nullptr, static_cast<uid_t>(a[1]), static_cast<gid_t>(a[2]), 0);
      } else if (f.nr == SYS_fchownat) {
        files::AfterChown(rt, Fd(a[0]), Str(a[1]), static_cast<uid_t>(a[2]), static_cast<gid_t>(a[3]), Fd(a[4]));
      } else {
        files::AfterChown(rt, AT_FDCWD, Str(a[0]), static_cast<uid_t>(a[1]), static_cast<gid_t>(a[2]),
                          f.nr == SYS_lchown ? AT_SYMLINK_NOFOLLOW : 0);
      }
      return Done(0);
    }
    case SYS_readlink:
      return Done(files::AfterReadlink(rt, AT_FDCWD, Str(a[0]), Ptr<char>(a[1]), static_cast<size_t>(a[2]), Raw(f)));
    case SYS_readlinkat:
      return Done(files::AfterReadlink(rt, Fd(a[0]), Str(a[1]), Ptr<char>(a[2]), static_cast<size_t>(a[3]), Raw(f)));
    case SYS_utimensat:
      return Done(files::SetTimes(rt, Fd(a[0]), Str(a[1]), Ptr<const struct timespec>(a[2]), Fd(a[3])));
    case SYS_utime:
      return Done(files::SetTimesOldStyle(rt, AT_FDCWD, Str(a[0]), Ptr<const void>(a[1]), /*whole_seconds=*/true));
    case SYS_utimes:
      return Done(files::SetTimesOldStyle(rt, AT_FDCWD, Str(a[0]), Ptr<const void>(a[1]), /*whole_seconds=*/false));
    case SYS_futimesat:
      return Done(files::SetTimesOldStyle(rt, Fd(a[0]), Str(a[1]), Ptr<const void>(a[2]), /*whole_seconds=*/false));
    case SYS_execve:
      return Done(process::Exec(rt, AT_FDCWD, Str(a[0]), Ptr<char* const>(a[1]), Ptr<char* const>(a[2]), 0));
    case SYS_execveat:
      return Done(process::Exec(rt, Fd(a[0]), Str(a[1]), Ptr<char* const>(a[2]), Ptr<char* const>(a[3]), Fd(a[4])));
    case SYS_mknod:
    case SYS_mknodat: {  // ([dirfd,] path, mode, dev)
      const bool at = f.nr == SYS_mknodat;
      const auto mode = static_cast<mode_t>(a[at ? 2 : 1]);
      if ((mode & S_IFMT) != 0 && !S_ISREG(mode)) return Done(Raw(f));  // FIFOs, sockets, devices
      return Served(f, files::MakeRegularNode(rt, at ? Fd(a[0]) : AT_FDCWD, Str(a[at ? 1 : 0]), mode));
    }
    case SYS_setrlimit:
    case SYS_prlimit64: {  // (pid, resource, new, old): a new limit for this process, maybe
      const long r = Raw(f);
      if (r == 0 && (f.nr == SYS_setrlimit || a[2] != 0)) files::LimitsChanged();
      return Done(r);
    }
    case SYS_setxattr:
    case SYS_lsetxattr:
    case SYS_fsetxattr:
    case SYS_getxattr:
    case SYS_lgetxattr:
    case SYS_fgetxattr:
    case SYS_listxattr:
    case SYS_llistxattr:
    case SYS_flistxattr:
    case SYS_removexattr:
    case SYS_lremovexattr:
    case SYS_fremovexattr:
    case files::kSetXattrAt:
    case files::kGetXattrAt:
    case files::kListXattrAt:
    case files::kRemoveXattrAt:
      return Served(f, files::XattrCall(rt, f.nr, a));
    case SYS_io_setup:
    case SYS_io_uring_setup:
      // Asynchronous I/O would reach the kernel without the shields (a protected file's
      // ciphertext, a TLS connection's socket, the console): programs fall back to system calls
      // (MariaDB without native AIO, liburing users to their synchronous path).
      return Done(rt.HasVolumes() || rt.network() != nullptr || rt.console().Active() ? -ENOSYS : Raw(f));
    default:
      return Served(f, DispatchSockets(rt, f));
  }
}

// The runtime ran out of memory serving a call (its private heap got no pages from the kernel:
// an address-space limit, strict overcommit): the call fails with ENOMEM, as the kernel's own
// calls do, and the program goes on. Said once per process.
DispatchResult OutOfMemory(long nr) {
  static std::atomic<bool> said{false};
  if (!said.exchange(true)) {
    try {
      Log("out of memory in the runtime serving system call " + std::to_string(nr) + ": it fails with ENOMEM");
    } catch (...) {
    }
  }
  return Done(-ENOMEM);
}

DispatchResult DispatchCall(SyscallFrame& f);

}  // namespace

uint64_t OfferTicketToNextCall() {
  const uint64_t ticket = g_last_ticket.fetch_add(1, std::memory_order_relaxed) + 1;
  g_offered_ticket.store(ticket, std::memory_order_seq_cst);  // seen by every call begun after
  return ticket;
}

DispatchResult Dispatch(SyscallFrame& f) {
  try {
    return DispatchCall(f);
  } catch (const std::bad_alloc&) {
    return OutOfMemory(f.nr);
  }
}

namespace {

DispatchResult DispatchCall(SyscallFrame& f) {
  // Made at the program's own stack pointer, whoever makes them.
  if (f.nr == SYS_rt_sigreturn) {
    UnblockSigsysInFrame(f.stack_pointer);
    return Native();
  }
  EntryThread& t = ThisThread();
  if (t.depth > 0) {
    if (!CloneFamily(f.nr)) return Done(Raw(f));
    PrepareRuntimeClone(f);  // a thread the runtime starts for itself is its own from the start
    return Native();
  }
  t.ticket = g_offered_ticket.load(std::memory_order_relaxed) == 0 ? 0 : g_offered_ticket.exchange(0, std::memory_order_acq_rel);
  CallInProgress in_call(t, f.nr);
  if (KeptConsoleLocks::Any()) KeepOrLetGoConsoleLocks(f);
  const long* a = f.args;
  DispatchResult r;
  switch (f.nr) {
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
      return process::Clone(f);
    case SYS_rt_sigaction:
      r = Done(process::SigAction(Fd(a[0]), Ptr<const process::KernelSigaction>(a[1]),
                                  Ptr<process::KernelSigaction>(a[2]), a[3]));
      break;
    case SYS_rt_sigprocmask:
      r = Done(process::SigProcMask(Fd(a[0]), Ptr<const uint64_t>(a[1]), Ptr<uint64_t>(a[2]), a[3]));
      break;
    case SYS_ppoll:
    case SYS_pselect6:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      // Readiness of TLS connections is the network shield's; the mask is the runtime's.
      if (Runtime* rt = ShieldIfReady(); rt != nullptr && !rt->closed()) {
        long served = ReadinessCall(*rt, f);
        if (served != kNotMine) {
          r = Done(served);
          break;
        }
      }
      r = Done(process::WithMask(f.nr, a));
      break;
    case SYS_rt_sigsuspend:
      r = Done(process::WithMask(f.nr, a));
      break;
    case SYS_prctl:
      r = Done(process::Prctl(a[0], a[1], a[2], a[3], a[4]));
      break;
    case SYS_exit_group:
      // _exit skips the exit handlers that close the volumes: what the descriptors wrote is
      // committed now, as the kernel would keep it.
      CloseVolumesAtExit();
      process::EndIfTerminating();  // a signal was ending it: the parent sees that signal
      [[fallthrough]];
    case SYS_exit:
      process::BeforeExit(a[0]);
      return Done(Raw(f));
    default: {
      Runtime* rt = ShieldIfReady();
      r = rt != nullptr ? DispatchFiles(*rt, f) : Done(Raw(f));
    }
  }
  process::NoteResult(r.value);
  return r;
}

}  // namespace

}  // namespace scone::runtime
