#include "fs/data_ranges.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace scone::fs {

Status ForEachDataRange(const os::File& file, uint64_t size,
                        const std::function<Status(uint64_t begin, uint64_t end)>& fn) {
  uint64_t pos = 0;
  while (pos < size) {
    // The descriptor belongs to libscone, never to a shielded program: the call goes straight to
    // the kernel (the runtime's table does not know it).
    off_t data = ::lseek(file.fd(), static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return Status::Ok();  // nothing but holes from pos on
      if (errno == EINVAL || errno == EOPNOTSUPP) return fn(pos, size);
      return IoError("seeking data in " + file.path(), errno);
    }
    if (static_cast<uint64_t>(data) >= size) return Status::Ok();
    off_t hole = ::lseek(file.fd(), data, SEEK_HOLE);
    if (hole < 0) return IoError("seeking a hole in " + file.path(), errno);
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    if (end <= static_cast<uint64_t>(data)) end = size;  // the file changed under us: read on
    SCONE_RETURN_IF_ERROR(fn(static_cast<uint64_t>(data), end));
    pos = end;
  }
  return Status::Ok();
}

}  // namespace scone::fs
