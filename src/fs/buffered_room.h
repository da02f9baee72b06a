// Room on the disk promised to the writes a process alone buffers (fs/buffered_files.h) until
// their commit, as a file system with delayed allocation reserves blocks at write(2) (ext4's
// delalloc). Without it a full disk was met at the commit (a close, the watcher's publish),
// after write(2) had returned: a shell's `echo line >> log` on a full disk went on "succeeding"
// while every line was lost, since a shell never looks at close. A write is buffered only while
// the disk's free room covers what every buffered change's commit may take (its chunks' slots
// and journal images) and a margin; else it commits at once and meets ENOSPC itself.
//
// Thread-safety: all methods may be called concurrently (a leaf lock: taken under a file's).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "common/status.h"

namespace scone::fs {

class BufferedRoom {
 public:
  // Beyond what is promised, room kept for the commits' records and the journal's zeros ahead.
  static constexpr uint64_t kMargin = uint64_t{1} << 20;

  // Promises `bytes` more if the disk holds them besides what is promised and the margin; the
  // disk's free room is asked of `free_space` (statfs) on every call while it is small, and
  // every few milliseconds while it is large. An error of `free_space` promises (as before).
  bool Promise(uint64_t bytes, const std::function<Result<uint64_t>()>& free_space);
  // Gives back what a commit (or a discard) no longer needs.
  void Release(uint64_t bytes);
  uint64_t promised() const;

 private:
  mutable std::mutex mu_;
  uint64_t promised_ = 0;
  uint64_t free_ = 0;                 // the disk's free room, as last asked
  int64_t checked_at_ns_ = INT64_MIN;  // CLOCK_MONOTONIC_COARSE
};

}  // namespace scone::fs
