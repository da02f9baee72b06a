// Root on the host edits the disk behind the volume's back: every edit must be detected with a
// clear error, and no unauthenticated plaintext may be returned.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>

#include "fs/protected_file.h"
#include "fs/volume.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

using testing::RawFile;
using testing::VolumeTest;
using testing::WriteRaw;

std::string Data(size_t size, char seed) { return testing::TestPattern(size, seed); }

void FlipByte(const std::string& path, uint64_t offset) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t b;
  ASSERT_EQ(pread(fd, &b, 1, offset), 1);
  b ^= 0x01;
  ASSERT_EQ(pwrite(fd, &b, 1, offset), 1);
  close(fd);
}

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

class TamperTest : public VolumeTest {
 protected:
  // Opens and reads all of `path`; returns the failure, or OK if the tampering went unnoticed.
  Status OpenAndReadAll(Volume& v, const std::string& path) {
    auto content = ReadFile(v, path);
    return content.status();
  }

  // Two opens of one volume (two processes sharing it), each with "f" open: a wrote "a1" at 0.
  struct TwoWriters {
    std::shared_ptr<Volume> a, b;
    std::shared_ptr<ProtectedFile> fa, fb;
  };
  TwoWriters TwoWritersOfF() {
    TwoWriters w;
    w.a = CreateVolume();
    w.b = *OpenVolume();
    w.fa = *w.a->OpenFile("f", {.create = true});
    EXPECT_TRUE(w.fa->Write(0, AsBytes("a1")).ok());
    w.fb = *w.b->OpenFile("f", {});
    return w;
  }

  // The 8 bytes at `at` of the lock file (its hints), as the host reads and writes them.
  std::array<uint8_t, 8> ReadLockHint(off_t at) {
    std::array<uint8_t, 8> bytes{};
    const int fd = open((dir_ + "/.scone/lock").c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pread(fd, bytes.data(), bytes.size(), at), 8);
    close(fd);
    return bytes;
  }
  void WriteLockHint(off_t at, const std::array<uint8_t, 8>& bytes) {
    const int fd = open((dir_ + "/.scone/lock").c_str(), O_WRONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pwrite(fd, bytes.data(), bytes.size(), at), 8);
    close(fd);
  }

  // A fresh open finds "f" with `at0` at 0 and `at4096` at 4096, and the volume whole.
  void ExpectFAfterReopen(const std::string& at0, const std::string& at4096) {
    auto again = *OpenVolume();
    auto content = ReadFile(*again, "f");
    ASSERT_TRUE(content.ok()) << content.status().message();
    ASSERT_EQ(content->size(), 4096 + at4096.size());
    EXPECT_EQ(content->substr(0, at0.size()), at0);
    EXPECT_EQ(content->substr(4096), at4096);
    EXPECT_TRUE(again->Verify().empty());
  }
};

TEST_F(TamperTest, EveryFlippedBitOfAnEncryptedFileIsDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "f", Data(3 * kChunkSize + 100, 'a'));
  std::string raw = dir_ + "/f";
  uint64_t size = FileSize(raw);
  ASSERT_EQ(size, kPageSize + 4 * kChunkSize);
  for (uint64_t i = 0; i < size; ++i) {
    FlipByte(raw, i);
    Status s = OpenAndReadAll(*v, "f");
    ASSERT_EQ(s.code(), Code::kDataCorrupted) << "byte " << i << " flipped went unnoticed";
    ASSERT_NE(s.message().find(dir_ + "/f"), std::string::npos) << s.message();
    FlipByte(raw, i);
  }
  EXPECT_TRUE(OpenAndReadAll(*v, "f").ok());
}

TEST_F(TamperTest, EveryFlippedBitOfAnAuthenticatedFileAndItsTableIsDetected) {
  RegionRules rules;
  ASSERT_TRUE(rules.Add({"", Region::kAuthenticated}).ok());
  auto v = CreateVolume(std::move(rules));
  WriteFile(*v, "lib.so", Data(2 * kChunkSize + 10, 'b'));
  FileEntry entry = *v->Lookup("lib.so");
  std::string side = dir_ + "/.scone/meta/" + ToHex(entry.file_id);
  for (const std::string& raw : {dir_ + "/lib.so", side}) {
    uint64_t size = FileSize(raw);
    for (uint64_t i = 0; i < size; ++i) {
      FlipByte(raw, i);
      ASSERT_EQ(OpenAndReadAll(*v, "lib.so").code(), Code::kDataCorrupted) << raw << " byte " << i;
      FlipByte(raw, i);
    }
  }
  EXPECT_TRUE(OpenAndReadAll(*v, "lib.so").ok());
}

TEST_F(TamperTest, EveryFlippedBitOfTheVolumeMetadataIsDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "f", "content");
  ASSERT_TRUE(v->Close().ok());
  std::string raw = dir_ + "/.scone/volume";
  uint64_t size = FileSize(raw);
  for (uint64_t i = 0; i < size; ++i) {
    FlipByte(raw, i);
    auto opened = OpenVolume();
    ASSERT_FALSE(opened.ok()) << "byte " << i;
    ASSERT_NE(opened.status().message().find(dir_), std::string::npos) << opened.status().message();
    FlipByte(raw, i);
  }
  EXPECT_TRUE(OpenVolume().ok());
}

TEST_F(TamperTest, SwappedChunksAreDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "a", Data(4 * kChunkSize, 'a'));
  WriteFile(*v, "b", Data(4 * kChunkSize, 'b'));
  Layout layout(Region::kEncrypted);
  std::string a = RawFile(dir_ + "/a"), b = RawFile(dir_ + "/b");
  auto slot = [&](const std::string& raw, int i) { return raw.substr(layout.SlotOffset(i), kChunkSize); };

  std::string within = a;  // chunks 1 and 2 of one file
  within.replace(layout.SlotOffset(1), kChunkSize, slot(a, 2));
  within.replace(layout.SlotOffset(2), kChunkSize, slot(a, 1));
  WriteRaw(dir_ + "/a", within);
  EXPECT_EQ(OpenAndReadAll(*v, "a").code(), Code::kDataCorrupted);

  std::string between = a;  // chunk 1 of b at chunk 1 of a
  between.replace(layout.SlotOffset(1), kChunkSize, slot(b, 1));
  WriteRaw(dir_ + "/a", between);
  Status s = OpenAndReadAll(*v, "a");
  EXPECT_EQ(s.code(), Code::kDataCorrupted);
  EXPECT_NE(s.message().find("chunk 1"), std::string::npos) << s.message();

  // Chunk and its tags swapped together: the chunk table no longer matches the root.
  std::string with_tags = a;
  with_tags.replace(layout.SlotOffset(1), kChunkSize, slot(a, 2));
  with_tags.replace(layout.SlotOffset(2), kChunkSize, slot(a, 1));
  size_t page = layout.PageOffset(0);
  size_t at1 = page + EntryOffsetInPage(1), at2 = page + EntryOffsetInPage(2);
  std::string e1 = a.substr(at1, kEntrySize), e2 = a.substr(at2, kEntrySize);
  with_tags.replace(at1, kEntrySize, e2);
  with_tags.replace(at2, kEntrySize, e1);
  WriteRaw(dir_ + "/a", with_tags);
  EXPECT_EQ(OpenAndReadAll(*v, "a").code(), Code::kDataCorrupted);

  WriteRaw(dir_ + "/a", a);
  EXPECT_TRUE(OpenAndReadAll(*v, "a").ok());
}

TEST_F(TamperTest, TruncatedFilesAreDetectedExtendedOnesReadAsCommitted) {
  auto v = CreateVolume();
  const std::string data = Data(2 * kChunkSize, 'x');
  WriteFile(*v, "f", data);
  std::string raw = RawFile(dir_ + "/f");
  WriteRaw(dir_ + "/f", raw.substr(0, raw.size() - 100));
  Status s = OpenAndReadAll(*v, "f");
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  WriteRaw(dir_ + "/f", raw.substr(0, raw.size() - kChunkSize));  // a whole chunk gone
  EXPECT_EQ(OpenAndReadAll(*v, "f").code(), Code::kDataCorrupted);
  // Bytes past the committed length (what a writer killed before its commit leaves): nothing
  // references them; the file reads as committed, and its next commit cuts them off.
  WriteRaw(dir_ + "/f", raw + std::string(kChunkSize, 'y'));
  auto read = ReadFile(*v, "f");
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ(*read, data);
  WriteFile(*v, "f", data);
  EXPECT_EQ(FileSize(dir_ + "/f"), raw.size());
  EXPECT_TRUE(v->Verify().empty());
}

TEST_F(TamperTest, FileReplacedByAnOlderCopyIsDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "f", Data(3 * kChunkSize, 'o'));
  std::string old_copy = RawFile(dir_ + "/f");
  WriteFile(*v, "f", Data(3 * kChunkSize, 'n'));
  WriteRaw(dir_ + "/f", old_copy);
  Status s = OpenAndReadAll(*v, "f");
  EXPECT_EQ(s.code(), Code::kDataCorrupted);
  EXPECT_NE(s.message().find("rolled back"), std::string::npos) << s.message();
  ASSERT_TRUE(v->Close().ok());
  auto problems = (*OpenVolume())->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].path, "f");
}

TEST_F(TamperTest, FilesSwappedByNameAreDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "a", "first file");
  WriteFile(*v, "b", "second file");
  std::string a = RawFile(dir_ + "/a"), b = RawFile(dir_ + "/b");
  WriteRaw(dir_ + "/a", b);
  WriteRaw(dir_ + "/b", a);
  Status s = OpenAndReadAll(*v, "a");
  EXPECT_NE(s.message().find("different protected file"), std::string::npos) << s.message();
}

TEST_F(TamperTest, ForeignFileFromAnotherVolumeIsDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "f", "mine");
  testing::TempDir other_dir;
  auto other = *Volume::Create(other_dir / "v", key_, {});  // same key, other volume
  WriteFile(*other, "f", "theirs");
  ASSERT_TRUE(other->Close().ok());
  WriteRaw(dir_ + "/f", RawFile(other_dir / "v/f"));
  EXPECT_EQ(OpenAndReadAll(*v, "f").code(), Code::kDataCorrupted);
}

TEST_F(TamperTest, MetadataReplacedByAnOlderCopyIsDetected) {
  auto v = CreateVolume();
  WriteFile(*v, "f", "version one");
  ASSERT_TRUE(v->Close().ok());
  std::string old_meta = RawFile(dir_ + "/.scone/volume");
  v = *OpenVolume();
  WriteFile(*v, "f", "version two, longer");
  VolumeTag tag = v->Tag();
  ASSERT_TRUE(v->Close().ok());
  WriteRaw(dir_ + "/.scone/volume", old_meta);
  // Without a trusted tag the file no longer matches the (older) metadata...
  {
    auto opened = *OpenVolume();
    EXPECT_EQ(OpenAndReadAll(*opened, "f").code(), Code::kDataCorrupted);
    EXPECT_FALSE(opened->Verify().empty());
  }
  // ...and with it the volume does not even open.
  Volume::OpenOptions options;
  options.expected_tag = tag;
  EXPECT_EQ(OpenVolume(options).status().code(), Code::kRolledBack);
}

TEST_F(TamperTest, WholeVolumeRolledBackIsRefusedWithTheTrustedTag) {
  auto v = CreateVolume();
  WriteFile(*v, "f", "old balance: 100");
  ASSERT_TRUE(v->Close().ok());
  std::filesystem::copy(dir_, tmp_ / "old", std::filesystem::copy_options::recursive);
  v = *OpenVolume();
  WriteFile(*v, "f", "new balance: 0");
  VolumeTag tag = v->Tag();
  ASSERT_TRUE(v->Close().ok());
  std::filesystem::remove_all(dir_);
  std::filesystem::rename(tmp_ / "old", dir_);
  Volume::OpenOptions options;
  options.expected_tag = tag;
  auto opened = OpenVolume(options);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), Code::kRolledBack);
  EXPECT_NE(opened.status().message().find("trusted tag"), std::string::npos);
}

TEST_F(TamperTest, FilesAddedOrRemovedBehindTheVolumesBackAreReported) {
  auto v = CreateVolume();
  WriteFile(*v, "kept", "k");
  WriteFile(*v, "removed", "r");
  ASSERT_TRUE(v->Close().ok());
  std::filesystem::remove(dir_ + "/removed");
  WriteRaw(dir_ + "/planted", "attacker's file");
  v = *OpenVolume();
  auto problems = v->Verify();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].path, "planted");
  EXPECT_NE(problems[0].what.find("unknown file"), std::string::npos);
  EXPECT_EQ(problems[1].path, "removed");
  EXPECT_NE(problems[1].what.find("missing"), std::string::npos);
  // A program cannot adopt the planted file as its own either.
  auto planted = v->OpenFile("planted", {.create = true});
  EXPECT_EQ(planted.status().code(), Code::kDataCorrupted);
}

// A middle record whose header reads back as zeros (a block lost on the disk) or whose length
// is out of range: the records after it were durable, so the journal is damaged, not torn at
// that point (the zeros written ahead must not pass for its end).
TEST_F(TamperTest, AMiddleRecordZeroedOrWithABadLengthIsDamage) {
  pid_t pid = fork();
  if (pid == 0) {  // fsyncs six files and dies without closing: the records stay in the journal
    auto v = CreateVolume();
    for (char c = 'a'; c < 'g'; ++c) WriteFile(*v, std::string(1, c), Data(kChunkSize, c));
    _exit(::testing::Test::HasFailure() ? 1 : 0);
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string journal = dir_ + "/.scone/journal";
  const uint64_t end = testing::JournalEnd(journal);
  std::string raw = RawFile(journal);
  ASSERT_GT(raw.size(), end);  // the zeros written ahead
  // The frames (u32 body size | u64 sequence | nonce | body | tag): the third one's offset.
  auto body_size = [&](uint64_t at) { uint32_t n; std::memcpy(&n, raw.data() + at, 4); return n; };
  uint64_t third = 0;
  for (int i = 0; i < 2; ++i) third += 24 + body_size(third) + 16;
  ASSERT_LT(third, end);
  std::filesystem::copy(dir_, tmp_ / "pristine", std::filesystem::copy_options::recursive);
  for (const std::string& header : {std::string(24, '\0'), std::string("\xff\xff\xff\x7f", 4)}) {
    std::filesystem::remove_all(dir_);
    std::filesystem::copy(tmp_ / "pristine", dir_, std::filesystem::copy_options::recursive);
    std::string edited = raw;
    edited.replace(third, header.size(), header);
    WriteRaw(journal, edited);
    auto opened = OpenVolume();
    ASSERT_FALSE(opened.ok()) << "a header of " << header.size() << " bytes went unnoticed";
    EXPECT_NE(opened.status().message().find("journal damaged"), std::string::npos) << opened.status().message();
  }
  // Untouched, every file is there.
  std::filesystem::remove_all(dir_);
  std::filesystem::copy(tmp_ / "pristine", dir_, std::filesystem::copy_options::recursive);
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  for (char c = 'a'; c < 'g'; ++c) EXPECT_EQ(*ReadFile(**v, std::string(1, c)), Data(kChunkSize, c));
}

TEST_F(TamperTest, JournalTamperingIsDetectedWithTheTrustedTag) {
  // A writer commits and dies without closing: the commits live only in the journal.
  auto v = CreateVolume();
  WriteFile(*v, "f", Data(5 * kChunkSize, 'j'));
  ASSERT_TRUE(v->Close().ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    auto child = *OpenVolume();
    auto f = *child->OpenFile("f", {});
    std::string update = Data(2 * kChunkSize, 'u');
    bool ok = f->Write(kChunkSize, AsBytes(update)).ok() && f->Sync().ok();
    VolumeTag tag = child->Tag();
    ok = ok && write(fds[1], tag.data(), tag.size()) == static_cast<ssize_t>(tag.size());
    _exit(ok ? 0 : 1);  // no Close: the journal is not checkpointed
  }
  VolumeTag tag;
  ASSERT_EQ(read(fds[0], tag.data(), tag.size()), static_cast<ssize_t>(tag.size()));
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fds[0]);
  close(fds[1]);

  std::filesystem::copy(dir_, tmp_ / "pristine", std::filesystem::copy_options::recursive);
  std::string journal = dir_ + "/.scone/journal";
  uint64_t size = testing::JournalEnd(journal);  // the records; the zeros ahead hold none
  ASSERT_GT(size, 2 * kChunkSize);
  Volume::OpenOptions options;
  options.expected_tag = tag;
  for (uint64_t i = 0; i < size; i += 97) {
    std::filesystem::remove_all(dir_);
    std::filesystem::copy(tmp_ / "pristine", dir_, std::filesystem::copy_options::recursive);
    FlipByte(journal, i);
    auto opened = OpenVolume(options);
    ASSERT_FALSE(opened.ok()) << "journal byte " << i;
  }
  std::filesystem::remove_all(dir_);
  std::filesystem::copy(tmp_ / "pristine", dir_, std::filesystem::copy_options::recursive);
  auto recovered = OpenVolume(options);
  ASSERT_TRUE(recovered.ok()) << recovered.status().message();
  std::string expected = Data(5 * kChunkSize, 'j');
  expected.replace(kChunkSize, 2 * kChunkSize, Data(2 * kChunkSize, 'u'));
  EXPECT_EQ(*ReadFile(**recovered, "f"), expected);
}

// The lock file's count of journal changes is a hint the host can write. A writer that took it
// unchanged as proof that nobody appended skipped the other's record: its next commit went over
// it, undoing a write the other had been told was done, and verify accepted the volume.
TEST_F(TamperTest, AJournalChangeCountWoundBackHidesNoRecordFromAWriter) {
  auto w = TwoWritersOfF();
  constexpr off_t kJournalChangesAt = 24;
  const auto count = ReadLockHint(kJournalChangesAt);
  ASSERT_TRUE(w.fb->Write(4096, AsBytes("b1")).ok());
  WriteLockHint(kJournalChangesAt, count);  // the host winds it back
  ASSERT_TRUE(w.fa->Write(0, AsBytes("a2")).ok());
  w.fa.reset();
  w.fb.reset();
  ASSERT_TRUE(w.a->Close().ok());
  ASSERT_TRUE(w.b->Close().ok());
  ExpectFAfterReopen("a2", "b1");
}

// The lock file's checkpoint hint is a hint too. A writer that trusted an unchanged one missed
// the other's checkpoint (which emptied the journal and holds the other's last write in the
// state file): its next commit went over that write. The journal's end below where the writer
// read to gives the checkpoint away; the authenticated state file then says what it holds.
TEST_F(TamperTest, ACheckpointHintWoundBackHidesNoCheckpointFromAWriter) {
  auto w = TwoWritersOfF();
  ASSERT_TRUE(w.fb->Write(4096, AsBytes("b1")).ok());  // b has read the journal up to here
  ASSERT_TRUE(w.fa->Write(0, AsBytes("a2")).ok());
  constexpr off_t kCheckpointHintAt = 8;
  const auto hint = ReadLockHint(kCheckpointHintAt);
  w.fa.reset();
  ASSERT_TRUE(w.a->Close().ok());  // checkpoints: a2 is in the state file, the journal emptied
  WriteLockHint(kCheckpointHintAt, hint);  // the host winds it back
  ASSERT_TRUE(w.fb->Write(4096, AsBytes("b2")).ok());
  w.fb.reset();
  ASSERT_TRUE(w.b->Close().ok());
  ExpectFAfterReopen("a2", "b2");
}

// The host cuts the journal below what a process read, with no checkpoint (the hint and the
// state file unchanged): that process went on from its stale state, its next write undid the
// other's acknowledged one, and verify accepted the volume. Now its calls fail.
TEST_F(TamperTest, AJournalCutBelowWhatAProcessReadIsNotBuiltOn) {
  auto w = TwoWritersOfF();
  ASSERT_TRUE(w.fb->Write(4096, AsBytes("b1")).ok());  // b has read the journal up to here
  ASSERT_TRUE(w.fa->Write(0, AsBytes("a2")).ok());
  ASSERT_EQ(truncate((dir_ + "/.scone/journal").c_str(), 0), 0);  // the host
  auto written = w.fb->Write(4096, AsBytes("b2"));
  ASSERT_FALSE(written.ok());
  EXPECT_NE(written.status().message().find("cut to below the records this process read"), std::string::npos)
      << written.status().message();
}

}  // namespace
}  // namespace scone::fs
