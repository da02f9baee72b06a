// Paths as the program wrote them, made absolute and normal without asking the kernel: the
// runtime's fast way to tell that a path lies outside every volume (see Runtime::Locate).
#pragma once

#include <cstddef>
#include <string_view>

namespace scone::runtime {

// Writes the lexical absolute form of `path` (relative to `base`, an absolute directory, unless
// `path` is absolute) into out: empty and "." components dropped, ".." removes the one before
// it, no trailing slash ("/" for the root). Exact when no symbolic link is involved. Returns
// the length, or 0 if the result, or a form on the way to it, does not fit in out_size bytes
// with its terminating NUL (callers then take the long way). No allocation, no system call.
size_t LexicalAbsolute(std::string_view base, std::string_view path, char* out, size_t out_size);

// A descriptor's link in /proc, by name: opening it reopens the file the descriptor has open.
struct DescriptorLink {
  int fd = -1;  // -1: not such a link
  // The process whose descriptor it names; 0: the caller's (self, thread-self, /dev/fd).
  long pid = 0;
};

// Which descriptor `absolute` (a LexicalAbsolute form) names: /proc/self/fd/N,
// /proc/thread-self/fd/N, /proc/PID/fd/N, /proc/PID/task/TID/fd/N (self/task/TID too), /dev/fd/N,
// /dev/stdin, /dev/stdout, /dev/stderr. By name only: the caller checks where the kernel's open
// of the path lands. No allocation, no system call.
DescriptorLink ParseDescriptorLink(std::string_view absolute);

}  // namespace scone::runtime
