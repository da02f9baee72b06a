#include "runtime/process/program_inspection.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "runtime/entry/raw_syscall.h"

namespace scone::runtime::process {

Launch::~Launch() {
  if (fd >= 0) RawSyscall(SYS_close, fd);
}

namespace {

constexpr int kMaxInterpreterDepth = 5;  // scripts in a chain, as the kernel allows (its exec_binprm)
constexpr long kHeaderSize = 256;       // the kernel's BINPRM_BUF_SIZE

Launch Refuse(std::string reason) { return {-EACCES, std::move(reason)}; }

bool IsGlibcLoader(const std::string& interpreter) {
  const std::string name = interpreter.substr(interpreter.rfind('/') + 1);
  return name == "ld-linux-x86-64.so.2";
}

Launch Inspect(int dirfd, const char* path, int at_flags, int depth, const HeaderReader& reader);

Launch InspectElf(long fd, const Elf64_Ehdr& eh, const std::string& name) {
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
    Launch ok;
    ok.loader = interpreter;
    return ok;
  }
  return Refuse(name +
                " is statically linked: the runtime cannot enter it (it would run unshielded; build it "
                "dynamically linked, or with the SCONE toolchain)");
}

// Whether the kernel would execute the opened file: execute permission for the effective
// identity, on a file system not mounted noexec.
long MayExecute(long fd) {
  long r = RawSyscall(SYS_faccessat2, fd, Arg(""), X_OK, AT_EMPTY_PATH | AT_EACCESS);
  if (r != 0) return r == -ENOSYS ? 0 : r;
  struct statfs fs;
  if (RawSyscall(SYS_fstatfs, fd, Arg(&fs)) == 0 && (fs.f_flags & ST_NOEXEC)) return -EACCES;
  return 0;
}

// "#!interpreter [argument]": the interpreter runs, with the arguments the kernel's
// binfmt_script would give it (the script's name as the call named it).
Launch InspectScript(const char* header, long size, const std::string& name, const std::string& script_name, int depth,
                     const HeaderReader& reader) {
  std::string line(header + 2, static_cast<size_t>(size - 2));
  const size_t newline = line.find('\n');
  if (newline == std::string::npos && size == kHeaderSize) return {-ENOEXEC, ""};  // as the kernel: too long
  line = line.substr(0, newline);
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  size_t begin = 0;
  while (begin < line.size() && blank(line[begin])) ++begin;
  size_t end = begin;
  while (end < line.size() && !blank(line[end])) ++end;
  if (begin == end) return {-ENOEXEC, ""};
  std::string interpreter = line.substr(begin, end - begin);
  size_t arg_begin = end;
  while (arg_begin < line.size() && blank(line[arg_begin])) ++arg_begin;
  size_t arg_end = line.size();
  while (arg_end > arg_begin && blank(line[arg_end - 1])) --arg_end;
  if (depth >= kMaxInterpreterDepth) return {-ELOOP, ""};
  Launch l = Inspect(AT_FDCWD, interpreter.c_str(), 0, depth + 1, reader);
  if (l.error == -EACCES && !l.reason.empty()) l.reason = name + ": its interpreter " + l.reason;
  if (l.error != 0) return l;
  // A chain of scripts: the outer interpreter's arguments come first, as the kernel builds them.
  if (l.script_args.empty()) l.script_args.push_back(interpreter);
  if (arg_end > arg_begin) l.script_args.push_back(line.substr(arg_begin, arg_end - arg_begin));
  l.script_args.push_back(script_name);
  return l;
}

// A descriptor the program executes may be O_PATH or write-only: a new open of its file reads it
// (and the kernel still answers ETXTBSY for a file open for writing).
long ReopenForReading(int fd) {
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  long r = RawSyscall(SYS_openat, AT_FDCWD, Arg(proc.c_str()), O_RDONLY | O_CLOEXEC, 0);
  if (r == -ENOENT && RawSyscall(SYS_fcntl, fd, F_GETFD) >= 0) return RawSyscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);  // no /proc
  return r;
}

Launch Inspect(int dirfd, const char* path, int at_flags, int depth, const HeaderReader& reader) {
  const bool on_fd = (at_flags & AT_EMPTY_PATH) && path != nullptr && path[0] == '\0';
  const std::string name = on_fd ? "descriptor " + std::to_string(dirfd) : std::string(path ? path : "");
  // The name binfmt_script passes to an interpreter: the path, or /dev/fd/N[/path] for execveat.
  std::string script_name = name;
  if (on_fd) {
    script_name = "/dev/fd/" + std::to_string(dirfd);
  } else if (dirfd != AT_FDCWD && path != nullptr && path[0] != '/') {
    script_name = "/dev/fd/" + std::to_string(dirfd) + "/" + path;
  }
  Launch launch;
  launch.fd = on_fd ? ReopenForReading(dirfd)
                    : RawSyscall(SYS_openat, dirfd, Arg(path),
                                 O_RDONLY | O_CLOEXEC | ((at_flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0), 0);
  const long fd = launch.fd;
  if (fd == -EACCES) {
    // Executable but not readable: the kernel could start it, the runtime cannot tell what it is.
    struct stat st;
    if (RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), at_flags & AT_SYMLINK_NOFOLLOW) == 0 &&
        RawSyscall(SYS_faccessat, dirfd, Arg(path), X_OK) == 0) {
      return Refuse(name + " cannot be read, so the runtime cannot tell whether it can enter it");
    }
  }
  if (fd < 0) return {fd == -EBADF && on_fd ? -EBADF : fd, ""};  // as the kernel will say
  struct stat st;
  if (RawSyscall(SYS_fstat, fd, Arg(&st)) != 0) return {-EACCES, ""};
  if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) return {-EACCES, ""};  // as the kernel answers
  if (long r = MayExecute(fd); r != 0) return {r, ""};
  char header[kHeaderSize];
  bool shielded = false;
  long n = reader ? reader(dirfd, on_fd ? "" : path, at_flags, fd, header, sizeof(header), &shielded)
                  : RawSyscall(SYS_pread64, fd, Arg(header), sizeof(header), 0);
  if (n >= 2 && header[0] == '#' && header[1] == '!') {
    if (on_fd && (RawSyscall(SYS_fcntl, dirfd, F_GETFD) & FD_CLOEXEC)) {
      return {-ENOENT, ""};  // as the kernel: the interpreter could not open /dev/fd/N
    }
    return InspectScript(header, n, name, script_name, depth, reader);
  }
  if (n >= static_cast<long>(sizeof(Elf64_Ehdr)) && std::memcmp(header, ELFMAG, SELFMAG) == 0) {
    Elf64_Ehdr eh;
    std::memcpy(&eh, header, sizeof(eh));
    if (shielded) {
      return Refuse(name + " is a protected file: the kernel would load its ciphertext (programs run from "
                           "outside the volume; scripts inside it work)");
    }
    // A set-user-ID or set-group-ID program that changes the identity starts in secure mode, in
    // which the loader ignores LD_PRELOAD: it would run without the runtime. (The kernel ignores
    // these bits on scripts.)
    const bool setuid = (st.st_mode & S_ISUID) && st.st_uid != static_cast<uid_t>(RawSyscall(SYS_geteuid));
    const bool setgid = (st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) &&
                        st.st_gid != static_cast<gid_t>(RawSyscall(SYS_getegid));
    const bool caps = RawSyscall(SYS_geteuid) != 0 &&
                      RawSyscall(SYS_fgetxattr, fd, Arg("security.capability"), 0, 0) > 0;
    if (setuid || setgid || caps) {
      return Refuse(name + " changes identity when it starts (set-user-ID, set-group-ID or file capabilities), "
                           "so the loader would not load the runtime into it");
    }
    Launch verdict = InspectElf(fd, eh, name);
    if (verdict.error != 0) return verdict;
    launch.loader = std::move(verdict.loader);
    return launch;
  }
  return {-ENOEXEC, ""};  // no format the runtime knows (a binfmt_misc handler would run unshielded)
}

}  // namespace

Launch InspectProgram(int dirfd, const char* path, int at_flags, const HeaderReader& reader) {
  return Inspect(dirfd, path, at_flags, 0, reader);
}

std::vector<char*> LaunchArguments(Launch& launch, char* const argv[]) {
  std::vector<char*> out;
  for (std::string& s : launch.script_args) out.push_back(s.data());
  for (char* const* a = argv; a != nullptr && *a != nullptr; ++a) {
    if (a != argv || launch.script_args.empty()) out.push_back(*a);  // a script's argv[0] is replaced
  }
  out.push_back(nullptr);
  return out;
}

}  // namespace scone::runtime::process
