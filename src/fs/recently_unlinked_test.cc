// The list of recently unlinked files' last entries beside the base state: found by id, bound to
// its checkpoint's sequence, and empty whenever it cannot be trusted.
#include "fs/recently_unlinked.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "crypto/primitives.h"
#include "os/file.h"
#include "testing/temp_dir.h"

namespace scone::fs {
namespace {

FileEntry EntryOf(uint8_t tag, uint64_t size) {
  FileEntry e;
  e.file_id.fill(tag);
  e.size = size;
  e.root.fill(static_cast<uint8_t>(tag + 1));
  return e;
}

class RecentlyUnlinkedTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  std::string path_ = dir_ / "unlinked";
  SecretBytes key_ = crypto::RandomKey();
  std::array<uint8_t, 16> volume_id_{7};
};

TEST_F(RecentlyUnlinkedTest, FindsTheNewestEntryOfAFileAndKeepsABoundedNumber) {
  RecentlyUnlinked list;
  list.Note(EntryOf(1, 10));
  list.Note(EntryOf(1, 20));
  ASSERT_TRUE(list.Find(EntryOf(1, 0).file_id).has_value());
  EXPECT_EQ(list.Find(EntryOf(1, 0).file_id)->size, 20u);
  EXPECT_FALSE(list.Find(EntryOf(2, 0).file_id).has_value());
  for (size_t i = 0; i < RecentlyUnlinked::kKept; ++i) {
    FileEntry e = EntryOf(3, i);
    e.file_id[0] = static_cast<uint8_t>(i);
    e.file_id[1] = static_cast<uint8_t>(i >> 8);
    list.Note(e);
  }
  EXPECT_FALSE(list.Find(EntryOf(1, 0).file_id).has_value()) << "the oldest goes";
}

TEST_F(RecentlyUnlinkedTest, ReadsBackWhatTheCheckpointOfItsSequenceWrote) {
  RecentlyUnlinked written;
  written.Note(EntryOf(1, 4096));
  written.Note(EntryOf(2, 8192));
  ASSERT_TRUE(written.Write(path_, key_, volume_id_, 42).ok());
  RecentlyUnlinked read;
  read.Load(path_, key_, volume_id_, 42);
  ASSERT_TRUE(read.Find(EntryOf(2, 0).file_id).has_value());
  EXPECT_EQ(read.Find(EntryOf(2, 0).file_id)->size, 8192u);
  EXPECT_EQ(read.Find(EntryOf(1, 0).file_id)->root, EntryOf(1, 0).root);
}

TEST_F(RecentlyUnlinkedTest, IsEmptyWhenItCannotBeTrusted) {
  RecentlyUnlinked written;
  written.Note(EntryOf(1, 4096));
  ASSERT_TRUE(written.Write(path_, key_, volume_id_, 42).ok());
  RecentlyUnlinked read;
  read.Load(path_, key_, volume_id_, 43);  // another checkpoint's, or an older copy put back
  EXPECT_TRUE(read.empty());
  std::array<uint8_t, 16> other_volume{8};
  read.Load(path_, key_, other_volume, 42);
  EXPECT_TRUE(read.empty());
  read.Load(path_, crypto::RandomKey(), volume_id_, 42);
  EXPECT_TRUE(read.empty());
  auto bytes = os::ReadWholeFile(path_, 1 << 20);
  ASSERT_TRUE(bytes.ok());
  for (size_t at = 0; at < bytes->size(); ++at) {
    Bytes flipped = *bytes;
    flipped[at] ^= 0x01;
    ASSERT_TRUE(os::WriteFileAtomically(path_, flipped).ok());
    read.Load(path_, key_, volume_id_, 42);
    EXPECT_TRUE(read.empty()) << "a byte flipped at " << at;
  }
  read.Load(dir_ / "missing", key_, volume_id_, 42);
  EXPECT_TRUE(read.empty());
}

TEST_F(RecentlyUnlinkedTest, IsWrittenNeitherThroughALinkNorIntoAFifo) {
  RecentlyUnlinked list;
  list.Note(EntryOf(1, 10));
  const std::string victim = dir_ / "victim";
  std::ofstream(victim) << "not the volume's";
  std::filesystem::create_symlink(victim, path_);
  EXPECT_FALSE(list.Write(path_, key_, volume_id_, 5).ok());
  std::ifstream in(victim);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "not the volume's");
  std::filesystem::remove(path_);
  ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
  EXPECT_FALSE(list.Write(path_, key_, volume_id_, 5).ok());  // (before: waited for a reader)
  RecentlyUnlinked loaded;
  loaded.Load(path_, key_, volume_id_, 5);  // nor waits for a writer
  EXPECT_TRUE(loaded.empty());
}

}  // namespace
}  // namespace scone::fs
