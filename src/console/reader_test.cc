#include "console/reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace scone::console {
namespace {

// A writer of one stream, as the runtime writes it.
struct Writer {
  Writer(const SecretBytes& key, StreamId parent_id = {}, StreamId run_id = {1}) : id(NewStreamId()), parent(parent_id), run(run_id) {
    cipher = StreamCipher(key, id);
  }
  Bytes Record(RecordType type, ByteSpan payload) {
    Bytes out(kOverhead + payload.size());
    SealRecord(*cipher, type, id, next++, payload, out.data());
    return out;
  }
  Bytes Start() { return Record(RecordType::kStart, StartPayload({parent, channel, run, siblings})); }
  Bytes Data(std::string_view text) { return Record(RecordType::kData, AsBytes(text)); }
  Bytes Fork(const StreamId& child) { return Record(RecordType::kFork, child); }
  Bytes End() { return Record(RecordType::kEnd, {}); }
  StreamId id, parent, run;
  Channel channel = Channel::kStdout;
  std::vector<StreamId> siblings;
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

// A capture's own lines (script's header and footer, blank lines) between records are skipped and
// counted, never printed; the records around them are checked as always.
TEST_F(ReaderTest, LinesThatAreNoRecordsAreSkippedNotPrinted) {
  auto text = [](const Bytes& record) {
    std::string line(TextRecordSize(record.size()), '\0');
    line.resize(EncodeTextRecord(record, line.data()));
    return Bytes(line.begin(), line.end());
  };
  auto line = [](std::string_view s) { return Bytes(s.begin(), s.end()); };
  const Bytes header = line("Script started on 2026-12-03 18:00:00+00:00 [COMMAND=\"scone run\" <not executed on terminal>]\n");
  const Bytes footer = line("\r\nScript done on 2026-12-03 18:00:01+00:00 [COMMAND_EXIT_CODE=\"0\"]");  // no '\n' at the end
  std::vector<Bytes> captured = {header};
  for (size_t i = 0; i < records_.size(); ++i) {
    captured.push_back(i % 2 ? text(records_[i]) : records_[i]);  // binary and text records mixed
    if (i == 3) captured.push_back(line("\n\r\n  \t\n"));
    if (i == 5) captured.push_back(line("\x1b[?2004l\r a prompt $ \n"));
  }
  captured.push_back(footer);
  for (size_t piece : {1, 7, 4096}) {
    Bytes all;
    for (const Bytes& b : captured) all.insert(all.end(), b.begin(), b.end());
    std::string printed;
    Reader reader(key_.Clone(), [&](ByteSpan p, int, Channel) {
      printed.append(reinterpret_cast<const char*>(p.data()), p.size());
      return Status::Ok();
    });
    Status status;
    for (size_t at = 0; at < all.size() && status.ok(); at += piece) {
      status = reader.Consume(ByteSpan(all).subspan(at, std::min(piece, all.size() - at)));
    }
    if (status.ok()) status = reader.Finish();
    ASSERT_TRUE(status.ok()) << status.message();
    EXPECT_EQ(printed, "one\nchild\ntwo\nthree\n");
    EXPECT_EQ(reader.skipped_lines(), 7u);  // header, 3 blank, the prompt, the footer's 2
    EXPECT_EQ(reader.records(), records_.size());
  }
  // Around skipped lines, a removed or changed record is still named.
  std::vector<Bytes> removed = {header, records_[0], line("\n"), records_[1], records_[2], records_[3], records_[4]};
  removed.insert(removed.end(), records_.begin() + 6, records_.end());  // parent's "two" removed
  EXPECT_NE(Read(key_, removed).status.message().find("missing here"), std::string::npos);
  auto flipped = records_;
  flipped[5][kHeaderSize] ^= 1;
  flipped.insert(flipped.begin(), header);
  EXPECT_NE(Read(key_, flipped).status.message().find("authentication failed"), std::string::npos);
  // A record's line turned into a line of base64 that is no record: an error, not skipped.
  std::vector<Bytes> garbled = {header, line("QUJDRA==\r\n")};
  Result r = Read(key_, garbled);
  EXPECT_EQ(r.status.code(), Code::kDataCorrupted);
  EXPECT_NE(r.status.message().find("record 1 (byte " + std::to_string(header.size()) + ")"), std::string::npos)
      << r.status.message();
  // Only lines: no record at all is still an error.
  EXPECT_NE(Read(key_, {header}).status.message().find("no console records"), std::string::npos);
}

// Two first streams on one file (stdout and stderr opened apart): each names the other, so one
// removed whole is evident.
TEST_F(ReaderTest, RemovedSiblingFirstStream) {
  Writer out(key_), err(key_);
  err.channel = Channel::kStderr;
  out.siblings = {err.id};
  err.siblings = {out.id};
  std::vector<Bytes> both = {out.Start(), out.Data("o\n"), err.Start(), err.Data("e\n"), out.End(), err.End()};
  ASSERT_TRUE(Read(key_, both).status.ok());
  std::vector<Bytes> only_out = {both[0], both[1], both[4]};
  Result r = Read(key_, only_out);
  EXPECT_NE(r.status.message().find("another first stream of its run"), std::string::npos) << r.status.message();
}

// Another run's stream under the same key: refused at its start record, nothing of it printed.
TEST_F(ReaderTest, AnotherRunIsNeverPrinted) {
  Writer other(key_, {}, StreamId{2});
  std::vector<Bytes> mixed = records_;
  mixed.insert(mixed.begin() + 2, {other.Start(), other.Data("OTHER\n"), other.End()});
  Result r = Read(key_, mixed);
  EXPECT_NE(r.status.message().find("another run"), std::string::npos) << r.status.message();
  EXPECT_EQ(r.printed.find("OTHER"), std::string::npos);
}

// With runs in sequence (a log appended at every restart): a complete run may be followed by
// another; one that begins before the run before it is complete is still refused.
TEST_F(ReaderTest, RunsInSequence) {
  Writer other(key_, {}, StreamId{2});
  std::vector<Bytes> after = records_;
  for (Bytes r : {other.Start(), other.Data("second run\n"), other.End()}) after.push_back(r);
  std::vector<size_t> begun;
  Bytes all;
  for (const Bytes& r : after) all.insert(all.end(), r.begin(), r.end());
  std::string printed;
  Reader reader(key_.Clone(), [&](ByteSpan p, int, Channel) {
    printed.append(reinterpret_cast<const char*>(p.data()), p.size());
    return Status::Ok();
  });
  reader.AcceptRunsInSequence([&](size_t run, uint64_t) { begun.push_back(run); });
  ASSERT_TRUE(reader.Consume(all).ok());
  ASSERT_TRUE(reader.Finish().ok());
  EXPECT_EQ(printed, "one\nchild\ntwo\nthree\nsecond run\n");
  EXPECT_EQ(begun, std::vector<size_t>{2});
  EXPECT_EQ(reader.runs(), 2u);
  // The other run's stream before the first run's end: refused, nothing of it printed.
  Writer third(key_, {}, StreamId{3});
  std::vector<Bytes> early = records_;
  early.insert(early.begin() + 3, {third.Start()});
  Bytes bytes;
  for (const Bytes& r : early) bytes.insert(bytes.end(), r.begin(), r.end());
  Reader strict(key_.Clone(), [](ByteSpan, int, Channel) { return Status::Ok(); });
  strict.AcceptRunsInSequence(nullptr);
  Status st = strict.Consume(bytes);
  EXPECT_NE(st.message().find("before this run is complete"), std::string::npos) << st.message();
}

// A terminal's records: base64 lines, whose "\n" the line discipline made "\r\n".
TEST_F(ReaderTest, TextRecordsThroughATerminal) {
  std::vector<Bytes> text;
  for (size_t i = 0; i < records_.size(); ++i) {
    std::string line(TextRecordSize(records_[i].size()), '\0');
    line.resize(EncodeTextRecord(records_[i], line.data()) - 1);
    line += i % 2 ? "\r\n" : "\n";
    text.push_back(Bytes(line.begin(), line.end()));
  }
  Result r = Read(key_, text);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.printed, "one\nchild\ntwo\nthree\n");
  text[5][10] = text[5][10] == 'A' ? 'B' : 'A';
  Result flipped = Read(key_, text);
  EXPECT_NE(flipped.status.message().find("record 6 "), std::string::npos) << flipped.status.message();
  EXPECT_EQ(flipped.printed, "one\nchild\n");
}

TEST(Base64, RoundTripsEverySize) {
  for (size_t n = 0; n < 10; ++n) {
    Bytes in(n);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<uint8_t>(0xf0 + i);
    std::string text(crypto::Base64Size(n), '\0');
    ASSERT_EQ(crypto::Base64Encode(in, text.data()), text.size());
    Bytes out(text.size() / 4 * 3 + 3);
    ASSERT_EQ(crypto::Base64Decode(text, out.data()), static_cast<long>(n)) << text;
    out.resize(n);
    EXPECT_EQ(out, in);
  }
}

}  // namespace
}  // namespace scone::console
