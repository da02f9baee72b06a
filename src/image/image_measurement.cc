#include "image/image_measurement.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "image/root_path.h"

namespace scone::image {
namespace {

// The loader's trace of `program` in `root`, with the runtime preloaded.
Result<std::string> LoaderTrace(const std::string& root, const std::string& program, const std::string& interpreter,
                                const std::string& runtime) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoError("pipe", errno);
  std::string preload = "LD_PRELOAD=" + runtime;
  pid_t pid = fork();
  if (pid < 0) return IoError("fork", errno);
  if (pid == 0) {
    dup2(fds[1], 1);
    if (chroot(root.c_str()) != 0 || chdir("/") != 0) _exit(126);
    char* envp[] = {preload.data(), nullptr};
    execle(interpreter.c_str(), interpreter.c_str(), "--list", program.c_str(), static_cast<char*>(nullptr), envp);
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
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 126) {
    return IoError("chroot " + root + " (sconify must run as root)", EPERM);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return InvalidArgument("the image's dynamic loader cannot load " + program + ":\n" + trace);
  }
  return trace;
}

}  // namespace

Result<attest::ImageDescription> DescribeImageProgram(const std::string& root, const std::string& program,
                                                      const std::string& interpreter, const std::string& runtime) {
  SCONE_ASSIGN_OR_RETURN(std::string trace, LoaderTrace(root, program, interpreter, runtime));
  SCONE_ASSIGN_OR_RETURN(std::string program_file, ResolveInRoot(root, program));
  SCONE_ASSIGN_OR_RETURN(std::string interp_file, ResolveInRoot(root, interpreter));
  SCONE_ASSIGN_OR_RETURN(std::string runtime_file, ResolveInRoot(root, runtime));
  attest::ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = attest::RuntimeSettings();
  SCONE_ASSIGN_OR_RETURN(crypto::Hash exe_hash, attest::HashFile(program_file));
  d.files.push_back({attest::MeasuredFile::Kind::kExecutable, "main", exe_hash});
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
        return NotFound(program + ": library " + line.substr(0, arrow) + " not found in the image");
      }
    }
    path = path.substr(0, path.find(" ("));
    if (path.find('/') == std::string::npos) continue;  // the vDSO: no file
    SCONE_ASSIGN_OR_RETURN(std::string file, ResolveInRoot(root, path));
    if (file == program_file) continue;
    using Kind = attest::MeasuredFile::Kind;
    Kind kind = file == interp_file ? Kind::kInterpreter : file == runtime_file ? Kind::kRuntime : Kind::kLibrary;
    SCONE_ASSIGN_OR_RETURN(attest::MeasuredFile f, attest::MeasureMappedFile(kind, file, path));
    d.files.push_back(std::move(f));
  }
  return d;
}

}  // namespace scone::image
