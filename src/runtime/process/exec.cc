// execve and execveat from a shielded program: the program is inspected first
// (program_inspection.h) and executed through the descriptor that was inspected; only a program
// the runtime will enter gets the configuration, through a fresh descriptor.
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/entry/raw_syscall.h"
#include "runtime/process/process_calls.h"
#include "runtime/process/program_inspection.h"
#include "runtime/files/mapped_files.h"
#include "runtime/runtime.h"

namespace scone::runtime::process {
namespace {

// The runtime's own variables, which it sets for every program it executes.
bool IsRuntimeVariable(std::string_view entry) {
  return entry.rfind(std::string(kConfigFdEnv) + "=", 0) == 0 || entry.rfind(std::string(kVolumeRootsEnv) + "=", 0) == 0;
}

// The environment for the new program: the runtime preloaded first, the host's own variables
// of the runtime's names dropped (the configuration descriptor is named by the caller).
std::vector<std::string> ExecEnvironment(Runtime& rt, char* const envp[]) {
  std::vector<std::string> env;
  bool has_preload = false;
  for (char* const* e = envp; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (IsRuntimeVariable(entry)) continue;
    if (entry.rfind("LD_PRELOAD=", 0) == 0) {
      has_preload = true;
      std::string value(entry.substr(11));
      // Keep the program's own preloads, with the runtime first.
      if (value.find(rt.library_path()) == std::string::npos) value = rt.library_path() + (value.empty() ? "" : ":" + value);
      env.push_back("LD_PRELOAD=" + value);
      continue;
    }
    env.emplace_back(entry);
  }
  if (!has_preload) env.push_back("LD_PRELOAD=" + rt.library_path());
  // Paths only: the early-open shims tell other libraries' calls outside every volume apart
  // without starting the runtime before its time.
  std::string roots;
  for (const auto& v : rt.volumes()) roots += (roots.empty() ? "" : ":") + v->root;
  env.push_back(std::string(kVolumeRootsEnv) + "=" + roots);
  return env;
}

// What the kernel passes a CAS-configured program's child when the command line is handed over
// (RuntimeConfig::command_line): the variables the loader reads before the runtime starts, by
// their names (glibc's ld.so), and the runtime's own; nothing else the program passed.
std::vector<std::string> LoaderEnvironment(const std::vector<std::string>& env) {
  static const char* const kLoaderVariables[] = {
      "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_BIND_NOW", "LD_BIND_NOT", "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK",
      "LD_ASSUME_KERNEL", "LD_USE_LOAD_BIAS", "LD_DEBUG", "LD_DEBUG_OUTPUT", "LD_VERBOSE", "LD_WARN",
      "LD_PROFILE", "LD_PROFILE_OUTPUT", "LD_ORIGIN_PATH", "GLIBC_TUNABLES", kVolumeRootsEnv};
  std::vector<std::string> out;
  for (const std::string& e : env) {
    const std::string_view name = std::string_view(e).substr(0, e.find('='));
    for (const char* loader : kLoaderVariables) {
      if (name == loader) {
        out.push_back(e);
        break;
      }
    }
  }
  return out;
}

// Whether the kernel would refuse to execute with these arguments and environment (E2BIG): a
// string longer than MAX_ARG_STRLEN, or all of them (with their pointers) more than a quarter of
// the stack limit (at least 128 KiB, at most 6 MiB). Checked where the kernel no longer sees
// them (handed over, RuntimeConfig::command_line), so that the caller still gets E2BIG.
bool TooBigForExec(const std::vector<std::string>& arguments, const std::vector<std::string>& environment) {
  constexpr size_t kMaxArgStrlen = 32 * 4096;
  struct rlimit stack = {};
  RawSyscall(SYS_getrlimit, RLIMIT_STACK, Arg(&stack));
  const size_t limit = std::clamp<size_t>(stack.rlim_cur == RLIM_INFINITY ? SIZE_MAX : stack.rlim_cur / 4,
                                          128 * 1024, 6 * 1024 * 1024);
  size_t total = 0;
  for (const auto* list : {&arguments, &environment}) {
    for (const std::string& s : *list) {
      if (s.size() + 1 > kMaxArgStrlen) return true;
      total += s.size() + 1 + sizeof(char*);
    }
  }
  return total > limit;
}

// A CAS-configured program: its children's arguments and environment may hold the session's
// secrets; they go in the configuration, the kernel gets argv[0] and placeholders (as many: a
// script's interpreter comes before them) and the loader's variables (`env` becomes those). The
// child's environment is the one the program passed, as natively (the runtime's own variables
// are the kernel's only). 0, or -E2BIG where the kernel would have refused them.
long HandOverCommandLine(std::vector<char*>& kernel_argv, char* const* envp, std::vector<std::string>& env,
                         RuntimeConfig& config) {
  static char placeholder[] = "";
  RuntimeConfig::HandedCommandLine handed;
  for (size_t i = 1; i < kernel_argv.size(); ++i) {
    handed.arguments.emplace_back(kernel_argv[i]);
    kernel_argv[i] = placeholder;
  }
  for (char* const* e = envp; e != nullptr && *e != nullptr; ++e) {
    if (!IsRuntimeVariable(*e)) handed.environment.emplace_back(*e);
  }
  if (TooBigForExec(handed.arguments, handed.environment)) return -E2BIG;
  env = LoaderEnvironment(env);
  config.command_line = std::move(handed);
  return 0;
}

// A program file's first bytes as the program reads them: through the shield for a protected
// file (a script in a volume is run by its interpreter, which reads it through the shield).
// REQUIRES: a RuntimeSection.
long ReadHeader(Runtime& rt, int dirfd, const char* path, int at_flags, long fd, char* buf, size_t size,
                bool* shielded) {
  if (path[0] == '\0') {
    if (auto d = rt.fds().Get(dirfd)) {
      *shielded = true;
      return d->ReadAt(buf, size, 0);
    }
  } else if (rt.HasVolumes()) {
    Target t = rt.Locate(dirfd, path, !(at_flags & AT_SYMLINK_NOFOLLOW));
    if (t.Protected()) {
      *shielded = true;
      fs::Volume* volume = t.unavailable ? nullptr : t.volume->Get();
      if (volume == nullptr) return -EIO;
      auto file = volume->OpenFile(t.path, fs::OpenFileOptions{});
      if (!file.ok()) return -EIO;
      auto n = (*file)->Read(0, MutableByteSpan(reinterpret_cast<uint8_t*>(buf), size));
      return n.ok() ? static_cast<long>(*n) : -EIO;
    }
  }
  return RawSyscall(SYS_pread64, fd, Arg(buf), static_cast<long>(size), 0);
}

// A file by identity: names can be mounted over, or missing in a chroot.
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileIdentity&) const = default;
};

FileIdentity IdentityOf(const char* path) {
  struct stat st;
  if (path == nullptr || RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(path), Arg(&st), 0) != 0) return {};
  return {st.st_dev, st.st_ino};
}

// The loader this process's program names (its PT_INTERP, read from the program headers in
// memory), or nullptr.
const char* OwnLoaderName() {
  const auto* phdr = reinterpret_cast<const Elf64_Phdr*>(getauxval(AT_PHDR));
  const size_t count = getauxval(AT_PHNUM);
  if (phdr == nullptr) return nullptr;
  uintptr_t base = 0;
  for (size_t i = 0; i < count; ++i) {
    if (phdr[i].p_type == PT_PHDR) base = reinterpret_cast<uintptr_t>(phdr) - phdr[i].p_vaddr;
  }
  for (size_t i = 0; i < count; ++i) {
    if (phdr[i].p_type == PT_INTERP) return reinterpret_cast<const char*>(base + phdr[i].p_vaddr);
  }
  return nullptr;
}

// The loader and the runtime library this process runs with, by identity, found at start-up
// (before the program could chroot or mount over them): one stat each.
struct OwnFiles {
  FileIdentity loader;
  FileIdentity library;
};
OwnFiles own_files;

// Whether `path`, looked up as the new program's loader will look it up, is `expected` and
// usable by the identity it will run with.
bool SameFileUsable(const std::string& path, const FileIdentity& expected, int access_mode) {
  struct stat st;
  if (RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(path.c_str()), Arg(&st), 0) != 0) return false;
  if (expected.ino != 0 && !(FileIdentity{st.st_dev, st.st_ino} == expected)) return false;
  return RawSyscall(SYS_faccessat2, AT_FDCWD, Arg(path.c_str()), access_mode, AT_EACCESS) == 0;
}

// What the runtime needs to enter the program it is about to start: the loader must load the
// runtime (not in secure mode, where it ignores LD_PRELOAD), the loader must be the one this
// process runs with, and the runtime library must be there (a chroot or another mount namespace
// may lack it or hold another file under its name). Else the program would run unshielded with
// the configuration descriptor. Empty if all holds, else the reason.
std::string CannotEnter(Runtime& rt, const Launch& launch, const std::string& name) {
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  RawSyscall(SYS_getresuid, Arg(&ruid), Arg(&euid), Arg(&suid));
  RawSyscall(SYS_getresgid, Arg(&rgid), Arg(&egid), Arg(&sgid));
  if (ruid != euid || rgid != egid) {
    return name + ": this process's real and effective user or group differ, so the loader would start " +
           "the program in secure mode, without the runtime";
  }
  if (!SameFileUsable(launch.loader, own_files.loader, X_OK)) {
    return name + ": its loader " + launch.loader + " is not the one this process runs with (another file " +
           "under that name here, or none)";
  }
  if (!SameFileUsable(rt.library_path(), own_files.library, R_OK)) {
    return name + ": the runtime library " + rt.library_path() + " is not reachable from here (another root or " +
           "mount namespace, or not readable by the program's user)";
  }
  return "";
}

}  // namespace

void NoteOwnFiles(const std::string& library_path) {
  own_files = {IdentityOf(OwnLoaderName()), IdentityOf(library_path.c_str())};
}

void NameProgram(const std::string& name) {
  const char* execfn = reinterpret_cast<const char*>(getauxval(AT_EXECFN));
  if (execfn == nullptr || std::strncmp(execfn, "/dev/fd/", 8) != 0) return;
  if (!name.empty()) {
    RawSyscall(SYS_prctl, PR_SET_NAME, Arg(name.c_str()));  // truncated to 15 by the kernel
    return;
  }
  char comm[17] = {};
  if (RawSyscall(SYS_prctl, PR_GET_NAME, Arg(comm)) != 0 || std::strcmp(comm, execfn + 8) != 0) return;
  char exe[4096];
  long n = RawSyscall(SYS_readlink, Arg("/proc/self/exe"), Arg(exe), sizeof(exe) - 1);
  if (n <= 0) return;
  exe[n] = '\0';
  const char* slash = std::strrchr(exe, '/');
  RawSyscall(SYS_prctl, PR_SET_NAME, Arg(slash != nullptr ? slash + 1 : exe));  // truncated to 15 by the kernel
}

long Exec(Runtime& rt, int dirfd, const char* path, char* const argv[], char* const envp[], int flags) {
  int config_fd;
  std::vector<std::string> env;
  std::vector<char*> kernel_argv;  // argv as the kernel gets it: the program's, or placeholders
  Launch launch;
  {
    RuntimeSection section;
    launch = InspectProgram(dirfd, path, flags,
                            [&rt](int d, const char* p, int at, long fd, char* buf, size_t size, bool* shielded) {
                              return ReadHeader(rt, d, p, at, fd, buf, size, shielded);
                            });
    if (launch.error != 0) {
      if (!launch.reason.empty()) Log("exec refused: " + launch.reason);
      return launch.error;
    }
    if (std::string why = CannotEnter(rt, launch, path != nullptr && path[0] != '\0' ? path : "the program"); !why.empty()) {
      Log("exec refused: " + why);
      return -EACCES;
    }
    MappedFiles::Get().SealAll();  // the mappings go with the program
    RuntimeConfig config = rt.ConfigForExec();
    if (!(flags & AT_EMPTY_PATH) || path == nullptr || path[0] != '\0') {
      const char* slash = std::strrchr(path, '/');
      config.program_name = slash != nullptr ? slash + 1 : path;
    }
    env = ExecEnvironment(rt, envp);
    for (char* const* a = argv; a != nullptr && *a != nullptr; ++a) kernel_argv.push_back(*a);
    if (config.cas) {
      if (long r = HandOverCommandLine(kernel_argv, envp, env, config); r != 0) return r;
    }
    kernel_argv.push_back(nullptr);
    auto fd = WriteConfigFd(config);
    if (!fd.ok()) {
      Log("exec of " + std::string(path) + " refused: cannot hand it the runtime's configuration: " +
          fd.status().message());
      return -EACCES;
    }
    config_fd = *fd;
    env.push_back(std::string(kConfigFdEnv) + "=" + std::to_string(config_fd));
    // The program opens the volumes afresh: without a recovery where this process had one alone.
    for (auto& v : rt.volumes()) {
      if (fs::Volume* volume = v->IfOpen()) (void)volume->LeaveForExec();
    }
  }
  // Outside the runtime's section (signals it held back have been delivered): the new program
  // starts with the program's own signal mask.
  std::vector<char*> env_pointers;
  for (std::string& s : env) env_pointers.push_back(s.data());
  env_pointers.push_back(nullptr);
  std::vector<char*> arg_pointers = LaunchArguments(launch, kernel_argv.data());
  const sigset_t* handler_mask = ThisThread().handler_mask;  // in the SIGSYS handler: all are blocked
  sigset_t during;
  if (handler_mask != nullptr) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(handler_mask), Arg(&during), sizeof(uint64_t));
  long r = RawSyscall(SYS_execveat, launch.fd, Arg(""), Arg(arg_pointers.data()), Arg(env_pointers.data()), AT_EMPTY_PATH);
  if (handler_mask != nullptr) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&during), 0, sizeof(uint64_t));
  RawSyscall(SYS_close, config_fd);
  RuntimeSection section;
  for (auto& v : rt.volumes()) {
    if (fs::Volume* volume = v->IfOpen()) volume->AfterFailedExec();
  }
  return r;
}

}  // namespace scone::runtime::process
