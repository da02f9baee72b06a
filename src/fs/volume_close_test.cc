// Closes that keep the journal (Volume::CloseMode::kKeepJournal, fs/close_mark.h): the close
// syncs nothing, and an open in the same boot catches up with the journal without a recovery;
// after a reboot, or with a mark that is torn, forged or names a journal that moved on since,
// the open recovers, and nothing written is lost either way.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <filesystem>

#include "fs/close_mark.h"
#include "fs/volume.h"
#include "os/syscalls.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

using testing::RawFile;
using testing::WriteRaw;

// The system-call seam during a test: counts the syncs, and may show another boot's id.
struct Seam {
  static inline os::Syscalls real;
  static inline int syncs = 0;
  static inline std::string boot_id_file;  // "" : this boot's

  static int Fsync(int fd) {
    ++syncs;
    return real.fsync(fd);
  }
  static int Fdatasync(int fd) {
    ++syncs;
    return real.fdatasync(fd);
  }
  static int Open(const char* path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    const mode_t mode = va_arg(args, mode_t);
    va_end(args);
    if (!boot_id_file.empty() && std::strcmp(path, "/proc/sys/kernel/random/boot_id") == 0) {
      path = boot_id_file.c_str();
    }
    return real.open(path, flags, mode);
  }
  static void Install() {
    real = os::LibcSyscalls();
    os::Syscalls s = real;
    s.fsync = Fsync;
    s.fdatasync = Fdatasync;
    s.open = Open;
    syncs = 0;
    boot_id_file.clear();
    os::InstallSyscalls(s);
  }
};

class VolumeCloseTest : public testing::VolumeTest {
 protected:
  void SetUp() override {
    VolumeTest::SetUp();
    Seam::Install();
  }
  void TearDown() override { os::InstallSyscalls(os::LibcSyscalls()); }

  std::string Meta(const std::string& name) const { return dir_ + "/.scone/" + name; }
  uint64_t JournalEnd() const { return testing::JournalEnd(Meta("journal")); }
  bool HasMark() const { return std::filesystem::exists(Meta(kCloseMarkName)); }
  size_t TrashFiles() const {
    size_t n = 0;
    std::error_code ec;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(Meta("trash"), ec)) ++n;
    return n;
  }
  void ExpectClean(Volume& v) {
    for (const auto& p : v.Verify()) ADD_FAILURE() << p.path << ": " << p.what;
  }

  // Who removes the file "gone": an earlier process (made durable), or the one that closes,
  // with a file large enough that its room comes back at the close or a small one.
  enum class Removed { kBefore, kNowLarge, kNowSmall };

  // A volume with a synced file, a file written lazily, one overwritten lazily and one
  // unlinked, closed as a program's exit closes it: with nothing synced, except where the
  // process removed a large file (its room comes back at once, as natively).
  void WriteAndCloseKeepingJournal(Removed removed = Removed::kBefore) {
    const bool remove_now = removed != Removed::kBefore;
    auto v = CreateVolume();
    ASSERT_TRUE(v);
    WriteFile(*v, "synced", "durable");
    WriteFile(*v, "gone", removed == Removed::kNowLarge ? std::string(2 << 20, 'g') : "to be unlinked");
    WriteFile(*v, "over", std::string(20000, 'o'));
    WriteFile(*v, "lazy", std::string(10000, 'l'), /*sync=*/false);
    {
      auto f = v->OpenFile("over", {});
      ASSERT_TRUE(f.ok());
      ASSERT_TRUE((*f)->Write(5000, AsBytes(std::string(100, 'X'))).ok());
    }
    if (!remove_now) {
      // Removed by an earlier process: made durable, its room back.
      ASSERT_TRUE(v->Unlink("gone").ok());
      ASSERT_TRUE(v->MakeDurable().ok());
      WriteFile(*v, "lazy", std::string(10000, 'l'), /*sync=*/false);
    }
    if (remove_now) ASSERT_TRUE(v->Unlink("gone").ok());
    EXPECT_EQ(TrashFiles(), remove_now ? 1u : 0u);
    Seam::syncs = 0;
    ASSERT_TRUE(v->Close(Volume::CloseMode::kKeepJournal).ok());
    if (removed != Removed::kNowLarge) EXPECT_EQ(Seam::syncs, 0) << "the close synced";
    if (removed == Removed::kNowSmall) {
      EXPECT_EQ(TrashFiles(), 1u) << "a small removed file waits for the next durable point";
    } else {
      EXPECT_EQ(TrashFiles(), 0u) << "a removed file's room comes back at the close";
    }
    EXPECT_TRUE(HasMark());
    EXPECT_GT(JournalEnd(), 0u);
  }

  void ExpectContents(Volume& v) {
    EXPECT_EQ(*ReadFile(v, "synced"), "durable");
    EXPECT_EQ(*ReadFile(v, "lazy"), std::string(10000, 'l'));
    std::string over(20000, 'o');
    over.replace(5000, 100, std::string(100, 'X'));
    EXPECT_EQ(*ReadFile(v, "over"), over);
    EXPECT_FALSE(v.Knows("gone"));
    ExpectClean(v);
  }

  void ExpectRecovered() {
    const uint64_t journal_before = JournalEnd();
    Seam::syncs = 0;
    auto v = OpenVolume();
    ASSERT_TRUE(v.ok()) << v.status().message();
    EXPECT_GT(Seam::syncs, 0) << "no recovery";
    EXPECT_LT(JournalEnd(), journal_before) << "the recovery's checkpoint empties the journal";
    ExpectContents(**v);
    EXPECT_TRUE((*v)->Close().ok());
  }
};

TEST_F(VolumeCloseTest, AnOpenInTheSameBootCatchesUpWithTheJournal) {
  WriteAndCloseKeepingJournal();
  const uint64_t journal = JournalEnd();
  Seam::syncs = 0;
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(Seam::syncs, 0) << "the open recovered";
  EXPECT_EQ(JournalEnd(), journal);
  EXPECT_FALSE(HasMark()) << "an open alone takes the mark";
  ExpectContents(**v);
  ASSERT_TRUE((*v)->Close().ok());  // a checkpoint: the journal goes, and no mark stays
  EXPECT_EQ(JournalEnd(), 0u);
  EXPECT_FALSE(HasMark());
  auto again = OpenVolume();
  ASSERT_TRUE(again.ok());
  ExpectContents(**again);
}

TEST_F(VolumeCloseTest, ARemovedFilesRoomComesBackAtTheClose) {
  WriteAndCloseKeepingJournal(Removed::kNowLarge);
  Seam::syncs = 0;
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(Seam::syncs, 0) << "the open recovered";
  ExpectContents(**v);
}

// A few small files removed (`tar -x` removes the placeholders of its links) are not worth a
// sync of everything the process wrote: they wait in the trash, and the next process that makes
// the volume durable removes them.
TEST_F(VolumeCloseTest, ASmallRemovedFileWaitsForTheNextDurablePoint) {
  WriteAndCloseKeepingJournal(Removed::kNowSmall);
  Seam::syncs = 0;
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(Seam::syncs, 0) << "the open recovered";
  EXPECT_EQ(TrashFiles(), 1u) << "the open removed a file whose unlink is not durable";
  ExpectContents(**v);
  ASSERT_TRUE((*v)->MakeDurable().ok());
  EXPECT_EQ(TrashFiles(), 0u) << "the trash stays after the unlink became durable";
  ASSERT_TRUE((*v)->Close().ok());
}

TEST_F(VolumeCloseTest, ClosesKeepingTheJournalInARowLoseNothing) {
  WriteAndCloseKeepingJournal();
  for (int i = 0; i < 5; ++i) {
    auto v = OpenVolume();
    ASSERT_TRUE(v.ok()) << v.status().message();
    WriteFile(**v, "round" + std::to_string(i), "round " + std::to_string(i), /*sync=*/false);
    Seam::syncs = 0;
    ASSERT_TRUE((*v)->Close(Volume::CloseMode::kKeepJournal).ok());
    EXPECT_EQ(Seam::syncs, 0);
  }
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok());
  ExpectContents(**v);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(*ReadFile(**v, "round" + std::to_string(i)), "round " + std::to_string(i));
}

TEST_F(VolumeCloseTest, AnOpenAfterARebootRecovers) {
  WriteAndCloseKeepingJournal();
  Seam::boot_id_file = tmp_ / "other_boot_id";
  WriteRaw(Seam::boot_id_file, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n");
  ExpectRecovered();
}

TEST_F(VolumeCloseTest, ATornOrForgedMarkIsNoMark) {
  WriteAndCloseKeepingJournal();
  std::string mark = RawFile(Meta(kCloseMarkName));
  mark[40] ^= 1;  // the journal's end, say
  WriteRaw(Meta(kCloseMarkName), mark);
  ExpectRecovered();
}

TEST_F(VolumeCloseTest, ALinkPlantedAsTheMarkIsNoMarkAndNoWayOut) {
  WriteAndCloseKeepingJournal();
  const std::string outside = tmp_ / "outside";
  WriteRaw(outside, "not the volume's");
  std::filesystem::remove(Meta(kCloseMarkName));
  std::filesystem::create_symlink(outside, Meta(kCloseMarkName));
  ExpectRecovered();
  {
    auto v = OpenVolume();
    ASSERT_TRUE(v.ok());
    WriteFile(**v, "later", "later", /*sync=*/false);
    std::filesystem::create_symlink(outside, Meta(kCloseMarkName));  // again, under the close
    ASSERT_TRUE((*v)->Close(Volume::CloseMode::kKeepJournal).ok());
  }
  EXPECT_EQ(RawFile(outside), "not the volume's");
}

TEST_F(VolumeCloseTest, AFifoPlantedAsTheMarkIsNoMarkAndNoWait) {
  WriteAndCloseKeepingJournal();
  std::filesystem::remove(Meta(kCloseMarkName));
  ASSERT_EQ(mkfifo(Meta(kCloseMarkName).c_str(), 0600), 0);
  ExpectRecovered();  // (before: the open waited forever for a writer of the FIFO)
}

TEST_F(VolumeCloseTest, AMarkTheJournalMovedPastIsNoMark) {
  WriteAndCloseKeepingJournal();
  const std::string old_mark = RawFile(Meta(kCloseMarkName));
  {
    // A process that took the mark and appended (then died, say): the old mark put back.
    auto v = OpenVolume();
    ASSERT_TRUE(v.ok());
    WriteFile(**v, "later", "later", /*sync=*/false);
    ASSERT_TRUE((*v)->Close(Volume::CloseMode::kKeepJournal).ok());
  }
  WriteRaw(Meta(kCloseMarkName), old_mark);
  ExpectRecovered();
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*ReadFile(**v, "later"), "later");
}

TEST_F(VolumeCloseTest, AProcessKilledAfterTakingTheMarkLeavesARecovery) {
  WriteAndCloseKeepingJournal();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto v = OpenVolume();
    if (!v.ok()) _exit(3);
    auto f = (*v)->OpenFile("lazy", {});
    if (!f.ok() || !(*f)->Write(0, AsBytes(std::string(100, 'k'))).ok()) _exit(4);
    _exit(0);  // no close: killed, as far as the volume knows
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << WEXITSTATUS(status);
  EXPECT_FALSE(HasMark());
  Seam::syncs = 0;
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_GT(Seam::syncs, 0) << "no recovery";
  EXPECT_EQ(*ReadFile(**v, "synced"), "durable");
  ExpectClean(**v);
}

}  // namespace
}  // namespace scone::fs
