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

}  // namespace scone::runtime
