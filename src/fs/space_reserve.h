// Room a volume keeps on its disk for its own metadata, so that a full disk never locks its
// owner out. Opening a volume marks it in use (its state file rewritten: the size of the state,
// and two syncs), and removing a file appends a journal record before the data file goes: on a
// disk filled to the last block (a database's dedicated disk, a log that ran away) the volume
// could not be opened any more, not to read a file, not to delete one to make room. The reserve
// is a file of allocated blocks beside the state; a metadata change that finds no room releases
// it and tries once more, and the next open keeps it again once the disk has room.
//
// Only changes that do not grow what the programs store may use it (the state file, records
// that remove, rename or sync, commits that cut a file short or only overwrite what it holds):
// a write of new data that finds the disk full fails with ENOSPC as natively, and cannot eat
// the room its owner needs to clean up.
//
// Thread-safety: none; the volume guards it with its lock.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace scone::fs {

class SpaceReserve {
 public:
  // Room for the journal's zeros ahead and a few records, besides the state file's size.
  static constexpr uint64_t kBaseBytes = uint64_t{256} << 10;

  explicit SpaceReserve(std::string path) : path_(std::move(path)) {}

  // Best effort: allocates the file up to `bytes` where the disk has room (and the file system
  // allocates on request); without room the volume goes on without (as before it had one).
  enum class Kept { kAlready, kAllocated, kNoRoom };
  Kept Keep(uint64_t bytes);

  // Gives the reserve back to the disk; false when there was none to give.
  bool Release();

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A change that failed for want of room on the disk (ENOSPC, or EDQUOT under a quota).
bool OutOfSpace(const Status& status);

}  // namespace scone::fs
