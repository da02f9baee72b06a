#include "console/reader.h"

#include <algorithm>
#include <cstring>

#include "crypto/primitives.h"

namespace scone::console {

Reader::Reader(SecretBytes key, Sink sink) : key_(std::move(key)), sink_(std::move(sink)) {}

std::string Reader::Where(uint64_t offset) const {
  return "record " + std::to_string(records_) + " (byte " + std::to_string(offset) + ")";
}

std::string Reader::Describe(const Stream& s) const {
  return "stream " + std::to_string(s.number) + " (" + ChannelName(s.channel) + (s.root ? ", first process" : "") + ")";
}

bool Reader::TakeTextRecord(ByteSpan rest, size_t* line, RecordHeader* h, std::string* why) {
  static const size_t kMaxLine = TextRecordSize(kOverhead + kMaxPayload) + 16;
  const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(rest.data(), '\n', std::min(rest.size(), kMaxLine)));
  if (nl == nullptr) {
    *line = 0;
    if (rest.size() < kMaxLine) return true;
    *why = "not a console record (a line too long)";
    return false;
  }
  *line = static_cast<size_t>(nl - rest.data()) + 1;
  size_t end = *line - 1;
  while (end > 0 && rest[end - 1] == '\r') --end;  // a terminal's onlcr, or a capture's CRLF
  std::string_view text(reinterpret_cast<const char*>(rest.data()), end);
  text_record_.resize(text.size() / 4 * 3 + 3);
  long n = crypto::Base64Decode(text, text_record_.data());
  if (n < 0 || !ParseHeader(ByteSpan(text_record_.data(), static_cast<size_t>(n)), h, why)) {
    if (why->empty() || n < 0) *why = "not a console record (a line that is no record)";
    return false;
  }
  if (h->RecordSize() != static_cast<size_t>(n)) {
    *why = "cut short or not a console record (a line of " + std::to_string(n) + " bytes)";
    return false;
  }
  text_record_.resize(static_cast<size_t>(n));
  return true;
}

Reader::LineKind Reader::NonRecordLine(ByteSpan rest, bool at_end, size_t* line) {
  // As long as a text record may be (kMaxLine in TakeTextRecord), and a capture's lines are shorter.
  static const size_t kMaxLine = TextRecordSize(kOverhead + kMaxPayload) + 16;
  bool beyond_base64 = false;  // a character no record line holds
  size_t end = 0;
  for (; end < rest.size() && end < kMaxLine; ++end) {
    const uint8_t c = rest[end];
    if (c == '\n') break;
    // Text: printable bytes (UTF-8 too), tabs, a terminal's carriage returns and escape sequences.
    if (c < 0x20 && c != '\t' && c != '\r' && c != 0x1b) return LineKind::kOther;
    if (c == 0x7f) return LineKind::kOther;
    if (!BeginsTextRecord(c) && c != '=' && c != '\r') beyond_base64 = true;
  }
  if (end == kMaxLine) return LineKind::kOther;
  const bool complete = end < rest.size() || (at_end && end > 0);
  if (!complete) return beyond_base64 || rest.empty() ? LineKind::kMore : LineKind::kOther;
  // A line of base64 characters alone may be a damaged record; an empty one is a capture's.
  size_t content = end;
  while (content > 0 && rest[content - 1] == '\r') --content;
  if (!beyond_base64 && content > 0) return LineKind::kOther;
  *line = end < rest.size() ? end + 1 : end;
  return LineKind::kNoRecord;
}

Status Reader::Consume(ByteSpan bytes) {
  if (failed_) return DataCorrupted("input already found damaged");
  pending_.insert(pending_.end(), bytes.begin(), bytes.end());
  size_t pos = 0;
  Status status;
  while (pos < pending_.size()) {
    ByteSpan rest(pending_.data() + pos, pending_.size() - pos);
    RecordHeader h;
    std::string why;
    size_t skipped = 0;
    LineKind kind = NonRecordLine(rest, false, &skipped);
    if (kind == LineKind::kMore) break;
    if (kind == LineKind::kNoRecord) {
      ++skipped_lines_;
      pos += skipped;
      continue;
    }
    if (BeginsTextRecord(rest[0])) {
      size_t line = 0;
      if (!TakeTextRecord(rest, &line, &h, &why)) {
        ++records_;
        status = DataCorrupted(Where(offset_ + pos) + ": " + why);
        break;
      }
      if (line == 0) break;
      ++records_;
      status = One(text_record_, h);
      if (!status.ok()) {
        if (status.code() == Code::kDataCorrupted) status = DataCorrupted(Where(offset_ + pos) + ": " + status.message());
        break;
      }
      pos += line;
      continue;
    }
    if (rest.size() < kHeaderSize) break;
    if (!ParseHeader(rest, &h, &why)) {
      ++records_;
      status = DataCorrupted(Where(offset_ + pos) + ": " + why);
      break;
    }
    if (rest.size() < h.RecordSize()) break;
    ++records_;
    status = One(rest.first(h.RecordSize()), h);
    if (!status.ok()) {
      // The sink's own failure (a --split file it cannot make) is no damage of the input.
      if (status.code() == Code::kDataCorrupted) status = DataCorrupted(Where(offset_ + pos) + ": " + status.message());
      break;
    }
    pos += h.RecordSize();
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(pos));
  offset_ += pos;
  if (!status.ok()) failed_ = true;
  return status;
}

Status Reader::One(ByteSpan record, const RecordHeader& h) {
  auto it = streams_.find(h.stream);
  bool fresh = it == streams_.end();
  Stream created;
  Stream* s;
  if (fresh) {
    created.number = static_cast<int>(streams_.size()) + 1;
    created.cipher = StreamCipher(key_, h.stream);
    s = &created;
  } else {
    s = &it->second;
  }
  plain_.resize(h.size);
  if (!OpenRecord(*s->cipher, h, record, plain_.data()).ok()) {
    return DataCorrupted(std::string("authentication failed: the record was modified") +
                         (records_ == 1 ? ", or the key is not the one this console was written with" : "") +
                         (fresh ? "" : " (" + Describe(*s) + ")"));
  }
  if (fresh) {
    if (h.sequence != 0 || h.type != RecordType::kStart) {
      return DataCorrupted("a stream whose first " + std::to_string(h.sequence) +
                           " records are missing (removed, or the input starts in the middle)");
    }
    it = streams_.emplace(h.stream, std::move(created)).first;
    s = &it->second;
  }
  if (s->ended) return DataCorrupted(Describe(*s) + " goes on after its final record (records appended or replayed)");
  if (h.sequence != s->next) {
    if (h.sequence < s->next) {
      return DataCorrupted(Describe(*s) + ": its record #" + std::to_string(h.sequence) +
                           " again, after #" + std::to_string(s->next - 1) + " (duplicated, replayed or reordered)");
    }
    return DataCorrupted(Describe(*s) + ": record #" + std::to_string(h.sequence) + " follows #" +
                         std::to_string(s->next - 1) + ": " + std::to_string(h.sequence - s->next) +
                         " record(s) missing here (removed or reordered)");
  }
  if ((h.sequence == 0) != (h.type == RecordType::kStart)) {
    return DataCorrupted(Describe(*s) + ": record #" + std::to_string(h.sequence) + " has the wrong type");
  }
  s->next++;
  s->last_record = records_;
  switch (h.type) {
    case RecordType::kStart: {
      StartInfo info;
      if (!ParseStart(ByteSpan(plain_.data(), h.size), &info)) return DataCorrupted("a stream's start record is malformed");
      if (info.channel == Channel::kStdin) {
        return DataCorrupted("a stream of input (scone console encrypt), not a program's output");
      }
      // The first stream names the run; a stream of another (under the same key) is refused
      // before anything of it is printed.
      if (runs_.empty()) runs_.push_back(info.run);
      if (info.run != runs_.back()) {
        std::string refused = "a stream of another run (run " + ShortName(info.run) + "..., this console's is " +
                              ShortName(runs_.back()) + "...): ";
        if (!runs_in_sequence_) return DataCorrupted(refused + "runs appended into one file, or records mixed in");
        // One run after another: the next may begin once the one before is complete.
        std::vector<std::string> open = RunProblems(runs_.back());
        if (!open.empty()) return DataCorrupted(refused + "it begins before this run is complete: " + open.front());
        for (const StreamId& earlier : runs_) {
          if (earlier == info.run) return DataCorrupted(refused + "an earlier run of this input again");
        }
        runs_.push_back(info.run);
        if (run_begins_) run_begins_(runs_.size(), records_);
      }
      s->root = info.parent == StreamId{};
      s->channel = info.channel;
      s->start = std::move(info);
      return Status::Ok();
    }
    case RecordType::kData:
      return sink_(plain_, s->number, s->channel);
    case RecordType::kFork: {
      if (h.size != kStreamIdSize) return DataCorrupted(Describe(*s) + ": a child announcement is malformed");
      StreamId child;
      std::memcpy(child.data(), plain_.data(), kStreamIdSize);
      s->children.push_back({child, records_});
      return Status::Ok();
    }
    case RecordType::kEnd:
      s->ended = true;
      return Status::Ok();
  }
  return Status::Ok();
}

// Whether every stream of `run` is complete: ended, its announced children and its sibling first
// streams there, its parent's announcement of it there. One line per problem.
std::vector<std::string> Reader::RunProblems(const StreamId& run) const {
  std::vector<std::string> problems;
  // A parent names its children (kFork), a child its parent (kStart): both must be there.
  for (const auto& [id, s] : streams_) {
    if (s.start.run != run) continue;
    for (const auto& [child, record] : s.children) {
      if (!streams_.contains(child)) {
        problems.push_back(Describe(s) + " announced a child process's stream (record " + std::to_string(record) +
                           ", stream id " + ShortName(child) + "...) that is missing: removed");
      }
    }
  }
  // The first streams of the run name each other where they share the file, pipe or terminal.
  for (const auto& [id, s] : streams_) {
    if (s.start.run != run) continue;
    for (const StreamId& sibling : s.start.siblings) {
      if (!streams_.contains(sibling)) {
        problems.push_back(Describe(s) + " names another first stream of its run on this file (stream id " +
                           ShortName(sibling) + "...) that is missing: removed");
      }
    }
  }
  for (const auto& [id, s] : streams_) {
    if (s.start.run != run) continue;
    if (!s.ended) {
      problems.push_back(Describe(s) + " has no final record after its record #" + std::to_string(s.next - 1) +
                         " (record " + std::to_string(s.last_record) +
                         "): truncated (the process was killed, or the end was cut); its output above is incomplete");
    }
    if (s.root) continue;
    auto p = streams_.find(s.start.parent);
    bool announced = false;
    if (p != streams_.end()) {
      for (const auto& c : p->second.children) announced = announced || c.first == id;
    }
    if (!announced) {
      problems.push_back(Describe(s) + " belongs to a child process whose parent's stream (id " + ShortName(s.start.parent) +
                         "...) " + (p == streams_.end() ? "is missing: removed" : "never announced it: not of this run"));
    }
  }
  return problems;
}

Status Reader::Finish() {
  if (failed_) return DataCorrupted("input already found damaged");
  std::vector<std::string> problems;
  size_t last_line = 0;
  if (!pending_.empty() && NonRecordLine(pending_, true, &last_line) == LineKind::kNoRecord) {
    ++skipped_lines_;  // a capture's last line without its '\n'
    pending_.clear();
  }
  if (!pending_.empty()) {
    ++records_;
    RecordHeader h;
    std::string why;
    Bytes padded = pending_;
    padded.resize(std::max(padded.size(), kHeaderSize));  // the header's fields that are there
    if (!BeginsTextRecord(pending_[0]) && !ParseHeader(padded, &h, &why)) {
      problems.push_back(Where(offset_) + ": " + why);
    } else {
      problems.push_back(Where(offset_) + ": cut short (" + std::to_string(pending_.size()) +
                         " bytes of a record at the end of the input): truncated");
    }
  }
  if (records_ == 0) {
    problems.push_back("no console records at all (" +
                       (skipped_lines_ == 0 ? std::string("empty input")
                                            : "only " + std::to_string(skipped_lines_) + " line(s) that are no records") +
                       ")");
  }
  for (const StreamId& run : runs_) {
    for (std::string& p : RunProblems(run)) problems.push_back(std::move(p));
  }
  if (problems.empty()) return Status::Ok();
  std::string text;
  for (size_t i = 0; i < problems.size(); ++i) text += (i ? "\n" : "") + problems[i];
  return DataCorrupted(text);
}

}  // namespace scone::console
