#include "runtime/lexical_path.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace scone::runtime
