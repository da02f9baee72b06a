#include "cli/progress_meter.h"

#include <unistd.h>

#include <cstdio>

#include "common/clock.h"

namespace scone::cli {
namespace {

constexpr int64_t kInterval = 200'000'000;  // ns between two redraws

std::string HumanBytes(uint64_t n) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof out, unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
  return out;
}

}  // namespace

ProgressMeter::ProgressMeter(std::string what, bool quiet)
    : what_(std::move(what)), enabled_(!quiet && isatty(STDERR_FILENO) == 1) {}

void ProgressMeter::Update(uint64_t files_done, uint64_t files_total, uint64_t bytes_done, uint64_t bytes_total) {
  files_done_ = files_done;
  files_total_ = files_total;
  bytes_done_ = bytes_done;
  bytes_total_ = bytes_total;
  if (!enabled_) return;
  int64_t now = MonotonicNs();
  if (now - last_shown_ns_ < kInterval) return;
  last_shown_ns_ = now;
  Show();
}

void ProgressMeter::Show() {
  unsigned percent = bytes_total_ > 0 ? static_cast<unsigned>(bytes_done_ * 100 / bytes_total_)
                     : files_total_ > 0 ? static_cast<unsigned>(files_done_ * 100 / files_total_)
                                        : 100;
  // \r and erase-to-end-of-line: the line is rewritten in place.
  std::fprintf(stderr, "\r\033[K%s: %llu/%llu files, %s/%s (%u%%)", what_.c_str(),
               static_cast<unsigned long long>(files_done_), static_cast<unsigned long long>(files_total_),
               HumanBytes(bytes_done_).c_str(), HumanBytes(bytes_total_).c_str(), percent > 100 ? 100 : percent);
  std::fflush(stderr);
}

void ProgressMeter::Done() {
  if (!enabled_) return;
  Show();
  std::fputc('\n', stderr);
  enabled_ = false;
}

}  // namespace scone::cli
