#include "console/reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace scone::console {
namespace {

// A writer of one stream, as the runtime writes it.
struct Writer {
  Writer(const SecretBytes& key, StreamId parent_id = {}) : id(NewStreamId()), parent(parent_id) {
    cipher = StreamCipher(key, id);
  }
  Bytes Record(RecordType type, ByteSpan payload) {
    Bytes out(kOverhead + payload.size());
    SealRecord(*cipher, type, id, next++, payload, out.data());
    return out;
  }
  Bytes Start() { return Record(RecordType::kStart, StartPayload(parent, Channel::kStdout)); }
  Bytes Data(std::string_view text) { return Record(RecordType::kData, AsBytes(text)); }
  Bytes Fork(const StreamId& child) { return Record(RecordType::kFork, child); }
  Bytes End() { return Record(RecordType::kEnd, {}); }
  StreamId id, parent;
  uint64_t next = 0;
  std::unique_ptr<crypto::Aes256Gcm> cipher;
};

struct Result {
  Status status;
  std::string printed;
};

Result Read(const SecretBytes& key, const std::vector<Bytes>& records, size_t piece = 7) {
  Bytes all;
  for (const Bytes& r : records) all.insert(all.end(), r.begin(), r.end());
  Result out;
  Reader reader(key.Clone(), [&](ByteSpan p, int, Channel) {
    out.printed.append(reinterpret_cast<const char*>(p.data()), p.size());
    return Status::Ok();
  });
  for (size_t at = 0; at < all.size() && out.status.ok(); at += piece) {  // in odd pieces
    out.status = reader.Consume(ByteSpan(all).subspan(at, std::min(piece, all.size() - at)));
  }
  if (out.status.ok()) out.status = reader.Finish();
  return out;
}

class ReaderTest : public ::testing::Test {
 protected:
  ReaderTest() : key_(crypto::RandomKey()), parent_(key_) {
    child_ = std::make_unique<Writer>(key_, parent_.id);
    records_ = {parent_.Start(), parent_.Data("one\n"), parent_.Fork(child_->id), child_->Start(),
                child_->Data("child\n"), parent_.Data("two\n"), child_->End(), parent_.Data("three\n"),
                parent_.End()};
  }
  SecretBytes key_;
  Writer parent_;
  std::unique_ptr<Writer> child_;
  std::vector<Bytes> records_;
};

TEST_F(ReaderTest, IntactGivesEveryByteInOrder) {
  Result r = Read(key_, records_);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.printed, "one\nchild\ntwo\nthree\n");
}

TEST_F(ReaderTest, FlippedBitStopsBeforeTheRecord) {
  records_[5][kHeaderSize] ^= 1;
  Result r = Read(key_, records_);
  EXPECT_EQ(r.status.code(), Code::kDataCorrupted);
  EXPECT_NE(r.status.message().find("record 6 "), std::string::npos) << r.status.message();
  EXPECT_EQ(r.printed, "one\nchild\n");
}

TEST_F(ReaderTest, RemovedSwappedDuplicatedRecords) {
  auto removed = records_;
  removed.erase(removed.begin() + 5);
  EXPECT_NE(Read(key_, removed).status.message().find("missing here"), std::string::npos);
  auto swapped = records_;
  std::swap(swapped[5], swapped[7]);
  EXPECT_NE(Read(key_, swapped).status.message().find("record 6 "), std::string::npos);
  auto duplicated = records_;
  duplicated.insert(duplicated.begin() + 2, records_[1]);
  EXPECT_NE(Read(key_, duplicated).status.message().find("again"), std::string::npos);
}

TEST_F(ReaderTest, MissingEndsAndStreams) {
  auto no_end = records_;
  no_end.pop_back();
  Result r = Read(key_, no_end);
  EXPECT_NE(r.status.message().find("no final record"), std::string::npos) << r.status.message();
  EXPECT_EQ(r.printed, "one\nchild\ntwo\nthree\n");  // all of it authentic, and said to be incomplete
  std::vector<Bytes> no_child;
  for (size_t i : {0, 1, 2, 5, 7, 8}) no_child.push_back(records_[i]);
  EXPECT_NE(Read(key_, no_child).status.message().find("missing: removed"), std::string::npos);
  std::vector<Bytes> orphan;
  for (size_t i : {3, 4, 6}) orphan.push_back(records_[i]);
  EXPECT_FALSE(Read(key_, orphan).status.ok());
  auto cut = records_;
  cut.back().resize(cut.back().size() - 1);
  EXPECT_NE(Read(key_, cut).status.message().find("cut short"), std::string::npos);
  EXPECT_NE(Read(key_, {}).status.message().find("no console records"), std::string::npos);
}

TEST_F(ReaderTest, WrongKeyAndPlaintext) {
  Result r = Read(crypto::RandomKey(), records_);
  EXPECT_NE(r.status.message().find("record 1 "), std::string::npos);
  EXPECT_NE(r.status.message().find("key"), std::string::npos);
  EXPECT_EQ(r.printed, "");
  Result plain = Read(key_, {Bytes{'h', 'i', '\n'}});
  EXPECT_NE(plain.status.message().find("not a console record"), std::string::npos) << plain.status.message();
}

}  // namespace
}  // namespace scone::console
