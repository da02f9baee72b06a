#include "common/setting.h"

#include <cctype>

namespace scone {

Result<size_t> ParseSetting(std::string_view variable, std::string_view value,
                            std::initializer_list<std::string_view> accepted) {
  std::string lower(value);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string words, hint;
  size_t i = 0;
  for (std::string_view word : accepted) {
    if (value == word) return i;
    if (lower == word) hint = " (values are lowercase: '" + std::string(word) + "')";
    words += (i == 0 ? "" : ", ") + std::string(word);
    ++i;
  }
  return InvalidArgument(std::string(variable) + ": '" + std::string(value) + "' is not one of " + words + hint);
}

}  // namespace scone
