#include "fs/buffered_room.h"

#include <time.h>

namespace scone::fs {
namespace {

// Free room past which a few milliseconds of writes cannot use it up: asked again only after
// kRecheckNs (a statfs per buffered write costs about a microsecond).
constexpr uint64_t kFarFromFull = uint64_t{256} << 20;
constexpr int64_t kRecheckNs = 100'000'000;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

bool BufferedRoom::Promise(uint64_t bytes, const std::function<Result<uint64_t>()>& free_space) {
  std::lock_guard lock(mu_);
  const int64_t now = NowNs();
  if (free_ < kFarFromFull || now - checked_at_ns_ >= kRecheckNs) {
    Result<uint64_t> free = free_space();
    if (!free.ok()) {
      promised_ += bytes;
      return true;
    }
    free_ = *free;
    checked_at_ns_ = now;
  }
  if (promised_ + bytes + kMargin > free_) return false;
  promised_ += bytes;
  return true;
}

void BufferedRoom::Release(uint64_t bytes) {
  std::lock_guard lock(mu_);
  promised_ -= std::min(bytes, promised_);
}

uint64_t BufferedRoom::promised() const {
  std::lock_guard lock(mu_);
  return promised_;
}

}  // namespace scone::fs
