#include "net/log_limit.h"

namespace scone::net {

bool LogLimit::Allow(const std::string& key, int64_t now_ns, uint64_t* suppressed) {
  Window& w = windows_[key];
  const int64_t second = now_ns / 1'000'000'000;
  if (second != w.second) {
    w.second = second;
    w.lines = 0;
  }
  *suppressed = 0;
  if (w.lines >= per_second_) {
    ++w.suppressed;
    return false;
  }
  ++w.lines;
  *suppressed = w.suppressed;
  w.suppressed = 0;
  return true;
}

}  // namespace scone::net
