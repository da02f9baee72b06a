// The volume's write-ahead journal: the single commit point for every change to a volume.
//
// A change (a file's new chunks and pages, a create, rename or unlink) is durable once its
// record is appended and the journal is fdatasync'ed; it is then applied in place. On open, the
// records after the last checkpoint are replayed, which is idempotent. A record that is torn (a
// crash in the middle of its append) fails authentication and ends the replay: it was never
// committed.
//
// The file is written ahead with zeros (kZeroAhead at a time): an append is then an overwrite
// within the file, whose fdatasync flushes the data alone (no change of the file's length for
// the file system to journal: 0.17 ms against 0.4-0.55 ms per 8 KiB record and sync here).
// A zero frame header is the end of the records.
//
// Record framing: u32 body size | u64 sequence | nonce | body | GMAC tag. The tag (AES-GCM with
// the body as AAD) binds the volume id, the sequence number and the body, so records cannot be
// reordered, moved between volumes or altered. Bodies are not encrypted: they hold ciphertext
// chunks, page tags and paths, all of which are on disk in the clear anyway.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/bytes.h"
#include "crypto/primitives.h"
#include "fs/volume_state.h"
#include "os/file.h"

namespace scone::fs {

struct JournalRecord {
  // kLink gives the file at `path` a second name `to` (a hard link; both name one file id).
  // kSync: no change; appended durably, it makes every record before it durable, and its
  // writer put the window (the lazy records before it) in place before other processes see it.
  // kSyncPending: durable like kSync once on disk, but synced after its writer let go of the
  // writer lock (so that other processes write meanwhile); its writer then puts the window up
  // to it in place and appends a lazy kSyncApplied naming it (`upto`). Until then, the others
  // keep those records in their window.
  enum class Kind : uint8_t {
    kCommit = 1, kCreate = 2, kRename = 3, kUnlink = 4, kLink = 5, kSync = 6, kSyncPending = 7, kSyncApplied = 8
  };
  Kind kind = Kind::kCommit;
  // Published but not yet durable: other processes apply it at once, recovery only if a durable
  // record follows it (its in-place data was not synced before it was appended). Encoded as
  // the high bit of the kind.
  bool lazy = false;
  uint64_t seq = 0;  // not encoded (the frame holds it): set when appended or read
  std::string path;  // rename, link: the source
  std::string to;    // rename, link: the destination
  uint64_t upto = 0; // kSyncApplied: the sequence number of the kSyncPending record it completes
  FileEntry entry;   // commit, create: the file's new entry; link: the file's (its id)
  // commit: chunks written in place before the record (their slots must not be overwritten by
  // older images from earlier records on replay).
  std::vector<uint64_t> inplace_chunks;
  // commit: chunk table entries that changed (sealed chunks, and holes left by truncation).
  std::vector<std::pair<uint64_t, ChunkEntry>> entries;
  // commit: new images of chunks whose old images the durable state still referenced;
  // image i is slot_data[i * kChunkSize ...].
  std::vector<uint64_t> slot_chunks;
  Bytes slot_data;

  ByteSpan SlotImage(size_t i) const { return {slot_data.data() + i * kChunkSize, kChunkSize}; }
  // Everything but slot_data, which follows it in the journal unchanged (no copy).
  Bytes EncodeHead() const;
  static bool Decode(ByteSpan body, JournalRecord* out);
};

class Journal {
 public:
  // Opens (creating if absent) the journal file. `key` authenticates records.
  static Result<std::unique_ptr<Journal>> Open(const std::string& path, SecretBytes key,
                                               const std::array<uint8_t, 16>& volume_id);

  // Reads records with sequence numbers first_seq, first_seq+1, ... from byte `*offset` until
  // the end or the first record that is torn, and leaves `*offset` after the last good one. A
  // bad record followed by valid data is reported as damage, not treated as a torn tail. With
  // `whole`, so is an end (a zero header, a length past the file's end) that a durable record
  // follows: a reader of the whole journal (at open) pays for that look past the end, a
  // catch-up with another process's appends does not.
  Result<std::vector<JournalRecord>> ReadFrom(uint64_t first_seq, uint64_t* offset, bool whole = false);
  Result<std::vector<JournalRecord>> ReadFrom(uint64_t first_seq) {
    uint64_t offset = 0;
    return ReadFrom(first_seq, &offset, /*whole=*/true);
  }
  // A catch-up's read of what other processes appended, from `*offset` on, as ReadFrom but
  // without a stat of the file first: the reads end where the file does. `*ended_at_start`:
  // the file ends at `*offset` itself or before (a checkpoint emptied the journal).
  Result<std::vector<JournalRecord>> ReadNew(uint64_t first_seq, uint64_t* offset, bool* ended_at_start);
  // Re-reads the file's length (other processes append to it, and write zeros ahead).
  Status Refresh();
  // Whether anything but zeros (a record, or a torn append) starts at `offset`: one pread.
  // `*at_end`: the file ends at `offset` or before.
  Result<bool> HasDataAt(uint64_t offset, bool* at_end = nullptr) const;
  // Whether the file reaches past `offset` (one pread of a byte).
  Result<bool> HasByteAt(uint64_t offset) const;
  // Whether the last ReadFrom ended where the zeros written ahead begin (or at the file's end):
  // no torn record follows the ones it read, without reading that header again.
  bool ReadEndedClean() const { return read_ended_clean_; }

  // Appends a record with sequence number `seq` after the last record this object read (the
  // end ReadFrom left) or wrote; with `durable`, makes it (and every record before it)
  // durable before returning. REQUIRES: no other writer (the volume's writer lock).
  Status Append(uint64_t seq, const JournalRecord& record, bool durable = true);
  // Makes sure the next `bytes` of records fit in what the journal holds already (zeros written
  // ahead), so that a commit that cannot get the disk space fails before it changes anything:
  // a full disk failed the append after the file had sealed its chunks into the record, and the
  // retry committed their entries without their images (the file damaged: hostile finding).
  Status Reserve(uint64_t bytes);
  // Makes every record appended so far durable (fdatasync; needs no lock: appends by others
  // meanwhile may become durable too, which is harmless).
  Status Sync() { return file_.DataSync(); }
  // Gives the zeros written ahead back to the disk (a write that met a full disk needs their
  // room more); whether there were any. REQUIRES: the writer lock.
  Result<bool> DropZerosAhead();
  // Drops every record (after a checkpoint made them redundant) and makes that durable.
  Status Reset();
  // Cuts a torn tail left by a process that died in the middle of an append.
  // REQUIRES: the writer lock; `offset` is the end of the last good record.
  Status TruncateTo(uint64_t offset);
  // The free room of the journal's file system (os::File::FreeSpace).
  Result<uint64_t> FreeSpace() const { return file_.FreeSpace(); }
  // The file's length (records, then zeros written ahead), as last read or written.
  uint64_t size() const { return size_; }
  // The end of the last record this object read or wrote.
  uint64_t end() const { return end_; }

 private:
  Journal(os::File file, SecretBytes key, const std::array<uint8_t, 16>& volume_id)
      : file_(std::move(file)), mac_(std::move(key)), volume_id_(volume_id) {}

  class Reader;
  // ReadFrom and ReadNew: reads bounded by `limit` (the file's length, or UINT64_MAX: unknown).
  Result<std::vector<JournalRecord>> ReadWithin(uint64_t first_seq, uint64_t* offset, bool whole, uint64_t limit,
                                                bool* ended_at_start);
  // Extends the file with zeros to a multiple of kZeroAhead at or past `needed`.
  Status WriteZerosAhead(uint64_t needed);
  Result<bool> IsZeroFrom(uint64_t offset) const;
  Result<bool> DurableRecordAfter(uint64_t from, uint64_t seq) const;
  Result<bool> Authentic(const uint8_t* header, ByteSpan body, const uint8_t* tag) const;

  os::File file_;
  crypto::Aes256Gcm mac_;
  std::array<uint8_t, 16> volume_id_;
  uint64_t size_ = 0;
  uint64_t end_ = 0;
  bool read_ended_clean_ = false;
};

}  // namespace scone::fs
