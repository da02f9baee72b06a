#include "fs/region_rules.h"

#include <gtest/gtest.h>

#include "fs/volume_path.h"

namespace scone::fs {
namespace {

TEST(RegionRulesTest, LongestPrefixWinsAndDefaultIsEncrypted) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("lib=authenticated")).ok());
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("lib/cache=not-protected")).ok());
  EXPECT_EQ(rules.RegionOf("data/x"), Region::kEncrypted);
  EXPECT_EQ(rules.RegionOf("lib/libc.so"), Region::kAuthenticated);
  EXPECT_EQ(rules.RegionOf("lib/cache/x"), Region::kNotProtected);
  EXPECT_EQ(rules.RegionOf("library"), Region::kEncrypted);  // not under "lib/"
}

TEST(RegionRulesTest, RejectsBadRules) {
  EXPECT_FALSE(RegionRules::ParseRule("lib").ok());
  EXPECT_FALSE(RegionRules::ParseRule("lib=secret").ok());
  EXPECT_FALSE(RegionRules::ParseRule("../x=encrypted").ok());
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("a=encrypted")).ok());
  EXPECT_FALSE(rules.Add(*RegionRules::ParseRule("./a/=authenticated")).ok());
}

TEST(VolumePathTest, Normalizes) {
  EXPECT_EQ(*NormalizeVolumePath("a//b/./c"), "a/b/c");
  EXPECT_EQ(*NormalizeVolumePath("/a/b/../c"), "a/c");
  EXPECT_FALSE(NormalizeVolumePath("..").ok());
  EXPECT_FALSE(NormalizeVolumePath("a/../..").ok());
  EXPECT_FALSE(NormalizeVolumePath(".").ok());
  EXPECT_FALSE(NormalizeVolumePath(".scone/volume").ok());
  EXPECT_TRUE(PathHasPrefix("a/b", "a"));
  EXPECT_FALSE(PathHasPrefix("ab", "a"));
}

}  // namespace
}  // namespace scone::fs
