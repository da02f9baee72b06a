// execve and execveat from a shielded program. The program about to run is inspected first:
// only one the runtime will enter (a 64-bit x86 program that glibc's dynamic loader starts,
// which then loads the runtime) gets the configuration, through a fresh descriptor. Anything
// else is refused before the kernel sees it: a static program, another loader (musl's), a
// 32-bit one, a setuid program whose loader would ignore LD_PRELOAD, a script whose
// interpreter is one of those. Such a program would run unshielded on the same volumes.
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/entry/raw_syscall.h"
#include "runtime/process/process_calls.h"
#include "runtime/runtime.h"

namespace scone::runtime::process {
namespace {

constexpr int kMaxInterpreterDepth = 4;  // as the kernel's binfmt_script allows

// Why a program may not run: empty if it may, else the reason (EACCES) — or ENOEXEC, which
// glibc's execvp answers by running the file with /bin/sh (then inspected in turn).
struct Verdict {
  long error = 0;
  std::string reason;
};

Verdict Refuse(std::string reason) { return {-EACCES, std::move(reason)}; }

bool IsGlibcLoader(const std::string& interpreter) {
  const std::string name = interpreter.substr(interpreter.rfind('/') + 1);
  return name == "ld-linux-x86-64.so.2";
}

Verdict Inspect(int dirfd, const char* path, int at_flags, int depth);

Verdict InspectElf(long fd, const Elf64_Ehdr& eh, const std::string& name) {
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
    return Refuse(name + " is not a 64-bit x86 program: the runtime cannot enter it");
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 512) {
    return {-ENOEXEC, ""};
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  long want = static_cast<long>(ph.size() * sizeof(Elf64_Phdr));
  if (RawSyscall(SYS_pread64, fd, Arg(ph.data()), want, static_cast<long>(eh.e_phoff)) != want) {
    return {-ENOEXEC, ""};
  }
  for (const Elf64_Phdr& p : ph) {
    if (p.p_type != PT_INTERP) continue;
    if (p.p_filesz == 0 || p.p_filesz > 4096) return {-ENOEXEC, ""};
    std::string interpreter(p.p_filesz, '\0');
    if (RawSyscall(SYS_pread64, fd, Arg(interpreter.data()), static_cast<long>(p.p_filesz),
                   static_cast<long>(p.p_offset)) != static_cast<long>(p.p_filesz)) {
      return {-ENOEXEC, ""};
    }
    interpreter.resize(std::strlen(interpreter.c_str()));
    if (!IsGlibcLoader(interpreter)) {
      return Refuse(name + " is started by " + interpreter +
                    ", not glibc's dynamic loader: the runtime cannot enter it");
    }
    return {};
  }
  return Refuse(name +
                " is statically linked: the runtime cannot enter it (it would run unshielded; build it "
                "dynamically linked, or with the SCONE toolchain)");
}

// "#!interpreter [arg]": the interpreter is what runs.
Verdict InspectScript(const char* header, long size, const std::string& name, int depth) {
  std::string line(header + 2, static_cast<size_t>(size - 2));
  line = line.substr(0, line.find('\n'));
  size_t begin = line.find_first_not_of(" \t");
  if (begin == std::string::npos) return {-ENOEXEC, ""};
  size_t end = line.find_first_of(" \t", begin);
  std::string interpreter = line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  if (depth >= kMaxInterpreterDepth) return {-ELOOP, ""};
  Verdict v = Inspect(AT_FDCWD, interpreter.c_str(), 0, depth + 1);
  if (v.error == -EACCES) v.reason = name + ": its interpreter " + v.reason;
  return v;
}

Verdict Inspect(int dirfd, const char* path, int at_flags, int depth) {
  const bool on_fd = (at_flags & AT_EMPTY_PATH) && path != nullptr && path[0] == '\0';
  const std::string name = on_fd ? "descriptor " + std::to_string(dirfd) : std::string(path ? path : "");
  long fd = on_fd ? dirfd
                  : RawSyscall(SYS_openat, dirfd, Arg(path),
                               O_RDONLY | O_CLOEXEC | ((at_flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0), 0);
  if (fd == -EACCES) {
    // Executable but not readable: the kernel could start it, the runtime cannot tell what it is.
    struct stat st;
    if (RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), at_flags & AT_SYMLINK_NOFOLLOW) == 0 &&
        RawSyscall(SYS_faccessat, dirfd, Arg(path), X_OK) == 0) {
      return Refuse(name + " cannot be read, so the runtime cannot tell whether it can enter it");
    }
  }
  if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP || fd == -ENAMETOOLONG) {
    return {fd, ""};  // as the kernel will say (a PATH search tries many): no configuration made
  }
  if (fd < 0) return {};  // the kernel decides
  auto close_fd = [&] {
    if (!on_fd) RawSyscall(SYS_close, fd);
  };
  struct stat st;
  if (RawSyscall(SYS_fstat, fd, Arg(&st)) != 0 || !S_ISREG(st.st_mode)) {
    close_fd();
    return {};  // the kernel refuses it
  }
  // A set-user-ID or set-group-ID program that changes the identity starts in secure mode, in
  // which the loader ignores LD_PRELOAD: it would run without the runtime.
  const bool setuid = (st.st_mode & S_ISUID) && st.st_uid != static_cast<uid_t>(RawSyscall(SYS_geteuid));
  const bool setgid = (st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) &&
                      st.st_gid != static_cast<gid_t>(RawSyscall(SYS_getegid));
  const bool caps = RawSyscall(SYS_geteuid) != 0 &&
                    RawSyscall(SYS_fgetxattr, fd, Arg("security.capability"), 0, 0) > 0;
  if (setuid || setgid || caps) {
    close_fd();
    return Refuse(name + " changes identity when it starts (set-user-ID, set-group-ID or file capabilities), "
                         "so the loader would not load the runtime into it");
  }
  char header[256];
  long n = RawSyscall(SYS_pread64, fd, Arg(header), sizeof(header), 0);
  Verdict v;
  if (n >= 2 && header[0] == '#' && header[1] == '!') {
    v = InspectScript(header, n, name, depth);
  } else if (n >= static_cast<long>(sizeof(Elf64_Ehdr)) && std::memcmp(header, ELFMAG, SELFMAG) == 0) {
    Elf64_Ehdr eh;
    std::memcpy(&eh, header, sizeof(eh));
    v = InspectElf(fd, eh, name);
  } else {
    v = {-ENOEXEC, ""};  // no format the runtime knows (a binfmt_misc handler would run unshielded)
  }
  close_fd();
  return v;
}

// The environment for the new program: the runtime preloaded first, the configuration
// descriptor named, the host's own variables of those names dropped.
std::vector<std::string> ExecEnvironment(Runtime& rt, char* const envp[], int config_fd) {
  std::vector<std::string> env;
  bool has_preload = false;
  for (char* const* e = envp; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.rfind(std::string(kConfigFdEnv) + "=", 0) == 0 ||
        entry.rfind(std::string(kVolumeRootsEnv) + "=", 0) == 0) {
      continue;
    }
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
  env.push_back(std::string(kConfigFdEnv) + "=" + std::to_string(config_fd));
  // Paths only: the early-open shims tell other libraries' calls outside every volume apart
  // without starting the runtime before its time.
  std::string roots;
  for (const auto& v : rt.volumes()) roots += (roots.empty() ? "" : ":") + v->root;
  env.push_back(std::string(kVolumeRootsEnv) + "=" + roots);
  return env;
}

}  // namespace

long Exec(Runtime& rt, long nr, int dirfd, const char* path, char* const argv[], char* const envp[], int flags) {
  int config_fd;
  std::vector<std::string> env;
  {
    RuntimeSection section;
    Verdict v = Inspect(dirfd, path, flags, 0);
    if (v.error != 0) {
      if (!v.reason.empty()) Log("exec refused: " + v.reason);
      return v.error;
    }
    auto fd = WriteConfigFd(rt.ConfigForExec());
    if (!fd.ok()) {
      Log("exec of " + std::string(path) + " refused: cannot hand it the runtime's configuration: " +
          fd.status().message());
      return -EACCES;
    }
    config_fd = *fd;
    env = ExecEnvironment(rt, envp, config_fd);
  }
  // Outside the runtime's section (signals it held back have been delivered): the new program
  // starts with the program's own signal mask.
  std::vector<char*> pointers;
  for (std::string& s : env) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  const sigset_t* handler_mask = ThisThread().handler_mask;  // in the SIGSYS handler: all are blocked
  sigset_t during;
  if (handler_mask != nullptr) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(handler_mask), Arg(&during), sizeof(uint64_t));
  long r = nr == SYS_execveat ? RawSyscall(SYS_execveat, dirfd, Arg(path), Arg(argv), Arg(pointers.data()), flags)
                              : RawSyscall(SYS_execve, Arg(path), Arg(argv), Arg(pointers.data()));
  if (handler_mask != nullptr) RawSyscall(SYS_rt_sigprocmask, SIG_SETMASK, Arg(&during), 0, sizeof(uint64_t));
  RawSyscall(SYS_close, config_fd);
  return r;
}

}  // namespace scone::runtime::process
