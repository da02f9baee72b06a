// A lazy commit's new chunks whose slots lie past the data file's end go in place before the
// record, with no fallocate (ProtectedFile::AllocateInPlaceLocked): a full disk then fails the
// commit before anything is recorded, the data stays buffered, and the next commit with room
// keeps it all.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "fs/space_reserve.h"
#include "fs/volume.h"
#include "os/syscalls.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

// The system-call seam during a test: counts fallocates, and may fail the writes of data files
// (not of the volume's metadata under .scone) with ENOSPC.
struct Seam {
  static inline os::Syscalls real;
  static inline int fallocates = 0;
  static inline bool data_disk_full = false;

  static bool IsDataFile(int fd) {
    char link[64];
    std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    char target[4096];
    const ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    return std::strstr(target, "/.scone/") == nullptr;
  }
  static int Fallocate(int fd, int mode, off_t offset, off_t length) {
    ++fallocates;
    return real.fallocate(fd, mode, offset, length);
  }
  static ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset) {
    if (data_disk_full && IsDataFile(fd)) {
      errno = ENOSPC;
      return -1;
    }
    return real.pwrite(fd, buf, count, offset);
  }
  static ssize_t Pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
    if (data_disk_full && IsDataFile(fd)) {
      errno = ENOSPC;
      return -1;
    }
    return real.pwritev(fd, iov, iovcnt, offset);
  }
  static void Install() {
    real = os::LibcSyscalls();
    os::Syscalls s = real;
    s.fallocate = Fallocate;
    s.pwrite = Pwrite;
    s.pwritev = Pwritev;
    fallocates = 0;
    data_disk_full = false;
    os::InstallSyscalls(s);
  }
};

class WriteBeforeRecordTest : public testing::VolumeTest {
 protected:
  void SetUp() override {
    VolumeTest::SetUp();
    Seam::Install();
  }
  void TearDown() override { os::InstallSyscalls(os::LibcSyscalls()); }

  void ExpectClean(Volume& v) {
    for (const auto& p : v.Verify()) ADD_FAILURE() << p.path << ": " << p.what;
  }
};

TEST_F(WriteBeforeRecordTest, NewFilesTakeNoFallocate) {
  auto v = CreateVolume();
  ASSERT_TRUE(v);
  Seam::fallocates = 0;
  for (int i = 0; i < 4; ++i) {
    WriteFile(*v, "f" + std::to_string(i), std::string(3000 + i * 9000, static_cast<char>('a' + i)), /*sync=*/false);
  }
  EXPECT_EQ(Seam::fallocates, 0) << "a new file's chunks were reserved";
  ASSERT_TRUE(v->Close().ok());
  auto again = OpenVolume();
  ASSERT_TRUE(again.ok()) << again.status().message();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(*ReadFile(**again, "f" + std::to_string(i)), std::string(3000 + i * 9000, static_cast<char>('a' + i)));
  }
  ExpectClean(**again);
}

TEST_F(WriteBeforeRecordTest, AFullDiskFailsTheCommitAndTheNextOneKeepsEverything) {
  auto v = CreateVolume();
  ASSERT_TRUE(v);
  WriteFile(*v, "kept", "committed before", /*sync=*/false);
  const std::string data(20000, 'n');
  {
    auto f = v->OpenFile("new", {.create = true, .truncate = true});
    ASSERT_TRUE(f.ok()) << f.status().message();
    ASSERT_TRUE((*f)->Write(0, AsBytes(data)).ok());
    Seam::data_disk_full = true;
    Status failed = (*f)->Close();
    Seam::data_disk_full = false;
    EXPECT_TRUE(OutOfSpace(failed)) << failed.message();
    // With room again, the buffered data is committed whole.
    ASSERT_TRUE((*f)->Close().ok());
  }
  EXPECT_EQ(*ReadFile(*v, "new"), data);
  EXPECT_EQ(*ReadFile(*v, "kept"), "committed before");
  ExpectClean(*v);
  ASSERT_TRUE(v->Close().ok());
  auto again = OpenVolume();
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(*ReadFile(**again, "new"), data);
  ExpectClean(**again);
}

}  // namespace
}  // namespace scone::fs
