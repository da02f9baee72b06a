#include "fs/tree_copy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "fs/volume_path.h"
#include "os/file.h"

namespace scone::fs {
namespace {

namespace stdfs = std::filesystem;
constexpr size_t kCopyBlock = 1 << 20;

Status CopyPlainFile(const std::string& from, const std::string& to, mode_t mode,
                     uint64_t* bytes) {
  SCONE_ASSIGN_OR_RETURN(os::File in, os::File::Open(from, O_RDONLY));
  SCONE_ASSIGN_OR_RETURN(os::File out, os::File::Open(to, O_WRONLY | O_CREAT | O_TRUNC, mode));
  Bytes buffer(kCopyBlock);
  for (uint64_t offset = 0;;) {
    SCONE_ASSIGN_OR_RETURN(size_t n, in.ReadAt(offset, buffer));
    if (n == 0) break;
    SCONE_RETURN_IF_ERROR(out.WriteAt(offset, ByteSpan(buffer.data(), n)));
    offset += n;
    *bytes += n;
  }
  return out.Sync();
}

Status ImportFile(const std::string& from, const std::string& rel, mode_t mode, Volume& volume,
                  uint64_t* bytes) {
  SCONE_ASSIGN_OR_RETURN(os::File in, os::File::Open(from, O_RDONLY));
  SCONE_ASSIGN_OR_RETURN(auto file, volume.OpenFile(rel, {.create = true, .exclusive = true}));
  Bytes buffer(kCopyBlock);
  for (uint64_t offset = 0;;) {
    SCONE_ASSIGN_OR_RETURN(size_t n, in.ReadAt(offset, buffer));
    if (n == 0) break;
    SCONE_RETURN_IF_ERROR(file->Write(offset, ByteSpan(buffer.data(), n)).status());
    offset += n;
    *bytes += n;
  }
  Wipe(buffer);
  SCONE_RETURN_IF_ERROR(file->Sync());
  // The mode is not protected (root can change it); keeping it lets programs run as before.
  chmod((volume.dir() + "/" + rel).c_str(), mode & 07777);
  return Status::Ok();
}

}  // namespace

Result<CopyStats> ImportTree(const std::string& plain_dir_arg, Volume& volume) {
  CopyStats stats;
  const std::string plain_dir = stdfs::path(plain_dir_arg).lexically_normal().string();
  std::error_code ec;
  if (!stdfs::is_directory(plain_dir, ec)) return NotFound(plain_dir + ": not a directory");
  std::vector<stdfs::path> entries;
  for (auto it = stdfs::recursive_directory_iterator(plain_dir, ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) return IoError("listing " + plain_dir, ec.value());
  std::sort(entries.begin(), entries.end());  // parents before children
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
        SCONE_RETURN_IF_ERROR(ImportFile(p.string(), *normalized, st.st_mode, volume, &stats.bytes)
                                  .Annotate("importing " + p.string()));
        ++stats.protected_files;
      }
    } else {
      return Unsupported(p.string() + ": special files (devices, sockets, pipes) cannot be imported");
    }
  }
  return stats;
}

Status CopyFileToFd(Volume& volume, const std::string& path, int fd) {
  SCONE_ASSIGN_OR_RETURN(auto file, volume.OpenFile(path, {}));
  Bytes buffer(kCopyBlock);
  for (uint64_t offset = 0;;) {
    SCONE_ASSIGN_OR_RETURN(size_t n, file->Read(offset, buffer));
    if (n == 0) break;
    for (size_t done = 0; done < n;) {
      ssize_t w = write(fd, buffer.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return IoError("write", errno);
      done += static_cast<size_t>(w);
    }
    offset += n;
  }
  Wipe(buffer);
  return Status::Ok();
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
  for (const auto& [path, entry] : volume.Files()) {
    std::string dest = plain_dir + "/" + path;
    SCONE_RETURN_IF_ERROR(os::MakeDirectories(dest.substr(0, dest.rfind('/')), 0755));
    struct stat st;
    mode_t mode = lstat((volume.dir() + "/" + path).c_str(), &st) == 0 ? st.st_mode & 07777 : 0600;
    SCONE_ASSIGN_OR_RETURN(os::File out, os::File::Open(dest, O_WRONLY | O_CREAT | O_TRUNC, mode));
    Status copied = CopyFileToFd(volume, path, out.fd());
    if (!copied.ok()) {
      (void)out.Close();
      unlink(dest.c_str());  // never leave a partial file that looks complete
      return copied.Annotate("exporting " + path);
    }
    SCONE_RETURN_IF_ERROR(out.Sync());
    stats.bytes += entry.size;
    ++stats.protected_files;
  }
  return stats;
}

}  // namespace scone::fs
