// How far long work is, on a terminal: one line on stderr rewritten in place ("importing:
// 1200/5000 files, 1.2/4.0 GiB (30%)"), at most five times a second. Nothing when stderr is not
// a terminal (scripts, logs) or with --quiet: results stay on stdout either way.
#pragma once

#include <cstdint>
#include <string>

namespace scone::cli {

class ProgressMeter {
 public:
  // Shows only if `quiet` is false and stderr is a terminal.
  ProgressMeter(std::string what, bool quiet);
  ~ProgressMeter() { Done(); }
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;

  void Update(uint64_t files_done, uint64_t files_total, uint64_t bytes_done, uint64_t bytes_total);
  // Ends the line (the last state shown in full); later updates are ignored.
  void Done();

 private:
  void Show();

  std::string what_;
  bool enabled_;
  int64_t last_shown_ns_ = 0;
  uint64_t files_done_ = 0, files_total_ = 0, bytes_done_ = 0, bytes_total_ = 0;
};

}  // namespace scone::cli
