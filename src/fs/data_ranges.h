// Where a host file holds data: the ranges SEEK_DATA and SEEK_HOLE report, so that sparse files
// are walked in time proportional to their data, not their length (opening a protected file,
// importing and exporting trees).
//
// Cost: two lseek calls per data range. Moves the descriptor's file offset (callers use
// pread/pwrite). Thread-safety: as the descriptor's.
#pragma once

#include <cstdint>
#include <functional>

#include "common/status.h"
#include "os/file.h"

namespace scone::fs {

// Calls fn(begin, end) for each range of [0, size) that may hold data, in order; what lies
// between reads as zeros. A file system without SEEK_DATA reports one range, [0, size). A range
// may still hold zeros (blocks written with zeros); a hole is never reported as data.
Status ForEachDataRange(const os::File& file, uint64_t size,
                        const std::function<Status(uint64_t begin, uint64_t end)>& fn);

}  // namespace scone::fs
