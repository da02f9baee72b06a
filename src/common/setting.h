// One rule for the values of SCONE's switch variables (SCONE_CONSOLE_SHIELD, SCONE_NETWORK_SHIELD
// and its rules' protections, `disabled` for no peer authentication): exactly one of the accepted
// words, lowercase as SCONE spells them. Anything else, a typo or another case ("Protected"), is
// an error naming the variable and the accepted values: a misspelled switch must never leave a
// shield off.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "common/status.h"

namespace scone {

// The index in `accepted` of `value`, or InvalidArgument: "VARIABLE: 'X' is not one of a, b, c".
Result<size_t> ParseSetting(std::string_view variable, std::string_view value,
                            std::initializer_list<std::string_view> accepted);

// The console shield's switch (docs/console-shield.md), read by `scone run`, CAS's session check
// and release, and the runtime: protected (true) or disabled (false).
inline constexpr char kConsoleShieldVariable[] = "SCONE_CONSOLE_SHIELD";
inline Result<bool> ParseConsoleShield(std::string_view value) {
  SCONE_ASSIGN_OR_RETURN(size_t i, ParseSetting(kConsoleShieldVariable, value, {"disabled", "protected"}));
  return i == 1;
}

}  // namespace scone
