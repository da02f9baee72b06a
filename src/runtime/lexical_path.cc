#include "runtime/lexical_path.h"

#include <cstring>

namespace scone::runtime {
namespace {

// Appends the components of `p` to out[0, *len), applying "." and "..". False if out is full.
bool AppendComponents(std::string_view p, char* out, size_t out_size, size_t* len) {
  size_t pos = 0;
  while (pos < p.size()) {
    size_t slash = p.find('/', pos);
    if (slash == std::string_view::npos) slash = p.size();
    std::string_view part = p.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      while (*len > 0 && out[*len - 1] != '/') --*len;  // drop the last component
      if (*len > 0) --*len;                              // and its slash
      continue;
    }
    if (*len + 1 + part.size() + 1 > out_size) return false;
    out[(*len)++] = '/';
    std::memcpy(out + *len, part.data(), part.size());
    *len += part.size();
  }
  return true;
}

}  // namespace

size_t LexicalAbsolute(std::string_view base, std::string_view path, char* out, size_t out_size) {
  if (out_size < 2) return 0;
  size_t len = 0;
  if ((path.empty() || path[0] != '/') && !AppendComponents(base, out, out_size, &len)) return 0;
  if (!AppendComponents(path, out, out_size, &len)) return 0;
  if (len == 0) out[len++] = '/';
  out[len] = '\0';
  return len;
}

}  // namespace scone::runtime
