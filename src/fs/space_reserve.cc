#include "fs/space_reserve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/file.h"
#include "os/syscalls.h"

namespace scone::fs {

SpaceReserve::Kept SpaceReserve::Keep(uint64_t bytes) {
  auto file = os::File::Open(path_, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (!file.ok()) return Kept::kNoRoom;
  struct stat st;
  if (os::Sys().fstat(file->fd(), &st) != 0) return Kept::kNoRoom;
  if (static_cast<uint64_t>(st.st_blocks) * 512 >= bytes) return Kept::kAlready;
  // Allocated, not written: a file system without fallocate keeps no reserve (zeros written
  // would cost the disk's bandwidth at every open).
  if (os::Sys().fallocate(file->fd(), 0, 0, static_cast<off_t>(bytes)) != 0) {
    // A failed allocation may keep what it got: back to the disk, for the programs.
    (void)os::Sys().ftruncate(file->fd(), st.st_size);
    return Kept::kNoRoom;
  }
  return Kept::kAllocated;
}

bool SpaceReserve::Release() {
  struct stat st;
  if (os::Sys().lstat(path_.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_blocks == 0) return false;
  return os::Sys().unlink(path_.c_str()) == 0;
}

bool OutOfSpace(const Status& status) {
  return !status.ok() && (status.sys_errno() == ENOSPC || status.sys_errno() == EDQUOT);
}

}  // namespace scone::fs
