// Reads a shielded console's records back (`scone console decrypt`): authenticates every record,
// checks each stream's numbering, its start and its final record, and that every stream a
// process announced for a child is there and every child stream was announced by its parent.
//
// Plaintext is handed to the sink as soon as its record is authentic and in its place in its
// stream, and its stream belongs to the run the input's first stream started (every stream's
// start record names its run): what the sink got before an error is authentic and of one run,
// but may be incomplete (the error says which stream lost what). Records of different streams
// (processes) may interleave in any order: that order is the kernel's and is not authenticated.
// Records come binary or as base64 lines (a terminal's), in any mix.
//
// Lines that are no records are skipped and counted, never printed: a capture's own lines
// (`script`'s header and footer, blank lines). Such a line holds text only and at least one
// character base64 has not (a space, a colon...): a line of base64 characters alone, or bytes that
// are no text, may be a damaged record and stay an error. Skipping hides nothing of the program's
// output: every record still authenticates and numbers as before, so a record removed, changed
// into such a line or moved is reported as before.
//
// A pure core: bytes in through Consume, plaintext out through the sink, no I/O.
// Thread-safety: none (one reader per input).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "console/record.h"
#include "crypto/secret.h"

namespace scone::console {

class Reader {
 public:
  // `stream`: numbered in order of first appearance, from 1.
  using Sink = std::function<Status(ByteSpan plaintext, int stream, Channel channel)>;
  Reader(SecretBytes key, Sink sink);

  // The next bytes of the input. An error (kDataCorrupted) names the record (numbered from 1 in
  // the input's order, with its byte offset) and its stream; nothing after it is read.
  Status Consume(ByteSpan bytes);
  // End of input: every stream must have ended, every announced child be there. The error lists
  // each problem on a line of its own.
  Status Finish();

  // `scone console decrypt --runs`: further runs may follow, each beginning once the run before
  // is complete (every stream ended and accounted for); `begins` hears of each (its number from
  // 1, the input's record number). Without it, a stream of another run is damage.
  void AcceptRunsInSequence(std::function<void(size_t run, uint64_t record)> begins) {
    runs_in_sequence_ = true;
    run_begins_ = std::move(begins);
  }

  uint64_t records() const { return records_; }
  // Lines that were no records (skipped, never printed).
  uint64_t skipped_lines() const { return skipped_lines_; }
  size_t runs() const { return runs_.size(); }
  size_t streams() const { return streams_.size(); }

 private:
  struct Stream {
    int number;  // in order of first appearance, from 1
    std::unique_ptr<crypto::Aes256Gcm> cipher;
    uint64_t next = 0;
    bool ended = false;
    bool root = false;
    StartInfo start;
    Channel channel = Channel::kStdout;
    uint64_t last_record = 0;  // the input's record number of its latest record
    std::vector<std::pair<StreamId, uint64_t>> children;  // announced, with the announcing record
  };
  Status One(ByteSpan record, const RecordHeader& h);
  // The text record at the start of `rest`: its line's size in *line (0: incomplete), decoded
  // into text_record_. False (and why) if it is no record.
  bool TakeTextRecord(ByteSpan rest, size_t* line, RecordHeader* h, std::string* why);
  // Whether `rest` starts with a line that is no record (see above): its size with its '\n' in
  // *line. kMore: it may be one, its end has not come yet (`at_end`: the input's end is its end).
  enum class LineKind { kNoRecord, kOther, kMore };
  static LineKind NonRecordLine(ByteSpan rest, bool at_end, size_t* line);
  std::string Where(uint64_t offset) const;
  std::string Describe(const Stream& s) const;
  std::vector<std::string> RunProblems(const StreamId& run) const;

  SecretBytes key_;
  Sink sink_;
  Bytes pending_;  // an incomplete record's bytes
  uint64_t offset_ = 0;  // of pending_'s first byte in the input
  uint64_t records_ = 0;
  uint64_t skipped_lines_ = 0;
  std::map<StreamId, Stream> streams_;
  Bytes plain_;
  Bytes text_record_;
  std::vector<StreamId> runs_;  // the input's runs, the current last
  bool runs_in_sequence_ = false;
  std::function<void(size_t, uint64_t)> run_begins_;
  bool failed_ = false;
};

}  // namespace scone::console
