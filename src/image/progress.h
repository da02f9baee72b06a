// What long image work is doing, on stderr: one line per step ("[2/5] exporting python's
// files"), on a terminal; nothing in scripts (stderr not a terminal) or with --quiet. Results
// stay on stdout.
#pragma once

#include <string>

namespace scone::image {

class Progress {
 public:
  Progress(bool quiet, int steps) : quiet_(!ShowsProgress(quiet)), steps_(steps) {}
  // Whether progress is shown: not --quiet, and stderr a terminal.
  static bool ShowsProgress(bool quiet);
  void Step(const std::string& what);

 private:
  bool quiet_;
  int steps_;
  int done_ = 0;
};

}  // namespace scone::image
