// exec and spawn: the program a shielded program starts runs shielded too. The runtime hands
// it a fresh configuration descriptor (the program may have closed the one it got, as Python's
// subprocess does) and keeps LD_PRELOAD in its environment, even when the caller passes an
// environment of its own. Shielded descriptors that survive exec are described in it.
#include <errno.h>
#include <dlfcn.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "runtime/real_libc.h"
#include "runtime/runtime.h"

#define SCONE_EXPORT extern "C" __attribute__((visibility("default")))

extern char** environ;

namespace scone::runtime {
namespace {

// An environment for the new program, and the descriptor it refers to (closed by the caller if
// the exec fails).
struct ExecEnvironment {
  std::vector<std::string> strings;
  std::vector<char*> pointers;
  int config_fd = -1;

  ~ExecEnvironment() {
    if (config_fd >= 0) Real().close(config_fd);
  }
  char* const* envp() { return pointers.data(); }
};

bool Build(char* const envp[], ExecEnvironment* out) {
  Runtime* rt = Shield();
  if (rt == nullptr) return false;
  auto fd = WriteConfigFd(rt->ConfigForExec());
  if (!fd.ok()) {
    Log("cannot hand the runtime configuration to a new program: " + fd.status().message());
    return false;
  }
  out->config_fd = *fd;
  // As the runtime was loaded: the environment may have been replaced by CAS's since.
  const std::string& ours = rt->preload();
  bool has_preload = false;
  for (char* const* e = envp; e && *e; ++e) {
    if (strncmp(*e, "SCONE_RUNTIME_FD=", 17) == 0 || strncmp(*e, "SCONE_VOLUME_ROOTS=", 19) == 0) {
      continue;
    }
    if (strncmp(*e, "LD_PRELOAD=", 11) == 0) {
      has_preload = true;
      std::string value = *e + 11;
      // Keep the program's own preloads, with the runtime first.
      size_t colon = ours.find(':');
      std::string runtime_lib = ours.substr(0, colon);
      if (value.find(runtime_lib) == std::string::npos) value = runtime_lib + ":" + value;
      out->strings.push_back("LD_PRELOAD=" + value);
      continue;
    }
    out->strings.push_back(*e);
  }
  if (!has_preload && !ours.empty()) out->strings.push_back("LD_PRELOAD=" + ours.substr(0, ours.find(':')));
  out->strings.push_back(std::string(kConfigFdEnv) + "=" + std::to_string(*fd));
  std::string roots;
  for (auto& v : rt->volumes()) roots += (roots.empty() ? "" : ":") + v->root;
  out->strings.push_back(std::string(kVolumeRootsEnv) + "=" + roots);
  for (std::string& s : out->strings) out->pointers.push_back(s.data());
  out->pointers.push_back(nullptr);
  return true;
}

}  // namespace
}  // namespace scone::runtime

using namespace scone::runtime;  // NOLINT

SCONE_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  ExecEnvironment env;
  if (!Build(envp, &env)) return Real().execve(path, argv, envp);
  return Real().execve(path, argv, env.envp());
}

SCONE_EXPORT int execv(const char* path, char* const argv[]) { return execve(path, argv, environ); }

SCONE_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  using Fn = int (*)(const char*, char* const[], char* const[]);
  static auto real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "execvpe"));
  ExecEnvironment env;
  if (!Build(envp, &env)) return real(file, argv, envp);
  return real(file, argv, env.envp());
}

SCONE_EXPORT int execvp(const char* file, char* const argv[]) {
  return execvpe(file, argv, environ);
}

// posix_spawn and posix_spawnp differ only in name and in searching PATH.
using SpawnFn = int (*)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
                        char* const[], char* const[]);
#define SCONE_SPAWN(name)                                                                                \
  SCONE_EXPORT int name(pid_t* pid, const char* file, const posix_spawn_file_actions_t* actions,         \
                        const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {         \
    static auto real = reinterpret_cast<SpawnFn>(dlsym(RTLD_NEXT, #name));                               \
    ExecEnvironment env;                                                                                 \
    return real(pid, file, actions, attr, argv, Build(envp, &env) ? env.envp() : envp);                  \
  }
SCONE_SPAWN(posix_spawn)
SCONE_SPAWN(posix_spawnp)

// vfork children share the parent's memory until they exec, and the runtime's exec work (a new
// configuration descriptor, committing descriptors) allocates and changes shared state: a
// vfork child must not do that. vfork becomes fork, which POSIX allows.
SCONE_EXPORT pid_t vfork(void) { return fork(); }
