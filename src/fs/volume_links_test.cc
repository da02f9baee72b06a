// Hard links inside a volume: several names of one protected file (git's object store links a
// temporary file to its final name; `git clone --local` links whole object stores; `ln`).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "fs/tree_copy.h"
#include "fs/volume.h"
#include "os/syscalls.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

using testing::RawFile;
using testing::WriteRaw;

class VolumeLinksTest : public testing::VolumeTest {
 protected:
  struct stat Stat(const std::string& path) const {
    struct stat st {};
    EXPECT_EQ(lstat((dir_ + "/" + path).c_str(), &st), 0) << path;
    return st;
  }
  bool OnDisk(const std::string& path) const { return std::filesystem::exists(dir_ + "/" + path); }
  uint32_t StateFileVersion() const {
    std::string base = RawFile(dir_ + "/.scone/volume");
    uint32_t version = 0;
    for (int i = 3; i >= 0; --i) version = version << 8 | static_cast<uint8_t>(base[8 + i]);
    return version;
  }
  std::string Journal() const { return dir_ + "/.scone/journal"; }
  uint64_t JournalSize() const { return testing::JournalEnd(Journal()); }
  void ExpectClean(Volume& v) {
    for (const auto& p : v.Verify()) ADD_FAILURE() << p.path << ": " << p.what;
  }
  // Runs `change` on the volume in a child that dies without closing it; with `lose_it`, the
  // journal is cut back to where it was before the change (its records never reached the disk).
  void CrashAfter(const std::function<void(Volume&)>& change, bool lose_it = false) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
      auto v = OpenVolume();
      if (!v.ok()) _exit(3);
      uint64_t size = JournalSize();
      (void)!write(fds[1], &size, sizeof(size));  // before: `change` may end the process
      change(**v);
      _exit(::testing::Test::HasFailure() ? 4 : 0);  // no Close: as after a crash
    }
    close(fds[1]);
    uint64_t before = 0;
    ssize_t got = read(fds[0], &before, sizeof(before));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(got, static_cast<ssize_t>(sizeof(before)));
    if (lose_it) {
      ASSERT_EQ(truncate(Journal().c_str(), static_cast<off_t>(before)), 0);
    }
  }
};

TEST_F(VolumeLinksTest, BothNamesAreOneFile) {
  auto v = CreateVolume();
  WriteFile(*v, "a", "first");
  ASSERT_TRUE(v->Link("a", "b").ok());
  EXPECT_EQ(*ReadFile(*v, "b"), "first");
  EXPECT_EQ(Stat("a").st_ino, Stat("b").st_ino);
  EXPECT_EQ(Stat("b").st_nlink, 2u);
  // One open file object through either name; a write through one is read through the other.
  auto fa = *v->OpenFile("a", {});
  auto fb = *v->OpenFile("b", {});
  EXPECT_EQ(fa.get(), fb.get());
  ASSERT_TRUE(fb->Write(5, AsBytes(" and more")).ok());
  ASSERT_TRUE(fb->Sync().ok());
  fa.reset();
  fb.reset();
  EXPECT_EQ(*ReadFile(*v, "a"), "first and more");
  EXPECT_EQ(v->Lookup("a")->root, v->Lookup("b")->root);
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(StateFileVersion(), kStateVersionWithLinks);
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "a"), "first and more");
  EXPECT_EQ(*ReadFile(*again, "b"), "first and more");
  EXPECT_EQ(again->Files().size(), 2u);
  ExpectClean(*again);
}

TEST_F(VolumeLinksTest, TheDataGoesWithTheLastName) {
  auto v = CreateVolume();
  WriteFile(*v, "a", "kept");
  ASSERT_TRUE(v->Link("a", "b").ok());
  ASSERT_TRUE(v->Unlink("a").ok());
  EXPECT_FALSE(OnDisk("a"));
  EXPECT_EQ(*ReadFile(*v, "b"), "kept");
  EXPECT_EQ(Stat("b").st_nlink, 1u);
  ExpectClean(*v);
  ASSERT_TRUE(v->Close().ok());
  // No name left with a second one: readable by releases before links.
  EXPECT_EQ(StateFileVersion(), kStateVersionSingleNames);
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "b"), "kept");
  ASSERT_TRUE(again->Unlink("b").ok());
  EXPECT_EQ(again->Lookup("b").status().code(), Code::kNotFound);
  ASSERT_TRUE(again->Close().ok());
  EXPECT_TRUE((*OpenVolume())->Files().empty());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/.scone/trash"));
}

TEST_F(VolumeLinksTest, AnOpenFileLosingOneNameKeepsCommitting) {
  auto v = CreateVolume();
  WriteFile(*v, "a", "1234");
  ASSERT_TRUE(v->Link("a", "b").ok());
  auto f = *v->OpenFile("a", {});
  ASSERT_TRUE(v->Unlink("a").ok());
  ASSERT_TRUE(f->Write(4, AsBytes("5678")).ok());
  ASSERT_TRUE(f->Sync().ok());
  EXPECT_EQ(f->path(), "b");
  f.reset();
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "b"), "12345678");
  ExpectClean(*again);
}

TEST_F(VolumeLinksTest, RenamesMoveOneName) {
  auto v = CreateVolume();
  ASSERT_EQ(mkdir((dir_ + "/d").c_str(), 0755), 0);
  WriteFile(*v, "a", "shared");
  WriteFile(*v, "other", "other");
  ASSERT_TRUE(v->Link("a", "d/b").ok());
  ASSERT_TRUE(v->Rename("d", "e").ok());  // a directory holding one name
  ASSERT_TRUE(v->Rename("e/b", "c").ok());
  EXPECT_EQ(Stat("a").st_ino, Stat("c").st_ino);
  // rename(2) between two names of one file does nothing.
  ASSERT_TRUE(v->Rename("a", "c").ok());
  EXPECT_TRUE(OnDisk("a"));
  EXPECT_EQ(*ReadFile(*v, "a"), "shared");
  // Renaming over one name leaves the other.
  ASSERT_TRUE(v->Rename("other", "c").ok());
  EXPECT_EQ(*ReadFile(*v, "c"), "other");
  EXPECT_EQ(*ReadFile(*v, "a"), "shared");
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(again->Files().size(), 2u);
  EXPECT_EQ(*ReadFile(*again, "a"), "shared");
  ExpectClean(*again);
}

TEST_F(VolumeLinksTest, RefusedLinks) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("lib=authenticated")).ok());
  auto v = CreateVolume(std::move(rules));
  ASSERT_EQ(mkdir((dir_ + "/lib").c_str(), 0755), 0);
  WriteFile(*v, "a", "a");
  WriteFile(*v, "b", "b");
  EXPECT_EQ(v->Link("a", "b").code(), Code::kAlreadyExists);
  EXPECT_EQ(v->Link("missing", "c").code(), Code::kNotFound);
  EXPECT_EQ(v->Link("a", "lib/a").ToErrno(), EXDEV);
  EXPECT_EQ(v->Link("a", "no/such/dir/a").ToErrno(), ENOENT);
  EXPECT_EQ(v->Files().size(), 2u);
  ASSERT_TRUE(v->Close().ok());
  ExpectClean(**OpenVolume());
}

TEST_F(VolumeLinksTest, AuthenticatedFilesKeepTheirTableUntilTheLastName) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("bin=authenticated")).ok());
  auto v = CreateVolume(std::move(rules));
  ASSERT_EQ(mkdir((dir_ + "/bin").c_str(), 0755), 0);
  WriteFile(*v, "bin/tool", "tool bytes");
  ASSERT_TRUE(v->Link("bin/tool", "bin/alias").ok());
  ASSERT_TRUE(v->Unlink("bin/tool").ok());
  EXPECT_EQ(*ReadFile(*v, "bin/alias"), "tool bytes");
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "bin/alias"), "tool bytes");
  ExpectClean(*again);
}

TEST_F(VolumeLinksTest, AnotherProcessSeesTheLink) {
  auto a = CreateVolume();
  auto b = *OpenVolume();
  WriteFile(*a, "x", "from a");
  ASSERT_TRUE(a->Link("x", "y").ok());
  EXPECT_EQ(*ReadFile(*b, "y"), "from a");
  WriteFile(*b, "y", "from b");  // truncates and rewrites the one file
  EXPECT_EQ(*ReadFile(*a, "x"), "from b");
  ASSERT_TRUE(b->Unlink("x").ok());
  EXPECT_EQ(*ReadFile(*a, "y"), "from b");
  EXPECT_EQ(a->Tag(), b->Tag());
  ASSERT_TRUE(a->Close().ok());
  ASSERT_TRUE(b->Close().ok());
  ExpectClean(**OpenVolume());
}

// ---- crashes ------------------------------------------------------------------------------

// A crash between the link's record and the link: recovery makes the link.
TEST_F(VolumeLinksTest, RecoveryMakesALinkWhoseRecordIsDurable) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "a", "linked");
    ASSERT_TRUE(v->Close().ok());
  }
  CrashAfter([](Volume& v) {
    os::Syscalls calls = os::LibcSyscalls();
    calls.link = [](const char*, const char*) -> int { _exit(0); };  // dies before linking
    os::InstallSyscalls(calls);
    (void)v.Link("a", "b");
  });
  ASSERT_FALSE(OnDisk("b"));
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(*ReadFile(**v, "b"), "linked");
  EXPECT_EQ(Stat("a").st_ino, Stat("b").st_ino);
  ExpectClean(**v);
}

// One name of several unlinked lazily, its record lost: the name comes back.
TEST_F(VolumeLinksTest, RecoveryBringsBackANameWhoseUnlinkWasLost) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "a", "precious");
    ASSERT_TRUE(v->Link("a", "b").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  CrashAfter([](Volume& v) { ASSERT_TRUE(v.Unlink("b").ok()); }, /*lose_it=*/true);
  ASSERT_FALSE(OnDisk("b"));
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(*ReadFile(**v, "b"), "precious");
  EXPECT_EQ(Stat("a").st_ino, Stat("b").st_ino);
  ExpectClean(**v);
}

// Both names unlinked, both records lost: the last went to the trash, the first is linked again.
TEST_F(VolumeLinksTest, RecoveryBringsBackEveryNameWhoseUnlinkWasLost) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "b", "precious");
    ASSERT_TRUE(v->Link("b", "a").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  CrashAfter([](Volume& v) {
    ASSERT_TRUE(v.Unlink("b").ok());
    ASSERT_TRUE(v.Unlink("a").ok());
  }, /*lose_it=*/true);
  ASSERT_FALSE(OnDisk("a"));
  ASSERT_FALSE(OnDisk("b"));
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(*ReadFile(**v, "a"), "precious");
  EXPECT_EQ(*ReadFile(**v, "b"), "precious");
  EXPECT_EQ(Stat("a").st_ino, Stat("b").st_ino);
  ExpectClean(**v);
}

// Links, unlinks and commits replayed from the journal after a crash.
TEST_F(VolumeLinksTest, ReplayAfterACrash) {
  ASSERT_TRUE(CreateVolume()->Close().ok());
  CrashAfter([](Volume& v) {
    WriteFile(v, "tmp_obj", "object");
    ASSERT_TRUE(v.Link("tmp_obj", "final").ok());
    ASSERT_TRUE(v.Unlink("tmp_obj").ok());
    WriteFile(v, "pack", "pack v1");
    ASSERT_TRUE(v.Link("pack", "pack.keep").ok());
    WriteFile(v, "pack.keep", "pack v2");
  });
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ((*v)->Files().size(), 3u);
  EXPECT_EQ(*ReadFile(**v, "final"), "object");
  EXPECT_EQ(*ReadFile(**v, "pack"), "pack v2");
  ExpectClean(**v);
}

// An empty file created and linked just before a crash, its data file gone: recovery writes it
// anew once and links its other name to it.
TEST_F(VolumeLinksTest, RecoveryRecreatesAnEmptyFileOnceForAllItsNames) {
  ASSERT_TRUE(CreateVolume()->Close().ok());
  CrashAfter([](Volume& v) {
    ASSERT_TRUE(v.OpenFile("a", {.create = true}).ok());
    ASSERT_TRUE(v.Link("a", "b").ok());
  });
  ASSERT_EQ(unlink((dir_ + "/a").c_str()), 0);
  ASSERT_EQ(unlink((dir_ + "/b").c_str()), 0);
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(*ReadFile(**v, "b"), "");
  EXPECT_EQ(Stat("a").st_ino, Stat("b").st_ino);
  ExpectClean(**v);
}

// ---- tampering ----------------------------------------------------------------------------

TEST_F(VolumeLinksTest, TamperingThroughOneNameIsDetectedUnderBoth) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "a", testing::TestPattern(3 * kChunkSize, 7));
    ASSERT_TRUE(v->Link("a", "b").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  std::string raw = RawFile(dir_ + "/a");
  int fd = open((dir_ + "/a").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  char flipped = static_cast<char>(raw[5000] ^ 1);
  ASSERT_EQ(pwrite(fd, &flipped, 1, 5000), 1);
  close(fd);
  auto v = *OpenVolume();
  auto problems = v->Verify();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].path, "a");
  EXPECT_EQ(problems[1].path, "b");
  EXPECT_EQ(ReadFile(*v, "b").status().code(), Code::kDataCorrupted);
}

TEST_F(VolumeLinksTest, ACopyInPlaceOfALinkIsReported) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "a", "content");
    ASSERT_TRUE(v->Link("a", "b").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  // The same ciphertext, but another data file: the names would part at the next write.
  std::string raw = RawFile(dir_ + "/b");
  ASSERT_EQ(unlink((dir_ + "/b").c_str()), 0);
  WriteRaw(dir_ + "/b", raw);
  auto v = *OpenVolume();
  auto problems = v->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].path, "b");
  EXPECT_NE(problems[0].what.find("not the same file as a"), std::string::npos) << problems[0].what;
}

TEST_F(VolumeLinksTest, AnUnknownNameOfAKnownFileIsReported) {
  {
    auto v = CreateVolume();
    WriteFile(*v, "a", "content");
    ASSERT_TRUE(v->Close().ok());
  }
  ASSERT_EQ(link((dir_ + "/a").c_str(), (dir_ + "/planted").c_str()), 0);
  auto v = *OpenVolume();
  auto problems = v->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].path, "planted");
}

// ---- state, export and import ---------------------------------------------------------------

TEST(VolumeStateLinksTest, NamesOfOneFileMustCarryOneEntry) {
  VolumeState state;
  FileEntry entry;
  entry.file_id[0] = 1;
  entry.size = 10;
  state.files["a"] = entry;
  EXPECT_FALSE(state.HasLinks());
  state.files["b"] = entry;
  EXPECT_TRUE(state.HasLinks());
  EXPECT_TRUE(state.NamesAgree());
  state.files["b"].size = 11;  // one name rolled back: malformed
  EXPECT_FALSE(state.NamesAgree());
}

TEST_F(VolumeLinksTest, ExportWritesLinksAsLinksAndImportKeepsThem) {
  auto v = CreateVolume();
  ASSERT_EQ(mkdir((dir_ + "/d").c_str(), 0755), 0);
  WriteFile(*v, "a", "linked content");
  ASSERT_TRUE(v->Link("a", "d/b").ok());
  WriteFile(*v, "single", "alone");
  const std::string out = tmp_ / "exported";
  ASSERT_TRUE(ExportTree(*v, out).ok());
  struct stat a, b;
  ASSERT_EQ(stat((out + "/a").c_str(), &a), 0);
  ASSERT_EQ(stat((out + "/d/b").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(RawFile(out + "/d/b"), "linked content");
  ASSERT_TRUE(v->Close().ok());

  auto into = Volume::Create(tmp_ / "vol2", key_, {});
  ASSERT_TRUE(into.ok());
  auto stats = ImportTree(out, **into);
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ((*into)->Lookup("a")->file_id, (*into)->Lookup("d/b")->file_id);
  EXPECT_NE((*into)->Lookup("a")->file_id, (*into)->Lookup("single")->file_id);
  EXPECT_EQ(*ReadFile(**into, "d/b"), "linked content");
  EXPECT_TRUE((*into)->Verify().empty());
}

}  // namespace
}  // namespace scone::fs
