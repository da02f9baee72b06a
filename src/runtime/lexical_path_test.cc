#include "runtime/lexical_path.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace scone::runtime {
namespace {

std::string Lex(std::string_view base, std::string_view path, size_t size = 4096) {
  std::string out(size, '\0');
  size_t n = LexicalAbsolute(base, path, out.data(), out.size());
  return n == 0 ? std::string("<too long>") : out.substr(0, n);
}

TEST(LexicalPathTest, NormalizesAsTheKernelWouldWithoutLinks) {
  EXPECT_EQ(Lex("/cwd", "/a/b"), "/a/b");
  EXPECT_EQ(Lex("/cwd", "a/b"), "/cwd/a/b");
  EXPECT_EQ(Lex("/cwd/x", "../a"), "/cwd/a");
  EXPECT_EQ(Lex("/", "./a//b/./c/"), "/a/b/c");
  EXPECT_EQ(Lex("/cwd", "/a/../../.."), "/");
  EXPECT_EQ(Lex("/cwd", ".."), "/");
  EXPECT_EQ(Lex("/cwd", ""), "/cwd");
  EXPECT_EQ(Lex("/", "."), "/");
  EXPECT_EQ(Lex("/v", "..x/y"), "/v/..x/y");  // "..x" is a name, not ".."
}

TEST(LexicalPathTest, RefusesWhatDoesNotFit) {
  EXPECT_EQ(Lex("/", "/abcd", 5), "<too long>");  // 5 characters and the NUL
  EXPECT_EQ(Lex("/", "/abc", 5), "/abc");
  EXPECT_EQ(Lex("/", "/", 2), "/");
  EXPECT_EQ(Lex("/", "/a", 1), "<too long>");
}

TEST(LexicalPathTest, NamesDescriptorLinks) {
  auto fd = [](std::string_view p) { return ParseDescriptorLink(p).fd; };
  EXPECT_EQ(fd("/proc/self/fd/3"), 3);
  EXPECT_EQ(fd("/proc/thread-self/fd/12"), 12);
  EXPECT_EQ(fd("/dev/fd/0"), 0);
  EXPECT_EQ(fd("/dev/stdin"), 0);
  EXPECT_EQ(fd("/dev/stdout"), 1);
  EXPECT_EQ(fd("/dev/stderr"), 2);
  EXPECT_EQ(fd("/proc/self/task/77/fd/5"), 5);
  DescriptorLink other = ParseDescriptorLink("/proc/4242/task/4243/fd/9");
  EXPECT_EQ(other.fd, 9);
  EXPECT_EQ(other.pid, 4242);
  EXPECT_EQ(ParseDescriptorLink("/proc/4242/fd/9").pid, 4242);
  EXPECT_EQ(ParseDescriptorLink("/proc/self/fd/9").pid, 0);
  // Not a descriptor's link: the directory, its entries' entries, other numbers, other files.
  for (std::string_view p : {"/proc/self/fd", "/proc/self/fd/", "/proc/self/fd/3/x", "/proc/self/fd/03",
                             "/proc/self/fd/-1", "/proc/self/fd/99999999999", "/proc/self/fdinfo/3",
                             "/proc/0/fd/3", "/proc/x/fd/3", "/proc/thread-self/task/1/fd/3", "/dev/fd",
                             "/dev/fd/x", "/dev/stdinx", "/devx/fd/3", "/tmp/proc/self/fd/3", "/proc/self/task/fd/3"}) {
    EXPECT_EQ(fd(p), -1) << p;
  }
}

// The same rules, written the obvious way (components in a vector), as the reference.
std::string Reference(const std::string& base, const std::string& path) {
  std::vector<std::string> parts;
  auto add = [&](const std::string& p) {
    size_t pos = 0;
    while (pos <= p.size()) {
      size_t slash = p.find('/', pos);
      if (slash == std::string::npos) slash = p.size();
      std::string part = p.substr(pos, slash - pos);
      pos = slash + 1;
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        if (!parts.empty()) parts.pop_back();
        continue;
      }
      parts.push_back(part);
    }
  };
  if (path.empty() || path[0] != '/') add(base);
  add(path);
  std::string out;
  for (const std::string& part : parts) out += "/" + part;
  return out.empty() ? "/" : out;
}

TEST(LexicalPathTest, RandomPathsMatchTheReferenceAndNeverOverflow) {
  std::mt19937 rng(7);
  const char* pieces[] = {"a", "bc", ".", "..", "", "...", ".x", "/", "//", "d/"};
  for (int round = 0; round < 20000; ++round) {
    std::string base = "/", path;
    for (int i = rng() % 4; i > 0; --i) base += std::string(pieces[rng() % 10]) + "/";
    base = Reference("/", base);  // callers pass an absolute, normal directory
    if (rng() % 2) path = "/";
    for (int i = rng() % 8; i > 0; --i) path += std::string(pieces[rng() % 10]) + (rng() % 2 ? "/" : "");
    std::string want = Reference(base, path);
    // Exactly enough room, one byte too little, and plenty: the result or a clean refusal
    // (also allowed when only a form on the way to the result is too long), never a wrong
    // answer, never a byte past the buffer.
    for (size_t size : {want.size() + 1, want.size(), size_t{4096}}) {
      std::vector<char> out(size + 8, '#');
      size_t n = LexicalAbsolute(base, path, out.data(), size);
      for (size_t i = size; i < out.size(); ++i) ASSERT_EQ(out[i], '#') << "wrote past the buffer";
      if (size == 4096) ASSERT_NE(n, 0u) << base << " + " << path;
      if (size <= want.size()) ASSERT_EQ(n, 0u) << base << " + " << path << " does not fit in " << size;
      if (n == 0) continue;
      ASSERT_EQ(std::string(out.data(), n), want) << base << " + " << path;
      ASSERT_EQ(out[n], '\0');
    }
  }
}

}  // namespace
}  // namespace scone::runtime
