// Rate limit for the network shield's `scone:` lines about failed connections: a port scan or a
// flood of bad clients makes one failure per connection, and a line each would flood stderr (the
// console, the host's logs). Per key (a rule), at most `per_second` lines in each second of the
// monotonic clock; the rest are counted, and the count is handed to the key's next line that is
// let through, to be said with it ("... N more suppressed"). Never sleeps, never drops the count.
//
// A pure core: the caller passes the time. Thread-safety: none (the caller holds a lock).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace scone::net {

class LogLimit {
 public:
  explicit LogLimit(uint32_t per_second) : per_second_(per_second) {}

  // Whether a line for `key` at `now_ns` may go out. When it may, *suppressed is the number of
  // the key's lines held back since its last line that went out (to be said first), else 0.
  bool Allow(const std::string& key, int64_t now_ns, uint64_t* suppressed);

 private:
  struct Window {
    int64_t second = -1;
    uint32_t lines = 0;       // let through in `second`
    uint64_t suppressed = 0;  // held back since the last line let through
  };
  const uint32_t per_second_;
  std::map<std::string, Window> windows_;  // one per rule: bounded by the configuration
};

}  // namespace scone::net
