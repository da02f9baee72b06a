#include "fs/volume.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

using testing::RawFile;
using testing::VolumeTest;
using testing::WriteRaw;

std::string Pattern(size_t size, uint32_t seed) { return testing::TestPattern(size, seed); }

TEST_F(VolumeTest, WritesReadBackAcrossReopen) {
  auto v = CreateVolume();
  std::string data = Pattern(3 * kChunkSize + 123, 1);
  WriteFile(*v, "a.bin", data);
  EXPECT_EQ(*ReadFile(*v, "a.bin"), data);
  ASSERT_TRUE(v->Close().ok());
  auto again = OpenVolume();
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(*ReadFile(**again, "a.bin"), data);
}

TEST_F(VolumeTest, DiskHoldsOnlyCiphertext) {
  auto v = CreateVolume();
  std::string marker = "SCONE-PLAINTEXT-MARKER-4711";
  std::string data;
  for (int i = 0; i < 500; ++i) data += marker;
  WriteFile(*v, "secret.txt", data);
  ASSERT_TRUE(v->Close().ok());
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_)) {
    if (!e.is_regular_file()) continue;
    EXPECT_EQ(RawFile(e.path()).find(marker.substr(0, 12)), std::string::npos) << e.path();
  }
}

TEST_F(VolumeTest, SparseWritesReadZerosInHoles) {
  auto v = CreateVolume();
  auto f = *v->OpenFile("sparse", {.create = true});
  ASSERT_TRUE(f->Write(1'000'000, AsBytes("end")).ok());
  ASSERT_TRUE(f->Write(10, AsBytes("start")).ok());
  EXPECT_EQ(f->size(), 1'000'003u);
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  std::string content = *ReadFile(*again, "sparse");
  std::string expected(1'000'003, '\0');
  expected.replace(10, 5, "start");
  expected.replace(1'000'000, 3, "end");
  EXPECT_EQ(content, expected);
}

TEST_F(VolumeTest, TruncateDownAndUpZeroesTheTail) {
  auto v = CreateVolume();
  std::string data = Pattern(2 * kChunkSize + 100, 2);
  WriteFile(*v, "t", data);
  auto f = *v->OpenFile("t", {});
  ASSERT_TRUE(f->Truncate(kChunkSize + 10).ok());
  ASSERT_TRUE(f->Truncate(3 * kChunkSize).ok());
  ASSERT_TRUE(f->Sync().ok());
  std::string expected = data.substr(0, kChunkSize + 10) + std::string(2 * kChunkSize - 10, '\0');
  EXPECT_EQ(*ReadFile(*v, "t"), expected);
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(*ReadFile(**OpenVolume(), "t"), expected);
}

TEST_F(VolumeTest, AppendsInSmallPieces) {
  auto v = CreateVolume();
  auto f = *v->OpenFile("log", {.create = true});
  std::string expected;
  for (int i = 0; i < 3000; ++i) {
    std::string line = "line " + std::to_string(i) + "\n";
    ASSERT_TRUE(f->Write(f->size(), AsBytes(line)).ok());
    expected += line;
    if (i % 500 == 0) ASSERT_TRUE(f->Sync().ok());
  }
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(*ReadFile(**OpenVolume(), "log"), expected);
}

TEST_F(VolumeTest, RenameAndUnlinkFilesAndDirectories) {
  auto v = CreateVolume();
  ASSERT_EQ(mkdir((dir_ + "/d").c_str(), 0755), 0);
  WriteFile(*v, "d/one", "1");
  WriteFile(*v, "d/two", "2");
  WriteFile(*v, "top", "T");
  ASSERT_TRUE(v->Rename("d", "e").ok());
  ASSERT_TRUE(v->Rename("top", "e/one").ok());  // replaces e/one
  ASSERT_TRUE(v->Unlink("e/two").ok());
  EXPECT_EQ(v->Unlink("e/two").code(), Code::kNotFound);
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  auto files = again->Files();
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].first, "e/one");
  EXPECT_EQ(*ReadFile(*again, "e/one"), "T");
  EXPECT_TRUE(again->Verify().empty());
}

TEST_F(VolumeTest, RenameAcrossRegionsIsRefusedWithExdev) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("lib=authenticated")).ok());
  auto v = CreateVolume(std::move(rules));
  ASSERT_EQ(mkdir((dir_ + "/lib").c_str(), 0755), 0);
  WriteFile(*v, "secret", "s");
  Status s = v->Rename("secret", "lib/secret");
  EXPECT_EQ(s.ToErrno(), EXDEV) << s.message();
}

TEST_F(VolumeTest, AuthenticatedFilesArePlaintextOnDiskAndChecked) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add(*RegionRules::ParseRule("bin=authenticated")).ok());
  auto v = CreateVolume(std::move(rules));
  ASSERT_EQ(mkdir((dir_ + "/bin").c_str(), 0755), 0);
  std::string data = Pattern(5 * kChunkSize + 7, 3);
  WriteFile(*v, "bin/tool", data);
  ASSERT_TRUE(v->Close().ok());
  EXPECT_EQ(RawFile(dir_ + "/bin/tool"), data);  // byte for byte: the kernel can map it
  std::string tampered = data;
  tampered[3 * kChunkSize + 1] ^= 0x20;
  WriteRaw(dir_ + "/bin/tool", tampered);
  auto again = *OpenVolume();
  auto read = ReadFile(*again, "bin/tool");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), Code::kDataCorrupted);
  EXPECT_NE(read.status().message().find("bin/tool: chunk 3"), std::string::npos)
      << read.status().message();
}

TEST_F(VolumeTest, TagMovesOnCommitAndNamesTheState) {
  auto v = CreateVolume();
  VolumeTag empty = v->Tag();
  WriteFile(*v, "f", "one");
  VolumeTag one = v->Tag();
  EXPECT_NE(one, empty);
  auto f = *v->OpenFile("f", {});
  ASSERT_TRUE(f->Write(0, AsBytes("two")).ok());
  EXPECT_EQ(v->Tag(), one);  // not committed yet
  ASSERT_TRUE(f->Sync().ok());
  VolumeTag two = v->Tag();
  EXPECT_NE(two, one);
  f.reset();
  ASSERT_TRUE(v->Close().ok());
  Volume::OpenOptions options;
  options.expected_tag = two;
  auto ok = OpenVolume(options);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ((*ok)->Tag(), two);
  ASSERT_TRUE((*ok)->Close().ok());
  options.expected_tag = one;
  auto stale = OpenVolume(options);
  EXPECT_EQ(stale.status().code(), Code::kRolledBack);
}

TEST_F(VolumeTest, WrongKeyIsNamedAsSuch) {
  auto v = CreateVolume();
  ASSERT_TRUE(v->Close().ok());
  auto wrong = Volume::Open(dir_, crypto::RandomKey());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Code::kPermissionDenied);
  EXPECT_NE(wrong.status().message().find("wrong key"), std::string::npos);
}

TEST_F(VolumeTest, NotAVolumeIsNamedAsSuch) {
  auto v = Volume::Open(tmp_.path(), key_);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("is not a SCONE volume"), std::string::npos);
}

TEST_F(VolumeTest, TwoOpensShareTheVolumeThroughTheJournal) {
  // Two opens in one process behave like two processes: each has its own cross-process lock.
  auto a = CreateVolume();
  auto b = *OpenVolume();
  WriteFile(*a, "from-a", "written by a");
  EXPECT_EQ(*ReadFile(*b, "from-a"), "written by a");
  WriteFile(*b, "from-b", "written by b");
  ASSERT_TRUE(b->Rename("from-a", "renamed").ok());
  EXPECT_EQ(*ReadFile(*a, "from-b"), "written by b");
  EXPECT_EQ(*ReadFile(*a, "renamed"), "written by a");
  EXPECT_EQ(a->Lookup("from-a").status().code(), Code::kNotFound);
  EXPECT_EQ(a->Tag(), b->Tag());
  // A file open in both: each commit builds on the other's.
  auto fa = *a->OpenFile("shared", {.create = true});
  ASSERT_TRUE(fa->Write(0, AsBytes("aaaa")).ok());
  ASSERT_TRUE(fa->Sync().ok());
  auto fb = *b->OpenFile("shared", {});
  ASSERT_TRUE(fb->Write(4, AsBytes("bbbb")).ok());
  ASSERT_TRUE(fb->Sync().ok());
  ASSERT_TRUE(fa->Write(8, AsBytes("cccc")).ok());
  ASSERT_TRUE(fa->Sync().ok());
  fa.reset();
  fb.reset();
  ASSERT_TRUE(a->Close().ok());
  EXPECT_EQ(*ReadFile(*b, "shared"), "aaaabbbbcccc");
  ASSERT_TRUE(b->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "shared"), "aaaabbbbcccc");
  EXPECT_TRUE(again->Verify().empty());
}

TEST_F(VolumeTest, AnOpenSeesWhatAnotherProcessCommittedWhileThisOneHeldTheFile) {
  // A shell holds `exec 7>>log` while a program it started appends and exits; the shell's own
  // `>> log` then opens the file it already holds.
  auto a = CreateVolume();
  auto b = *OpenVolume();
  auto held = *a->OpenFile("log", {.create = true});
  auto other = *b->OpenFile("log", {});
  ASSERT_TRUE(other->Write(0, AsBytes("first\n")).ok());
  ASSERT_TRUE(other->Sync().ok());
  auto again = *a->OpenFile("log", {});
  ASSERT_EQ(again->size(), 6u);
  ASSERT_TRUE(again->Write(again->size(), AsBytes("second\n")).ok());
  ASSERT_TRUE(again->Sync().ok());
  EXPECT_EQ(*ReadFile(*b, "log"), "first\nsecond\n");
  EXPECT_TRUE(b->Verify().empty());
}

TEST_F(VolumeTest, AStaleOpenFileNeverCutsOffAnothersCommit) {
  // Growing a file probes the host with a longer data file and sets it back: back to the length
  // on disk, not to the one this object last saw.
  auto a = CreateVolume();
  auto b = *OpenVolume();
  auto stale = *a->OpenFile("f", {.create = true});
  auto other = *b->OpenFile("f", {});
  ASSERT_TRUE(other->Write(0, AsBytes(Pattern(3 * kChunkSize, 7))).ok());
  ASSERT_TRUE(other->Sync().ok());
  ASSERT_TRUE(stale->Write(0, AsBytes("x")).ok());
  Status synced = stale->Sync();
  EXPECT_TRUE(synced.ok()) << synced.message();
  EXPECT_TRUE(ReadFile(*b, "f").ok());
  EXPECT_TRUE(b->Verify().empty());
}

TEST_F(VolumeTest, NewFilesGetTheirModeLessTheUmask) {
  auto v = CreateVolume();
  mode_t old = umask(022);
  bool created = false;
  auto f = v->OpenFile("wide", {.create = true, .mode = 0777}, &created);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_TRUE(created);
  ASSERT_TRUE(v->OpenFile("narrow", {.create = true, .mode = 0640}).ok());
  ASSERT_TRUE(v->OpenFile("default", {.create = true}).ok());
  ASSERT_TRUE(v->OpenFile("wide", {.create = true, .mode = 0600}, &created).ok());
  EXPECT_FALSE(created);  // it existed: its mode stays
  umask(old);
  auto mode = [&](const char* name) {
    struct stat st;
    return stat((dir_ + "/" + name).c_str(), &st) == 0 ? st.st_mode & 07777 : 01000000;
  };
  EXPECT_EQ(mode("wide"), 0755u);
  EXPECT_EQ(mode("narrow"), 0640u);
  EXPECT_EQ(mode("default"), 0600u);
}

TEST_F(VolumeTest, TimesSetBeforeTheCommitOutlastIt) {
  auto v = CreateVolume();
  std::string path = dir_ + "/f";
  const struct timespec then[2] = {{1577934245, 0}, {1577934245, 0}};
  auto mtime = [&] {
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? st.st_mtim.tv_sec : -1;
  };
  auto f = *v->OpenFile("f", {.create = true});
  ASSERT_TRUE(f->Write(0, AsBytes(Pattern(kChunkSize + 10, 3))).ok());
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), then, 0), 0);  // as the program's futimens
  ASSERT_TRUE(f->KeepTimes(true, true).ok());
  ASSERT_TRUE(f->Sync().ok());
  EXPECT_EQ(mtime(), 1577934245);
  // A write after them moves the mtime at the commit, as on any file.
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), then, 0), 0);
  ASSERT_TRUE(f->KeepTimes(false, true).ok());
  ASSERT_TRUE(f->Write(3, AsBytes("x")).ok());
  ASSERT_TRUE(f->Sync().ok());
  EXPECT_GT(mtime(), 1577934245);
}

TEST_F(VolumeTest, CheckpointByOneProcessIsSeenByTheOther) {
  auto a = CreateVolume();
  auto b = *OpenVolume();
  WriteFile(*a, "one", "1");
  ASSERT_TRUE(a->Close().ok());  // checkpoints: b must reload the state file
  WriteFile(*b, "two", "2");
  EXPECT_EQ(*ReadFile(*b, "one"), "1");
  ASSERT_TRUE(b->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(again->Files().size(), 2u);
}

TEST_F(VolumeTest, ForkedChildWritesAndParentSeesIt) {
  auto v = CreateVolume();
  WriteFile(*v, "before", "parent");
  v->BeforeFork();
  pid_t pid = fork();
  if (pid == 0) {
    v->AfterForkInChild();
    bool ok = v->RejoinAfterFork().ok();
    auto f = v->OpenFile("child.txt", {.create = true});
    ok = ok && f.ok() && (*f)->Write(0, AsBytes("from the child")).ok() && (*f)->Sync().ok();
    ok = ok && ReadFile(*v, "before").ok();
    f = Internal("closed");
    ok = ok && v->Close().ok();
    _exit(ok ? 0 : 1);
  }
  v->AfterForkInParent();
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(*ReadFile(*v, "child.txt"), "from the child");
  WriteFile(*v, "after", "parent again");
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(again->Files().size(), 3u);
  EXPECT_TRUE(again->Verify().empty());
}

TEST_F(VolumeTest, SpaceOverheadBelowOnePercentForLargeFiles) {
  auto v = CreateVolume();
  auto f = *v->OpenFile("big", {.create = true});
  std::string block = Pattern(1 << 20, 4);
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(f->Write(uint64_t(i) << 20, AsBytes(block)).ok());
  ASSERT_TRUE(f->Sync().ok());
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/big").c_str(), &st), 0);
  double overhead = double(st.st_size) / double(32 << 20) - 1.0;
  EXPECT_LT(overhead, 0.01) << overhead;
}

TEST_F(VolumeTest, ConcurrentReadersAndWritersOnOneAndManyFiles) {
  auto v = CreateVolume();
  constexpr int kThreads = 4, kChunksPerThread = 64;
  auto shared = *v->OpenFile("shared", {.create = true});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto own = *v->OpenFile("own" + std::to_string(t), {.create = true});
      for (int i = 0; i < kChunksPerThread; ++i) {
        // Each thread owns every kThreads-th chunk of the shared file, written in two halves.
        std::string data = Pattern(kChunkSize, t * 1000 + i);
        uint64_t off = uint64_t(i * kThreads + t) * kChunkSize;
        ASSERT_TRUE(shared->Write(off, AsBytes(data.substr(0, 1000))).ok());
        ASSERT_TRUE(shared->Write(off + 1000, AsBytes(data.substr(1000))).ok());
        ASSERT_TRUE(own->Write(uint64_t(i) * kChunkSize, AsBytes(data)).ok());
        std::string back(kChunkSize, '\0');
        auto n = shared->Read(off, MutableByteSpan(reinterpret_cast<uint8_t*>(back.data()), back.size()));
        ASSERT_TRUE(n.ok());
        ASSERT_EQ(back, data);
        if (i % 16 == 0) ASSERT_TRUE(shared->Sync().ok());
      }
      ASSERT_TRUE(own->Sync().ok());
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(shared->Sync().ok());
  shared.reset();
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  std::string all = *ReadFile(*again, "shared");
  for (int t = 0; t < kThreads; ++t) {
    std::string own = *ReadFile(*again, "own" + std::to_string(t));
    for (int i = 0; i < kChunksPerThread; ++i) {
      std::string data = Pattern(kChunkSize, t * 1000 + i);
      EXPECT_EQ(all.substr(size_t(i * kThreads + t) * kChunkSize, kChunkSize), data);
      EXPECT_EQ(own.substr(size_t(i) * kChunkSize, kChunkSize), data);
    }
  }
  EXPECT_TRUE(again->Verify().empty());
}

TEST_F(VolumeTest, UnlinkedOpenFileKeepsWorkingAndCommitsNothing) {
  auto v = CreateVolume();
  WriteFile(*v, "gone", "data");
  auto f = *v->OpenFile("gone", {});
  ASSERT_TRUE(v->Unlink("gone").ok());
  ASSERT_TRUE(f->Write(4, AsBytes("more")).ok());
  ASSERT_TRUE(f->Sync().ok());
  std::string back(8, '\0');
  ASSERT_TRUE(f->Read(0, MutableByteSpan(reinterpret_cast<uint8_t*>(back.data()), 8)).ok());
  EXPECT_EQ(back, "datamore");
  f.reset();
  ASSERT_TRUE(v->Close().ok());
  EXPECT_TRUE((*OpenVolume())->Files().empty());
}

// A file cut short gives its disk space back once the change is applied (before, the data file
// kept its length until a recovery: `: > log` freed nothing); another file's data stays.
TEST_F(VolumeTest, AFileCutShortGivesItsRoomBack) {
  auto v = CreateVolume();
  auto log = *v->OpenFile("log", {.create = true});
  auto other = *v->OpenFile("other", {.create = true});
  std::string block = Pattern(1 << 20, 7);
  ASSERT_TRUE(log->Write(0, AsBytes(block)).ok());
  ASSERT_TRUE(log->Sync().ok());
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/log").c_str(), &st), 0);
  ASSERT_GE(st.st_size, 1 << 20);
  ASSERT_TRUE(log->Truncate(100).ok());
  ASSERT_TRUE(other->Write(0, AsBytes(block)).ok());
  ASSERT_TRUE(log->Sync().ok());
  ASSERT_EQ(stat((dir_ + "/log").c_str(), &st), 0);
  EXPECT_LE(st.st_size, 2 * kChunkSize) << "the data file kept its length";
  ASSERT_TRUE(other->Sync().ok());
  ASSERT_TRUE(v->Close().ok());
  auto again = *OpenVolume();
  EXPECT_EQ(*ReadFile(*again, "log"), block.substr(0, 100));
  EXPECT_EQ(*ReadFile(*again, "other"), block);
}

}  // namespace
}  // namespace scone::fs
