#include "runtime/runtime.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dlfcn.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "attest/las.h"
#include "common/parallel.h"
#include "common/setting.h"
#include "crypto/fork_gate.h"
#include "attest/measurement.h"
#include "fs/volume_path.h"
#include "os/file.h"
#include "runtime/lexical_path.h"
#include "runtime/entry/code_patcher.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/sud.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/alone_watcher.h"
#include "runtime/net/passed_descriptors.h"
#include "runtime/net/socket_calls.h"
#include "runtime/files/mapped_files.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/files/protected_fd.h"
#include "runtime/process/fork.h"
#include "runtime/process/process_calls.h"
#include "runtime/process/signal_calls.h"

extern "C" char** environ;

namespace scone::runtime {
namespace {

enum State { kUninitialized, kInitializing, kReady, kInactive };
std::atomic<int> state{kUninitialized};
thread_local bool initializing_here = false;
Runtime* the_runtime = nullptr;

// "/a/b/../c/./d" -> "/a/c/d" (absolute paths only).
std::string Lexical(const std::string& path) {
  char out[PATH_MAX];
  size_t n = LexicalAbsolute("/", path, out, sizeof(out));
  return n == 0 ? path : std::string(out, n);
}

std::string FdPath(int fd) {
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n <= 0) return "";
  return std::string(target, static_cast<size_t>(n));
}

// A process with a volume open commits before a signal ends it (process/termination.h). Once
// the entry is installed: the runtime's handlers must not be taken for the program's.
void CommitBeforeSignalsEndIt() {
  if (EntryInstalled()) process::CommitBeforeEndingBySignals();
}

bool AnyVolumeOpen(Runtime& rt) {
  for (auto& v : rt.volumes()) {
    if (v->IfOpen() != nullptr) return true;
  }
  return false;
}

// Takes NAME=... out of the process's environment, in `environ` itself: the program's own
// unsetenv may not be the C library's (bash exports one that works on its shell variables, which
// do not exist yet before its main: the descriptor's number stayed in every child's environment,
// and a child of a runtime with nothing to shield failed with "Bad file descriptor").
void RemoveFromEnvironment(const char* name) {
  if (environ == nullptr) return;
  const size_t n = strlen(name);
  char** out = environ;
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') continue;
    *out++ = *e;
  }
  *out = nullptr;
}

// The runtime library's own file, for the programs this one executes.
std::string OwnLibraryPath() {
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&OwnLibraryPath), &self) == 0 || self.dli_fname == nullptr) return "";
  char real[PATH_MAX];
  return realpath(self.dli_fname, real) != nullptr ? std::string(real) : std::string(self.dli_fname);
}

}  // namespace

// A volume's directory moved or replaced while in use (by a process outside the runtime): under
// its new name its files would be judged unprotected, so a process refuses to run with it.
Status CheckVolumeStillThere(const std::string& root, uint64_t device, uint64_t inode) {
  if (inode == 0) return Status::Ok();
  struct stat st;
  if (stat(root.c_str(), &st) == 0 && st.st_dev == device && st.st_ino == inode) return Status::Ok();
  return DataCorrupted("volume " + root + ": its directory was moved or replaced while the volume was in use; "
                       "refusing to run (what the program wrote under the new name would bypass the shield)");
}

void PublishBufferedWrites() {
  if (fs::Volume::AnyBuffered()) AloneWatcher::Get().PublishBuffered();
}

bool PublishAllBufferedWrites(int ms) {
  for (int waited = 0;; ++waited) {
    PublishBufferedWrites();
    if (!fs::Volume::AnyUnpublished()) return true;
    if (waited >= ms) return false;
    // Another thread publishes what it took (or writes more): a millisecond for it.
    struct timespec pause = {0, 1'000'000};
    (void)RawSyscall(SYS_nanosleep, Arg(&pause), 0);
  }
}

void CloseVolumesAtExit() {
  if (the_runtime == nullptr) return;
  RuntimeSection section;
  // After a fault inside the runtime the thread that faulted may hold any of its locks (or the
  // allocator's), its state may be half-changed: nothing is committed, as after a crash (the last
  // commit stays), and nothing waits. Said without allocating.
  if (process::FaultedInRuntime()) {
    static constexpr char kLine[] =
        "scone: a fault inside the runtime: what was written since the last commit is lost, as in a crash\n";
    if (!the_runtime->closed()) (void)RawSyscall(SYS_write, 2, Arg(kLine), sizeof(kLine) - 1);
    the_runtime->CloseVolumes();
    return;
  }
  process::CompleteForkInChild();  // its own volume locks first
  // Once, and a second caller (exit on one thread, a signal ending the process on another)
  // returns when it is done, not while the first still commits.
  static std::mutex mu;
  static bool done = false;
  std::lock_guard lock(mu);
  if (done) return;
  done = true;
  // Commit what open descriptors wrote, then close the volumes (checkpoint, clean mark). The
  // descriptors stay shielded: whatever a thread still does with them fails from now on.
  MappedFiles::Get().SealAll();  // what the program stored into shared mappings
  for (auto& [fd, d] : the_runtime->fds().All()) {
    sockets::SendHeld(*d, fd);  // the kernel sends a corked socket's queue at exit
    (void)d->LastClose();
  }
  the_runtime->CloseVolumes();
  if (process::ChildOfThreads()) return;  // the parent closes them
  if (auto* r = the_runtime->reporter()) r->Stop();  // the last report is the one below
  for (auto& v : the_runtime->volumes()) {
    if (fs::Volume* volume = v->IfOpen()) {
      // A program's exit syncs nothing, as natively (fs/close_mark.h); a volume CAS tracks is
      // checkpointed: the state reported must survive a power cut.
      Status s = volume->Close(v->cas_name.empty() ? fs::Volume::CloseMode::kKeepJournal
                                                   : fs::Volume::CloseMode::kCheckpoint);
      if (!s.ok()) Log(s.message());
    }
  }
  the_runtime->ReportVolumesToCas();
  the_runtime->WipeKeys();
}

namespace {

// SCONE_ENTRY_STATS: how the entry served this process (for tuning): to stderr, or appended to
// the file it names (programs such as find close stderr at exit).
void ReportEntryStats(const char* to) {
  CodePatcher::Stats p = CodePatcher::GetStats();
  std::string text = "scone: entry: " + std::string(program_invocation_short_name) + ": " +
                     std::to_string(p.patched_at_start_up) + " sites patched at start-up, " +
                     std::to_string(p.patched_later) + " when first caught, " + std::to_string(p.refused) +
                     " left to the SIGSYS handler; " + std::to_string(GetSudStats().trapped) +
                     " calls caught by it\n";
  for (const auto& [site, calls] : p.busiest_refused) {
    Dl_info info;
    if (site == 0 || dladdr(reinterpret_cast<void*>(site), &info) == 0) continue;
    text += "scone: entry: " + std::to_string(calls) + " calls through the handler at " +
            (info.dli_sname ? info.dli_sname : "?") + "+" +
            std::to_string(site - reinterpret_cast<uintptr_t>(info.dli_saddr ? info.dli_saddr : info.dli_fbase)) +
            " in " + (info.dli_fname ? info.dli_fname : "?") + "\n";
  }
  long fd = to[0] == '/' ? RawSyscall(SYS_openat, AT_FDCWD, Arg(to), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : 2;
  if (fd < 0) return;
  (void)RawSyscall(SYS_write, fd, Arg(text.data()), static_cast<long>(text.size()));
  if (fd != 2) RawSyscall(SYS_close, fd);
}

// Runs after every exit handler registered later (the program's, its libraries' static
// destructors): stdio streams are flushed through the shield, then the volumes close.
void CloseAtExit() {
  fflush(nullptr);
  CloseVolumesAtExit();
  if (const char* to = getenv("SCONE_ENTRY_STATS")) ReportEntryStats(to);
}

}  // namespace

void Log(const std::string& message) {
  std::string line = "scone: " + message + "\n";
  // On a shielded console the runtime's lines are records too (they may name the program's files).
  if (the_runtime != nullptr && the_runtime->console().Active()) {
    RuntimeSection section;
    if (the_runtime->console().Log(line, the_runtime->fds())) return;
  }
  (void)RawSyscall(SYS_write, 2, Arg(line.data()), static_cast<long>(line.size()));
}

Runtime* Shield() {
  int s = state.load(std::memory_order_acquire);
  if (s == kReady) return the_runtime;
  if (s == kInactive || initializing_here) return nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    initializing_here = true;
    state.store(kInitializing);
    auto* rt = new Runtime();  // lives until exit: system calls may come from destructors
    Status st;
    {
      RuntimeSection section;
      st = rt->Init();
      if (st.ok() && rt->Active()) {
        rt->WorkingDirectoryChanged();
        the_runtime = rt;
        atexit(CloseAtExit);  // before the program registers any: it runs after theirs
        process::RegisterForkHandlers();  // likewise: its prepare handler runs after theirs
        if (!InstallEntry(rt->entry_plan())) st = Unsupported("the runtime cannot enter this program's system calls");
        rt->DropEntryPlan();
        // A signal that ends the process commits first: what volumes hold, the console's final records.
        if (st.ok() && (AnyVolumeOpen(*rt) || rt->console().Active())) CommitBeforeSignalsEndIt();
      }
    }
    initializing_here = false;
    if (!st.ok()) {
      Log(st.message());
      _exit(126);  // a program must not run unshielded on volumes it was told to protect
    }
    state.store(rt->Active() ? kReady : kInactive, std::memory_order_release);
  });
  return state.load(std::memory_order_acquire) == kReady ? the_runtime : nullptr;
}

Runtime* ShieldIfReady() {
  return state.load(std::memory_order_acquire) == kReady ? the_runtime : nullptr;
}

Status Runtime::Init() {
  // The runtime's own OpenSSL (linked in, hidden): no configuration file (the host's could load
  // an engine into the process), and no clean-up at exit, since the volumes close after every
  // exit handler (CloseAtExit) and need it to the end. Its per-thread state is freed inside the
  // fork gate (fork_gate.h).
  crypto::InitOpenSslWithGate(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ATEXIT);
  library_path_ = OwnLibraryPath();
  SetHelperThreadStartHook(BecomeRuntimeThread);
  if (!fds_.ok()) return Internal("cannot reserve the descriptor table");
  files::InstallShieldSyscalls(fds_);
  AloneWatcher::Install();  // hand-overs to processes that join a volume this one has alone
  const char* fd_text = getenv(kConfigFdEnv);
  int config_fd = fd_text != nullptr ? atoi(fd_text) : -1;
  RemoveFromEnvironment(kConfigFdEnv);
  // SCONE_CONFIG_ID means attestation, always: a configuration handed in by whoever started the
  // program (a descriptor) is not a substitute for it.
  SCONE_ASSIGN_OR_RETURN(auto settings, CasSettingsFromEnvironment());
  if (settings) {
    if (config_fd >= 0) RawSyscall(SYS_close, config_fd);
    process::NameProgram("");  // no name handed over: the file's, where the kernel gave a number
    process::NoteOwnFiles(library_path_);
    return InitFromCas(*settings);
  }
  if (config_fd < 0) return Status::Ok();  // loaded without `scone run`: stay out of the way
  process::NoteOwnFiles(library_path_);
  return InitFromConfigFd(config_fd);
}

Status Runtime::InitFromConfigFd(int config_fd) {
  auto read = ReadConfigFd(config_fd);
  RawSyscall(SYS_close, config_fd);  // keys reach no one else through it
  if (!read.ok()) return read.status();
  RuntimeConfig config = std::move(read).value();
  process::NameProgram(config.program_name);
  if (config.command_line) {
    // From a CAS-configured parent: the command line and environment it passed, not the host's.
    handed_args_ = std::move(config.command_line->arguments);
    cas_env_ = std::move(config.command_line->environment);
    environment_handed_ = true;
  }
  if (config.print_measurement) {
    SCONE_ASSIGN_OR_RETURN(attest::ImageDescription d, attest::DescribeThisProcess(library_path_));
    std::string text = d.Canonical() + ToHex(d.Measurement()) + "\n";
    (void)RawSyscall(SYS_write, 1, Arg(text.data()), static_cast<long>(text.size()));
    _exit(0);
  }
  if (config.print_evidence) {
    attest::ReportData data{};
    crypto::Hash h = crypto::Sha256({AsBytes("scone-print-evidence")});
    std::copy(h.begin(), h.end(), data.begin());
    SCONE_ASSIGN_OR_RETURN(attest::Evidence e, attest::RequestEvidence(config.las_socket, data, std::nullopt));
    std::string text = ToHex(e.Encode()) + "\n";
    (void)RawSyscall(SYS_write, 1, Arg(text.data()), static_cast<long>(text.size()));
    _exit(0);
  }
  // Key hygiene: no core dumps, no ptrace by other users' processes, no /proc/PID/mem.
  prctl(PR_SET_DUMPABLE, 0);
  for (VolumeConfig& vc : config.volumes) {
    SCONE_RETURN_IF_ERROR(CheckVolumeStillThere(vc.dir, vc.root_device, vc.root_inode));
    // Checked before the program runs where `scone run` asks for it (a wrong key, a state
    // that is not the one TAG names); programs this one executes open them when they touch them.
    std::shared_ptr<fs::Volume> opened;
    if (vc.open_at_start || vc.expected_tag) {
      fs::Volume::OpenOptions options;
      options.expected_tag = vc.expected_tag;
      SCONE_ASSIGN_OR_RETURN(opened, fs::Volume::Open(vc.dir, vc.key, options));
    }
    Mount(vc.dir, vc.key, vc.cas_name, std::move(opened));
  }
  if (config.cas) {
    SCONE_ASSIGN_OR_RETURN(CasConnection connection, CasConnection::FromHandover(*config.cas));
    AdoptCas(std::move(connection));
  }
  for (InjectedFileConfig& f : config.injected_files) injected_[f.path] = std::move(f.content);
  SCONE_RETURN_IF_ERROR(StartNetworkShield(std::move(config.network), std::move(config.network_defaults)));
  if (config.console) SCONE_RETURN_IF_ERROR(console_.Start(std::move(*config.console), fds_));
  entry_plan_ = std::move(config.entry_plan);
  // Descriptors a parent process handed over across exec.
  for (const InheritedFd& f : config.fds) {
    MountedVolume* mv = VolumeByRoot(f.volume_dir);
    if (mv == nullptr || RawSyscall(SYS_fcntl, f.fd, F_GETFD) < 0) continue;
    if (f.flags & O_PATH) {
      fds_.Set(f.fd, std::make_shared<PathOnlyFd>(mv, f.path));
      continue;
    }
    fs::Volume* volume = mv->Get();
    auto file = volume == nullptr ? Result<std::shared_ptr<fs::ProtectedFile>>(Internal("volume unavailable"))
                : f.entry   ? volume->OpenInherited(*f.entry, "/proc/self/fd/" + std::to_string(f.fd), f.path)
                            : volume->OpenFile(f.path, {});
    if (!file.ok() && file.status().code() == Code::kNotFound && AdoptableNewFile(f)) {
      // `scone run PROGRAM > vol/new`: the caller's shell made an empty plain file; it becomes
      // a protected one (the program's descriptor keeps the empty inode for its numbering).
      std::string full = mv->root + "/" + f.path;
      if (RawSyscall(SYS_unlink, Arg(full.c_str())) == 0) file = volume->OpenFile(f.path, {.create = true});
    }
    if (!file.ok()) {
      Log("inherited descriptor " + std::to_string(f.fd) + " (" + f.path + "): " + file.status().message());
      RawSyscall(SYS_close, f.fd);  // never left to the program as ciphertext
      continue;
    }
    const bool unlinked = (*file)->unlinked();
    auto d = std::make_shared<ProtectedFd>(std::move(file).value(), mv, f.path, f.flags, /*shared=*/true);
    // Unlinked (a here-document's file, a TemporaryFile): loaded from its inode, this process's
    // alone; what it wrote would never reach the parent, which reads its own copy. A write is
    // refused loudly rather than lost silently (reads work).
    if (unlinked) d->RefuseWrites("inherited descriptor " + std::to_string(f.fd) + " (" + f.path + ")");
    fds_.Set(f.fd, std::move(d));
  }
  return Status::Ok();
}

Status Runtime::StartNetworkShield(std::vector<NetworkVariable> variables, std::optional<NetworkDefaults> defaults) {
  if (variables.empty()) return Status::Ok();
  SCONE_ASSIGN_OR_RETURN(auto shield, sockets::NetworkShield::Create(std::move(variables), std::move(defaults)));
  if (shield->Enabled()) {
    network_ = std::move(shield);
    sockets::CheckInheritedSockets(*this);  // connections the program inherited have no TLS state here
  }
  return Status::Ok();
}

// An empty regular file the program may write, which the volume does not know.
bool Runtime::AdoptableNewFile(const InheritedFd& f) {
  struct stat st;
  if ((f.flags & O_ACCMODE) == O_RDONLY || RawSyscall(SYS_fstat, f.fd, Arg(&st)) != 0) return false;
  return S_ISREG(st.st_mode) && st.st_size == 0 && st.st_nlink == 1;
}

MountedVolume* Runtime::Mount(const std::string& dir, const SecretBytes& key, const std::string& cas_name,
                              std::shared_ptr<fs::Volume> volume) {
  auto mounted = std::make_unique<MountedVolume>();
  mounted->root = dir;
  // The root and every directory above it: moved, the volume's paths would no longer be where
  // the runtime looks for them (what a program then wrote there would bypass the shield).
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    mounted->device = st.st_dev;
    mounted->inode = st.st_ino;
    anchored_dirs_.push_back({st.st_dev, st.st_ino});
  }
  for (std::string d = dir; d != "/";) {
    size_t slash = d.rfind('/');
    if (slash == std::string::npos) break;
    d = slash == 0 ? "/" : d.substr(0, slash);
    if (stat(d.c_str(), &st) == 0) anchored_dirs_.push_back({st.st_dev, st.st_ino});
  }
  mounted->key = key.Clone();
  mounted->cas_name = cas_name;
  if (volume) mounted->Adopt(std::move(volume));
  volumes_.push_back(std::move(mounted));
  return volumes_.back().get();
}

fs::Volume* MountedVolume::Get() {
  if (fs::Volume* v = IfOpen()) return v;
  {
    std::lock_guard lock(open_mu_);
    if (fs::Volume* v = IfOpen()) return v;
    if (failed_) return nullptr;
    auto opened = fs::Volume::Open(root, key);
    if (!opened.ok()) {
      const int err = opened.status().sys_errno();
      if (err == EMFILE || err == ENFILE || err == ENOMEM) {
        unavailable_errno_ = err;
        return nullptr;
      }
      failed_ = true;
      unavailable_errno_ = EIO;
      const std::string meta_dir = root + "/" + fs::kMetaDirName;
      if ((err == EACCES || err == EPERM) && access(meta_dir.c_str(), R_OK | W_OK | X_OK) == 0) {
        // Its metadata is this user's, a file it must recover is not: left to a user that may.
        unavailable_errno_ = EACCES;
        Log(opened.status().message());
      } else if (err == EACCES || err == EPERM) {
        unavailable_errno_ = EACCES;
        struct stat meta;
        const std::string dir = root + "/" + fs::kMetaDirName;
        Log("volume " + root + ": this process (user " + std::to_string(geteuid()) + ") may not open its metadata " +
            dir + (stat(root.c_str(), &meta) == 0 ? " (the volume's directory belongs to user " + std::to_string(meta.st_uid) + ")" : "") +
            ": its files are refused with EACCES. The owner of the volume's directory owns it: give the directory to the "
            "user the program runs as (chown, under the runtime or `scone volume create` in a directory that user owns)");
      } else {
        Log(opened.status().message());
      }
      return nullptr;
    }
    volume_ = std::move(opened).value();
    opened_.store(volume_.get(), std::memory_order_release);
  }
  CommitBeforeSignalsEndIt();
  return IfOpen();
}

void MountedVolume::Adopt(std::shared_ptr<fs::Volume> volume) {
  std::lock_guard lock(open_mu_);
  volume_ = std::move(volume);
  opened_.store(volume_.get(), std::memory_order_release);
}

void MountedVolume::Drop() {
  recent.Clear();
  std::lock_guard lock(open_mu_);
  failed_ = true;  // nothing opens it again
  opened_.store(nullptr, std::memory_order_release);
  volume_.reset();
  key = SecretBytes();
}

void Runtime::AdoptCas(CasConnection connection) {
  cas_ = std::make_unique<CasConnection>(std::move(connection));
  reporter_ = std::make_unique<VolumeReporter>([this] { ReportVolumesToCas(); });
}

// A volume CAS granted: created on first use; else its state must be the one CAS last heard
// of, or newer (a crash after a commit not yet reported).
Status Runtime::MountGranted(cas::VolumeGrant& g) {
  if (g.path.empty() || g.path[0] != '/') {
    return InvalidArgument("volume " + g.name + ": path '" + g.path + "' is not absolute");
  }
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(g.path, 0700));
  char real[PATH_MAX];
  if (realpath(g.path.c_str(), real) == nullptr) return IoError("volume " + g.name + ": " + g.path, errno);
  std::string dir = real;
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(dir + "/" + fs::kMetaDirName + "/volume"));
  if (!exists) {
    if (g.expected) {
      return RolledBack("volume " + g.name + " at " + dir + " is missing, but CAS knows its state (generation " +
                        std::to_string(g.expected->generation) + ")");
    }
    SCONE_ASSIGN_OR_RETURN(auto created, fs::Volume::Create(dir, g.key, fs::RegionRules()));
    Mount(dir, g.key, g.name, std::move(created));
    return Status::Ok();
  }
  SCONE_ASSIGN_OR_RETURN(auto volume, fs::Volume::Open(dir, g.key));
  if (g.expected) {
    uint64_t generation = volume->Generation();
    if (generation < g.expected->generation) {
      return RolledBack("volume " + g.name + " at " + dir + " is older than the state CAS knows (generation " +
                        std::to_string(generation) + " < " + std::to_string(g.expected->generation) +
                        "): rolled back to an older copy");
    }
    if (generation == g.expected->generation && !crypto::ConstantTimeEquals(volume->Tag(), g.expected->tag)) {
      return RolledBack("volume " + g.name + " at " + dir + " does not match the state CAS knows (replaced)");
    }
  }
  Mount(dir, g.key, g.name, std::move(volume));
  return Status::Ok();
}

Status Runtime::InitFromCas(const CasSettings& settings) {
  prctl(PR_SET_DUMPABLE, 0);
  // The session's environment may turn the network shield on, which needs room for handshakes'
  // keys: the secure heap is sized before attestation puts the first key in it.
  ReserveSecureHeapWithinLimit(kNetworkSecureHeapSize);
  cas::ServiceConfig config;
  auto connection = CasConnection::Attest(settings, &config);
  if (!connection.ok()) return connection.status().Annotate("attestation for " + settings.config_id);
  AdoptCas(std::move(connection).value());
  for (cas::VolumeGrant& g : config.volumes) SCONE_RETURN_IF_ERROR(MountGranted(g));
  for (cas::InjectedFile& f : config.injected_files) {
    if (f.path.empty() || f.path[0] != '/') return InvalidArgument("injected file '" + f.path + "' is not absolute");
    // Found by its lexical path (the fast lookup) and by where links lead (the long one).
    char lexical[PATH_MAX];
    if (LexicalAbsolute("/", f.path, lexical, sizeof(lexical)) == 0) {
      return InvalidArgument("injected file '" + f.path + "': path too long");
    }
    std::string resolved = Resolve(AT_FDCWD, f.path.c_str(), true).absolute;
    if (resolved != lexical) injected_[resolved] = f.content.Clone();
    injected_[lexical] = std::move(f.content);
  }
  if (!config.pwd.empty() && chdir(config.pwd.c_str()) != 0) {
    return IoError("working directory " + config.pwd + " from CAS", errno);
  }
  cas_argv_ = std::move(config.argv);
  // The network shield's variables come from the session's environment only, and stay out of
  // the program's (an _IDENTITY holds a private key).
  std::vector<NetworkVariable> network;
  std::optional<std::string> console_value;
  for (std::string& e : config.environment) {
    size_t eq = e.find('=');
    if (eq != std::string::npos && std::string_view(e).substr(0, eq) == kConsoleShieldVariable) {
      console_value = e.substr(eq + 1);
      cas_env_.push_back(std::move(e));  // not secret; the program may look at it
    } else if (eq != std::string::npos && net::IsShieldVariable(e.substr(0, eq))) {
      network.push_back({e.substr(0, eq), SecretBytes(AsBytes(std::string_view(e).substr(eq + 1)))});
      Wipe(e);
      e.clear();
    } else if (!e.empty()) {
      cas_env_.push_back(std::move(e));
    }
  }
  // CAS checked it when the session was stored; a value it let through is still no reason to run open.
  bool console_wanted = false;
  if (console_value) {
    SCONE_ASSIGN_OR_RETURN(console_wanted, ParseConsoleShield(*console_value));
  }
  // Where the rules name no identity or CA: the service's own, which CAS issued.
  std::optional<NetworkDefaults> defaults;
  if (!config.network_identity.empty()) {
    defaults = NetworkDefaults{std::move(config.network_identity), std::move(config.session_ca)};
  }
  SCONE_RETURN_IF_ERROR(StartNetworkShield(std::move(network), std::move(defaults)));
  // The console shield: CAS holds the key and releases it with the configuration, for the
  // session's SCONE_CONSOLE_SHIELD=protected only (the host's value is not looked at).
  if (console_wanted && config.console_key.size() != crypto::kKeySize) {
    return PermissionDenied("SCONE_CONSOLE_SHIELD=protected but CAS released no console key");
  }
  if (!config.console_key.empty()) {
    ConsoleConfig console;
    console.key = std::move(config.console_key);
    console.first = true;
    SCONE_RETURN_IF_ERROR(console_.Start(std::move(console), fds_));
  }
  bool has_path = false;
  for (const std::string& e : cas_env_) has_path = has_path || e.rfind("PATH=", 0) == 0;
  if (!has_path) cas_env_.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  return Status::Ok();
}

void Runtime::ReportVolumesToCas() {
  if (!cas_) return;
  std::vector<cas::VolumeReport> reports;
  for (auto& v : volumes_) {
    fs::Volume* volume = v->IfOpen();
    if (v->cas_name.empty() || volume == nullptr) continue;  // unchanged by this process
    // Closes publish lazily: only a durable state may be reported, or a crash would leave
    // the volume older than what CAS heard of (and refused as rolled back).
    cas::VolumeReport report{v->cas_name, {}};
    Status durable = volume->MakeDurableAndTag(&report.mark.tag, &report.mark.generation);
    if (!durable.ok()) {
      Log("volume " + volume->dir() + ": not reported to CAS: " + durable.message());
      continue;
    }
    reports.push_back(std::move(report));
  }
  if (reports.empty()) return;
  Status s = cas_->Report(reports);
  static std::atomic<bool> logged{false};  // once: reports after syncs may fail again and again
  if (!s.ok() && !logged.exchange(true)) Log("could not report the volumes' state to CAS: " + s.message());
}

void Runtime::WipeKeys() {
  for (auto& v : volumes_) v->Drop();
}

RuntimeConfig Runtime::ConfigForExec() {
  RuntimeConfig config;
  config.entry_plan = CodePatcher::Plan();
  for (const auto& [path, content] : injected_) config.injected_files.push_back({path, content.Clone()});
  if (network_) {
    config.network = network_->Variables();
    config.network_defaults = network_->Defaults();
  }
  for (const auto& v : volumes_) {
    VolumeConfig vc;
    vc.dir = v->root;
    vc.root_device = v->device;
    vc.root_inode = v->inode;
    vc.key = v->key.Clone();
    vc.cas_name = v->cas_name;
    config.volumes.push_back(std::move(vc));
  }
  if (cas_) {
    auto handover = cas_->Handover();
    if (handover.ok()) {
      config.cas = std::move(handover).value();
    } else {
      Log("the executed program will not report volume states to CAS: " + handover.status().message());
    }
  }
  if (console_.Active()) config.console = console_.ForExec(fds_);
  for (auto& [fd, d] : fds_.All()) {
    if (d->IsConsole()) continue;
    sockets::SendHeld(*d, fd);  // a TLS connection does not follow exec (TlsSocketFd::Describe)
    long fd_flags = RawSyscall(SYS_fcntl, fd, F_GETFD);
    if (fd_flags < 0) continue;
    if (fd_flags & FD_CLOEXEC) {
      // The exec closes it, and this process's memory goes with it: what it wrote is
      // committed now, as a close would.
      (void)d->LastClose();
      continue;
    }
    InheritedFd f;
    if (d->Describe(fd, &f)) config.fds.push_back(std::move(f));
  }
  return config;
}

MountedVolume* Runtime::VolumeByRoot(const std::string& root) {
  for (auto& v : volumes_) {
    if (v->root == root) return v.get();
  }
  return nullptr;
}

Target Runtime::Resolve(int dirfd, const char* path, bool follow_last) const {
  Target t;
  if (path == nullptr || path[0] == '\0') return t;
  std::string abs;
  if (path[0] == '/') {
    abs = path;
  } else {
    std::string base;
    if (dirfd == AT_FDCWD) {
      char cwd[PATH_MAX];
      if (getcwd(cwd, sizeof(cwd)) == nullptr) return t;
      base = cwd;
    } else {
      base = FdPath(dirfd);
      if (base.empty()) return t;
    }
    abs = base + "/" + path;
  }
  // Resolve symbolic links as the kernel will, before "..": the directory part always, the
  // last component when the call follows it. What does not exist yet is taken lexically.
  for (int hops = 0; hops < 40; ++hops) {
    while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
    size_t slash = abs.rfind('/');
    std::string name = abs.substr(slash + 1);
    char real[PATH_MAX];
    if (name.empty() || name == "." || name == "..") {
      abs = realpath(abs.c_str(), real) != nullptr ? std::string(real) : Lexical(abs);
      break;
    }
    std::string dir = slash == 0 ? "/" : abs.substr(0, slash);
    dir = realpath(dir.c_str(), real) != nullptr ? std::string(real) : Lexical(dir);
    abs = (dir == "/" ? "" : dir) + "/" + name;
    if (!follow_last) break;
    char target[PATH_MAX];
    ssize_t n = readlink(abs.c_str(), target, sizeof(target) - 1);
    if (n <= 0) break;
    target[n] = '\0';
    abs = target[0] == '/' ? std::string(target) : dir + "/" + target;
  }
  t.absolute = abs;
  for (const auto& v : volumes_) {
    if (!fs::PathHasPrefix(abs, v->root)) continue;
    t.volume = v.get();
    t.path = abs.size() > v->root.size() ? abs.substr(v->root.size() + 1) : "";
    t.metadata = fs::PathHasPrefix(t.path, fs::kMetaDirName);
    if (!t.path.empty() && !t.metadata) {
      fs::Volume* volume = v->Get();
      t.unavailable = volume == nullptr;
      if (volume != nullptr) t.region = volume->RegionOf(t.path);
    }
    break;
  }
  return t;
}

namespace {

// The directories (below a volume's root) of the last path this thread found free of symbolic
// links, each one asked and found a directory or other file, not a link (Runtime::Locate).
struct LinkFreeDirectories {
  const void* volume = nullptr;
  uint64_t changes = 0;  // the volume's count of directory changes when they were asked
  size_t length = 0;     // 0: none known
  char path[256];        // relative to the volume's root; longer ones are not kept
};
__attribute__((tls_model("initial-exec"))) thread_local LinkFreeDirectories link_free;

// Whether the part of `lexical` below a volume's root (`inside` points into it) involves no
// symbolic link: each directory below the root is asked, and the last component when the
// call follows it (one readlink each; the root itself was resolved when it was mounted), except
// directories `link_free` holds for the same volume and count of changes.
bool NoLinkBelowRoot(char* lexical, char* inside, bool follow_last, const void* volume, uint64_t changes,
                     bool* last_absent) {
  char target[1];
  const char* last_slash = strrchr(inside, '/');
  const size_t dirs = last_slash == nullptr ? 0 : static_cast<size_t>(last_slash - inside);
  const LinkFreeDirectories& known = link_free;
  const bool dirs_known = dirs == 0 || (volume != nullptr && known.volume == volume && known.changes == changes && known.length >= dirs &&
                                        std::memcmp(known.path, inside, dirs) == 0 &&
                                        (known.length == dirs || known.path[dirs] == '/'));
  if (!dirs_known) {
    bool all_there = true;  // every directory exists (EINVAL: no link): worth keeping
    for (char* slash = strchr(inside, '/'); slash != nullptr; slash = strchr(slash + 1, '/')) {
      *slash = '\0';
      bool link = readlink(lexical, target, sizeof(target)) >= 0;
      all_there = all_there && !link && errno == EINVAL;
      *slash = '/';
      if (link) return false;
    }
    if (all_there && volume != nullptr && dirs < sizeof(link_free.path)) {
      link_free.volume = volume;
      link_free.changes = changes;
      std::memcpy(link_free.path, inside, dirs);
      link_free.length = dirs;
    }
  }
  if (!follow_last || *inside == '\0') return true;
  if (readlink(lexical, target, sizeof(target)) >= 0) return false;
  *last_absent = errno == ENOENT;  // as an lstat would have said: the caller asks no more
  return true;
}

}  // namespace

Target Runtime::Locate(int dirfd, const char* path, bool follow_last) const {
  LexicalPath lexical;
  return Locate(dirfd, path, follow_last, LexicalLookup(dirfd, path, &lexical) ? &lexical : nullptr);
}

Target Runtime::Locate(int dirfd, const char* path, bool follow_last, LexicalPath* lexical) const {
  if (lexical != nullptr && lexical->volume != nullptr) {
    MountedVolume* mounted = lexical->volume;
    const char* inside = lexical->inside;
    fs::Volume* volume = *inside != '\0' ? mounted->Get() : nullptr;
    // A file the volume holds is reached without links (the volume's table has none).
    bool known = volume != nullptr && volume->Knows(inside);
    // The count is read before the directories are asked: a change meanwhile makes what they
    // answer stale at once. Without the volume's shared count, nothing is kept.
    const std::optional<uint64_t> changes = volume != nullptr ? volume->DirectoriesChanged() : std::nullopt;
    bool absent = false;
    if (known || NoLinkBelowRoot(lexical->absolute, const_cast<char*>(inside), follow_last,
                                 changes ? mounted : nullptr, changes.value_or(0), &absent)) {
      Target t;
      t.volume = mounted;
      t.path = inside;
      t.absolute = lexical->absolute;
      t.metadata = fs::PathHasPrefix(t.path, fs::kMetaDirName);
      t.unavailable = *inside != '\0' && volume == nullptr;
      if (volume != nullptr && !t.metadata) t.region = volume->RegionOf(t.path);
      t.known_file = known;
      t.absent = absent;
      return t;
    }
  }
  return Resolve(dirfd, path, follow_last);
}

void Runtime::ForgetLinkFreeDirectories(int dirfd, const char* path) {
  if (volumes_.empty()) return;
  // The volume the path names is opened for it if need be (a process whose one call is rmdir).
  LexicalPath lexical;
  const bool judged = path != nullptr && LexicalLookup(dirfd, path, &lexical);
  if (judged && lexical.volume != nullptr) {
    if (fs::Volume* volume = lexical.volume->Get()) volume->NoteDirectoriesChanged();
    return;
  }
  // Outside every volume by name, a link on the way may still lead into one (`rmdir
  // /link-to-volume/d`), and a path not judged may lie anywhere: every volume this process has
  // open is told, and one it has not opened is opened where the path's directory lies on the
  // volume's file system (one stat, only while a volume is not open).
  const bool all_open = std::all_of(volumes_.begin(), volumes_.end(), [](const auto& v) { return v->IfOpen() != nullptr; });
  std::optional<dev_t> device;
  if (!all_open && judged) {
    char* slash = std::strrchr(lexical.absolute, '/');
    const char kept = slash[1];
    slash[slash == lexical.absolute ? 1 : 0] = '\0';
    struct stat st;
    if (stat(lexical.absolute, &st) == 0) device = st.st_dev;
    if (slash == lexical.absolute) slash[1] = kept; else *slash = '/';
  }
  for (const auto& v : volumes_) {
    fs::Volume* volume = v->IfOpen();
    if (volume == nullptr && (!device || *device == v->device)) volume = v->Get();
    if (volume != nullptr) volume->NoteDirectoriesChanged();
  }
}

bool Runtime::LexicalLookup(int dirfd, const char* path, LexicalPath* out) const {
  char* buf = out->absolute;
  if (path == nullptr || path[0] == '\0') return false;
  // ".." after a symbolic link leaves the link's target, not the link: the long way.
  for (const char* dots = strstr(path, ".."); dots != nullptr; dots = strstr(dots + 2, "..")) {
    if ((dots == path || dots[-1] == '/') && (dots[2] == '\0' || dots[2] == '/')) return false;
  }
  size_t len;
  out->one_name = path[0] != '/' && std::strchr(path, '/') == nullptr;
  if (path[0] == '/') {
    len = LexicalAbsolute("/", path, buf, PATH_MAX);
  } else if (dirfd != AT_FDCWD) {
    char base[DirectoryTable::kMaxPath];
    if (dirs_.Get(dirfd, base, sizeof(base)) == 0) return false;
    len = LexicalAbsolute(base, path, buf, PATH_MAX);
  } else {
    char cwd[PATH_MAX];
    for (;;) {  // seqlock read: retry if chdir ran meanwhile
      uint32_t before = cwd_seq_.load(std::memory_order_acquire);
      if (before & 1) continue;
      std::memcpy(cwd, cwd_, sizeof(cwd));
      std::atomic_thread_fence(std::memory_order_acquire);
      if (cwd_seq_.load(std::memory_order_relaxed) == before) break;
    }
    if (cwd[0] != '/') return false;  // not known
    len = LexicalAbsolute(cwd, path, buf, PATH_MAX);
  }
  if (len == 0) return false;
  out->volume = nullptr;
  out->inside = nullptr;
  for (const auto& v : volumes_) {
    const std::string& root = v->root;
    if (len < root.size() || std::memcmp(buf, root.data(), root.size()) != 0) continue;
    if (len == root.size()) {
      out->inside = buf + len;  // the root itself: ""
    } else if (buf[root.size()] == '/' || root == "/") {
      out->inside = buf + root.size() + (root == "/" ? 0 : 1);
    } else {
      continue;
    }
    out->volume = v.get();
    break;
  }
  return true;
}

bool Runtime::OnVolumeDevice(dev_t dev) const {
  for (const auto& v : volumes_) {
    if (v->device == dev) return true;
  }
  return false;
}

bool Runtime::IsVolumeRootDirectory(dev_t dev, ino_t ino) const {
  for (const auto& v : volumes_) {
    if (v->device == dev && v->inode == ino) return true;
  }
  return false;
}

MountedVolume* Runtime::VolumeWithRoot(dev_t device, ino_t inode) {
  for (const auto& v : volumes_) {
    if (v->device == device && v->inode == inode) return v.get();
  }
  return nullptr;
}

bool Runtime::HoldsVolume(dev_t dev, ino_t ino) const {
  for (const auto& [d, i] : anchored_dirs_) {
    if (d == dev && i == ino) return true;
  }
  return false;
}

void Runtime::WorkingDirectoryChanged() {
  char now[PATH_MAX];
  if (getcwd(now, sizeof(now)) == nullptr) now[0] = '\0';  // unknown: paths take the long way
  WorkingDirectoryIs(now);
}

void Runtime::WorkingDirectoryIs(const char* absolute) {
  std::lock_guard lock(cwd_write_mu_);
  cwd_seq_.fetch_add(1, std::memory_order_acq_rel);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  std::strncpy(cwd_, absolute, sizeof(cwd_) - 1);
  cwd_[sizeof(cwd_) - 1] = '\0';
  cwd_seq_.fetch_add(1, std::memory_order_release);
}

}  // namespace scone::runtime

// ---- start-up ---------------------------------------------------------------------------
// glibc calls __libc_start_main before main: the runtime has started by then (its constructor),
// and the command line and environment CAS gave replace the host's.

using MainFn = int (*)(int, char**, char**);
using StartMainFn = int (*)(MainFn, int, char**, void (*)(), void (*)(), void (*)(), void*);

namespace {

// The command line and environment CAS gave replace the host's before the program's own
// initializers run. They live in the runtime's memory, not on the stack the host wrote (what
// /proc/PID/cmdline and /proc/PID/environ show).
void ReplaceCommandLine(const scone::runtime::Runtime& rt, int* argc, char*** argv) {
  auto pointers = [](const std::vector<std::string>& strings) {
    auto* out = new char*[strings.size() + 1];  // lives until exit
    for (size_t i = 0; i < strings.size(); ++i) out[i] = const_cast<char*>(strings[i].c_str());
    out[strings.size()] = nullptr;
    return out;
  };
  if (const auto* args = rt.cas_argv()) {
    *argc = static_cast<int>(args->size());
    *argv = pointers(*args);
  } else if (const auto* handed = rt.handed_arguments(); handed != nullptr && *argc > static_cast<int>(handed->size())) {
    // The kernel's argv ends with a placeholder for each (a script's interpreter and its path
    // come first); those before stay.
    const size_t kept = static_cast<size_t>(*argc) - handed->size();
    auto* out = new char*[static_cast<size_t>(*argc) + 1];  // lives until exit
    for (size_t i = 0; i < kept; ++i) out[i] = (*argv)[i];
    for (size_t i = 0; i < handed->size(); ++i) out[kept + i] = const_cast<char*>((*handed)[i].c_str());
    out[*argc] = nullptr;
    *argv = out;
  }
  if (const auto* env = rt.cas_environment()) environ = pointers(*env);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int __libc_start_main(
    MainFn main_fn, int argc, char** argv, void (*init)(), void (*fini)(), void (*rtld_fini)(),
    void* stack_end) {
  static auto real = reinterpret_cast<StartMainFn>(dlsym(RTLD_NEXT, "__libc_start_main"));
  scone::runtime::Runtime* rt = scone::runtime::Shield();
  if (rt != nullptr) ReplaceCommandLine(*rt, &argc, &argv);
  return real(main_fn, argc, argv, init, fini, rtld_fini, stack_end);
}

// Other libraries' constructors may run first; the early-open shims (files/early_start.cc)
// start the runtime for them when their path may lie in a volume.
__attribute__((constructor)) static void SconeRuntimeConstructor() { scone::runtime::Shield(); }
