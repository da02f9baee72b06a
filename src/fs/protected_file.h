// One open protected file: random-access reads and writes of plaintext, verified and sealed
// chunk by chunk (see format.h).
//
// Each operation costs O(1) chunk seals or opens per 4 KiB touched plus O(1) (hashed) metadata
// lookups; committing (Sync) costs O(changed pages * log pages) hashes. Reads never return
// plaintext that did not authenticate: a failed chunk makes the whole read fail with
// kDataCorrupted. Files are sparse: memory, commits and opening grow with the pages that hold
// data, not with the logical size (up to kMaxFileSize; past it, kTooLarge, which is EFBIG).
//
// Writes are buffered: a partial or overwriting write keeps the chunk's plaintext in memory
// until the next commit; a whole chunk that the durable state does not reference (new data,
// appends) is sealed and written in place at once. Overwrites of durable chunks go through the
// volume's journal at commit, so a crash at any moment leaves the last committed state intact.
//
// Thread-safety: all methods may be called concurrently; reads run in parallel, writes, truncates
// and commits are exclusive. Objects come from Volume::OpenFile and share the Volume's lifetime.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "crypto/primitives.h"
#include "fs/chunk_table.h"
#include "fs/clean_chunks.h"
#include "fs/format.h"
#include "fs/journal.h"
#include "fs/merkle_tree.h"
#include "fs/volume_state.h"
#include "os/file.h"

namespace scone::fs {

class Volume;

// The keys of one file, derived from the volume key and the file's identity.
struct FileKeys {
  std::unique_ptr<crypto::Aes256Gcm> chunk;  // seals chunks (encrypted) or MACs them (authenticated)
  SecretBytes root;                          // HMAC key of the file root and header
};

// A file's part of its volume's window (fs/volume.h): the lazy commit records, in order, that
// are published but not yet in place, and the entry the disk holds beneath them.
struct FileWindow {
  FileEntry base;
  std::vector<std::shared_ptr<const JournalRecord>> records;
};

// A file position several processes share (one open file description, inherited across fork):
// read and moved inside the write's transaction, so that their writes do not overlap (as the
// kernel locks a shared position for each write).
struct SharedPosition {
  std::function<Result<uint64_t>()> get;
  std::function<Status(uint64_t)> set;
};

class ProtectedFile {
 public:
  ~ProtectedFile();

  // Reads up to out.size() bytes at offset; fewer only at end of file.
  Result<size_t> Read(uint64_t offset, MutableByteSpan out);
  // Writes all of data at offset, extending the file (gaps read as zeros). With `appended_at`,
  // appends instead (O_APPEND: at the end every process sees, atomically) and says where. A
  // write the disk holds only part of writes what fits and returns its count, as natively (the
  // next one meets ENOSPC).
  Result<size_t> Write(uint64_t offset, ByteSpan data, uint64_t* appended_at = nullptr);
  // Write until all of data is written, or the error (ENOSPC) that stopped it: for callers
  // that are no program (which would see the short count and write the rest itself).
  Status WriteAll(uint64_t offset, ByteSpan data);
  // The volume cut this file's data file (an apply in place reached a commit that shortened
  // it): the room this object allocated, and its length, no longer hold. Any thread.
  void NoteDataCut() { data_cut_.store(true, std::memory_order_release); }
  // Writes at a position shared with other processes, and moves it past what was written.
  Result<size_t> WriteAtSharedPosition(ByteSpan data, const SharedPosition& position);
  Status Truncate(uint64_t size);
  // Reserves disk space for a plaintext of `size` bytes, as fallocate(2) does, without changing
  // the file's size or content: later writes up to there do not fail for lack of space. A file
  // system without fallocate reserves nothing (not an error).
  Status Reserve(uint64_t size);
  // Commits: every write so far (and everything published to the volume before) is durable and
  // part of the volume's state (its tag moves).
  Status Sync();
  // Publishes every write so far to the other processes (durable with the next Sync of any
  // file, as close(2) promises no durability); called by the destructor when the last
  // reference goes (errors there can only be logged, so callers that care close explicitly).
  Status Close();
  // The repair after a process died inside a commit (Volume::RepairAfterDeadWriterLocked), on
  // an object of its own opened as of the file's window: each chunk whose newest version the
  // window put in place but the disk does not hold goes back to the newest version still at
  // hand (an image the window holds, or what the disk holds), or, the file's last chunk, is cut
  // off. `undo_last`: the window's last record is the dead writer's, and where one of its
  // chunks is missing the file also gets back the size before it (a killed append is undone
  // whole). Builds the commit that says so into `out` (false: nothing is missing), writing
  // nothing in place. The object is spent after it: its close commits nothing.
  Result<bool> BuildRepair(const FileWindow& window, bool undo_last, JournalRecord* out);

  uint64_t size() const;
  // The entry of the state this object last committed or caught up with.
  FileEntry CommittedEntry() const;
  // The runtime's descriptor of the data file, and whether `fd` is open on the same inode.
  int data_fd() const { return data_.fd(); }
  bool IsDataFile(int fd) const {
    struct stat st;
    return IsDataFile(fd, &st);
  }
  // The same, keeping the kernel's stat of `fd` in `st`.
  bool IsDataFile(int fd, struct stat* st) const;
  // An unlinked file handed to another program (a descriptor inherited across exec): its
  // committed state is written whole onto the orphaned inode (overwrites that waited in the
  // journal, every page of its chunk table), so that the program loads it from there and checks
  // it against CommittedEntry. The unlink is made durable first: recovery then no longer brings
  // the file back from the trash in its older state, which the pages would no longer match.
  Status PutStateInPlace();
  // Unlinked, by this process or another (its data file has no name left).
  bool Gone() const;
  // Unlinked while open (by this process or, as it learned, another): its data goes with it.
  bool unlinked() const { return unlinked_.load(std::memory_order_relaxed); }
  // Opened where this process may only read the data file (a file of mode 0444 or 0400 of a
  // user that is not root: git's objects): it reads; MakeWritable reopens it for writing where
  // the program opens it for writing (after a chmod, say), else its writes fail.
  bool read_only() const { return read_only_.load(std::memory_order_relaxed); }
  Status MakeWritable();
  Region region() const { return region_; }
  const FileId& id() const { return id_; }
  std::string path() const;

  // Reads and authenticates every chunk that holds data (holes are skipped); returns a message
  // per damaged chunk (at most `limit`).
  std::vector<std::string> VerifyAllChunks(size_t limit);

  // Like lseek's SEEK_DATA and SEEK_HOLE, at chunk granularity: the first offset >= `offset` in
  // a chunk that holds data (written, even with zeros) or in a hole; size() when there is none.
  // Costs O(log pages) plus the chunks skipped over.
  uint64_t SeekData(uint64_t offset) const;
  uint64_t SeekHole(uint64_t offset) const;
  // The program set the file's times (utimensat): `atime` and `mtime` say which. They are kept
  // over the next commit, which writes the data file (and so would move its mtime back to now),
  // unless a write or a truncation comes first and moves the mtime, as on any file.
  Status KeepTimes(bool atime, bool mtime);
  // When this process last changed the file where the data file does not show it yet (writes
  // it buffers: the kernel moves the mtime only when they reach the disk); nullopt otherwise.
  std::optional<struct timespec> UnwrittenChangeTime() const;
  // Catches up with what another process committed to this file since this object last loaded
  // or committed it (a shell and the programs it starts write one file in turn), keeping this
  // object's own uncommitted changes on top. Costs two reads of the volume's metadata when
  // nothing changed.
  Status Refresh();

 private:
  friend class Volume;
  ProtectedFile(std::shared_ptr<Volume> volume, std::string path, const FileEntry& entry,
                FileKeys keys);

  // Opens an existing file and checks it against `entry` (identity, size, root).
  // `window`: the records published but not yet in place (`window.base` is what the disk holds).
  // `opened`: its data file, open already (the inode of an inherited descriptor), else opened
  // at `dir`/`path`.
  static Result<std::shared_ptr<ProtectedFile>> Open(std::shared_ptr<Volume> volume,
                                                     const std::string& dir,
                                                     const std::string& path,
                                                     const FileEntry& latest, FileKeys keys,
                                                     const FileWindow& window, os::File* opened = nullptr);
  // Writes the on-disk form of a new empty file (with `mode`, which the umask restricts);
  // returns its entry.
  static Result<FileEntry> CreateOnDisk(const std::string& dir, const std::string& path,
                                        Region region, const FileId& id, const FileKeys& keys,
                                        mode_t mode = 0600);
  // The same, leaving the new files open in `data` (and `side`, authenticated files).
  static Result<FileEntry> CreateOnDisk(const std::string& dir, const std::string& path,
                                        Region region, const FileId& id, const FileKeys& keys,
                                        mode_t mode, os::File* data, os::File* side);
  // Creates a new empty file on disk and opens it (what CreateOnDisk and then Open give,
  // without opening and reading back what was just written: a `tar -x` creates thousands).
  static Result<std::shared_ptr<ProtectedFile>> Create(std::shared_ptr<Volume> volume,
                                                       const std::string& dir, const std::string& path,
                                                       Region region, const FileId& id, FileKeys keys,
                                                       mode_t mode);
  static Root ComputeRoot(const SecretBytes& root_key, uint64_t size, const crypto::Hash& tree_root);
  static Bytes EncodeHeader(const FileId& id, Region region, const SecretBytes& root_key);
  static std::string SideFilePath(const std::string& dir, const FileId& id);
  // Whether `image` (kChunkSize bytes read from an encrypted file's slot) is chunk `chunk` of
  // file `id` as `entry` seals it.
  static bool SlotAuthentic(const FileKeys& keys, const FileId& id, uint64_t chunk,
                            const ChunkEntry& entry, const uint8_t* image);

  void SetPath(std::string path);
  // Unlinked while open: keeps working in memory and on the orphaned inode (only in memory
  // where another process unlinked it), commits nothing. REQUIRES: the volume's lock.
  void MarkUnlinked(bool by_this_process);
  // Fork (Volume::BeforeFork): the file's locks are held across it, so that no thread of the
  // parent is inside the file when the child is made. HoldForFork waits for the lock, which
  // every thread takes before the volume's (take it first); TryHoldForFork does not wait (the
  // volume's lock held). HoldPathForFork, the leaf lock, comes once the volume's is held.
  void HoldForFork() { mu_.lock(); }
  bool TryHoldForFork() { return mu_.try_lock(); }
  // Whether it holds writes it has not published (a write made alone, buffered). REQUIRES: the
  // lock held (HoldForFork).
  bool UnpublishedWhileHeld() const { return changed_ || !cache_.empty(); }
  void HoldPathForFork() { path_mu_.lock(); }
  // Lets go of both in the parent, or in the child (a new thread id there: glibc's rwlock would
  // take the writer's unlock for a reader's, so the lock is made anew).
  void LetGoAfterFork(bool in_child);
  // A child's copy of a file only its parent still uses: what it holds uncommitted is the
  // parent's to commit (as a close there does); its last reference here commits nothing.
  void LeaveToParent();
  void NoteDataInode();
  // An unlinked file: the newest images of chunks that waited in the journal, written in place
  // (nothing else will put them there). REQUIRES: mu_ held exclusively.
  Status PutPendingInPlaceLocked();

  class TableCursor;

  Status LoadPages();
  Result<bool> ChunkFromDisk(uint64_t chunk, uint8_t* out);  // false: hole
  Status ReadChunkPlain(uint64_t chunk, uint8_t* out);
  // The crypto half of sealing: touches only `entry`, so distinct chunks may be sealed
  // concurrently (entries from table_.MutableEntry, taken beforehand on one thread). NoteSealed
  // does the bookkeeping afterwards, on one thread.
  Status SealInto(uint64_t chunk, ChunkEntry& entry, const uint8_t* plain, uint8_t* slot_image);
  void NoteSealed(uint64_t chunk);
  // Seals chunks[i] from plains[i] into images[i], on two cores when there are many.
  Status SealMany(const std::vector<uint64_t>& chunks, const std::vector<const uint8_t*>& plains,
                  const std::vector<uint8_t*>& images);
  Status OpenChunk(uint64_t chunk, const ChunkEntry& entry, const uint8_t* slot_image,
                   size_t image_size, uint8_t* plain);
  Status WriteSlot(uint64_t chunk, const uint8_t* image);
  // Whether the durable state references this chunk's slot (an overwrite must be journaled).
  // Inside a transaction of a process that shares the volume (the writer lock held, no durable
  // record can come between), a chunk only lazy records put in place since the last durable one
  // is referenced by no durable state: it may be overwritten in place (a log's last chunk,
  // appended to by every request, then costs no journal image).
  bool IsDurable(uint64_t chunk) const {
    if (!table_.IsDurable(chunk)) return false;
    return !in_transaction_ || lazy_in_place_.empty() || lazy_in_place_.count(chunk) == 0;
  }
  // Keeps lazy_in_place_ to the chunks of the current window. REQUIRES: mu_ held exclusively.
  void ForgetDurableLazyChunks();
  void NoteLazyInPlace(const JournalRecord& record);
  // Makes sure the host file system takes a data file for a plaintext of `size` bytes, before
  // anything refers to it: a refusal (EFBIG) fails the write or truncate that asked, never a
  // commit whose record is already in the journal. Costs a system call only when the file
  // grows past the largest size checked so far (then two: extend, and back).
  Status EnsureRoomFor(uint64_t size);
  // Allocates the data file's room for what a write of [offset, end) adds past the file's end,
  // before anything is staged: a write the disk cannot hold fails with ENOSPC, nothing changed,
  // as natively. (Buffered, it was acknowledged, and lost with an ENOSPC at the commit that
  // should have put it in place: up to a cache's worth, 4 MiB.) Allocates ahead, an eighth of the
  // file and at most 1 MiB, so that appends ask once in a while; files below kUnprobedSize are
  // not reserved (see EnsureRoomFor). REQUIRES: mu_ held exclusively.
  Status ReserveGrowth(uint64_t offset, uint64_t end);
  // kTooLarge naming the file and `what` went past kMaxFileSize.
  Status TooBig(const std::string& what) const;
  Status CachedChunkForUpdate(uint64_t chunk, uint8_t** plain);
  // recent_: dropped (buffers recycled) unless it still stands for the file. Called before a
  // change is staged. REQUIRES: mu_ held exclusively.
  void ForgetRecentIfChanged();
  void DropRecent();
  // Chunk buffers for cache_ come from and go back to a free list (no allocation per write).
  Bytes TakeBuffer();
  void RecycleBuffer(Bytes buffer);
  void DropCached(std::map<uint64_t, Bytes>::iterator first, std::map<uint64_t, Bytes>::iterator last);
  Status SealAndWriteInPlace(const std::vector<uint64_t>& chunks,
                             const std::vector<const uint8_t*>& plains);
  Status EvictCache();
  // Commits (durable) or publishes (lazy) what this object changed; `stage`, if given, makes a
  // change first, under the volume's locks after catching up (a write by a process that
  // shares the volume). REQUIRES: mu_ held exclusively.
  // `cuts_short`: `stage` makes the file shorter (a commit without one says so itself).
  // `stage_offset`: where the stage writes, if known before the catch-up (a bound on its record).
  // `staged`, if given, runs under the same locks once the stage's record is built (what may
  // fail for want of room has passed): a shared descriptor's position moves there, so that a
  // write that fails leaves it where it was.
  Status CommitLocked(bool durable, const std::function<Status()>& stage = nullptr, uint64_t stage_bytes = 0,
                      bool cuts_short = false, uint64_t stage_offset = kUnknownOffset,
                      const std::function<Status()>& staged = nullptr);
  static constexpr uint64_t kUnknownOffset = UINT64_MAX;
  // Whether the commit only rewrites chunks the file holds (`stage_bytes` at `stage_offset`
  // with its cached ones): no hole filled, nothing past the committed end.
  bool OnlyOverwritesLocked(uint64_t stage_bytes, uint64_t stage_offset) const;
  // At most how large the record of a commit gets, `stage_bytes` staged in it at `stage_offset`
  // (a bound for the journal's room, not the size).
  uint64_t RecordBoundLocked(uint64_t stage_bytes, uint64_t stage_offset) const;
  // Which buffered chunks a commit seals into its record (BuildRecord) rather than in place: all
  // of them for a small durable commit with no data written in place yet (one fdatasync, the
  // journal's, instead of two), else the overwrites of durable chunks.
  bool JournalsAllChunks(bool durable) const;
  bool GoesToJournal(uint64_t chunk, bool all) const { return all || IsDurable(chunk); }
  // Allocates the slots of every buffered chunk and the new table pages, before the commit's
  // record names them: a full disk failed those writes after the record (see the .cc).
  // A lazy commit's new chunks whose slots lie at or past `new_room_from` take no fallocate:
  // BuildRecord writes them before the record.
  Status AllocateInPlaceLocked(uint64_t new_room_from);
  // Where a lazy commit's new chunks may go in place before its record: at or past the data
  // file's length, on disk and as this object wrote it (another process may have committed a
  // longer file since this object last looked), where no slot holds a version a record names.
  // kNoNewRoom for a durable commit.
  uint64_t NewRoomFromLocked(bool durable);
  static constexpr uint64_t kNoNewRoom = UINT64_MAX;
  bool WrittenBeforeRecord(uint64_t chunk, uint64_t new_room_from) const;
  // Allocates the data file's slots of these chunks (ascending), adjacent ones in one call:
  // chunks sealed in place outside a commit (a large write, an eviction) must find their room
  // before anything names them, or a full disk leaves the file short of what its table says.
  // Slots of chunks written before the record (WrittenBeforeRecord) are left out, their pages not.
  Status AllocateSlots(const std::vector<uint64_t>& chunks, uint64_t new_room_from = kNoNewRoom);
  // Allocates [begin, end) of the data file unless this object allocated it already and
  // nothing cut the file since (an append to the last chunk allocated its slot each time).
  Status AllocateRange(uint64_t begin, uint64_t end);
  // The data file may have been cut (by this process or, seen at a catch-up, another):
  // allocations made before no longer hold.
  void ForgetAllocated() { allocated_from_ = allocated_to_ = 0; }
  // After NoteDataCut: forgets the allocations, and takes the data file's length from disk.
  void CatchUpWithDataCutLocked();
  Status TruncateLocked(uint64_t new_size);
  // Drops what this object changed since its last commit and reloads the file as the volume
  // has it (a published write that failed). REQUIRES: mu_ held exclusively.
  Status DiscardUncommittedLocked();
  Status StageWrite(uint64_t offset, ByteSpan data);
  // StageWrite for a process alone (no volume lock held); on a full disk, once more after a
  // checkpoint gave back room (Volume::CheckpointForRoom).
  Status StageWriteAlone(uint64_t offset, ByteSpan data);
  // A write met a full disk: the volume gives back its journal's zeros ahead, or (`records`)
  // its records' room. Whether room may have come back.
  bool MakeRoom(bool records);
  Status AfterWriteAlone();
  // Promises the disk room a write of [offset, offset + size) buffered while alone may take at
  // its commit (fs/buffered_room.h): a slot and a journal image per chunk it brings into the
  // buffer, a page of record for the file's first change. False: near a full disk, the write
  // must commit at once. REQUIRES: mu_ held exclusively.
  bool PromiseRoomLocked(uint64_t offset, uint64_t size);
  void ReleasePromisedLocked();
  Result<size_t> WritePublished(uint64_t offset, ByteSpan data, uint64_t* appended_at);
  // One write as a commit of its own; where it fails, nothing of it stays in what this process
  // reads. REQUIRES: mu_ held exclusively.
  Status CommitWriteLocked(const std::function<Status()>& stage, uint64_t bytes, uint64_t offset = kUnknownOffset,
                           const std::function<Status()>& staged = nullptr);
  // Catches up with what other processes published: record by record, or by reloading.
  // REQUIRES: mu_ held exclusively, the volume's locks.
  Status CatchUpLocked(const FileEntry& current);
  // CatchUpLocked under the volume's locks, then `then` (if any) before they are let go: what
  // it reads of the disk no other process changes meanwhile (a chunk rewritten in place by an
  // appender's commit). REQUIRES: mu_ held exclusively.
  Status CatchUpUnderVolumeLocks(const std::function<void()>& then = {});
  Status ApplyPublished(const JournalRecord& record);
  // Seals what is buffered and fills the commit record. REQUIRES: mu_ held exclusively.
  // With `defer_in_place`, a lazy record's chunks that go in place wait for
  // WriteDeferredInPlace, which the commit calls once the record is appended.
  Status BuildRecord(JournalRecord* record, bool durable, bool defer_in_place = false,
                     uint64_t new_room_from = kNoNewRoom);
  // After the record: the chunks BuildRecord deferred; after a lazy one (`lazy_record`) of a
  // file whose pages go in place (PagesGoInPlace), its changed table pages with them, and the
  // volume learns that applying the window has nothing to write for the file
  // (Volume::NotePagesInPlaceLocked).
  Status WriteDeferredInPlace(const JournalRecord* lazy_record = nullptr);
  // Whether a file this process created since the volume's last durable record still puts its
  // table pages in place with each lazy commit (pages_in_place_; false from then on if not).
  bool PagesGoInPlace(const JournalRecord& record);
  Status ReloadChangedByOthers(const FileEntry& current, const FileWindow& window);
  // After an authentication failure: if another process committed this file since we loaded
  // it, reload (exclusive lock) and return true so the caller retries once.
  bool RefreshIfChangedByOthers();
  Result<size_t> ReadOnce(uint64_t offset, MutableByteSpan out);
  Result<size_t> ReadLocked(uint64_t offset, MutableByteSpan out);  // REQUIRES: mu_ (either way)
  Result<size_t> WriteOnce(uint64_t offset, ByteSpan data, uint64_t* appended_at);
  Result<size_t> WriteWhole(uint64_t offset, ByteSpan data, uint64_t* appended_at);
  Result<size_t> WriteWholeAtSharedPosition(ByteSpan data, const SharedPosition& position);
  template <typename Pages>
  Status WriteTablePages(const Pages& pages);
  Status ApplyInPlace(const JournalRecord& record);
  // Writes slot images, coalescing adjacent slots into one system call.
  // `pages`: chunk table pages (index, image) written with them.
  Status WriteSlots(std::span<const std::pair<uint64_t, const uint8_t*>> slots,
                    std::span<const std::pair<uint64_t, const uint8_t*>> pages = {});
  Bytes PageImage(uint64_t page) const;
  // The Merkle leaf of a page image: the hole leaf for an all-zero image (a hole page).
  static crypto::Hash PageLeaf(uint64_t page, ByteSpan image);
  Status ChunkError(uint64_t chunk, const char* what) const;

  const std::shared_ptr<Volume> volume_;  // outlives every file it opened
  const FileId id_;
  const Region region_;
  const Layout layout_;
  FileKeys keys_;
  const Bytes header_;  // encrypted files: the header, which page 0's image starts with
  os::File data_;
  dev_t data_device_ = 0;  // data_'s inode (IsDataFile), taken when it is opened
  ino_t data_inode_ = 0;
  os::File side_;  // authenticated files only

  mutable std::mutex path_mu_;
  std::string path_;

  mutable std::shared_mutex mu_;
  uint64_t size_ = 0;
  uint64_t physical_size_ = 0;         // current length of the data file
  uint64_t room_ = 0;                  // a data file length the host file system has taken
  std::atomic<bool> data_cut_{false};  // see NoteDataCut
  uint64_t allocated_from_ = 0;        // a range of the data file this object allocated
  uint64_t allocated_to_ = 0;          //   (AllocateRange), empty when from == to
  ChunkTable table_;                   // entries below ChunkCount(size_); durable bits: exactly
                                       // the committed non-hole entries
  MerkleTree tree_;                    // over the committed pages
  std::set<uint64_t> dirty_pages_;     // pages with entries sealed since the last commit
  std::vector<uint64_t> changed_entries_;  // chunks sealed since the last commit (may repeat)
  uint64_t min_chunks_since_commit_ = 0;   // entries at or past this were cleared by truncation
  std::map<uint64_t, Bytes> cache_;    // chunk -> plaintext not yet sealed
  std::vector<Bytes> spare_buffers_;   // kChunkSize buffers for cache_
  // The plaintext of the few chunks the last commit sealed, while nothing changed since (no
  // local change, the committed state still that commit's: recent_root_): the next write into
  // one of them (the next append to a log's last chunk) reads and decrypts nothing.
  std::vector<std::pair<uint64_t, Bytes>> recent_;
  Root recent_root_{};
  bool recent_valid_ = false;
  // A small file's chunks as last read from disk (clean_chunks.h).
  CleanChunks clean_;
  std::vector<uint64_t> inplace_;      // chunks written in place since the last commit
  Root committed_root_{};              // the root our table reflects
  uint64_t committed_size_ = 0;        // the size that root covers: size_ differs after a local resize
  uint64_t promised_ = 0;              // disk room promised to its buffered changes (PromiseRoomLocked)
  bool data_unsynced_ = false;
  bool changed_ = false;
  // Times the program set while changes were pending; UTIME_OMIT where it set none.
  std::array<struct timespec, 2> kept_times_{{{0, UTIME_OMIT}, {0, UTIME_OMIT}}};
  bool times_kept_ = false;
  struct timespec changed_at_ {};  // see UnwrittenChangeTime; tv_sec 0: none
  std::atomic<bool> unlinked_{false};
  std::atomic<bool> read_only_{false};
  os::File read_only_data_;  // the descriptor MakeWritable replaced
  std::atomic<bool> in_memory_only_{false};  // unlinked by another process: never written in place
  bool force_in_place_ = false;               // PutStateInPlace
  // Sealed images of chunks whose newest version waits in the journal (a lazy record's
  // overwrite), until the record is durable and applied in place.
  std::map<uint64_t, Bytes> pending_;
  uint64_t pending_seq_ = 0;  // the newest record that added one
  uint64_t last_seq_ = 0;     // the newest record this table reflects
  // Chunks lazy records put in place since the durable record `lazy_in_place_since_`.
  std::set<uint64_t> lazy_in_place_;
  uint64_t lazy_in_place_since_ = 0;
  Bytes deferred_images_;  // BuildRecord's in-place images waiting for their record
  std::vector<std::pair<uint64_t, const uint8_t*>> deferred_slots_;
  // The lazy create record of a file this process made (Volume::CreateFileLocked), 0 for others;
  // and whether every commit since put the file's table pages in place (PagesGoInPlace).
  uint64_t created_seq_ = 0;
  bool pages_in_place_ = true;
  bool spent_ = false;  // BuildRepair's object: never commits
  bool in_transaction_ = false;  // CommitLocked with a stage, under the volume's locks

};

}  // namespace scone::fs
