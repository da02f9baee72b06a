// The runtime inside an unmodified program: the volumes it shields, the table of shielded file
// descriptors, and the mapping from the program's paths to volume paths.
//
// Every interposed C library function asks Shield() first; nullptr (no runtime configured, or
// the runtime's own start-up in progress on this thread) means "call the real function".
// Calls on descriptors no shield covers cost one atomic load in the table, no lock.
#pragma once

#include <limits.h>
#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "fs/volume.h"
#include "runtime/attestation.h"
#include "runtime/config.h"
#include "runtime/volume_reporter.h"

namespace scone::runtime {

struct MountedVolume {
  std::string root;  // absolute, symbolic links resolved
  dev_t device = 0;  // the root directory's identity
  ino_t inode = 0;
  std::shared_ptr<fs::Volume> volume;
  std::string cas_name;  // the session's name for it, when CAS granted it
};

// An open file description of a protected file, shared by dup'ed descriptors.
struct OpenDescription {
  std::shared_ptr<fs::ProtectedFile> file;
  MountedVolume* volume = nullptr;
  std::string path;  // inside the volume
  int flags = 0;     // O_ACCMODE | O_APPEND | ...
  std::mutex mu;     // guards offset
  uint64_t offset = 0;
  std::atomic<bool> written{false};
};

// Where a program's path lands.
struct Target {
  MountedVolume* volume = nullptr;  // nullptr: outside every volume
  std::string path;                 // inside the volume ("" for the volume root)
  std::string absolute;             // the resolved absolute path
  bool metadata = false;            // inside the volume's own .scone directory
  fs::Region region = fs::Region::kNotProtected;
  bool known_file = false;          // a protected file the volume holds
};

// A path as the program wrote it, made absolute and normal without the kernel, and the volume
// its name lies in (see Runtime::LexicalLookup).
struct LexicalPath {
  char absolute[PATH_MAX];
  MountedVolume* volume = nullptr;  // nullptr: outside every volume by name
  const char* inside = nullptr;     // the path inside `volume` (points into `absolute`)
};

class Runtime {
 public:
  static constexpr int kMaxFds = 1 << 16;

  // Resolves a path as the kernel would (cwd or dirfd, "..", symbolic links).
  Target Resolve(int dirfd, const char* path, bool follow_last) const;
  // Resolve, the short way for a path lexically inside a volume: none for a file the volume
  // holds (its table has no symbolic links), else one readlink per component below the root.
  Target Locate(int dirfd, const char* path, bool follow_last) const;
  // The same for a path the caller has judged already (nullptr: it could not be judged).
  Target Locate(int dirfd, const char* path, bool follow_last, LexicalPath* lexical) const;
  // Judges `path` lexically (lexical_path.h): false when it cannot be judged so (relative to a
  // directory descriptor, "..", too long). Exact when no symbolic link is involved; the callers
  // make sure of that. No system call, no allocation, no lock.
  bool LexicalLookup(int dirfd, const char* path, LexicalPath* out) const;
  // Whether a file on device `dev` may lie in a volume (its file system holds one).
  bool OnVolumeDevice(dev_t dev) const;
  // Whether the directory (dev, ino) is a volume's root.
  bool IsVolumeRootDirectory(dev_t dev, ino_t ino) const;
  // The working directory changed (chdir, fchdir): relative paths are judged against the new one.
  void WorkingDirectoryChanged();
  // Something to shield: volumes or injected files.
  bool Active() const { return !volumes_.empty() || !injected_.empty() || cas_ != nullptr; }
  bool HasInjectedFiles() const { return !injected_.empty(); }
  // The content of the file CAS injected at this absolute path, or nullptr.
  const SecretBytes* Injected(std::string_view absolute) const {
    auto it = injected_.find(absolute);
    return it == injected_.end() ? nullptr : &it->second;
  }
  // The command line and environment CAS gave, to replace the host's before main.
  const std::vector<std::string>* cas_argv() const { return cas_argv_.empty() ? nullptr : &cas_argv_; }
  const std::vector<std::string>* cas_environment() const { return cas_env_.empty() ? nullptr : &cas_env_; }
  // LD_PRELOAD as the runtime was loaded with, for programs this one executes.
  const std::string& preload() const { return preload_; }
  // Tells CAS the volumes' new states (at exit; after syncs through the reporter).
  void ReportVolumesToCas();
  // A shielded file was synced: CAS hears of the new state soon (runtime/volume_reporter.h).
  void Synced() {
    if (reporter_) reporter_->Synced();
  }
  VolumeReporter* reporter() { return reporter_.get(); }
  MountedVolume* VolumeByRoot(const std::string& root);

  std::shared_ptr<OpenDescription> Get(int fd) const {
    if (fd < 0 || fd >= kMaxFds || slots_[fd].load(std::memory_order_acquire) == nullptr) {
      return nullptr;
    }
    std::lock_guard lock(table_mu_);
    auto it = owners_.find(fd);
    return it == owners_.end() ? nullptr : it->second;
  }
  void Set(int fd, std::shared_ptr<OpenDescription> d);
  // Removes fd from the table; returns its description (the last reference commits the file).
  std::shared_ptr<OpenDescription> Take(int fd);
  std::vector<std::pair<int, std::shared_ptr<OpenDescription>>> AllFds() const;

  std::vector<std::unique_ptr<MountedVolume>>& volumes() { return volumes_; }

  // The configuration for a program this one executes: the volumes (without expected tags:
  // their state has moved on under this process) and the shielded descriptors that survive
  // exec, whose files are committed first.
  RuntimeConfig ConfigForExec();
  // At exit, after the volumes closed.
  void WipeKeys();

  // Called once, before main (or on the first interposed call, whichever comes first).
  Status Init();

 private:
  Status InitFromCas(const CasSettings& settings);
  Status MountGranted(cas::VolumeGrant& grant);
  void Mount(const std::string& dir, std::shared_ptr<fs::Volume> volume, const SecretBytes& key,
             const std::string& cas_name);
  // The attested identity, and the reporter that tells CAS of synced volume states with it.
  void AdoptCas(CasConnection connection);

  std::vector<std::unique_ptr<MountedVolume>> volumes_;
  std::map<std::string, SecretBytes, std::less<>> injected_;  // by absolute path
  std::unique_ptr<CasConnection> cas_;
  std::unique_ptr<VolumeReporter> reporter_;
  std::vector<std::string> cas_argv_, cas_env_;
  std::string preload_;
  std::vector<SecretBytes> keys_;  // volumes_[i]'s key, for programs this one executes
  // The working directory as a seqlock: chdir is rare, path calls read it without waiting.
  mutable std::atomic<uint32_t> cwd_seq_{0};
  std::mutex cwd_write_mu_;
  char cwd_[PATH_MAX] = {};
  mutable std::mutex table_mu_;
  std::unordered_map<int, std::shared_ptr<OpenDescription>> owners_;
  std::unique_ptr<std::atomic<OpenDescription*>[]> slots_ =
      std::make_unique<std::atomic<OpenDescription*>[]>(kMaxFds);
};

// The runtime, or nullptr when calls must go straight to the C library. Starts the runtime if
// it has not started (the constructor, __libc_start_main and exec call this).
Runtime* Shield();
// The runtime if it has started; never starts it. For calls on descriptors: none is shielded
// before start-up.
Runtime* ShieldIfReady();
// For calls on paths: starts the runtime only if the path may lie in a volume. Allocators and
// other libraries' constructors call open and mmap before the runtime starts, sometimes while
// holding their own locks; starting it then (it allocates) would deadlock them.
Runtime* ShieldFor(int dirfd, const char* path);

// open(2) through the shields: the shielded or injected file's descriptor, the real one for a
// path lexically outside every volume (opened refusing symbolic links), -1 with errno on
// failure, or -2 when the caller must call the real function.
int ShieldedOpen(int dirfd, const char* path, int flags, mode_t mode);

// Reports a failure to the program: a `scone:` line on stderr for integrity failures, errno
// set, -1 returned.
int Fail(const Status& status);
void Log(const std::string& message);
// Writes back streams that freopen put on a protected file (shield_stdio.cc).
void WriteBackReopenedStreams();
// Commits open descriptors and closes the volumes (checkpoint, clean mark); run by exit().
void CloseVolumesAtExit();

}  // namespace scone::runtime
