// The runtime inside an unmodified program: the volumes it shields, the descriptor table of every
// shield, and the mapping from the program's paths to volume paths.
//
// Every system call of the process reaches the dispatcher (entry/dispatch.h) once the runtime
// has started; calls on descriptors and paths no shield covers go to the kernel unchanged.
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
#include <vector>

#include "common/status.h"
#include "fs/volume.h"
#include "runtime/attestation.h"
#include "runtime/config.h"
#include "runtime/console/console_shield.h"
#include "runtime/dir_table.h"
#include "runtime/fd_table.h"
#include "runtime/net/network_shield.h"
#include "runtime/recent_files.h"
#include "runtime/volume_reporter.h"

namespace scone::runtime {

// A volume the runtime shields. It is opened when the process first touches it: a process
// that never does (most of a shell script's commands) reads no state and writes no checkpoint.
struct MountedVolume {
  std::string root;  // absolute, symbolic links resolved
  dev_t device = 0;  // the root directory's identity
  ino_t inode = 0;
  std::string cas_name;  // the session's name for it, when CAS granted it

  // The volume, opened on first use; nullptr (logged once) if it cannot be opened, then every
  // call that touches it fails with UnavailableErrno(). Out of descriptors or memory at that
  // moment, the call fails with EMFILE, ENFILE or ENOMEM and the next one tries again (every
  // call of the process failed with EIO for good: hostile finding). REQUIRES: a RuntimeSection.
  fs::Volume* Get();
  // EACCES where this process may not open the volume's metadata (it runs as a user that does
  // not own the volume's directory, as natively it could not open its files); EMFILE, ENFILE or
  // ENOMEM where the last try ran out of them; else EIO.
  int UnavailableErrno() const { return unavailable_errno_.load(std::memory_order_relaxed); }
  // The volume if this process has opened it, else nullptr; never opens it.
  fs::Volume* IfOpen() const { return opened_.load(std::memory_order_acquire); }
  // Opened by the caller (at start-up, to check its state before the program runs).
  void Adopt(std::shared_ptr<fs::Volume> volume);
  // Fork: no other thread may be opening it across fork.
  void BeforeFork() { open_mu_.lock(); }
  void AfterFork() { open_mu_.unlock(); }
  // At exit, after it closed: the key goes with the last reference.
  void Drop();

  SecretBytes key;
  // Files this process opened last, kept loaded (see recent_files.h).
  RecentFiles recent;

 private:
  std::mutex open_mu_;
  std::shared_ptr<fs::Volume> volume_;
  std::atomic<fs::Volume*> opened_{nullptr};
  bool failed_ = false;
  std::atomic<int> unavailable_errno_{EIO};
};

// Where a program's path lands.
struct Target {
  MountedVolume* volume = nullptr;  // nullptr: outside every volume
  std::string path;                 // inside the volume ("" for the volume root)
  std::string absolute;             // the resolved absolute path
  bool metadata = false;            // inside the volume's own .scone directory
  fs::Region region = fs::Region::kNotProtected;
  bool known_file = false;          // a protected file the volume holds
  bool absent = false;              // Locate asked for the last name and nothing had it (ENOENT)
  bool unavailable = false;         // in a volume that cannot be opened: calls fail (Errno)

  bool Protected() const { return volume != nullptr && (unavailable || region != fs::Region::kNotProtected); }
  // What a call fails with where the volume is unavailable.
  int UnavailableErrno() const { return volume != nullptr ? volume->UnavailableErrno() : EIO; }
};

// A path as the program wrote it, made absolute and normal without the kernel, and the volume
// its name lies in (see Runtime::LexicalLookup).
struct LexicalPath {
  char absolute[PATH_MAX];
  MountedVolume* volume = nullptr;  // nullptr: outside every volume by name
  const char* inside = nullptr;     // the path inside `volume` (points into `absolute`)
  // One name in a directory whose path is known exactly (the working directory, a recorded
  // directory descriptor): where a call does not follow that name, `absolute` is exactly where
  // the kernel looks.
  bool one_name = false;
};

class Runtime {
 public:
  // Resolves a path as the kernel would (cwd or dirfd, "..", symbolic links).
  Target Resolve(int dirfd, const char* path, bool follow_last) const;
  // Resolve, the short way for a path lexically inside a volume: none for a file the volume
  // holds (its table has no symbolic links), else one readlink per component below the root,
  // but none for the directories of the last path found free of links (per thread), while no
  // process of the volume has removed a name or made a link since (ForgetLinkFreeDirectories,
  // counted in the volume's shared hints): `tar -x` names thousands of files in one directory.
  // A process that cannot tell the volume (the host, a user who may not open its metadata) and
  // makes a directory's name a link's is not seen: a path through that link is taken by its
  // name, as a protected file of the volume (its ciphertext lands where the link leads, and
  // the volume reports the file damaged; never plaintext).
  Target Locate(int dirfd, const char* path, bool follow_last) const;
  // The same for a path the caller has judged already (nullptr: it could not be judged).
  Target Locate(int dirfd, const char* path, bool follow_last, LexicalPath* lexical) const;
  // Judges `path` lexically (lexical_path.h): false when it cannot be judged so (relative to a
  // directory descriptor whose path is not recorded in dirs(), "..", too long). Exact when no symbolic link is involved; the callers
  // make sure of that. No system call, no allocation, no lock.
  bool LexicalLookup(int dirfd, const char* path, LexicalPath* out) const;
  // Whether a file on device `dev` may lie in a volume (its file system holds one).
  bool OnVolumeDevice(dev_t dev) const;
  // Whether the directory (dev, ino) is a volume's root.
  bool IsVolumeRootDirectory(dev_t dev, ino_t ino) const;
  // Whether the directory (dev, ino) is a volume's root or lies above one: it stays where it is
  // (renamed, EBUSY, as a mount point).
  bool HoldsVolume(dev_t dev, ino_t ino) const;
  // The working directory changed (chdir, fchdir): relative paths are judged against the new one.
  void WorkingDirectoryChanged();
  // This process removed a name (rename, unlink, rmdir) or made a symbolic link at `path`: what
  // Locate learnt, in any process of the volume, of directories free of symbolic links may no
  // longer hold (a name that was a directory's, or a file's that a lookup passed through, may
  // now be a link's). Called after the kernel's call succeeded.
  void ForgetLinkFreeDirectories(int dirfd, const char* path);
  // The same, when the runtime knows the new one's absolute path.
  void WorkingDirectoryIs(const char* absolute);
  // Fork: the working directory's and the directory table's writers are done (a sequence
  // another thread left odd would keep the child's path calls spinning).
  void BeforeFork() {
    cwd_write_mu_.lock();
    dirs_.BeforeFork();
  }
  void AfterFork() {
    dirs_.AfterFork();
    cwd_write_mu_.unlock();
  }
  // Something to shield: volumes, injected files, or an attested identity.
  bool Active() const {
    return !volumes_.empty() || !injected_.empty() || cas_ != nullptr || network_ != nullptr || console_.Active();
  }
  bool HasVolumes() const { return !volumes_.empty(); }
  bool HasInjectedFiles() const { return !injected_.empty(); }
  // The content of the file CAS injected at this absolute path, or nullptr.
  const SecretBytes* Injected(std::string_view absolute) const {
    auto it = injected_.find(absolute);
    return it == injected_.end() ? nullptr : &it->second;
  }
  // The command line and environment CAS gave, to replace the host's before main.
  const std::vector<std::string>* cas_argv() const { return cas_argv_.empty() ? nullptr : &cas_argv_; }
  const std::vector<std::string>* cas_environment() const {
    return cas_env_.empty() && !environment_handed_ ? nullptr : &cas_env_;
  }
  // argv[1...] as a CAS-configured parent passed them (RuntimeConfig::command_line): they
  // replace the placeholders that end the kernel's argv.
  const std::vector<std::string>* handed_arguments() const { return handed_args_.empty() ? nullptr : &handed_args_; }
  // The runtime library's own path, for programs this one executes.
  const std::string& library_path() const { return library_path_; }
  // Tells CAS the volumes' new states (at exit; after syncs through the reporter).
  void ReportVolumesToCas();
  // A shielded file was synced: CAS hears of the new state soon (runtime/volume_reporter.h).
  void Synced() {
    if (reporter_) reporter_->Synced();
  }
  VolumeReporter* reporter() { return reporter_.get(); }
  MountedVolume* VolumeByRoot(const std::string& root);
  MountedVolume* VolumeWithRoot(dev_t device, ino_t inode);

  // The network shield, or nullptr when no variable turned it on.
  sockets::NetworkShield* network() { return network_.get(); }
  FdTable& fds() { return fds_; }
  ConsoleShield& console() { return console_; }
  DirectoryTable& dirs() { return dirs_; }
  std::vector<std::unique_ptr<MountedVolume>>& volumes() { return volumes_; }

  // The configuration for a program this one executes: the volumes (without expected tags:
  // their state has moved on under this process) and the shielded descriptors that survive
  // exec, whose files are committed first.
  RuntimeConfig ConfigForExec();
  // At exit, after the volumes closed.
  void WipeKeys();
  // The volumes are closing for good (exit): calls on shielded descriptors and on paths in a
  // volume fail with EIO from now on, never reach the kernel unshielded.
  void CloseVolumes() { closed_.store(true, std::memory_order_release); }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  // Called once, before main.
  Status Init();
  // The entry's patches of the program that executed this one, until the entry is installed.
  ByteSpan entry_plan() const { return entry_plan_; }
  void DropEntryPlan() { entry_plan_ = Bytes(); }

 private:
  Status InitFromConfigFd(int config_fd);
  Status InitFromCas(const CasSettings& settings);
  Status MountGranted(cas::VolumeGrant& grant);
  // A descriptor the caller opened on an empty file in a volume, which it may write.
  static bool AdoptableNewFile(const InheritedFd& f);
  // A volume, opened now (`volume`) or on first use (nullptr).
  MountedVolume* Mount(const std::string& dir, const SecretBytes& key, const std::string& cas_name,
                       std::shared_ptr<fs::Volume> volume);
  // The network shield from its variables (none: off) and, in CAS mode, the identity and
  // session CA that fill what they leave out.
  Status StartNetworkShield(std::vector<NetworkVariable> variables, std::optional<NetworkDefaults> defaults);
  // The attested identity, and the reporter that tells CAS of synced volume states with it.
  void AdoptCas(CasConnection connection);

  FdTable fds_;
  ConsoleShield console_;
  DirectoryTable dirs_;
  std::atomic<bool> closed_{false};
  std::vector<std::unique_ptr<MountedVolume>> volumes_;
  std::vector<std::pair<dev_t, ino_t>> anchored_dirs_;  // volume roots and their ancestors
  std::map<std::string, SecretBytes, std::less<>> injected_;  // by absolute path
  std::unique_ptr<CasConnection> cas_;
  std::unique_ptr<sockets::NetworkShield> network_;
  std::unique_ptr<VolumeReporter> reporter_;
  std::vector<std::string> cas_argv_, cas_env_, handed_args_;
  bool environment_handed_ = false;  // cas_env_ came from the parent (RuntimeConfig::command_line), maybe empty
  std::string library_path_;
  Bytes entry_plan_;
  // The working directory as a seqlock: chdir is rare, path calls read it without waiting.
  mutable std::atomic<uint32_t> cwd_seq_{0};
  std::mutex cwd_write_mu_;
  char cwd_[PATH_MAX] = {};
};

// The runtime, or nullptr when there is nothing to shield. Starts the runtime if it has not
// started (the constructor, __libc_start_main and the early-open shims call this).
Runtime* Shield();
// The runtime if it has started; never starts it.
Runtime* ShieldIfReady();

// Writes a `scone:` line on stderr (the runtime's only channel to the operator).
void Log(const std::string& message);
// Whether a volume's root is still the directory it was when mounted (device and inode; inode 0:
// not known): else its files would be judged unprotected under its new name.
Status CheckVolumeStillThere(const std::string& root, uint64_t device, uint64_t inode);
// Commits open descriptors and closes the volumes (checkpoint, clean mark): after the exit
// handlers, or at exit_group when the program skipped them (_exit).
void CloseVolumesAtExit();
// Publishes what the process buffered for its volumes (fs::Volume::PublishBuffered), without a
// sync: before something leaves the process, and before a fault ends it (process/termination.h).
void PublishBufferedWrites();
// The same, until no thread of the process holds or publishes such writes, or `ms` passed:
// before a fault ends the process. False if it gave up.
bool PublishAllBufferedWrites(int ms);

}  // namespace scone::runtime
