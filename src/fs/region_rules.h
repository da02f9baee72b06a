// Region rules: path prefixes mapped to a protection kind; the longest matching prefix wins and
// paths no rule matches are encrypted (protection is on by default).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "fs/format.h"

namespace scone::fs {

struct RegionRule {
  std::string prefix;  // normalized volume path; "" would mean the whole volume
  Region region;
};

class RegionRules {
 public:
  RegionRules() = default;

  // Parses "PREFIX=encrypted|authenticated|not-protected" (PREFIX relative to the volume; "/"
  // or "." for the whole volume).
  static Result<RegionRule> ParseRule(std::string_view text);
  Status Add(RegionRule rule);

  Region RegionOf(std::string_view normalized_path) const;
  const std::vector<RegionRule>& rules() const { return rules_; }

  void Encode(ByteWriter& w) const;
  static bool Decode(ByteReader& r, RegionRules* out);

 private:
  std::vector<RegionRule> rules_;
};

Result<Region> ParseRegionName(std::string_view name);

}  // namespace scone::fs
