// Running another program (docker, debootstrap, tar) with an argument vector: no shell ever sees
// the arguments, so image names, paths and commands cannot inject anything. The child's stderr
// goes to ours (the tools' own messages explain their failures); stdout is captured, passed
// through, discarded, or fed from/into a descriptor (pipelines such as tar | docker import).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace scone::image {

struct ProcessOptions {
  enum class Output { kCapture, kInherit, kDiscard, kToFd };
  Output stdout_mode = Output::kCapture;
  bool stderr_discard = false;  // quiet runs: the tool's progress chatter goes nowhere
  int stdin_fd = -1;   // -1: /dev/null
  int stdout_fd = -1;  // with kToFd
  std::string cwd;     // "" : ours
};

struct ProcessResult {
  int exit_code = 0;    // 128 + signal if killed by one
  std::string output;   // captured stdout (kCapture)
};

// Starts argv[0] (looked up on PATH) and waits for it. REQUIRES: !argv.empty().
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Like RunProcess, but a non-zero exit is an error naming the command and its exit code.
Result<std::string> RunChecked(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Two processes joined by a pipe (first's stdout into second's stdin); both must succeed.
Status RunPipeline(const std::vector<std::string>& first, const std::vector<std::string>& second,
                   const ProcessOptions& second_options = {});

// The command for messages: words joined by spaces (never executed).
std::string Describe(const std::vector<std::string>& argv);

}  // namespace scone::image
