#include "fs/tree_copy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <utility>

#include "fs/data_ranges.h"
#include "fs/volume_path.h"
#include "os/file.h"

namespace scone::fs {
namespace {

namespace stdfs = std::filesystem;
constexpr size_t kCopyBlock = 1 << 20;

// Calls fn(offset, bytes) for the data of [begin, end) of `in`, in blocks of `buffer`'s size.
Status CopyRange(const os::File& in, uint64_t begin, uint64_t end, Bytes& buffer,
                 const std::function<Status(uint64_t, ByteSpan)>& fn) {
  for (uint64_t offset = begin; offset < end;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - offset));
    SCONE_ASSIGN_OR_RETURN(size_t n, in.ReadAt(offset, MutableByteSpan(buffer.data(), want)));
    if (n == 0) break;  // the file shrank meanwhile
    SCONE_RETURN_IF_ERROR(fn(offset, ByteSpan(buffer.data(), n)));
    offset += n;
  }
  return Status::Ok();
}

// Copies a plain file; holes stay holes (only the data ranges are read and written).
Status CopyPlainFile(const std::string& from, const std::string& to, mode_t mode,
                     uint64_t* bytes) {
  SCONE_ASSIGN_OR_RETURN(os::File in, os::File::Open(from, O_RDONLY));
  SCONE_ASSIGN_OR_RETURN(os::File out, os::File::Open(to, O_WRONLY | O_CREAT | O_TRUNC, mode));
  SCONE_ASSIGN_OR_RETURN(uint64_t size, in.Size());
  Bytes buffer(kCopyBlock);
  SCONE_RETURN_IF_ERROR(ForEachDataRange(in, size, [&](uint64_t begin, uint64_t end) {
    return CopyRange(in, begin, end, buffer, [&](uint64_t offset, ByteSpan data) {
      return out.WriteAt(offset, data);
    });
  }));
  SCONE_RETURN_IF_ERROR(out.Truncate(size));
  *bytes += size;
  return out.Sync();
}

// Imports a plain file; its holes become holes of the protected file (no chunk, no ciphertext).
Status ImportFile(const std::string& from, const std::string& rel, mode_t mode, Volume& volume,
                  uint64_t* bytes) {
  SCONE_ASSIGN_OR_RETURN(os::File in, os::File::Open(from, O_RDONLY));
  SCONE_ASSIGN_OR_RETURN(uint64_t size, in.Size());
  SCONE_ASSIGN_OR_RETURN(auto file, volume.OpenFile(rel, {.create = true, .exclusive = true}));
  Bytes buffer(kCopyBlock);
  Status copied = ForEachDataRange(in, size, [&](uint64_t begin, uint64_t end) {
    return CopyRange(in, begin, end, buffer, [&](uint64_t offset, ByteSpan data) {
      return file->WriteAll(offset, data);
    });
  });
  Wipe(buffer);
  SCONE_RETURN_IF_ERROR(copied);
  SCONE_RETURN_IF_ERROR(file->Truncate(size));
  *bytes += size;
  SCONE_RETURN_IF_ERROR(file->Sync());
  // The mode is not protected (root can change it); keeping it lets programs run as before.
  chmod((volume.dir() + "/" + rel).c_str(), mode & 07777);
  return Status::Ok();
}

// Calls fn(offset, plaintext) for the data of a protected file, in blocks of `buffer`'s size,
// skipping its holes; every block is authenticated on the way.
Status ForEachProtectedBlock(ProtectedFile& file, Bytes& buffer,
                             const std::function<Status(uint64_t, ByteSpan)>& fn) {
  const uint64_t size = file.size();
  for (uint64_t begin = file.SeekData(0); begin < size;) {
    const uint64_t end = file.SeekHole(begin);
    for (uint64_t offset = begin; offset < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - offset));
      SCONE_ASSIGN_OR_RETURN(size_t n, file.Read(offset, MutableByteSpan(buffer.data(), want)));
      if (n == 0) return Status::Ok();
      SCONE_RETURN_IF_ERROR(fn(offset, ByteSpan(buffer.data(), n)));
      offset += n;
    }
    begin = file.SeekData(end);
  }
  return Status::Ok();
}

Status WriteAllToFd(int fd, ByteSpan data) {
  for (size_t done = 0; done < data.size();) {
    ssize_t w = write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return IoError("write", errno);
    done += static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Writes the plaintext of a protected file into a new plain file; its holes stay holes.
Status ExportFile(Volume& volume, const std::string& path, const std::string& dest, mode_t mode) {
  SCONE_ASSIGN_OR_RETURN(auto file, volume.OpenFile(path, {}));
  SCONE_ASSIGN_OR_RETURN(os::File out, os::File::Open(dest, O_WRONLY | O_CREAT | O_TRUNC, mode));
  Bytes buffer(kCopyBlock);
  Status copied = ForEachProtectedBlock(*file, buffer, [&](uint64_t offset, ByteSpan data) {
    return out.WriteAt(offset, data);
  });
  Wipe(buffer);
  if (copied.ok()) copied = out.Truncate(file->size());
  if (copied.ok()) copied = out.Sync();
  if (!copied.ok()) {
    (void)out.Close();
    unlink(dest.c_str());  // never leave a partial file that looks complete
  }
  return copied;
}

}  // namespace

Result<CopyStats> ImportTree(const std::string& plain_dir_arg, Volume& volume, const CopyObserver& observer) {
  CopyStats stats;
  CopyStats total;  // what the listing found, for the observer
  const std::string plain_dir = stdfs::path(plain_dir_arg).lexically_normal().string();
  std::error_code ec;
  if (!stdfs::is_directory(plain_dir, ec)) return NotFound(plain_dir + ": not a directory");
  std::vector<stdfs::path> entries;
  for (auto it = stdfs::recursive_directory_iterator(plain_dir, ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    entries.push_back(it->path());
    std::error_code size_ec;
    if (observer && it->is_regular_file(size_ec) && !it->is_symlink(size_ec)) {
      ++total.protected_files;  // the whole is counted as files; which region each is in comes later
      total.bytes += it->file_size(size_ec);
    }
  }
  if (ec) return IoError("listing " + plain_dir, ec.value());
  std::sort(entries.begin(), entries.end());  // parents before children
  // Hard links of the plain tree stay links: the first name imported, the others linked to it.
  std::map<std::pair<dev_t, ino_t>, std::string> imported;
  for (const stdfs::path& p : entries) {
    std::string rel = p.lexically_relative(plain_dir).string();
    auto normalized = NormalizeVolumePath(rel);
    if (!normalized.ok()) {
      return InvalidArgument(p.string() + ": cannot be imported (" +
                             normalized.status().message() + ")");
    }
    std::string dest = volume.dir() + "/" + *normalized;
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return IoError("stat " + p.string(), errno);
    if (S_ISDIR(st.st_mode)) {
      if (mkdir(dest.c_str(), st.st_mode & 07777) != 0 && errno != EEXIST) {
        return IoError("mkdir " + dest, errno);
      }
    } else if (S_ISLNK(st.st_mode)) {
      std::string target = stdfs::read_symlink(p, ec).string();
      if (ec || symlink(target.c_str(), dest.c_str()) != 0) return IoError("symlink " + dest, errno);
    } else if (S_ISREG(st.st_mode)) {
      if (volume.RegionOf(*normalized) == Region::kNotProtected) {
        SCONE_RETURN_IF_ERROR(CopyPlainFile(p.string(), dest, st.st_mode & 07777, &stats.bytes));
        ++stats.plain_files;
      } else {
        auto first = st.st_nlink > 1 ? imported.find({st.st_dev, st.st_ino}) : imported.end();
        // Across regions (another format) the second name is a copy.
        if (first != imported.end() &&
            volume.RegionOf(first->second) == volume.RegionOf(*normalized)) {
          SCONE_RETURN_IF_ERROR(volume.Link(first->second, *normalized)
                                    .Annotate("importing " + p.string()));
        } else {
          SCONE_RETURN_IF_ERROR(ImportFile(p.string(), *normalized, st.st_mode, volume, &stats.bytes)
                                    .Annotate("importing " + p.string()));
          if (st.st_nlink > 1) imported.emplace(std::make_pair(st.st_dev, st.st_ino), *normalized);
        }
        ++stats.protected_files;
      }
      if (observer) observer(stats, total);
    } else {
      return Unsupported(p.string() + ": special files (devices, sockets, pipes) cannot be imported");
    }
  }
  return stats;
}

Status CopyFileToFd(Volume& volume, const std::string& path, int fd) {
  SCONE_ASSIGN_OR_RETURN(auto file, volume.OpenFile(path, {}));
  // A stream has no holes: they are written as zeros, from a buffer nothing is decrypted into.
  const Bytes zeros(kCopyBlock, 0);
  uint64_t written = 0;
  auto zeros_until = [&](uint64_t offset) -> Status {
    while (written < offset) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), offset - written));
      SCONE_RETURN_IF_ERROR(WriteAllToFd(fd, ByteSpan(zeros.data(), n)));
      written += n;
    }
    return Status::Ok();
  };
  Bytes buffer(kCopyBlock);
  Status copied = ForEachProtectedBlock(*file, buffer, [&](uint64_t offset, ByteSpan data) {
    SCONE_RETURN_IF_ERROR(zeros_until(offset));
    SCONE_RETURN_IF_ERROR(WriteAllToFd(fd, data));
    written += data.size();
    return Status::Ok();
  });
  Wipe(buffer);
  SCONE_RETURN_IF_ERROR(copied);
  return zeros_until(file->size());
}

Result<CopyStats> ExportTree(Volume& volume, const std::string& plain_dir) {
  CopyStats stats;
  std::error_code ec;
  if (stdfs::exists(plain_dir, ec) && !stdfs::is_empty(plain_dir, ec)) {
    return AlreadyExists(plain_dir + " exists and is not empty");
  }
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(plain_dir, 0755));
  // Directories, links and not-protected files first, as they are on disk.
  std::vector<stdfs::path> entries;
  for (auto it = stdfs::recursive_directory_iterator(volume.dir(), ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() == kMetaDirName && it.depth() == 0) {
      it.disable_recursion_pending();
      continue;
    }
    entries.push_back(it->path());
  }
  if (ec) return IoError("listing " + volume.dir(), ec.value());
  std::sort(entries.begin(), entries.end());
  for (const stdfs::path& p : entries) {
    std::string rel = p.lexically_relative(volume.dir()).string();
    std::string dest = plain_dir + "/" + rel;
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return IoError("stat " + p.string(), errno);
    if (S_ISDIR(st.st_mode)) {
      if (mkdir(dest.c_str(), (st.st_mode & 07777) | 0700) != 0 && errno != EEXIST) {
        return IoError("mkdir " + dest, errno);
      }
    } else if (S_ISLNK(st.st_mode)) {
      std::string target = stdfs::read_symlink(p, ec).string();
      if (ec || symlink(target.c_str(), dest.c_str()) != 0) return IoError("symlink " + dest, errno);
    } else if (S_ISREG(st.st_mode) && volume.RegionOf(rel) == Region::kNotProtected) {
      SCONE_RETURN_IF_ERROR(CopyPlainFile(p.string(), dest, st.st_mode & 07777, &stats.bytes));
      ++stats.plain_files;
    } else if (S_ISREG(st.st_mode) && !volume.Lookup(rel).ok()) {
      return DataCorrupted(p.string() + ": unknown file: not in the volume's metadata (added "
                           "behind the volume's back)");
    }
  }
  // Names of one protected file (hard links) come out as hard links of one plain file.
  std::map<FileId, std::string> exported;
  for (const auto& [path, entry] : volume.Files()) {
    std::string dest = plain_dir + "/" + path;
    SCONE_RETURN_IF_ERROR(os::MakeDirectories(dest.substr(0, dest.rfind('/')), 0755));
    if (auto first = exported.find(entry.file_id); first != exported.end()) {
      if (link(first->second.c_str(), dest.c_str()) != 0) return IoError("link " + dest, errno);
      ++stats.protected_files;
      continue;
    }
    exported.emplace(entry.file_id, dest);
    struct stat st;
    mode_t mode = lstat((volume.dir() + "/" + path).c_str(), &st) == 0 ? st.st_mode & 07777 : 0600;
    SCONE_RETURN_IF_ERROR(ExportFile(volume, path, dest, mode).Annotate("exporting " + path));
    stats.bytes += entry.size;
    ++stats.protected_files;
  }
  return stats;
}

}  // namespace scone::fs
