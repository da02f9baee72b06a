#include "fs/region_rules.h"

#include "fs/volume_path.h"

namespace scone::fs {

Result<Region> ParseRegionName(std::string_view name) {
  if (name == "encrypted") return Region::kEncrypted;
  if (name == "authenticated") return Region::kAuthenticated;
  if (name == "not-protected") return Region::kNotProtected;
  return InvalidArgument("unknown region kind '" + std::string(name) +
                         "' (expected encrypted, authenticated or not-protected)");
}

Result<RegionRule> RegionRules::ParseRule(std::string_view text) {
  size_t eq = text.rfind('=');
  if (eq == std::string_view::npos) {
    return InvalidArgument("region rule '" + std::string(text) + "' is not PREFIX=KIND");
  }
  SCONE_ASSIGN_OR_RETURN(Region region, ParseRegionName(text.substr(eq + 1)));
  std::string_view prefix = text.substr(0, eq);
  RegionRule rule{"", region};
  if (prefix != "/" && prefix != "." && !prefix.empty()) {
    SCONE_ASSIGN_OR_RETURN(rule.prefix, NormalizeVolumePath(prefix));
  }
  return rule;
}

Status RegionRules::Add(RegionRule rule) {
  for (const RegionRule& r : rules_) {
    if (r.prefix == rule.prefix) {
      return InvalidArgument("two region rules for prefix '" + rule.prefix + "'");
    }
  }
  rules_.push_back(std::move(rule));
  return Status::Ok();
}

Region RegionRules::RegionOf(std::string_view path) const {
  const RegionRule* best = nullptr;
  for (const RegionRule& r : rules_) {
    if (PathHasPrefix(path, r.prefix) && (best == nullptr || r.prefix.size() > best->prefix.size())) {
      best = &r;
    }
  }
  return best ? best->region : Region::kEncrypted;
}

void RegionRules::Encode(ByteWriter& w) const {
  w.U32(static_cast<uint32_t>(rules_.size()));
  for (const RegionRule& r : rules_) {
    w.Str(r.prefix);
    w.U8(static_cast<uint8_t>(r.region));
  }
}

bool RegionRules::Decode(ByteReader& r, RegionRules* out) {
  uint32_t count;
  if (!r.U32(&count) || count > 4096) return false;
  out->rules_.clear();
  for (uint32_t i = 0; i < count; ++i) {
    RegionRule rule;
    uint8_t kind;
    if (!r.Str(&rule.prefix, 4096) || !r.U8(&kind)) return false;
    if (kind < 1 || kind > 3) return false;
    rule.region = static_cast<Region>(kind);
    out->rules_.push_back(std::move(rule));
  }
  return true;
}

}  // namespace scone::fs
