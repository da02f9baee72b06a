// What long image work is doing, on stderr: one line per step ("[2/5] exporting python's
// files"), nothing with --quiet. Results stay on stdout.
#pragma once

#include <string>

namespace scone::image {

class Progress {
 public:
  Progress(bool quiet, int steps) : quiet_(quiet), steps_(steps) {}
  void Step(const std::string& what);

 private:
  bool quiet_;
  int steps_;
  int done_ = 0;
};

}  // namespace scone::image
