// Copying whole directory trees into and out of a volume (used by `scone volume import/export`
// and, later, by image builds). Regular files in protected regions are written through the
// file system shield; not-protected files, directories and symbolic links are copied as they are.
#pragma once

#include <functional>
#include <string>

#include "fs/volume.h"

namespace scone::fs {

struct CopyStats {
  uint64_t protected_files = 0;
  uint64_t plain_files = 0;
  uint64_t bytes = 0;
};

// Told after each file how far a copy is: what is done, and the whole (known before the first
// file is copied). For a progress display; called on the copying thread.
using CopyObserver = std::function<void(const CopyStats& done, const CopyStats& total)>;

// Copies the tree at `plain_dir` into `volume` (paths relative to both roots). Fails on the
// first file it cannot copy, naming it; a file that already exists in the volume is an error.
// Holes of sparse files stay holes (SEEK_DATA): only their data is read, sealed and written.
// Hard links stay hard links (Volume::Link) where their names lie in one region.
Result<CopyStats> ImportTree(const std::string& plain_dir, Volume& volume, const CopyObserver& observer = {});

// Writes the plaintext of every file in `volume` under `plain_dir` (created; must be empty or
// absent). Every chunk is authenticated on the way; the first damaged file stops the export with
// an error naming it. Holes are skipped, not written: sparse files come out sparse. The names of
// one protected file (hard links) come out as hard links of one plain file.
Result<CopyStats> ExportTree(Volume& volume, const std::string& plain_dir);

// Streams the plaintext of one protected file to `fd` (holes as zeros: a stream has none).
Status CopyFileToFd(Volume& volume, const std::string& path, int fd);

}  // namespace scone::fs
