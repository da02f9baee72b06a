// The switch variables' one rule: SCONE's lowercase words, exactly.
#include "common/setting.h"

#include <gtest/gtest.h>

namespace scone {
namespace {

TEST(SettingTest, TheConsoleShieldIsProtectedOrDisabledAndNothingElse) {
  ASSERT_TRUE(ParseConsoleShield("protected").ok());
  EXPECT_TRUE(*ParseConsoleShield("protected"));
  ASSERT_TRUE(ParseConsoleShield("disabled").ok());
  EXPECT_FALSE(*ParseConsoleShield("disabled"));
  EXPECT_EQ(ParseConsoleShield("protcted").status().message(),
            "SCONE_CONSOLE_SHIELD: 'protcted' is not one of disabled, protected");
  EXPECT_EQ(ParseConsoleShield("Protected").status().message(),
            "SCONE_CONSOLE_SHIELD: 'Protected' is not one of disabled, protected (values are lowercase: 'protected')");
  for (const char* bad : {"", "yes", "on", "1", "protected ", "disabled\n"}) {
    auto r = ParseConsoleShield(bad);
    ASSERT_FALSE(r.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
}

TEST(SettingTest, GivesTheIndexOfTheWord) {
  auto r = ParseSetting("V", "c", {"a", "b", "c"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(ParseSetting("V", "d", {"a", "b", "c"}).status().message(), "V: 'd' is not one of a, b, c");
}

}  // namespace
}  // namespace scone
