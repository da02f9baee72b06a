#include "runtime/lexical_path.h"

#include <cstring>

namespace scone::runtime {
namespace {

// Appends the components of `p` to out[0, *len), applying "." and "..". False if out is full.
// A decimal number without sign or leading zero that fits in an int, as /proc writes them; else -1.
long Number(std::string_view s) {
  if (s.empty() || s.size() > 9 || (s[0] == '0' && s.size() > 1)) return -1;
  long n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

// Takes the next component of `*rest` ("a/b" gives "a", leaving "b").
std::string_view NextComponent(std::string_view* rest) {
  size_t slash = rest->find('/');
  std::string_view part = rest->substr(0, slash);
  *rest = slash == std::string_view::npos ? std::string_view() : rest->substr(slash + 1);
  return part;
}

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

DescriptorLink ParseDescriptorLink(std::string_view absolute) {
  DescriptorLink link;
  if (absolute == "/dev/stdin") link.fd = 0;
  if (absolute == "/dev/stdout") link.fd = 1;
  if (absolute == "/dev/stderr") link.fd = 2;
  if (link.fd >= 0) return link;
  std::string_view rest = absolute;
  if (rest.starts_with("/dev/fd/")) {
    rest.remove_prefix(8);
    link.fd = static_cast<int>(Number(rest));
    return link;
  }
  if (!rest.starts_with("/proc/")) return link;
  rest.remove_prefix(6);
  std::string_view process = NextComponent(&rest);
  if (process != "self" && process != "thread-self") {
    link.pid = Number(process);
    if (link.pid <= 0) return DescriptorLink{};
  }
  if (process != "thread-self" && rest.starts_with("task/")) {
    rest.remove_prefix(5);
    if (Number(NextComponent(&rest)) <= 0) return DescriptorLink{};
  }
  if (NextComponent(&rest) != "fd") return DescriptorLink{};
  link.fd = static_cast<int>(Number(rest));
  if (link.fd < 0) link.pid = 0;
  return link;
}

}  // namespace scone::runtime
