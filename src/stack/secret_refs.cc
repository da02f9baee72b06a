#include "stack/secret_refs.h"

#include <cctype>

namespace scone::stack {
namespace {

bool NameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool NameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// One reference at text[i] == '$' (not `$$`): its name and the index after it, or an error.
Result<std::pair<std::string, size_t>> ReferenceAt(std::string_view text, size_t i) {
  size_t j = i + 1;
  if (j < text.size() && text[j] == '{') {
    size_t end = text.find('}', j);
    std::string name(text.substr(j + 1, end == std::string_view::npos ? 0 : end - j - 1));
    if (end == std::string_view::npos || name.empty() || !NameStart(name[0]) ||
        name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
            std::string::npos) {
      return InvalidArgument(
          "'" + std::string(text.substr(i, end == std::string_view::npos ? 2 : end - i + 1)) +
          "' is not a reference ${name}; write $$ for a dollar sign");
    }
    return std::make_pair(name, end + 1);
  }
  if (j >= text.size() || !NameStart(text[j])) {
    return InvalidArgument("a lone '$': write $$ for a dollar sign, $name for a secret");
  }
  size_t end = j;
  while (end < text.size() && NameChar(text[end])) ++end;
  return std::make_pair(std::string(text.substr(j, end - j)), end);
}

}  // namespace

Result<std::string> ToSessionValue(std::string_view text, const std::set<std::string>& declared) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$') {
      out += text[i++];
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '$') {
      out += '$';
      i += 2;
      continue;
    }
    SCONE_ASSIGN_OR_RETURN(auto ref, ReferenceAt(text, i));
    if (!declared.count(ref.first)) {
      return InvalidArgument("undefined secret '" + ref.first +
                             "' (declare it under the top-level secrets:, "
                             "or write $$ for a dollar sign)");
    }
    out += "$$SCONE::" + ref.first + "$$";
    i = ref.second;
  }
  return out;
}

std::vector<std::string> SecretsReferenced(std::string_view text,
                                           const std::set<std::string>& declared) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '$') {
      ++i;
    } else if (i + 1 < text.size() && text[i + 1] == '$') {
      i += 2;
    } else if (auto ref = ReferenceAt(text, i); ref.ok()) {
      if (declared.count(ref->first)) out.push_back(ref->first);
      i = ref->second;
    } else {
      ++i;
    }
  }
  return out;
}

std::string EscapeForCompose(std::string_view text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '$') out += '$';
  }
  return out;
}

}  // namespace scone::stack
