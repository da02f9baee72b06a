// Creates and unlinks of encrypted files are journaled lazily (durable with the next commit).
// A crash can then leave the disk with a change whose record never reached it; recovery must
// put the disk back to what the journal says, without reporting damage and without losing a
// file whose unlink was not durable.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "fs/volume.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

class LazyNamespaceTest : public testing::VolumeTest {
 protected:
  std::string Journal() const { return dir_ + "/.scone/journal"; }
  uint64_t JournalSize() const { return testing::JournalEnd(Journal()); }
  size_t TrashEntries() const {
    std::error_code ec;
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator(dir_ + "/.scone/trash", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it) {
      ++n;
    }
    return n;
  }
  // Runs `change` on the volume in a child that dies without closing it; then, if `lose_it`,
  // cuts the journal back to where it was before the change (its record never reached the disk).
  void CrashAfter(const std::function<void(Volume&)>& change, bool lose_it) {
    uint64_t before = 0;
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      auto v = OpenVolume();
      if (!v.ok()) _exit(3);
      uint64_t size = JournalSize();
      change(**v);
      (void)!write(fds[1], &size, sizeof(size));
      _exit(0);  // no Close: as after a crash
    }
    close(fds[1]);
    ASSERT_EQ(read(fds[0], &before, sizeof(before)), static_cast<ssize_t>(sizeof(before)));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (lose_it) ASSERT_EQ(truncate(Journal().c_str(), static_cast<off_t>(before)), 0);
  }
  void ExpectClean(Volume& v) {
    for (const auto& p : v.Verify()) ADD_FAILURE() << p.path << ": " << p.what;
  }
};

TEST_F(LazyNamespaceTest, LostCreateLeavesNoUnknownFile) {
  ASSERT_TRUE(CreateVolume()->Close().ok());
  CrashAfter([](Volume& v) { ASSERT_TRUE(v.OpenFile("new.txt", {.create = true}).ok()); }, true);
  ASSERT_TRUE(std::filesystem::exists(dir_ + "/new.txt"));  // on disk, not in the journal
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/new.txt"));
  EXPECT_EQ((*v)->Lookup("new.txt").status().code(), Code::kNotFound);
  ExpectClean(**v);
  // The path is free again.
  WriteFile(**v, "new.txt", "second life");
  EXPECT_EQ(*ReadFile(**v, "new.txt"), "second life");
}

// An unlink links the file into the trash and then removes its name (a watcher sees IN_DELETE).
// A crash between the two leaves both names; recovery keeps the one the record says.
std::string OnlyTrashEntry(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/.scone/trash", ec)) return e.path().string();
  return "";
}

TEST_F(LazyNamespaceTest, AnUnlinkCutShortBetweenLinkAndUnlinkKeepsWhatTheRecordSays) {
  for (bool record_lost : {true, false}) {
    SCOPED_TRACE(record_lost ? "record lost" : "record durable");
    std::filesystem::remove_all(dir_);
    {
      auto v = CreateVolume();
      WriteFile(*v, "keep.txt", "precious bytes");
      WriteFile(*v, "other.txt", "makes the unlink durable");
      ASSERT_TRUE(v->Close().ok());
    }
    CrashAfter([&](Volume& v) {
      ASSERT_TRUE(v.Unlink("keep.txt").ok());
      // A durable record after it makes the unlink durable too.
      if (!record_lost) ASSERT_TRUE(v.OpenFile("other.txt", {}).value()->Sync().ok());
    }, record_lost);
    const std::string trash = OnlyTrashEntry(dir_);
    ASSERT_FALSE(trash.empty());
    // The name the unlink had not removed yet.
    ASSERT_EQ(link(trash.c_str(), (dir_ + "/keep.txt").c_str()), 0);
    auto v = OpenVolume();
    ASSERT_TRUE(v.ok()) << v.status().message();
    EXPECT_EQ(TrashEntries(), 0u);
    if (record_lost) {
      EXPECT_EQ(*ReadFile(**v, "keep.txt"), "precious bytes");
    } else {
      EXPECT_FALSE(std::filesystem::exists(dir_ + "/keep.txt"));  // not reported as planted either
      EXPECT_EQ((*v)->Lookup("keep.txt").status().code(), Code::kNotFound);
    }
    ExpectClean(**v);
  }
}

// A close cut short after its checkpoint (the state says clean, the unlink is in it) but before
// the trash was emptied, and before the name went: the next open, which finds the volume clean,
// still settles the trash (it looks only when .scone/trash holds something).
TEST_F(LazyNamespaceTest, ACloseCutShortAfterItsCheckpointIsSettledAtTheNextOpen) {
  const std::string held = dir_ + ".held";  // beside the volume: the data file's inode kept
  std::string trash;
  {
    auto v = CreateVolume();
    WriteFile(*v, "keep.txt", "stays");
    WriteFile(*v, "gone.txt", "removed for good");
    ASSERT_TRUE(v->Unlink("gone.txt").ok());
    trash = OnlyTrashEntry(dir_);
    ASSERT_FALSE(trash.empty());
    ASSERT_EQ(link(trash.c_str(), held.c_str()), 0);
    ASSERT_TRUE(v->Close().ok());  // clean, its trash emptied
  }
  ASSERT_EQ(TrashEntries(), 0u);
  // As if the process died after the checkpoint, with the trash and the name still there.
  ASSERT_EQ(link(held.c_str(), trash.c_str()), 0);
  ASSERT_EQ(link(held.c_str(), (dir_ + "/gone.txt").c_str()), 0);
  ASSERT_EQ(unlink(held.c_str()), 0);
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(TrashEntries(), 0u);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/gone.txt"));
  EXPECT_EQ((*v)->Lookup("gone.txt").status().code(), Code::kNotFound);
  EXPECT_EQ(*ReadFile(**v, "keep.txt"), "stays");
  ExpectClean(**v);
}

TEST_F(LazyNamespaceTest, LostUnlinkBringsTheFileBack) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "keep.txt", "precious bytes");
    ASSERT_TRUE(v->Close().ok());
  }
  CrashAfter([](Volume& v) { ASSERT_TRUE(v.Unlink("keep.txt").ok()); }, true);
  ASSERT_FALSE(std::filesystem::exists(dir_ + "/keep.txt"));
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  auto content = ReadFile(**v, "keep.txt");
  ASSERT_TRUE(content.ok()) << content.status().message();
  EXPECT_EQ(*content, "precious bytes");
  EXPECT_EQ(TrashEntries(), 0u);
  ExpectClean(**v);
}

TEST_F(LazyNamespaceTest, UnlinkWhoseRecordSurvivedStaysUnlinked) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "gone.txt", "bye");
    ASSERT_TRUE(v->Close().ok());
  }
  CrashAfter([](Volume& v) { ASSERT_TRUE(v.Unlink("gone.txt").ok()); }, false);
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ((*v)->Lookup("gone.txt").status().code(), Code::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/gone.txt"));
  EXPECT_EQ(TrashEntries(), 0u);
  ExpectClean(**v);
}

TEST_F(LazyNamespaceTest, UnlinkedFilesLeaveTheTrashOnceDurable) {
  auto v = CreateVolume();
  WriteFile(*v, "a", "1");
  ASSERT_TRUE(v->Unlink("a").ok());
  EXPECT_EQ(TrashEntries(), 1u);  // its record is not durable yet
  WriteFile(*v, "b", "2");        // a commit: the journal is synced, the unlink with it
  EXPECT_EQ(TrashEntries(), 0u);
  ASSERT_TRUE(v->Unlink("b").ok());
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(TrashEntries(), 0u);
}

TEST_F(LazyNamespaceTest, PlantedFilesAreStillReported) {
  ASSERT_TRUE(CreateVolume()->Close().ok());
  CrashAfter([](Volume& v) { ASSERT_TRUE(v.OpenFile("x", {.create = true}).ok()); }, true);
  // Beside the lost create: a file with content nobody wrote through the volume.
  testing::WriteRaw(dir_ + "/planted.txt", std::string(200, 'p'));
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok());
  auto problems = (*v)->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].path, "planted.txt");
}

}  // namespace
}  // namespace scone::fs
