#include "fs/journal.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "testing/temp_dir.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

JournalRecord Commit(uint64_t chunk, char fill) {
  JournalRecord r;
  r.kind = JournalRecord::Kind::kCommit;
  r.path = "some/file";
  r.entry.size = 12345;
  r.inplace_chunks = {7, 8};
  r.slot_chunks.push_back(chunk);
  r.slot_data.assign(kChunkSize, static_cast<uint8_t>(fill));
  ChunkEntry e;
  e.nonce[0] = 1;
  r.entries.emplace_back(chunk, e);
  return r;
}

class JournalTest : public ::testing::Test {
 protected:
  std::unique_ptr<Journal> OpenJournal() {
    auto j = Journal::Open(path_, key_.Clone(), volume_id_);
    EXPECT_TRUE(j.ok()) << j.status().message();
    return j.ok() ? std::move(*j) : nullptr;
  }
  testing::TempDir tmp_;
  std::string path_ = tmp_ / "journal";
  SecretBytes key_ = crypto::RandomKey();
  std::array<uint8_t, 16> volume_id_{1, 2, 3};
};

TEST_F(JournalTest, RecordsRoundTripInOrder) {
  auto j = OpenJournal();
  for (uint64_t seq = 5; seq < 8; ++seq) ASSERT_TRUE(j->Append(seq, Commit(seq, 'a' + seq)).ok());
  auto records = *OpenJournal()->ReadFrom(5);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[2].slot_chunks[0], 7u);
  EXPECT_EQ(records[2].SlotImage(0)[0], 'a' + 7);
  EXPECT_EQ(records[2].entries[0].second.nonce[0], 1);
  EXPECT_EQ(records[0].inplace_chunks, (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(records[0].path, "some/file");
}

TEST_F(JournalTest, LinkRecordsRoundTrip) {
  JournalRecord link;
  link.kind = JournalRecord::Kind::kLink;
  link.path = "objects/ab/tmp_obj_x";
  link.to = "objects/ab/cdef";
  link.entry.file_id[0] = 9;
  ASSERT_TRUE(OpenJournal()->Append(1, link).ok());
  auto records = *OpenJournal()->ReadFrom(1);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].kind, JournalRecord::Kind::kLink);
  EXPECT_EQ(records[0].path, link.path);
  EXPECT_EQ(records[0].to, link.to);
  EXPECT_EQ(records[0].entry.file_id, link.entry.file_id);
}

TEST_F(JournalTest, TornTailIsDroppedAtEveryCutPoint) {
  auto j = OpenJournal();
  ASSERT_TRUE(j->Append(1, Commit(1, 'x')).ok());
  uint64_t first = std::filesystem::file_size(path_);
  ASSERT_TRUE(j->Append(2, Commit(2, 'y')).ok());
  std::string full = testing::RawFile(path_);
  for (uint64_t cut = first; cut < full.size(); cut += 61) {
    for (bool zero_filled : {false, true}) {
      // Cut short, or of full length with the unwritten part read back as zeros.
      std::string torn = full.substr(0, cut);
      if (zero_filled) torn.resize(full.size(), '\0');
      testing::WriteRaw(path_, torn);
      auto records = OpenJournal()->ReadFrom(1);
      ASSERT_TRUE(records.ok()) << cut << ": " << records.status().message();
      ASSERT_EQ(records->size(), 1u) << "cut at " << cut;
    }
  }
}

TEST_F(JournalTest, DamageBeforeTheTailIsReportedNotSkipped) {
  auto j = OpenJournal();
  ASSERT_TRUE(j->Append(1, Commit(1, 'x')).ok());
  ASSERT_TRUE(j->Append(2, Commit(2, 'y')).ok());
  std::string raw = testing::RawFile(path_);
  raw[100] ^= 1;  // inside record 1's body
  testing::WriteRaw(path_, raw);
  auto records = OpenJournal()->ReadFrom(1);
  ASSERT_FALSE(records.ok());
  EXPECT_NE(records.status().message().find("journal damaged"), std::string::npos);
}

TEST_F(JournalTest, RecordsFromAnotherVolumeOrKeyFailAuthentication) {
  ASSERT_TRUE(OpenJournal()->Append(1, Commit(1, 'x')).ok());
  auto other = std::move(Journal::Open(path_, key_.Clone(), std::array<uint8_t, 16>{9})).value();
  EXPECT_TRUE(other->ReadFrom(1)->empty());  // a lone record that fails is a torn tail
  auto wrong_key = std::move(Journal::Open(path_, crypto::RandomKey(), volume_id_)).value();
  EXPECT_TRUE(wrong_key->ReadFrom(1)->empty());
}

TEST_F(JournalTest, ReorderedSequenceIsRejected) {
  auto j = OpenJournal();
  ASSERT_TRUE(j->Append(1, Commit(1, 'x')).ok());
  ASSERT_TRUE(j->Append(3, Commit(3, 'z')).ok());  // 2 is missing
  auto records = OpenJournal()->ReadFrom(1);
  ASSERT_FALSE(records.ok());
  EXPECT_NE(records.status().message().find("expected 2"), std::string::npos);
}

TEST(JournalRecordTest, MalformedBodiesAreRejectedNotCrashing) {
  JournalRecord record = Commit(3, 'q');
  Bytes good = record.EncodeHead();
  good.insert(good.end(), record.slot_data.begin(), record.slot_data.end());
  JournalRecord out;
  ASSERT_TRUE(JournalRecord::Decode(good, &out));
  for (size_t n = 0; n < good.size(); n += 7) {
    EXPECT_FALSE(JournalRecord::Decode(ByteSpan(good.data(), n), &out)) << n;
  }
  Bytes huge_count = good;
  for (int i = 0; i < 8; ++i) huge_count[1 + 4 + 9 + 4 + 16 + 1 + 8 + 32 + i] = 0xff;
  EXPECT_FALSE(JournalRecord::Decode(huge_count, &out));
}

}  // namespace
}  // namespace scone::fs
