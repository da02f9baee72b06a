// The absolute paths of directory descriptors the program opened, so that calls relative to
// them (fstatat(dirfd, name), openat(dirfd, name), as find, tar and fts make them by the
// thousand) are judged without asking the kernel, like paths relative to the working
// directory (Runtime::LexicalLookup).
//
// A path is recorded only where the runtime knows exactly where the kernel looked (the open was
// judged lexically and made refusing symbolic links, or resolved the long way). It is
// forgotten when the descriptor is closed or replaced, and every path is forgotten when this
// process renames a directory. Like the working directory, a directory another process renames
// is still judged by its old name.
//
// Cost: a lookup is a sequence read and a copy, no lock; paths of 240 bytes or more, and
// descriptors from 65536 on, are not recorded (their calls take the long way). The slots are
// reserved address space; only pages in use take memory. Thread-safety: all methods may be
// called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace scone::runtime {

class DirectoryTable {
 public:
  static constexpr int kMaxFds = 1 << 16;
  static constexpr size_t kMaxPath = 240;

  DirectoryTable();
  ~DirectoryTable();
  DirectoryTable(const DirectoryTable&) = delete;
  DirectoryTable& operator=(const DirectoryTable&) = delete;

  // Copies fd's absolute path into out (NUL-terminated); returns its length, 0 if unknown.
  size_t Get(int fd, char* out, size_t out_size) const;
  void Set(int fd, const char* absolute, size_t length);
  // The descriptor was closed or replaced: one load when it was never recorded.
  void Forget(int fd) {
    if (Recorded(fd)) Clear(fd);
  }
  // dup: the new descriptor names the same directory.
  void Copy(int from, int to);
  // This process renamed a directory: every recorded path may be stale.
  void ForgetAll() { generation_.fetch_add(1, std::memory_order_acq_rel); }
  // Fork: a slot another thread was writing would stay odd (its readers spinning) in the child.
  void BeforeFork() { write_mu_.lock(); }
  void AfterFork() { write_mu_.unlock(); }

 private:
  struct Slot {
    std::atomic<uint32_t> seq;  // odd while being written
    uint32_t generation;
    std::atomic<uint16_t> length;  // 0: nothing recorded
    char path[kMaxPath];
  };
  bool Recorded(int fd) const {
    return slots_ != nullptr && fd >= 0 && fd < kMaxFds && slots_[fd].length.load(std::memory_order_relaxed) != 0;
  }
  void Clear(int fd);

  Slot* slots_;
  std::atomic<uint32_t> generation_{1};
  std::mutex write_mu_;
};

}  // namespace scone::runtime
