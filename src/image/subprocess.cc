#include "image/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

extern "C" char** environ;

namespace scone::image {
namespace {

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { Reset(); }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Spawns argv with the given standard descriptors (-1: /dev/null for stdin, ours otherwise).
Result<pid_t> Spawn(const std::vector<std::string>& argv, int in_fd, int out_fd, bool stderr_null,
                    const std::string& cwd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (in_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  if (stderr_null) posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return IoError("cannot start " + argv[0], rc);
  return pid;
}

Result<int> Wait(pid_t pid, const std::string& what) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return IoError("wait for " + what, errno);
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace

std::string Describe(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) return Internal("RunProcess without a program");
  using Output = ProcessOptions::Output;
  int pipe_fds[2] = {-1, -1};
  int out_fd = -1;
  FdCloser null_out(options.stdout_mode == Output::kDiscard ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1);
  if (options.stdout_mode == Output::kCapture) {
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return IoError("pipe", errno);
    out_fd = pipe_fds[1];
  } else if (options.stdout_mode == Output::kDiscard) {
    out_fd = null_out.get();
  } else if (options.stdout_mode == Output::kToFd) {
    out_fd = options.stdout_fd;
  }
  FdCloser read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  SCONE_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, options.stdin_fd, out_fd, options.stderr_discard, options.cwd));
  write_end.Reset();
  ProcessResult result;
  if (read_end.get() >= 0) {
    char buf[65536];
    for (;;) {
      ssize_t n = read(read_end.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      result.output.append(buf, static_cast<size_t>(n));
    }
  }
  SCONE_ASSIGN_OR_RETURN(result.exit_code, Wait(pid, argv[0]));
  return result;
}

Result<std::string> RunChecked(const std::vector<std::string>& argv, const ProcessOptions& options) {
  SCONE_ASSIGN_OR_RETURN(ProcessResult r, RunProcess(argv, options));
  if (r.exit_code != 0) {
    return Status(Code::kIoError, Describe(argv) + " failed (exit " + std::to_string(r.exit_code) + ")");
  }
  return std::move(r.output);
}

Status RunPipeline(const std::vector<std::string>& first, const std::vector<std::string>& second,
                   const ProcessOptions& second_options) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoError("pipe", errno);
  FdCloser read_end(fds[0]), write_end(fds[1]);
  SCONE_ASSIGN_OR_RETURN(pid_t producer, Spawn(first, -1, write_end.get(), false, ""));
  write_end.Reset();
  ProcessOptions options = second_options;
  options.stdin_fd = read_end.get();
  Result<ProcessResult> consumer = RunProcess(second, options);
  read_end.Reset();
  SCONE_ASSIGN_OR_RETURN(int producer_exit, Wait(producer, first[0]));
  if (!consumer.ok()) return consumer.status();
  if (producer_exit != 0) {
    return Status(Code::kIoError, Describe(first) + " failed (exit " + std::to_string(producer_exit) + ")");
  }
  if (consumer->exit_code != 0) {
    return Status(Code::kIoError, Describe(second) + " failed (exit " + std::to_string(consumer->exit_code) + ")");
  }
  return Status::Ok();
}

}  // namespace scone::image
