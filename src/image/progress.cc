#include "image/progress.h"

#include <unistd.h>

#include <cstdio>

namespace scone::image {

bool Progress::ShowsProgress(bool quiet) { return !quiet && isatty(STDERR_FILENO) == 1; }

void Progress::Step(const std::string& what) {
  ++done_;
  if (quiet_) return;
  std::fprintf(stderr, "[%d/%d] %s\n", done_, steps_, what.c_str());
  std::fflush(stderr);
}

}  // namespace scone::image
