#include "fs/journal.h"

#include <errno.h>
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "os/syscalls.h"

namespace scone::fs {
namespace {

constexpr size_t kFrameHeaderSize = 4 + 8 + crypto::kNonceSize;
constexpr size_t kMaxBodySize = 1u << 30;
constexpr size_t kMaxPathSize = 4096;
constexpr uint8_t kLazyBit = 0x80;
// How far ahead of the records the file is written with zeros (see journal.h).
constexpr uint64_t kZeroAhead = 1u << 20;
// A frame body up to this long is read without asking for the file's length first (ReadNew).
constexpr uint32_t kReadWithoutLength = 64u << 10;
// What a file system allocates at a time.
constexpr uint64_t kBlockSize = 4096;
// Zeros to write ahead with, and to compare a tail against.
const uint8_t kZeroBlock[64u << 10] = {};

Bytes FrameHeader(uint32_t body_size, uint64_t seq, const uint8_t* nonce) {
  ByteWriter w;
  w.U32(body_size);
  w.U64(seq);
  w.Raw(ByteSpan(nonce, crypto::kNonceSize));
  return w.Take();
}

}  // namespace

Bytes JournalRecord::EncodeHead() const {
  ByteWriter w;
  w.U8(static_cast<uint8_t>(kind) | (lazy ? kLazyBit : 0));
  if (kind == Kind::kSyncApplied) w.U64(upto);
  w.Str(path);
  w.Str(to);
  entry.Encode(w);
  w.U64(inplace_chunks.size());
  for (uint64_t c : inplace_chunks) w.U64(c);
  w.U64(entries.size());
  for (const auto& [index, e] : entries) {
    w.U64(index);
    w.Raw(e.nonce);
    w.Raw(e.tag);
  }
  w.U64(slot_chunks.size());
  for (uint64_t c : slot_chunks) w.U64(c);
  return w.Take();
}

bool JournalRecord::Decode(ByteSpan body, JournalRecord* out) {
  ByteReader r(body);
  uint8_t kind;
  uint64_t count;
  if (!r.U8(&kind)) return false;
  out->lazy = (kind & kLazyBit) != 0;
  kind &= ~kLazyBit;
  if (kind < 1 || kind > static_cast<uint8_t>(Kind::kSyncApplied)) return false;
  out->kind = static_cast<Kind>(kind);
  if (out->kind == Kind::kSyncApplied && (!r.U64(&out->upto) || !out->lazy)) return false;
  if (!r.Str(&out->path, kMaxPathSize) || !r.Str(&out->to, kMaxPathSize) ||
      !FileEntry::Decode(r, &out->entry) || !r.U64(&count) || count > r.remaining() / 8) {
    return false;
  }
  out->inplace_chunks.resize(count);
  for (uint64_t& c : out->inplace_chunks) {
    if (!r.U64(&c)) return false;
  }
  if (!r.U64(&count) || count > r.remaining() / (8 + kEntrySize)) return false;
  out->entries.resize(count);
  for (auto& [index, e] : out->entries) {
    if (!r.U64(&index) || !r.Raw(e.nonce) || !r.Raw(e.tag)) return false;
  }
  if (!r.U64(&count) || count > r.remaining() / 8) return false;
  out->slot_chunks.resize(count);
  for (uint64_t& c : out->slot_chunks) {
    if (!r.U64(&c)) return false;
  }
  if (r.remaining() != count * kChunkSize) return false;
  out->slot_data.resize(r.remaining());
  return r.Raw(out->slot_data);
}

Result<std::unique_ptr<Journal>> Journal::Open(const std::string& path, SecretBytes key,
                                               const std::array<uint8_t, 16>& volume_id) {
  // O_NOATIME: every process reads the journal at each catch-up, and each read after an append
  // moved its atime (relatime), a metadata write of the file system's own journal per catch-up.
  // Only the owner may ask for it (EPERM for another user, which then goes without).
  auto opened = os::File::Open(path, O_RDWR | O_CREAT | O_NOATIME, 0600);
  if (!opened.ok() && opened.status().sys_errno() == EPERM) opened = os::File::Open(path, O_RDWR | O_CREAT, 0600);
  SCONE_ASSIGN_OR_RETURN(os::File file, std::move(opened));
  SCONE_ASSIGN_OR_RETURN(uint64_t size, file.Size());
  std::unique_ptr<Journal> journal(new Journal(std::move(file), std::move(key), volume_id));
  journal->size_ = size;
  journal->end_ = size;  // until ReadFrom finds the last record
  return journal;
}

// A tail of zeros is what a file system may leave of an append cut short (size updated, data
// not): torn, not damaged.
Result<bool> Journal::IsZeroFrom(uint64_t offset) const {
  Bytes buffer(sizeof(kZeroBlock));
  while (offset < size_) {
    SCONE_ASSIGN_OR_RETURN(size_t n, file_.ReadAt(offset, buffer));
    if (n == 0) break;
    if (std::memcmp(buffer.data(), kZeroBlock, n) != 0) return false;
    offset += n;
  }
  return true;
}

// A frame's tag binds the volume, the size and sequence (the header's first 12 bytes) and the body.
Result<bool> Journal::Authentic(const uint8_t* header, ByteSpan body, const uint8_t* tag) const {
  return crypto::Authentic(
      mac_.Open(ByteSpan(header + 12, crypto::kNonceSize), {volume_id_, ByteSpan(header, 12), body}, {}, nullptr, tag));
}

// Looks for an authentic durable record with a sequence number after `seq` at any offset from
// `from` on (a bad record's length cannot be trusted to find the next one). Only the crash
// path pays for this scan: a cheap filter on the sequence field comes before authentication.
Result<bool> Journal::DurableRecordAfter(uint64_t from, uint64_t seq) const {
  if (from >= size_) return false;
  Bytes tail(size_ - from);
  SCONE_ASSIGN_OR_RETURN(size_t got, file_.ReadAt(from, tail));
  tail.resize(got);
  constexpr uint64_t kSeqWindow = uint64_t{1} << 24;
  for (size_t at = 0; at + kFrameHeaderSize + crypto::kTagSize <= tail.size(); ++at) {
    ByteReader r(ByteSpan(tail.data() + at, kFrameHeaderSize));
    uint32_t body_size;
    uint64_t record_seq;
    r.U32(&body_size);
    r.U64(&record_seq);
    if (record_seq <= seq || record_seq - seq > kSeqWindow || body_size == 0) continue;
    if (at + kFrameHeaderSize + uint64_t{body_size} + crypto::kTagSize > tail.size()) continue;
    const uint8_t* header = tail.data() + at;
    ByteSpan body(header + kFrameHeaderSize, body_size);
    SCONE_ASSIGN_OR_RETURN(bool authentic, Authentic(header, body, header + kFrameHeaderSize + body_size));
    if (!authentic) continue;
    JournalRecord record;
    if (JournalRecord::Decode(body, &record) && !record.lazy) return true;
  }
  return false;
}

Status Journal::Refresh() {
  SCONE_ASSIGN_OR_RETURN(size_, file_.Size());
  return Status::Ok();
}

Result<bool> Journal::HasDataAt(uint64_t offset, bool* at_end) const {
  uint8_t header[kFrameHeaderSize];
  SCONE_ASSIGN_OR_RETURN(size_t n, file_.ReadAt(offset, MutableByteSpan(header, sizeof(header))));
  if (at_end != nullptr) *at_end = n == 0;
  return std::memcmp(header, kZeroBlock, n) != 0;
}

Result<bool> Journal::HasByteAt(uint64_t offset) const {
  uint8_t byte;
  SCONE_ASSIGN_OR_RETURN(size_t n, file_.ReadAt(offset, MutableByteSpan(&byte, 1)));
  return n == 1;
}

// The bytes of the journal from some offset on, read ahead in blocks: catching up with a few
// small records (another process's appends) costs one pread, not three per record. The
// read-ahead starts small and doubles with each refill: past the records lie the zeros written
// ahead, which a catch-up should not read by the quarter MiB (nor by 32 KiB: one nginx worker
// catches up with the other's record of a log line, 200 bytes, before each of its own).
class Journal::Reader {
 public:
  Reader(const os::File& file, uint64_t size, uint64_t read_ahead) : file_(file), size_(size), read_ahead_(read_ahead) {}
  // [at, at + len) of the journal, or nullptr where the file ends first (a torn append).
  Result<const uint8_t*> Get(uint64_t at, size_t len) {
    if (at < start_ || at + len > start_ + buffer_.size()) {
      if (at + len > size_) return nullptr;
      // A frame longer than the read ahead comes with the read ahead after it: the header of the
      // next one (or the zeros that end the journal) in the same call.
      const uint64_t want = len > read_ahead_ ? len + read_ahead_ : read_ahead_;
      buffer_.resize(std::max<uint64_t>(len, std::min<uint64_t>(want, size_ - at)));
      read_ahead_ = std::min(read_ahead_ * 2, kMaxReadAhead);
      SCONE_ASSIGN_OR_RETURN(size_t got, file_.ReadAtLeast(at, buffer_, len));
      buffer_.resize(got);
      start_ = at;
      known_end_ = std::max(known_end_, at + got);
      if (got < len) return nullptr;
    }
    return buffer_.data() + (at - start_);
  }
  // How far the file is known to reach (the end of the furthest byte read).
  uint64_t known_end() const { return known_end_; }

 private:
  static constexpr uint64_t kMaxReadAhead = 256u << 10;
  const os::File& file_;
  const uint64_t size_;
  uint64_t read_ahead_;
  Bytes buffer_;
  uint64_t start_ = 0;
  uint64_t known_end_ = 0;
};

Result<std::vector<JournalRecord>> Journal::ReadFrom(uint64_t first_seq, uint64_t* start, bool whole) {
  return ReadWithin(first_seq, start, whole, size_, nullptr);
}

Result<std::vector<JournalRecord>> Journal::ReadNew(uint64_t first_seq, uint64_t* start, bool* ended_at_start) {
  return ReadWithin(first_seq, start, /*whole=*/false, UINT64_MAX, ended_at_start);
}

Result<std::vector<JournalRecord>> Journal::ReadWithin(uint64_t first_seq, uint64_t* start, bool whole,
                                                       uint64_t limit, bool* ended_at_start) {
  std::vector<JournalRecord> records;
  uint64_t& offset = *start;
  const uint64_t first_offset = offset;
  uint64_t seq = first_seq;
  // A catch-up (ReadNew) expects a few records; a whole read at open, the journal's window.
  Reader reader(file_, limit, limit == UINT64_MAX ? (4u << 10) : (32u << 10));
  read_ended_clean_ = offset >= limit;
  while (offset < limit) {
    SCONE_ASSIGN_OR_RETURN(const uint8_t* header, reader.Get(offset, kFrameHeaderSize));
    if (header == nullptr) {
      // Torn header (the append never completed), or, read without the length, the file's end.
      if (limit == UINT64_MAX) read_ended_clean_ = reader.known_end() <= offset;
      break;
    }
    ByteReader r(ByteSpan(header, kFrameHeaderSize));
    uint32_t body_size;
    uint64_t record_seq;
    r.U32(&body_size);
    r.U64(&record_seq);
    // Read without the file's length (ReadNew): a frame much longer than what was read asks for
    // it first, so that a bad length is judged against the file, not read by the GiB. A frame of
    // a few chunks (a database's page write) is read at once: where the file ends first, the
    // read says so (a torn append).
    if (limit == UINT64_MAX && body_size > kReadWithoutLength &&
        offset + kFrameHeaderSize + body_size + crypto::kTagSize > reader.known_end()) {
      SCONE_RETURN_IF_ERROR(Refresh());
      limit = std::max(size_, reader.known_end());
    }
    // The zeros written ahead (or a torn append's), or a length past the file: the end,
    // unless a durable record follows (zeroed or damaged, not torn).
    if (body_size == 0 || body_size > kMaxBodySize ||
        offset + kFrameHeaderSize + body_size + crypto::kTagSize > limit) {
      read_ended_clean_ = std::memcmp(header, kZeroBlock, kFrameHeaderSize) == 0;
      if (whole) {
        SCONE_ASSIGN_OR_RETURN(bool zero_tail, IsZeroFrom(offset));  // the common case, cheaply
        SCONE_ASSIGN_OR_RETURN(bool durable_after,
                               zero_tail ? Result<bool>(false) : DurableRecordAfter(offset + 1, seq));
        if (durable_after) {
          return DataCorrupted(file_.path() + ": record " + std::to_string(seq) + " at offset " +
                               std::to_string(offset) + (body_size == 0 ? " is zeros" : " has a bad length") +
                               " and is not the last one (journal damaged)");
        }
      }
      break;
    }
    SCONE_ASSIGN_OR_RETURN(const uint8_t* frame,
                           reader.Get(offset, kFrameHeaderSize + body_size + crypto::kTagSize));
    if (frame == nullptr) break;
    header = frame;
    ByteSpan body(frame + kFrameHeaderSize, body_size);
    const uint8_t* tag = frame + kFrameHeaderSize + body_size;
    uint64_t next = offset + kFrameHeaderSize + body_size + crypto::kTagSize;
    SCONE_ASSIGN_OR_RETURN(bool authentic, Authentic(header, body, tag));
    if (!authentic) {
      SCONE_ASSIGN_OR_RETURN(bool zero_tail, IsZeroFrom(offset));
      // Lazy records are appended without a sync, so a crash may keep a later one and lose
      // an earlier one: only a durable record after the bad one proves damage.
      SCONE_ASSIGN_OR_RETURN(bool durable_after, DurableRecordAfter(offset + 1, seq));
      if (next < limit && !zero_tail && durable_after) {
        return DataCorrupted(file_.path() + ": record " + std::to_string(seq) +
                             " at offset " + std::to_string(offset) +
                             " fails authentication and is not the last one (journal damaged)");
      }
      break;  // the last record is torn: it never committed
    }
    if (record_seq != seq) {
      if (record_seq < first_seq && records.empty()) {
        offset = next;  // a record from before the last checkpoint; already applied
        continue;
      }
      return DataCorrupted(file_.path() + ": record at offset " + std::to_string(offset) +
                           " has sequence " + std::to_string(record_seq) + ", expected " +
                           std::to_string(seq));
    }
    JournalRecord record;
    if (!JournalRecord::Decode(body, &record)) {
      return DataCorrupted(file_.path() + ": record " + std::to_string(seq) + " is malformed");
    }
    record.seq = seq;
    records.push_back(std::move(record));
    ++seq;
    offset = next;
  }
  if (offset >= limit) read_ended_clean_ = true;
  end_ = offset;
  size_ = std::max(size_, reader.known_end());  // others may have lengthened it
  if (ended_at_start != nullptr) *ended_at_start = reader.known_end() <= first_offset;
  return records;
}

Status Journal::Append(uint64_t seq, const JournalRecord& record, bool durable) {
  Bytes head = record.EncodeHead();
  size_t body_size = head.size() + record.slot_data.size();
  if (body_size > kMaxBodySize) return Internal("journal record too large");
  uint8_t nonce[crypto::kNonceSize];
  crypto::FreshNonce(nonce);
  Bytes frame = FrameHeader(static_cast<uint32_t>(body_size), seq, nonce);
  uint8_t tag[crypto::kTagSize];
  SCONE_RETURN_IF_ERROR(mac_.Seal(ByteSpan(nonce, sizeof(nonce)),
                                  {volume_id_, ByteSpan(frame.data(), 12), head, record.slot_data},
                                  {}, nullptr, tag));
  const uint64_t record_end = end_ + frame.size() + body_size + sizeof(tag);
  // Room for the record and a zero header after it; the zeros reach the disk with the
  // record's sync (or the next one).
  SCONE_RETURN_IF_ERROR(Reserve(record_end - end_));
  SCONE_RETURN_IF_ERROR(file_.WriteVectorAt(
      end_, {frame, head, record.slot_data, ByteSpan(tag, sizeof(tag))}));
  if (durable) SCONE_RETURN_IF_ERROR(file_.DataSync());
  end_ = record_end;
  return Status::Ok();
}

Status Journal::Reserve(uint64_t bytes) {
  const uint64_t needed = end_ + bytes + kFrameHeaderSize;
  if (needed <= size_) return Status::Ok();
  SCONE_ASSIGN_OR_RETURN(size_, file_.Size());  // never write zeros over what is there
  return WriteZerosAhead(needed);
}

Status Journal::WriteZerosAhead(uint64_t needed) {
  if (needed <= size_) return Status::Ok();
  uint64_t target = (needed + kZeroAhead - 1) / kZeroAhead * kZeroAhead;
  // The program's file-size limit (ulimit -f) binds the runtime's writes too, and the kernel
  // answers a write past it with SIGXFSZ, which ends a program that never wrote a large file:
  // zeros ahead stop at the limit, and a record past it fails its commit with EFBIG.
  if (const std::optional<uint64_t> limit = os::FileSizeLimit()) {
    if (needed > *limit) {
      return IoError(file_.path() + ": the journal would pass the file-size limit (" + std::to_string(*limit) +
                         " bytes, ulimit -f)",
                     EFBIG);
    }
    target = std::min(target, *limit);
  }
  // Nor more than a quarter of the disk's free room: on a nearly full disk the step ahead took
  // the room that the commit's own chunks needed next.
  if (auto free = file_.FreeSpace(); free.ok() && target - size_ > *free / 4) {
    target = std::max(needed, size_ + *free / 4);
    target = (target + kBlockSize - 1) / kBlockSize * kBlockSize;
  }
  for (uint64_t at = size_; at < target;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof(kZeroBlock), target - at));
    Status written = file_.WriteAt(at, ByteSpan(kZeroBlock, n));
    if (!written.ok()) {
      // Zeros past the record are a convenience: on a disk with room for the record but not
      // for a whole step ahead, the record still goes in, and what the zeros took past it goes
      // back to the disk (the program's next write needs it more).
      if (at < needed) {
        (void)file_.Truncate(size_);  // and what it got goes back: the next try needs it
        return written;
      }
      target = (needed + kBlockSize - 1) / kBlockSize * kBlockSize;
      (void)file_.Truncate(target);
      break;
    }
    at += n;
  }
  size_ = target;
  return Status::Ok();
}

Status Journal::TruncateTo(uint64_t offset) {
  if (offset >= size_) SCONE_RETURN_IF_ERROR(Refresh());  // read without its length (ReadNew)
  if (offset >= size_) return Status::Ok();
  SCONE_RETURN_IF_ERROR(file_.Truncate(offset));
  SCONE_RETURN_IF_ERROR(file_.DataSync());
  size_ = end_ = offset;
  return Status::Ok();
}

Result<bool> Journal::DropZerosAhead() {
  SCONE_ASSIGN_OR_RETURN(size_, file_.Size());
  const uint64_t keep = (end_ + kBlockSize - 1) / kBlockSize * kBlockSize;
  if (size_ <= keep) return false;
  SCONE_RETURN_IF_ERROR(file_.Truncate(keep));
  size_ = keep;
  return true;
}

Status Journal::Reset() {
  SCONE_RETURN_IF_ERROR(file_.Truncate(0));
  SCONE_RETURN_IF_ERROR(file_.DataSync());
  size_ = end_ = 0;
  return Status::Ok();
}

}  // namespace scone::fs
