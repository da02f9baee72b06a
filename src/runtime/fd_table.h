// The descriptors the shields serve: one table for every shield (files, TLS connections, the
// console), indexed by descriptor number.
//
// A shielded descriptor is a real kernel descriptor too (opened by the shield, with the number
// the kernel chose), so numbering, close-on-exec, dup, poll and locks stay the kernel's; what
// the program reads and writes goes through the ShieldedFd instead. Descriptors made by dup
// share one ShieldedFd (one open file description).
//
// Cost: a lookup of a descriptor no shield covers is one atomic load, no lock; lookups of
// shielded ones take a shared reference under a mutex. Thread-safety: all methods may be called
// concurrently.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <climits>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace scone::runtime {

struct InheritedFd;
class ProtectedFd;
namespace sockets {
class TlsSocketFd;
}

// An open file description a shield serves. Every call follows the kernel's convention: a
// result >= 0, or -errno. The defaults are the kernel's answers for an object that does not
// support the call.
class ShieldedFd {
 public:
  virtual ~ShieldedFd() = default;

  // At the description's offset (advancing it), or at an explicit one. `fd` is the descriptor
  // the call came through (any of the description's).
  virtual long Read(int fd, void* buf, size_t count) = 0;
  virtual long Write(int fd, const void* buf, size_t count) = 0;
  virtual long ReadAt(void* buf, size_t count, uint64_t offset) = 0;
  virtual long WriteAt(const void* buf, size_t count, uint64_t offset) = 0;
  virtual long Seek(int fd, int64_t offset, int whence) = 0;
  // The description is about to be shared with another process (fork, or a program this one
  // executes keeps the descriptor): from now on its offset is the kernel's, which the kernel
  // shares between the processes as it does for every open file description.
  virtual void ShareWithOtherProcesses(int fd) = 0;
  // Corrects what the kernel reported about the descriptor (the plaintext size).
  virtual void PatchStat(struct stat* st) = 0;
  virtual uint64_t PlaintextSize() = 0;
  virtual long Truncate(int64_t length) = 0;
  virtual long Allocate(int mode, int64_t offset, int64_t length) = 0;
  virtual long Sync() = 0;
  // The program is about to set the file's times through its descriptor (futimens): what the
  // shield still has to write goes first, so that the times set are the file's last, as
  // natively (the program's writes came before). Nothing to do by default.
  virtual long CommitBeforeTimes() { return 0; }
  // The program set the file's times through the kernel (utimensat): they must outlast what
  // the shield still writes to the file.
  virtual long KeepTimes(bool atime, bool mtime) = 0;
  // mmap of the descriptor.
  virtual long Map(void* addr, size_t length, int prot, int flags, int64_t offset) = 0;
  // The status flags the program sees (O_ACCMODE, O_APPEND, ...), given the kernel's.
  virtual int StatusFlags(int kernel_flags) = 0;
  // F_SETFL: returns the flags to hand to the kernel.
  virtual int SetStatusFlags(int flags) = 0;
  // The last descriptor referring to it is being closed: commit (an error is the close's).
  virtual long LastClose() = 0;
  // In a child forked from a process with several threads: what the parent wrote is the
  // parent's to commit (its threads may have held the file's locks at fork time).
  virtual void ForgetParentWrites() = 0;
  // Describes the descriptor for a program this one executes; false if it cannot follow.
  virtual bool Describe(int fd, InheritedFd* out) = 0;
  // The network shield's connection, or nullptr for a file.
  virtual sockets::TlsSocketFd* AsTlsSocket() { return nullptr; }
  // The file system shield's protected file descriptor, or nullptr.
  virtual ProtectedFd* AsProtectedFile() { return nullptr; }
  // A descriptor of the console (runtime/console/console_shield.h), which follows exec its own way.
  virtual bool IsConsole() const { return false; }
  // Sealed stdin (runtime/console/console_input.h), which follows exec with the console.
  virtual bool IsConsoleInput() const { return false; }
};

class FdTable {
 public:
  // Descriptors at or above this are never shielded: opening a protected object there fails
  // with EMFILE. The slots are reserved address space; only the pages in use take memory.
  static constexpr int kMaxFds = 1 << 20;

  FdTable();
  ~FdTable();
  bool ok() const { return slots_ != nullptr; }
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;

  // Whether `fd` is shielded: one atomic load.
  bool Has(int fd) const {
    return fd >= 0 && fd < kMaxFds && slots_[fd].load(std::memory_order_acquire) != nullptr;
  }
  std::shared_ptr<ShieldedFd> Get(int fd) const;
  void Set(int fd, std::shared_ptr<ShieldedFd> d);
  // Removes fd; returns its description (nullptr if it was not shielded).
  std::shared_ptr<ShieldedFd> Take(int fd);
  std::vector<std::pair<int, std::shared_ptr<ShieldedFd>>> All() const;

  // The runtime's own descriptors (a volume's lock and journal, the ciphertext files behind
  // protected descriptors): the program does not see them. They live above its descriptor
  // limit where they can, and close, close_range and dup2 leave them alone.
  // One bit each, set and cleared without a lock and without allocating: the runtime's threads
  // mark and unmark while another thread forks (inside glibc's fork, with the allocator's locks
  // held by the forking thread, a lock held across an allocation would never be let go).
  void MarkOwn(int fd);
  void UnmarkOwn(int fd);
  // One atomic load.
  bool IsOwn(int fd) const {
    return fd >= 0 && fd < kMaxFds &&
           (own_[fd / 64].load(std::memory_order_acquire) >> (fd % 64) & 1) != 0;
  }
  // The runtime's own descriptors in [first, last], ascending.
  std::vector<int> OwnIn(unsigned first, unsigned last) const;

  // Fork: the lock must not be held by another thread across fork.
  void BeforeFork() { mu_.lock(); }
  void AfterFork() { mu_.unlock(); }

 private:
  mutable std::mutex mu_;
  std::unordered_map<int, std::shared_ptr<ShieldedFd>> owners_;
  std::atomic<ShieldedFd*>* slots_;
  std::atomic<uint64_t>* own_;         // kMaxFds bits, in reserved pages like slots_
  std::atomic<int> highest_own_{-1};   // never lowered: bounds OwnIn's scan
};

}  // namespace scone::runtime
