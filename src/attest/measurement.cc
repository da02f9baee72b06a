#include "attest/measurement.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

#include <openssl/evp.h>

#include "os/file.h"

namespace scone::attest {
namespace {

const char* KindName(MeasuredFile::Kind k) {
  switch (k) {
    case MeasuredFile::Kind::kRuntime:
      return "runtime";
    case MeasuredFile::Kind::kExecutable:
      return "executable";
    case MeasuredFile::Kind::kInterpreter:
      return "interpreter";
    case MeasuredFile::Kind::kLibrary:
      return "library";
  }
  return "?";
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : path;
}

}  // namespace

std::string ProgramInterpreter(const std::string& program) {
  auto f = os::File::Open(program, O_RDONLY);
  if (!f.ok()) return "";
  Elf64_Ehdr eh;
  auto n = f->ReadAt(0, MutableByteSpan(reinterpret_cast<uint8_t*>(&eh), sizeof(eh)));
  if (!n.ok() || *n != sizeof(eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return "";
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    auto m = f->ReadAt(eh.e_phoff + uint64_t(i) * eh.e_phentsize,
                       MutableByteSpan(reinterpret_cast<uint8_t*>(&ph), sizeof(ph)));
    if (!m.ok() || *m != sizeof(ph) || ph.p_type != PT_INTERP || ph.p_filesz > PATH_MAX) continue;
    std::string interp(ph.p_filesz, '\0');
    auto k = f->ReadAt(ph.p_offset, MutableByteSpan(reinterpret_cast<uint8_t*>(interp.data()), interp.size()));
    if (!k.ok()) return "";
    interp.resize(strnlen(interp.c_str(), interp.size()));
    return interp;
  }
  return "";
}

namespace {

Status AddFile(ImageDescription* d, MeasuredFile::Kind kind, const std::string& name,
               const std::string& path) {
  SCONE_ASSIGN_OR_RETURN(crypto::Hash h, HashFile(path));
  d->files.push_back({kind, name, h});
  return Status::Ok();
}

// DT_SONAME of a shared object, or "" (read from the section headers: .dynamic and the string
// table it links to). Libraries are named by it: the loader may open a symbolic link
// (libexpat.so.1) while /proc/PID/maps shows the file it points to (libexpat.so.1.8.10).
std::string Soname(const std::string& path) {
  auto f = os::File::Open(path, O_RDONLY);
  if (!f.ok()) return "";
  auto read = [&](uint64_t off, void* out, size_t n) {
    auto r = f->ReadAt(off, MutableByteSpan(static_cast<uint8_t*>(out), n));
    return r.ok() && *r == n;
  };
  Elf64_Ehdr eh;
  if (!read(0, &eh, sizeof(eh)) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum > 4096) {
    return "";
  }
  for (int i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr dyn;
    if (!read(eh.e_shoff + uint64_t(i) * sizeof(Elf64_Shdr), &dyn, sizeof(dyn)) ||
        dyn.sh_type != SHT_DYNAMIC || dyn.sh_link >= eh.e_shnum) {
      continue;
    }
    Elf64_Shdr str;
    if (!read(eh.e_shoff + uint64_t(dyn.sh_link) * sizeof(Elf64_Shdr), &str, sizeof(str))) return "";
    for (uint64_t off = 0; off + sizeof(Elf64_Dyn) <= dyn.sh_size && off < (1u << 20); off += sizeof(Elf64_Dyn)) {
      Elf64_Dyn d;
      if (!read(dyn.sh_offset + off, &d, sizeof(d)) || d.d_tag == DT_NULL) break;
      if (d.d_tag != DT_SONAME || d.d_un.d_val >= str.sh_size) continue;
      char name[256] = {};
      if (!read(str.sh_offset + d.d_un.d_val, name, std::min<uint64_t>(sizeof(name) - 1, str.sh_size - d.d_un.d_val))) {
        return "";
      }
      return std::string(name, strnlen(name, sizeof(name) - 1));
    }
  }
  return "";
}

// A mapped object, named the same way whether it comes from the loader's trace or from
// dl_iterate_phdr: the runtime and the loader by role, libraries by file name.
Status AddMapped(ImageDescription* d, const std::string& path, const std::string& runtime_real,
                 const std::string& interp_real) {
  std::string real = RealPath(path);
  MeasuredFile::Kind kind = real == runtime_real  ? MeasuredFile::Kind::kRuntime
                            : real == interp_real ? MeasuredFile::Kind::kInterpreter
                                                  : MeasuredFile::Kind::kLibrary;
  SCONE_ASSIGN_OR_RETURN(MeasuredFile f, MeasureMappedFile(kind, real, path));
  d->files.push_back(std::move(f));
  return Status::Ok();
}

}  // namespace

Result<MeasuredFile> MeasureMappedFile(MeasuredFile::Kind kind, const std::string& read_path,
                                       const std::string& shown_path) {
  std::string name;
  if (kind == MeasuredFile::Kind::kRuntime) {
    name = "libscone-runtime.so";
  } else if (kind == MeasuredFile::Kind::kInterpreter) {
    name = "ld.so";
  } else {
    name = Soname(read_path);
    if (name.empty()) name = BaseName(shown_path);
  }
  SCONE_ASSIGN_OR_RETURN(crypto::Hash h, HashFile(read_path));
  return MeasuredFile{kind, std::move(name), h};
}

std::vector<std::string> RuntimeSettings() {
  return {"fs-shield=v1", "chunk-size=4096"};
}

std::string ImageDescription::Canonical() const {
  std::vector<MeasuredFile> sorted = files;
  std::sort(sorted.begin(), sorted.end(), [](const MeasuredFile& a, const MeasuredFile& b) {
    return std::tie(a.kind, a.name) < std::tie(b.kind, b.name);
  });
  std::string out = std::string(kMeasurementFormat) + "\n";
  out += "runtime-version " + runtime_version + "\n";
  for (const std::string& s : settings) out += "setting " + s + "\n";
  for (const MeasuredFile& f : sorted) {
    out += std::string(KindName(f.kind)) + " " + f.name + " " + ToHex(f.hash) + "\n";
  }
  return out;
}

crypto::Hash ImageDescription::Measurement() const {
  std::string text = Canonical();
  return crypto::Sha256({AsBytes(text)});
}

namespace {

// A file's identity and every time it changed: a different file, or the same one written
// since, never has the same key (the change time cannot be set by a program).
using FileVersion = std::tuple<dev_t, ino_t, off_t, int64_t, int64_t, int64_t, int64_t>;

// Hashes of files already measured. LAS measures the same executables and libraries for
// every process it attests; hashing them again each time would dominate attestation latency.
class HashCache {
 public:
  std::optional<crypto::Hash> Find(const FileVersion& v) {
    std::lock_guard lock(mu_);
    auto it = hashes_.find(v);
    return it == hashes_.end() ? std::nullopt : std::optional<crypto::Hash>(it->second);
  }
  void Put(const FileVersion& v, const crypto::Hash& h) {
    std::lock_guard lock(mu_);
    if (hashes_.size() >= 4096) hashes_.clear();
    hashes_[v] = h;
  }

 private:
  std::mutex mu_;
  std::map<FileVersion, crypto::Hash> hashes_;
};

HashCache& Cache() {
  static auto* cache = new HashCache();  // used until exit, never destroyed
  return *cache;
}

}  // namespace

bool MayKeepHash(const struct stat& st, const struct timespec& now) {
  const bool only_root_writes = st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
  return only_root_writes && now.tv_sec - st.st_ctim.tv_sec > 2;
}

Result<crypto::Hash> HashFile(const std::string& path) {
  SCONE_ASSIGN_OR_RETURN(os::File f, os::File::Open(path, O_RDONLY));
  struct stat st;
  if (fstat(f.fd(), &st) != 0) return IoError("stat " + path, errno);
  FileVersion version{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                      st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
  if (auto known = Cache().Find(version)) return *known;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex2(ctx, EVP_sha256(), nullptr);
  Bytes buffer(1 << 20);
  for (uint64_t offset = 0;;) {
    auto n = f.ReadAt(offset, buffer);
    if (!n.ok()) {
      EVP_MD_CTX_free(ctx);
      return n.status();
    }
    if (*n == 0) break;
    EVP_DigestUpdate(ctx, buffer.data(), *n);
    offset += *n;
  }
  crypto::Hash h;
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, h.data(), &len);
  EVP_MD_CTX_free(ctx);
  // A file changed less than two seconds ago could change again within the same timestamp
  // tick (file times are coarse) and look unchanged: such a file is not cached (as git does
  // for "racy" index entries). Nor is one that anyone but root may write: a store through a
  // shared writable mapping changes its bytes and none of its times (hostile finding: a program
  // patched so after one genuine run kept the genuine measurement and got the session's
  // secrets). Root, who alone writes the others, is outside what `sim` protects.
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if (MayKeepHash(st, now)) Cache().Put(version, h);
  return h;
}

Result<ImageDescription> DescribeFromLoader(const std::string& program,
                                            const std::string& runtime_library) {
  std::string interp = ProgramInterpreter(program);
  if (interp.empty()) {
    return Unsupported(program + " is not a dynamically linked ELF program: it cannot be measured "
                                 "for the runtime");
  }
  int fds[2];
  if (pipe(fds) != 0) return IoError("pipe", errno);
  pid_t pid = fork();
  if (pid < 0) return IoError("fork", errno);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    setenv("LD_PRELOAD", runtime_library.c_str(), 1);
    unsetenv("SCONE_RUNTIME_FD");
    execl(interp.c_str(), interp.c_str(), "--list", program.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string trace;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    trace.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return InvalidArgument("the dynamic loader cannot load " + program + ":\n" + trace);
  }
  ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = RuntimeSettings();
  SCONE_RETURN_IF_ERROR(AddFile(&d, MeasuredFile::Kind::kExecutable, "main", program));
  std::string runtime_real = RealPath(runtime_library);
  std::string interp_real = RealPath(interp);
  SCONE_ASSIGN_OR_RETURN(std::vector<std::string> files, FilesInLoaderTrace(trace, program));
  for (const std::string& path : files) SCONE_RETURN_IF_ERROR(AddMapped(&d, path, runtime_real, interp_real));
  return d;
}

Result<std::vector<std::string>> FilesInLoaderTrace(const std::string& trace, const std::string& program,
                                                    const std::string& where) {
  std::vector<std::string> files;
  for (size_t pos = 0; pos < trace.size();) {
    size_t eol = trace.find('\n', pos);
    if (eol == std::string::npos) eol = trace.size();
    std::string line = trace.substr(pos, eol - pos);
    pos = eol + 1;
    line.erase(0, line.find_first_not_of(" \t"));
    if (line.empty()) continue;
    std::string path = line;
    size_t arrow = line.find(" => ");
    if (arrow != std::string::npos) {
      path = line.substr(arrow + 4);
      if (path.rfind("not found", 0) == 0) {
        return NotFound(program + ": library " + line.substr(0, arrow) + " not found" + where);
      }
    }
    path = path.substr(0, path.find(" ("));
    if (path.find('/') == std::string::npos) continue;  // the vDSO: no file
    files.push_back(std::move(path));
  }
  return files;
}

Result<ImageDescription> DescribeThisProcess(const std::string& runtime_library) {
  struct Mapped {
    std::vector<std::string> paths;
  } mapped;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) {
        static_cast<Mapped*>(data)->paths.push_back(info->dlpi_name ? info->dlpi_name : "");
        return 0;
      },
      &mapped);
  ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = RuntimeSettings();
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return Internal("cannot read /proc/self/exe");
  exe[n] = '\0';
  SCONE_RETURN_IF_ERROR(AddFile(&d, MeasuredFile::Kind::kExecutable, "main", exe));
  std::string interp_real = RealPath(ProgramInterpreter(exe));
  std::string runtime_real = RealPath(runtime_library);
  for (const std::string& path : mapped.paths) {
    if (path.empty() || path.find('/') == std::string::npos) continue;  // main program, vDSO
    SCONE_RETURN_IF_ERROR(AddMapped(&d, path, runtime_real, interp_real));
  }
  return d;
}

namespace {

bool SameMountNamespace(pid_t pid) {
  char own[64] = {}, theirs[64] = {};
  std::string link = "/proc/" + std::to_string(pid) + "/ns/mnt";
  return readlink("/proc/self/ns/mnt", own, sizeof(own) - 1) > 0 &&
         readlink(link.c_str(), theirs, sizeof(theirs) - 1) > 0 && std::strcmp(own, theirs) == 0;
}

// (device, inode) of what `path` opens, or (0, 0).
std::pair<dev_t, ino_t> Identity(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

// `path` resolved inside the process's root (its links and ".." stay there), as (dev, inode).
std::pair<dev_t, ino_t> IdentityInRootOf(pid_t pid, const std::string& path) {
  std::string root = "/proc/" + std::to_string(pid) + "/root";
  int root_fd = open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return {0, 0};
  open_how how = {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT;
  int fd = static_cast<int>(syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof(how)));
  close(root_fd);
  if (fd < 0) return {0, 0};
  struct stat st;
  int rc = fstat(fd, &st);
  close(fd);
  return rc == 0 ? std::make_pair(st.st_dev, st.st_ino) : std::make_pair(dev_t{0}, ino_t{0});
}

// A process in another mount namespace: the paths it names are not LAS's files, so every file
// is read through the process's own view (/proc/PID/exe, /proc/PID/map_files/RANGE).
Result<ImageDescription> DescribeForeignProcess(pid_t pid) {
  std::string proc = "/proc/" + std::to_string(pid);
  SCONE_ASSIGN_OR_RETURN(Bytes maps, os::ReadWholeFile(proc + "/maps", 16u << 20));
  ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = RuntimeSettings();
  const std::string exe = proc + "/exe";
  SCONE_RETURN_IF_ERROR(AddFile(&d, MeasuredFile::Kind::kExecutable, "main", exe));
  auto exe_id = Identity(exe);
  auto interp_id = IdentityInRootOf(pid, ProgramInterpreter(exe));
  std::set<std::pair<dev_t, ino_t>> seen = {exe_id};
  std::string text(maps.begin(), maps.end());
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    char range[64] = {}, perms[8] = {};
    if (sscanf(line.c_str(), "%63s %7s", range, perms) != 2 || perms[2] != 'x') continue;
    size_t slash = line.find('/');
    if (slash == std::string::npos) continue;  // [vdso], anonymous
    std::string shown = line.substr(slash);
    if (shown.size() > 10 && shown.compare(shown.size() - 10, 10, " (deleted)") == 0) {
      return DataCorrupted("process " + std::to_string(pid) + " executes a deleted file " + shown);
    }
    // map_files names ranges without the leading zeros /proc/PID/maps pads them with.
    unsigned long start = 0, end = 0;
    if (sscanf(range, "%lx-%lx", &start, &end) != 2) continue;
    char name[64];
    snprintf(name, sizeof(name), "%lx-%lx", start, end);
    std::string mapped = proc + "/map_files/" + name;
    auto id = Identity(mapped);
    if (id.first == 0 && id.second == 0) {
      return PermissionDenied("cannot read " + mapped + " (LAS needs CAP_SYS_ADMIN to measure a process of "
                              "another mount namespace)");
    }
    if (!seen.insert(id).second) continue;
    MeasuredFile::Kind kind = id == interp_id                                ? MeasuredFile::Kind::kInterpreter
                              : BaseName(shown) == "libscone-runtime.so" ? MeasuredFile::Kind::kRuntime
                                                                         : MeasuredFile::Kind::kLibrary;
    SCONE_ASSIGN_OR_RETURN(MeasuredFile f, MeasureMappedFile(kind, mapped, shown));
    d.files.push_back(std::move(f));
  }
  return d;
}

}  // namespace

Result<ImageDescription> DescribeProcess(pid_t pid, const std::string& runtime_library) {
  if (!SameMountNamespace(pid)) return DescribeForeignProcess(pid);
  std::string proc = "/proc/" + std::to_string(pid);
  char exe[PATH_MAX];
  ssize_t n = readlink((proc + "/exe").c_str(), exe, sizeof(exe) - 1);
  if (n <= 0) return PermissionDenied("cannot inspect process " + std::to_string(pid));
  exe[n] = '\0';
  SCONE_ASSIGN_OR_RETURN(Bytes maps, os::ReadWholeFile(proc + "/maps", 16u << 20));
  ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = RuntimeSettings();
  // Hash what the process executes, through its own view of the files (/proc/PID/map_files
  // would need CAP_SYS_ADMIN; the paths are the same mount namespace here).
  SCONE_RETURN_IF_ERROR(AddFile(&d, MeasuredFile::Kind::kExecutable, "main", exe));
  std::string exe_real = RealPath(exe);
  std::string interp_real = RealPath(ProgramInterpreter(exe));
  std::string runtime_real = RealPath(runtime_library);
  std::set<std::string> seen;
  std::string text(maps.begin(), maps.end());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    // address perms offset dev inode path
    char perms[8] = {};
    if (sscanf(line.c_str(), "%*s %7s", perms) != 1 || perms[2] != 'x') continue;
    size_t slash = line.find('/');
    if (slash == std::string::npos) continue;  // [vdso], anonymous
    std::string path = line.substr(slash);
    if (path.size() > 10 && path.compare(path.size() - 10, 10, " (deleted)") == 0) {
      return DataCorrupted("process " + std::to_string(pid) + " executes a deleted file " + path);
    }
    if (RealPath(path) == exe_real || !seen.insert(path).second) continue;
    SCONE_RETURN_IF_ERROR(AddMapped(&d, path, runtime_real, interp_real));
  }
  return d;
}

}  // namespace scone::attest
