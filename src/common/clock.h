// The monotonic clock in nanoseconds, for deadlines and polls (clock_gettime is answered by the
// vDSO: no system call, none that the runtime's entry sees).
#pragma once

#include <time.h>

#include <cstdint>

namespace scone {

inline int64_t MonotonicNs(clockid_t clock = CLOCK_MONOTONIC) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace scone
