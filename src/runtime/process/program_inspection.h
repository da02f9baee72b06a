// What a shielded process is about to execute, decided before the kernel sees the call: only a
// program the runtime will enter (a 64-bit x86 program that glibc's dynamic loader starts, which
// then loads the runtime) may run. Refused, with the reason: a static program, another loader
// (musl's), a 32-bit one, a set-user-ID program whose loader would ignore LD_PRELOAD, a script
// whose interpreter is one of those. Such a program would run unshielded on the same volumes.
// Used by execve/execveat in the runtime and by `scone run`.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace scone::runtime::process {

// What will run, decided before the kernel sees the call: the program file, opened once and
// inspected through that descriptor, and the arguments a script's "#!" line puts in front.
// The program is then executed through the same descriptor (execveat AT_EMPTY_PATH): what
// was inspected is what runs, even if a path on the way is swapped meanwhile.
// `error` is EACCES with a reason (refused), or what the kernel would answer: ENOENT and the
// like, ENOEXEC (which glibc's execvp answers by running the file with /bin/sh, inspected in
// turn), ELOOP.
struct Launch {
  long error = 0;
  std::string reason;
  long fd = -1;  // owned: the program file that runs
  std::vector<std::string> script_args;  // interpreter [argument] script, as binfmt_script makes them
  std::string loader;  // the program's PT_INTERP: glibc's loader by name (its identity is the caller's to check)

  Launch() = default;
  Launch(long e, std::string r) : error(e), reason(std::move(r)) {}
  Launch(Launch&& o) noexcept
      : error(o.error), reason(std::move(o.reason)), fd(o.fd), script_args(std::move(o.script_args)),
        loader(std::move(o.loader)) {
    o.fd = -1;
  }
  Launch& operator=(Launch&& o) noexcept {
    std::swap(error, o.error);
    std::swap(reason, o.reason);
    std::swap(fd, o.fd);
    std::swap(script_args, o.script_args);
    std::swap(loader, o.loader);
    return *this;
  }
  ~Launch();
};


// Reads the first bytes of a program file `fd` (opened from dirfd/path, or "" for a
// descriptor) as the program would read them: bytes read or -errno; *shielded when they came
// through a shield (a protected file: a script there is run by its interpreter, which reads it
// through the shield too). Empty: the kernel's bytes.
using HeaderReader = std::function<long(int dirfd, const char* path, int at_flags, long fd, char* buf, size_t size,
                                        bool* shielded)>;

// Opens and inspects what execve(path) / execveat(dirfd, path, at_flags) would run.
Launch InspectProgram(int dirfd, const char* path, int at_flags, const HeaderReader& reader = {});

// The argument vector that executes `launch` through its descriptor (execveat(launch.fd, "",
// ..., AT_EMPTY_PATH)): a script's interpreter arguments in place of argv[0].
std::vector<char*> LaunchArguments(Launch& launch, char* const argv[]);

}  // namespace scone::runtime::process
