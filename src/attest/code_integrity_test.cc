// LAS's check that only measured code can run in a process: on smaps texts as the kernel writes
// them, and on this test process itself.
#include "attest/code_integrity.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <future>
#include <string>
#include <thread>

namespace scone::attest {
namespace {

// One mapping of smaps: its header and the fields LAS reads (the kernel writes ~25 more).
std::string Mapping(const std::string& header, unsigned anonymous_kb) {
  return header + "\nSize:                  8 kB\nRss:                   8 kB\nAnonymous:          " +
         std::to_string(anonymous_kb) + " kB\nVmFlags: rd ex mr mw me\n";
}

const std::string kLibc = "7f0000001000-7f0000100000 r-xp 00028000 08:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6";

TEST(CodeIntegrityTest, FilesCodeAndTheKernelsPagesPass) {
  std::string smaps = Mapping("55d000000000-55d000001000 r--p 00000000 08:01 99 /usr/bin/sleep", 0) +
                      Mapping(kLibc, 0) +
                      Mapping("7f0000200000-7f0000201000 rw-p 00000000 00:00 0", 4) +  // data written: fine
                      Mapping("7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]", 0) +
                      Mapping("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]", 0);
  EXPECT_TRUE(CheckExecutableMemory(smaps, 7).ok());
}

TEST(CodeIntegrityTest, AnonymousExecutableMemoryIsRefused) {
  Status s = CheckExecutableMemory(Mapping(kLibc, 0) + Mapping("7f0000300000-7f0000301000 rwxp 00000000 00:00 0", 4), 7);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("process 7 executes memory that is no file's (7f0000300000-7f0000301000)"),
            std::string::npos) << s.message();
  // The heap or the stack made executable is no file's either.
  s = CheckExecutableMemory(Mapping("55d000100000-55d000200000 rwxp 00000000 00:00 0 [heap]", 0), 7);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("[heap]"), std::string::npos) << s.message();
}

TEST(CodeIntegrityTest, AFilesCodeWrittenInMemoryIsRefused) {
  Status s = CheckExecutableMemory(Mapping(kLibc, 4), 7);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("executes a changed copy of /usr/lib/x86_64-linux-gnu/libc.so.6 (4 kB"),
            std::string::npos) << s.message();
}

TEST(CodeIntegrityTest, ThisProcessPassesAloneAndFailsWithAnotherThreadOrAnonymousCode) {
  // The test runner may already hold threads of its own (none by default).
  ASSERT_TRUE(CheckOnlyMeasuredCodeRuns(getpid()).ok()) << CheckOnlyMeasuredCodeRuns(getpid()).message();
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  Status s = CheckOnlyMeasuredCodeRuns(getpid());
  munmap(page, 4096);
  EXPECT_NE(s.message().find("executes memory that is no file's"), std::string::npos) << s.message();
  std::promise<void> done;
  std::thread other([&] { done.get_future().wait(); });
  s = CheckOnlyMeasuredCodeRuns(getpid());
  done.set_value();
  other.join();
  EXPECT_NE(s.message().find("runs 2 threads"), std::string::npos) << s.message();
}

// A process made with clone(CLONE_VM) shares the memory without being one of its threads.
TEST(CodeIntegrityTest, AProcessSharingTheMemoryIsRefused) {
  static char stack[64 * 1024];
  // The child shares this thread's TLS too: it makes one raw call and nothing else until killed.
  pid_t child = clone(
      [](void*) -> int {
        for (;;) syscall(SYS_pause);
      },
      stack + sizeof(stack), CLONE_VM | SIGCHLD, nullptr);
  ASSERT_GT(child, 0);
  Status s = CheckOnlyMeasuredCodeRuns(getpid());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_NE(s.message().find("process " + std::to_string(child) + " shares process"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckNoOtherProcessSharesMemory(getpid()).ok());
}

}  // namespace
}  // namespace scone::attest
