#include "fs/volume.h"

#include <cstdio>

#include <fcntl.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "fs/data_ranges.h"
#include "fs/volume_path.h"
#include "os/syscalls.h"

namespace scone::fs {
namespace {
// Tests only (SetSyncGapHookForTesting).
std::function<void()> sync_gap_hook;
std::function<void()> before_apply_hook;
std::function<void()> before_record_hook;
std::function<void()> wake_hook;
std::function<void()> after_record_hook;

constexpr char kVolumeMagic[8] = {'S', 'C', 'O', 'N', 'E', 'V', 'O', 'L'};

// From this much room in the trash on, or with less room than this left on the file system, a
// close gives it back at once (GiveBackTrashLocked).
constexpr uint64_t kTrashGivenBackAtClose = uint64_t{1} << 20;
constexpr uint64_t kLittleRoomLeft = uint64_t{64} << 20;

// The room a (data) file takes on disk: what it holds written in place and not committed too (a
// write that met a full disk). 0 if it cannot be stat'ed.
uint64_t RoomOnDisk(const std::string& path) {
  struct stat st {};
  return os::Sys().lstat(path.c_str(), &st) == 0 ? uint64_t(st.st_blocks) * 512 : 0;
}
constexpr size_t kMaxBaseSize = 256u << 20;
// A checkpoint folds the journal into the base state once it grows past this, or past an eighth
// of the disk's free room, but not before the smaller size (FitCheckpointsToDisk).
constexpr uint64_t kCheckpointJournalSize = 32u << 20;
constexpr uint64_t kMinCheckpointJournalSize = 512u << 10;
constexpr size_t kVerifyChunkProblemsPerFile = 8;
// The window is made durable once its records hold this much (every process keeps it in memory).
constexpr size_t kMaxWindowBytes = 16u << 20;
// A sync of a shared volume's window leaves it out of place below Volume::kApplyWindowBytes
// (see MakeWindowDurableSharedLocked); tests set 0: every sync applies.
size_t apply_window_bytes = Volume::kApplyWindowBytes;
// A journal at least this long gives back more room at a checkpoint than its zeros ahead take
// (CheckpointForRoom).
constexpr uint64_t kCheckpointForRoomJournalSize = uint64_t{2} << 20;

struct BaseHeader {
  std::array<uint8_t, 16> volume_id{};
  crypto::Hash key_check{};
};

// The first `size` bytes of a file (fewer if it is shorter).
Result<Bytes> ReadHead(const std::string& path, size_t size) {
  SCONE_ASSIGN_OR_RETURN(os::File f, os::File::Open(path, O_RDONLY | O_NOFOLLOW));
  Bytes head(size);
  SCONE_ASSIGN_OR_RETURN(size_t n, f.ReadAt(0, head));
  head.resize(n);
  return head;
}

}  // namespace

// "vol/" and "vol" name the same volume; messages and relative paths need one spelling.
static std::string WithoutTrailingSlashes(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

Volume::Volume(std::string dir, SecretBytes key)
    : dir_(WithoutTrailingSlashes(std::move(dir))), key_(std::move(key)) {}

Volume::~Volume() {
  if (!closed_) (void)Close();
}

std::string Volume::MetaPathIn(const std::string& dir, std::string_view name) {
  return WithoutTrailingSlashes(dir) + "/" + kMetaDirName + (name.empty() ? "" : "/" + std::string(name));
}

SecretBytes Volume::DeriveKey(std::string_view purpose) const {
  return crypto::Hkdf(key_, state_.volume_id, purpose);
}

FileKeys Volume::DeriveFileKeys(const FileId& id) const {
  Bytes salt(state_.volume_id.begin(), state_.volume_id.end());
  salt.insert(salt.end(), id.begin(), id.end());
  FileKeys keys;
  keys.chunk = std::make_unique<crypto::Aes256Gcm>(crypto::Hkdf(key_, salt, "scone fs v1 chunk"));
  keys.root = crypto::Hkdf(key_, salt, "scone fs v1 root");
  return keys;
}

SecretBytes Volume::SharingKey(const FileId& id) const {
  Bytes salt(state_.volume_id.begin(), state_.volume_id.end());
  salt.insert(salt.end(), id.begin(), id.end());
  return crypto::Hkdf(key_, salt, "scone fs v1 shared image");
}

Status Volume::LockImages() {
  // The lock file's lock is the process's (an OFD lock): the mutex keeps its threads apart.
  images_mu_.lock();
  Status s = lock_ ? lock_->LockImages() : Status::Ok();
  if (!s.ok()) images_mu_.unlock();
  return s;
}

void Volume::UnlockImages() {
  if (lock_) lock_->UnlockImages();
  images_mu_.unlock();
}

Region Volume::RegionOf(std::string_view path) const {
  auto normalized = NormalizeVolumePath(path);
  if (!normalized.ok()) return Region::kNotProtected;
  return state_.rules.RegionOf(*normalized);  // rules never change after creation
}

// ---- base state file --------------------------------------------------------------------
// magic(8) | u32 version | volume id(16) | key check(32) | u64 applied seq | nonce(12) |
// u32 size | ct | tag(16). Body: u8 clean | VolumeState. The header is authenticated as AAD;
// the key check lets a wrong key be named as such instead of as damage, and the applied
// sequence lets other processes see a checkpoint without decrypting.

Status Volume::WriteBase(bool clean) {
  ByteWriter body;
  body.U8(clean ? 1 : 0);
  state_.Encode(body);

  ByteWriter head;
  head.Raw(ByteSpan(reinterpret_cast<const uint8_t*>(kVolumeMagic), sizeof(kVolumeMagic)));
  head.U32(StateVersion());
  head.Raw(state_.volume_id);
  head.Raw(crypto::HmacSha256(DeriveKey("scone fs v1 key check"), {AsBytes("key-check")}));
  head.U64(applied_seq_);
  uint8_t nonce[crypto::kNonceSize];
  crypto::FreshNonce(nonce);
  head.Raw(ByteSpan(nonce, sizeof(nonce)));
  head.U32(static_cast<uint32_t>(body.bytes().size()));
  Bytes out = head.Take();
  size_t aad_size = out.size();
  out.resize(aad_size + body.bytes().size() + crypto::kTagSize);
  crypto::Aes256Gcm aead(state_key_.Clone());
  SCONE_RETURN_IF_ERROR(aead.Seal(ByteSpan(nonce, sizeof(nonce)), {ByteSpan(out.data(), aad_size)},
                                  body.bytes(), out.data() + aad_size,
                                  out.data() + aad_size + body.bytes().size()));
  // Over the spare (the state before last): on a full disk the state's own old blocks hold it.
  SCONE_RETURN_IF_ERROR(WithReserve("its state", [&] {
    return os::WriteFileAtomicallyViaSpare(MetaPath("volume"), MetaPath("volume.spare"), out);
  }));
  base_size_ = out.size();
  if (!clean) NoteMarkedInUseLocked();
  return Status::Ok();
}

Status Volume::MarkInUseLocked() {
  // (Catching up may have found others' records or checkpoint: marked then.)
  if (in_use_marked_) return Status::Ok();
  // Records past the state file (this process's before it rested): their writer marked it, and
  // state_ holds them, which the state file must not.
  if (next_seq_ - 1 > applied_seq_) {
    NoteMarkedInUseLocked();
    return Status::Ok();
  }
  // None: state_ is the file's state.
  Status marked = WriteBase(/*clean=*/false);
  if (marked.sys_errno() == EACCES || marked.sys_errno() == EPERM) {
    // A process that changed its user (a server's worker) may not replace the state file; it
    // goes on as a process that joined did before marks were lazy (its parent marks before
    // the fork, RestIfUnused). Not tried again at each record.
    in_use_marked_ = true;
    return Status::Ok();
  }
  if (OutOfSpace(marked)) {
    return marked.Annotate("volume " + dir_ + ": the disk is full and the volume's reserve is used up " +
                           "(free space on the disk, outside the volume)");
  }
  return marked;
}

bool Volume::TrashHoldsFiles() const {
  std::error_code ec;
  std::filesystem::directory_iterator it(MetaPath("trash"), ec);
  return !ec && it != std::filesystem::directory_iterator();
}

void Volume::KeepReserve() {
  if (reserve_released_) return;  // the room it gave is what this process was opened with
  // Room for the state file written twice over (its copy, then the one it replaces), and more.
  if (reserve_.Keep(SpaceReserve::kBaseBytes + 2 * base_size_) == SpaceReserve::Kept::kAllocated) {
    GiveToMetadataOwner(reserve_.path());
  }
}

Status Volume::WithReserve(const char* what, const std::function<Status()>& change) {
  Status done = change();
  if (!OutOfSpace(done) || !reserve_.Release()) return done;
  reserve_released_ = true;
  // Once per process: on a disk that stays full, each checkpoint keeps the reserve again and
  // the next change takes it (a mapping sealed a chunk at a time said so 16 times).
  if (!reserve_reported_) {
    std::fprintf(stderr,
                 "scone: volume %s: the disk is full; the volume's reserve went to %s (free space on the "
                 "disk: the next open keeps the reserve again)\n",
                 dir_.c_str(), what);
    reserve_reported_ = true;
  }
  return change();
}

void Volume::FitCheckpointsToDisk() {
  auto free = journal_->FreeSpace();
  if (!free.ok()) return;  // as before: the fixed size
  checkpoint_journal_size_ = std::clamp((*free + journal_seen_) / 8, kMinCheckpointJournalSize, kCheckpointJournalSize);
}

bool Volume::PromiseBufferedRoom(uint64_t bytes) {
  return buffered_room_.Promise(bytes, [this] { return journal_->FreeSpace(); });
}

Status Volume::WithCheckpointIfFull(const std::function<Status()>& change) {
  Status done = change();
  if (!OutOfSpace(done) || (journal_seen_ == 0 && trash_.empty())) return done;
  SCONE_RETURN_IF_ERROR(Checkpoint(/*clean=*/false));
  return change();
}

Status Volume::LoadBase(bool* was_clean) {
  std::string path = MetaPath("volume");
  auto data = os::ReadWholeRegularFile(path, kMaxBaseSize);
  if (!data.ok()) {
    if (data.status().code() == Code::kNotFound) {
      return NotFound(dir_ + " is not a SCONE volume (" + path + " is missing)");
    }
    return data.status();
  }
  ByteReader r(*data);
  uint8_t magic[8];
  uint32_t version, size;
  crypto::Hash key_check;
  uint8_t nonce[crypto::kNonceSize];
  if (!r.Raw(magic) || std::memcmp(magic, kVolumeMagic, 8) != 0) {
    return DataCorrupted(path + ": not a SCONE volume metadata file (bad magic)");
  }
  if (!r.U32(&version) ||
      (version != kStateVersionSingleNames && version != kStateVersionWithLinks)) {
    return Unsupported(path + ": volume format version " + std::to_string(version) +
                       " is not supported (expected " + std::to_string(kStateVersionSingleNames) +
                       " or " + std::to_string(kStateVersionWithLinks) + ")");
  }
  uint64_t applied_seq;
  if (!r.Raw(state_.volume_id) || !r.Raw(key_check) || !r.U64(&applied_seq) || !r.Raw(nonce) ||
      !r.U32(&size) || r.remaining() != size + crypto::kTagSize) {
    return DataCorrupted(path + ": volume metadata is truncated or damaged");
  }
  SecretBytes check_key = DeriveKey("scone fs v1 key check");
  if (!crypto::ConstantTimeEquals(crypto::HmacSha256(check_key, {AsBytes("key-check")}),
                                  key_check)) {
    return PermissionDenied("wrong key for volume " + dir_);
  }
  state_key_ = DeriveKey("scone fs v1 state");
  tag_key_ = DeriveKey("scone fs v1 tag");
  unlinked_key_ = DeriveKey("scone fs v1 unlinked");
  size_t aad_size = data->size() - size - crypto::kTagSize;
  Bytes body(size);
  crypto::Aes256Gcm aead(state_key_.Clone());
  if (!aead.Open(ByteSpan(nonce, sizeof(nonce)), {ByteSpan(data->data(), aad_size)},
                 ByteSpan(data->data() + aad_size, size), body.data(),
                 data->data() + aad_size + size)
           .ok()) {
    return DataCorrupted(path + ": volume metadata fails authentication (damaged or modified)");
  }
  ByteReader br(body);
  uint8_t clean;
  std::array<uint8_t, 16> id = state_.volume_id;
  if (!br.U8(&clean) || !VolumeState::Decode(br, &state_) || !br.done() ||
      state_.volume_id != id || !state_.NamesAgree() ||
      (version == kStateVersionSingleNames && state_.HasLinks())) {
    return DataCorrupted(path + ": volume metadata is malformed");
  }
  applied_seq_ = applied_seq;
  base_size_ = data->size();
  recently_unlinked_.Load(MetaPath("unlinked"), unlinked_key_, state_.volume_id, applied_seq_);
  path_by_id_.clear();
  names_.Clear();
  for (const auto& [p, entry] : state_.files) NameAdded(entry.file_id, p);
  *was_clean = clean != 0;
  return Status::Ok();
}

Result<uint64_t> Volume::PeekBaseSeq() const {
  SCONE_ASSIGN_OR_RETURN(os::File f, os::File::Open(MetaPath("volume"), O_RDONLY | O_NONBLOCK));  // (a FIFO: no wait)
  uint8_t head[8 + 4 + 16 + 32 + 8];
  SCONE_ASSIGN_OR_RETURN(size_t n, f.ReadAt(0, head));
  if (n != sizeof(head)) return DataCorrupted(MetaPath("volume") + ": truncated");
  ByteReader r(ByteSpan(head + sizeof(head) - 8, 8));
  uint64_t seq = 0;
  r.U64(&seq);
  return seq;
}

// ---- keeping up with other processes ----------------------------------------------------

Status Volume::CatchUpLocked(KeepAlive* keep) {
  SCONE_ASSIGN_OR_RETURN(uint64_t hint, lock_->ReadCheckpointHint());
  // The count of journal changes is a hint the host can write (the lock file is not
  // authenticated): it may make this process read sooner, never skip the journal itself. A
  // writer that trusted an unchanged count skipped another's record, and its commit undid an
  // acknowledged write that `verify` then accepted (hostile finding on 0e13636).
  const std::optional<uint64_t> changes = lock_->JournalChanges();
  VolumeLock::Changes file_changes;
  const bool have_file_changes = lock_->ReadChanges(&file_changes);  // before the journal too
  // While this process holds the volume alone, no other appends or checkpoints (a process that
  // joins waits for its hand-over): the journal is as this process left it, and two system
  // calls per commit (a `tar -x` makes two commits per file) ask nothing.
  const bool alone = holds_alone_ && !shared_.load(std::memory_order_relaxed) && journal_seen_ != 0;
  const uint64_t before = applied_seq_;
  uint64_t base_seq = applied_seq_;
  if (hint != applied_seq_) {
    SCONE_ASSIGN_OR_RETURN(base_seq, PeekBaseSeq());
  }
  if (base_seq != applied_seq_) SCONE_RETURN_IF_ERROR(TakeOthersCheckpointLocked());
  // Nothing past the last record read (its tail is zeros written ahead, and nobody appends
  // while we hold the writer lock): a look at one frame header instead of a read of the tail,
  // in every commit of a process that has the volume alone. After another's checkpoint
  // (journal_seen_ 0) the read also moves the journal's own end back to the start.
  std::vector<JournalRecord> records;
  // The count moved: something was appended (or cut), read at once; else look. Either read
  // also finds whether the journal now ends at or before where this process read to.
  bool appended = changes.has_value() && *changes != journal_changes_seen_;
  bool ended_here = false;
  if (!appended && !alone) {
    SCONE_ASSIGN_OR_RETURN(appended, journal_->HasDataAt(journal_seen_, &ended_here));
  }
  if (appended || journal_seen_ == 0) {
    if (alone) {
      SCONE_ASSIGN_OR_RETURN(records, journal_->ReadFrom(next_seq_, &journal_seen_));
    } else {
      SCONE_ASSIGN_OR_RETURN(records, journal_->ReadNew(next_seq_, &journal_seen_, &ended_here));
    }
  }
  // The journal ends below where this process read to: another checkpointed, and the hint did
  // not say so (the host held it back, or the checkpointer died before writing it). The state
  // file, which is authenticated, tells. Found by the read itself, not by a stat of the journal
  // at every catch-up (a shared append paid one).
  // A journal that ends exactly there (a torn tail cut off, no zeros ahead) was not cut below.
  bool cut_below = false;
  if (ended_here && !alone && journal_seen_ != 0 && base_seq == applied_seq_) {
    SCONE_ASSIGN_OR_RETURN(bool last_byte_there, journal_->HasByteAt(journal_seen_ - 1));
    cut_below = !last_byte_there;
  }
  if (cut_below) {
    SCONE_ASSIGN_OR_RETURN(base_seq, PeekBaseSeq());
    if (base_seq == applied_seq_) {
      // No checkpoint emptied it: records this process read are gone (the host cut the file, or
      // the disk lost them). Going on would build on a state the others no longer share and
      // undo their writes unseen (hostile finding): every call on the volume fails instead.
      return DataCorrupted(MetaPath("journal") + ": cut to below the records this process read (up to byte " +
                           std::to_string(journal_seen_) + ") with no checkpoint (changed behind the volume's back)");
    }
    SCONE_RETURN_IF_ERROR(TakeOthersCheckpointLocked());
    SCONE_RETURN_IF_ERROR(journal_->Refresh());
    SCONE_ASSIGN_OR_RETURN(records, journal_->ReadFrom(next_seq_, &journal_seen_));
  }
  for (JournalRecord& r : records) ApplyOthersRecord(std::move(r));
  if (changes) journal_changes_seen_ = *changes;  // read before the journal, under the writer lock
  changes_seen_ = file_changes;
  changes_seen_valid_ = have_file_changes;
  // Bytes past the last good record are a torn append of a process that died: nobody else
  // is appending now (we hold the writer lock).
  SCONE_RETURN_IF_ERROR(TrimJournalLocked());
  SCONE_RETURN_IF_ERROR(RedoUnconfirmedApplyLocked());
  SCONE_RETURN_IF_ERROR(RepairAfterDeadWriterLocked());
  // Names moved (records applied, or a checkpoint's state loaded): open files follow theirs, and
  // one with no name left was unlinked by another process.
  if (!records.empty() || base_seq != before) {
    for (auto& [id, weak] : open_files_) {
      auto f = weak.lock();
      if (!f) continue;
      auto p = path_by_id_.find(id);
      if (p == path_by_id_.end()) {
        f->MarkUnlinked(/*by_this_process=*/false);
      } else {
        f->SetPath(p->second);
      }
      keep->push_back(std::move(f));
    }
  }
  return Status::Ok();
}

Status Volume::TakeOthersCheckpointLocked() {
  // Another process checkpointed: its state file holds everything up to its sequence number.
  bool clean;
  SCONE_RETURN_IF_ERROR(LoadBase(&clean));
  // Marked by a process that changed the volume; none can mark it clean while this one uses it.
  if (!clean) NoteMarkedInUseLocked();
  journal_seen_ = 0;
  next_seq_ = applied_seq_ + 1;
  touched_.clear();
  // Its checkpoint applied every record in place: open files reload from disk.
  WindowDurableLocked(applied_seq_);
  apply_unconfirmed_ = 0;
  published_.clear();
  // Files this process has open whose last name went before that checkpoint: no record tells
  // of it any more, the list beside the base state does.
  for (const auto& [id, weak] : open_files_) {
    if (weak.expired() || path_by_id_.count(id) != 0 || last_entries_.count(id) != 0) continue;
    if (auto last = recently_unlinked_.Find(id)) last_entries_[id] = *last;
  }
  return Status::Ok();
}

Status Volume::CatchUpIfChangedLocked(KeepAlive* keep, const ChangeInterest& interest) {
  SCONE_RETURN_IF_ERROR(WakeLocked());
  SCONE_ASSIGN_OR_RETURN(uint64_t hint, lock_->ReadCheckpointHint());
  // Every lookup asks: a server opening a file per request would pay a stat of the journal
  // each time. The count of its changes, read before the journal, spares that while it stands.
  const std::optional<uint64_t> changes = lock_->JournalChanges();
  bool appended = false;
  if (changes) {
    // The count moved: almost always an append (two nginx workers logging move it between any
    // two calls of either), read at once under the writer lock rather than looked for first.
    appended = *changes != journal_changes_seen_;
  } else {
    // A record after the last one read (the journal's tail is zeros written ahead).
    SCONE_ASSIGN_OR_RETURN(appended, journal_->HasDataAt(journal_seen_));
  }
  if (hint == applied_seq_ && !appended) return Status::Ok();
  if (hint == applied_seq_ && changes_seen_valid_ && (interest.path != nullptr || interest.id != nullptr)) {
    // Appended, but perhaps only to other files: no name changed, nor the file's slot.
    const FileId* id = interest.id;
    if (id == nullptr) {
      auto it = state_.files.find(*interest.path);
      if (it != state_.files.end()) id = &it->second.file_id;  // else: still absent, if no name changed
    }
    if (lock_->UnchangedSince(changes_seen_, id)) return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(lock_->LockWriter());
  Status s = CatchUpLocked(keep);
  lock_->UnlockWriter();
  return s;
}

Status Volume::TrimJournalLocked() {
  if (journal_->ReadEndedClean() && journal_->end() == journal_seen_) return Status::Ok();
  SCONE_ASSIGN_OR_RETURN(bool torn, journal_->HasDataAt(journal_seen_));
  if (!torn) return Status::Ok();
  SCONE_RETURN_IF_ERROR(journal_->TruncateTo(journal_seen_));
  return NoteJournalChangedLocked();
}

namespace {

// After this process bumped a count of the lock file (`before`: its value then, nullopt where
// not mapped): what it had seen moves with it where nobody else's came between.
void KeepInStep(std::optional<uint64_t> before, uint64_t& seen) {
  if (before && *before == seen) seen = *before + 1;
}

}  // namespace

Status Volume::NoteJournalChangedLocked() {
  const std::optional<uint64_t> before = lock_->JournalChanges();
  SCONE_RETURN_IF_ERROR(lock_->NoteJournalChanged());
  KeepInStep(before, journal_changes_seen_);
  return Status::Ok();
}

void Volume::ApplyOthersRecord(JournalRecord record) {
  auto shared = std::make_shared<const JournalRecord>(std::move(record));
  const JournalRecord& r = *shared;
  // Its writer applied the window in place first (a kSyncPending's writer does so after its
  // sync, and says so with a kSyncApplied).
  if (!r.lazy && r.kind != JournalRecord::Kind::kSyncPending) {
    // Its writer applies the window in place after the record, and confirms it with a
    // kSyncApplied before it lets go of the writer lock (nothing to confirm with no window).
    if (window_.empty()) {
      WindowDurableLocked(r.seq);
    } else {
      apply_unconfirmed_ = r.seq;
    }
  }
  if (r.kind == JournalRecord::Kind::kSyncPending) sync_seen_.store(r.seq, std::memory_order_release);
  if (r.kind == JournalRecord::Kind::kSyncApplied) {
    WindowDurableUpToLocked(r.upto);
    if (r.upto >= apply_unconfirmed_) apply_unconfirmed_ = 0;
  }
  if (r.kind == JournalRecord::Kind::kCommit) PublishCommitLocked(shared);
  ApplyToState(r);
  ++next_seq_;
  // Its writer marked the volume in use before it (or the next open recovers the record).
  NoteMarkedInUseLocked();
}

void Volume::PublishCommitLocked(const std::shared_ptr<const JournalRecord>& commit) {
  const FileId& id = commit->entry.file_id;
  if (commit->lazy) AddToWindowLocked(commit);
  auto open = open_files_.find(id);
  if (open != open_files_.end() && !open->second.expired()) published_[id].push_back(commit);
  touched_.insert(id);
}

// Holds the cross-process writer lock for a scope, after catching up. REQUIRES: mu_.
class Volume::WriterSection {
 public:
  WriterSection(Volume& v, KeepAlive* keep) : v_(v), keep_(keep) {}
  ~WriterSection() { End(); }
  void End() {
    if (locked_) v_.lock_->UnlockWriter();
    locked_ = false;
  }
  Status Begin(bool catch_up = true) {
    SCONE_RETURN_IF_ERROR(v_.WakeLocked());
    SCONE_RETURN_IF_ERROR(v_.lock_->LockWriter());
    locked_ = true;
    if (!catch_up) return Status::Ok();
    SCONE_RETURN_IF_ERROR(v_.CatchUpLocked(keep_));
    // A process alone learns here, at every open and commit, that another one joined.
    if (!v_.shared_.load(std::memory_order_relaxed)) v_.NoticeJoiners();
    return Status::Ok();
  }

 private:
  Volume& v_;
  KeepAlive* keep_;
  bool locked_ = false;
};

bool Volume::CheckpointForRoom(RoomFrom from) {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return false;
  WriterSection writer(*this, &keep);
  if (!writer.Begin().ok()) return false;
  // A short journal gives back its zeros ahead first (a megabyte a dd of 1 MiB blocks could not
  // use at the end); a checkpoint would also drop the records' room, which the commit of what
  // the write stages needs next.
  if (from == RoomFrom::kZerosAhead && trash_.empty() && journal_seen_ < kCheckpointForRoomJournalSize) {
    Result<bool> dropped = journal_->DropZerosAhead();
    return dropped.ok() && *dropped;
  }
  // The records' room: SQLite reopening a WAL database on a nearly full disk cuts its -shm to
  // nothing and grows it again a page at a write, room natively just freed; here each page's
  // record stayed in the journal beside it, and the fourth write failed ("disk I/O error" for a
  // mere reader).
  if (trash_.empty() && journal_seen_ == 0) return false;
  return Checkpoint(/*clean=*/false).ok();
}

// ---- create / open / close -------------------------------------------------------------

Result<std::shared_ptr<Volume>> Volume::Create(const std::string& dir, const SecretBytes& key,
                                               RegionRules rules) {
  if (key.size() != crypto::kKeySize) return InvalidArgument("a volume key has 32 bytes");
  std::shared_ptr<Volume> v(new Volume(dir, key.Clone()));
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(dir));
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(v->MetaPath("")));
  if (exists) return AlreadyExists(dir + " is already a SCONE volume");
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(v->MetaPath("meta")));
  bool alone;
  SCONE_ASSIGN_OR_RETURN(VolumeLock lock, VolumeLock::Acquire(v->MetaPath("lock"), &alone));
  v->lock_.emplace(std::move(lock));
  WriterSection writer(*v, nullptr);
  SCONE_RETURN_IF_ERROR(writer.Begin(/*catch_up=*/false));
  crypto::RandomBytes(v->state_.volume_id);
  v->state_.rules = std::move(rules);
  v->state_key_ = v->DeriveKey("scone fs v1 state");
  v->unlinked_key_ = v->DeriveKey("scone fs v1 unlinked");
  v->tag_key_ = v->DeriveKey("scone fs v1 tag");
  SCONE_ASSIGN_OR_RETURN(v->journal_, Journal::Open(v->MetaPath("journal"),
                                                    v->DeriveKey("scone fs v1 journal"),
                                                    v->state_.volume_id));
  SCONE_RETURN_IF_ERROR(v->WriteBase(/*clean=*/false));
  if (alone) SCONE_RETURN_IF_ERROR(v->lock_->Share());
  // Made by root in a directory another user owns (`chown postgres /data`, then the volume):
  // that user's programs open it.
  struct stat root;
  if (geteuid() == 0 && stat(dir.c_str(), &root) == 0 && (root.st_uid != 0 || root.st_gid != 0)) {
    SCONE_RETURN_IF_ERROR(ChownMetadata(dir, root.st_uid, root.st_gid));
  }
  v->closed_ = false;
  return v;
}

void Volume::GiveToMetadataOwner(const std::string& path) const {
  if (geteuid() != 0) return;  // made by its owner, or by a user that can access it
  struct stat meta;
  if (stat(MetaPath("").c_str(), &meta) == 0 && (meta.st_uid != 0 || meta.st_gid != 0)) {
    (void)lchown(path.c_str(), meta.st_uid, meta.st_gid);
  }
}

Status Volume::ChownMetadata(const std::string& dir, uid_t uid, gid_t gid) {
  const std::string meta = MetaPathIn(dir, "");
  if (lchown(meta.c_str(), uid, gid) != 0) return IoError("chown " + meta, errno);
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(meta, ec), end; !ec && it != end; it.increment(ec)) {
    // Files that go meanwhile (a trash entry, a state file replaced) are no longer to change.
    if (lchown(it->path().c_str(), uid, gid) != 0 && errno != ENOENT) return IoError("chown " + it->path().string(), errno);
  }
  if (ec) return IoError("list " + meta, ec.value());
  return Status::Ok();
}

Result<std::shared_ptr<Volume>> Volume::Open(const std::string& dir, const SecretBytes& key,
                                             const OpenOptions& options) {
  auto opened = OpenOnce(dir, key, options);
  if (!opened.ok() && OutOfSpace(opened.status()) &&
      SpaceReserve(MetaPathIn(dir, "reserve")).Release()) {
    // A recovery that writes in place on a full disk (a process killed with writes the journal
    // holds): as after a crash during a recovery, the next open starts it over, with the
    // reserve's room. Before, the volume stayed shut until space was freed outside it.
    std::fprintf(stderr, "scone: volume %s: the disk is full; the volume's reserve went to opening it (%s)\n",
                 dir.c_str(), opened.status().message().c_str());
    opened = OpenOnce(dir, key, options);
    if (opened.ok()) (*opened)->reserve_released_ = true;
  }
  // Kept by the process that opens the volume alone, outside the volume's locks.
  if (opened.ok() && (*opened)->opened_alone_) (*opened)->KeepReserve();
  return opened;
}

Result<std::shared_ptr<Volume>> Volume::OpenOnce(const std::string& dir, const SecretBytes& key,
                                                 const OpenOptions& options) {
  if (key.size() != crypto::kKeySize) return InvalidArgument("a volume key has 32 bytes");
  std::shared_ptr<Volume> v(new Volume(dir, key.Clone()));
  v->in_use_marked_ = false;  // until the state file or the journal says so (below)
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(v->MetaPath("volume")));
  if (!exists) return NotFound(dir + " is not a SCONE volume (no " + v->MetaPath("volume") + ")");
  bool alone;
  SCONE_ASSIGN_OR_RETURN(VolumeLock lock, VolumeLock::Acquire(v->MetaPath("lock"), &alone));
  v->lock_.emplace(std::move(lock));
  WriterSection writer(*v, nullptr);
  SCONE_RETURN_IF_ERROR(writer.Begin(/*catch_up=*/false));
  bool was_clean = false;
  SCONE_RETURN_IF_ERROR(v->LoadBase(&was_clean));
  SCONE_ASSIGN_OR_RETURN(v->journal_, Journal::Open(v->MetaPath("journal"),
                                                    v->DeriveKey("scone fs v1 journal"),
                                                    v->state_.volume_id));
  SCONE_ASSIGN_OR_RETURN(std::vector<JournalRecord> records,
                         v->journal_->ReadFrom(v->applied_seq_ + 1, &v->journal_seen_, /*whole=*/true));
  v->next_seq_ = v->applied_seq_ + 1;
  v->durable_seq_ = v->applied_seq_;
  v->FitCheckpointsToDisk();
  // Taken (removed) by every open before anything changes, fs/close_mark.h (one that joins
  // others finds one only where the process that left it still has the volume open: a program
  // whose exec is under way, Volume::LeaveForExec).
  const std::optional<CloseMark> mark = TakeCloseMark(v->MetaPath(kCloseMarkName), [&] { return v->CloseMarkKey(); });
  if (!alone) {
    // Others have it open and keep it consistent: only catch up with them, and let them know
    // that they are no longer alone.
    if (was_clean && records.empty()) v->found_clean_stamp_ = v->StampOfStateFile();
    // Marked by another (a close that kept the journal leaves it so, fs/close_mark.h).
    if (!was_clean) v->NoteMarkedInUseLocked();
    for (JournalRecord& r : records) v->ApplyOthersRecord(std::move(r));
    SCONE_RETURN_IF_ERROR(v->TrimJournalLocked());
    SCONE_RETURN_IF_ERROR(v->RedoUnconfirmedApplyLocked());
    SCONE_RETURN_IF_ERROR(v->lock_->BumpUsersHint());
    v->shared_ = true;
  } else if ((!was_clean || !records.empty()) && v->ClosedInThisBoot(mark, records)) {
    // Closed in this boot by a process that kept its journal: the data files are as the records
    // say, in the page cache; caught up with as a process that joins does, no recovery. (Before
    // the next branch, which goes on the same way, and whose look at every file the records
    // name cost a cp 300 access checks in a journal of 300 files.)
    v->NoteMarkedInUseLocked();
    for (JournalRecord& r : records) v->ApplyOthersRecord(std::move(r));
    SCONE_RETURN_IF_ERROR(v->TrimJournalLocked());
    SCONE_RETURN_IF_ERROR(v->RedoUnconfirmedApplyLocked());
    // A process that joined the one that left the mark, and died inside a commit.
    SCONE_RETURN_IF_ERROR(v->RepairAfterDeadWriterLocked());
    v->AdoptTrashLocked();
  } else if ((!was_clean || !records.empty()) && !v->MayWriteFilesOf(records)) {
    // Records of files this process may not write (another user's, or made read-only): it may
    // not put them in place, and a recovery that skipped them would checkpoint them away. It
    // goes on from them as a process that joins would, and leaves them to one that may.
    for (JournalRecord& r : records) v->ApplyOthersRecord(std::move(r));
    SCONE_RETURN_IF_ERROR(v->TrimJournalLocked());
  } else if (!was_clean || !records.empty()) {
    v->NoteMarkedInUseLocked();  // a crash during the recovery is recovered again
    SCONE_RETURN_IF_ERROR(v->Recover(std::move(records)).Annotate("recovering volume " + dir));
  } else if (v->TrashHoldsFiles()) {
    // A close cut short after its checkpoint; a name left to a file in the trash goes too (the
    // tree is walked only then).
    SCONE_RETURN_IF_ERROR(v->MarkInUseLocked());
    std::set<std::pair<dev_t, ino_t>> durably_unlinked;
    SCONE_RETURN_IF_ERROR(v->SettleTrash(&durably_unlinked));
    if (!durably_unlinked.empty()) SCONE_RETURN_IF_ERROR(v->DropLostCreates(durably_unlinked));
  } else {
    // Clean, and nothing to settle: the state file is marked in use before this process's
    // first record (MarkInUseLocked), and left as it is by a process that only reads.
    v->found_clean_alone_ = true;
    v->found_clean_stamp_ = v->StampOfStateFile();
  }
  if (alone) {
    SCONE_RETURN_IF_ERROR(v->lock_->Share());
    v->opened_alone_ = true;
  }
  SCONE_ASSIGN_OR_RETURN(v->users_seen_, v->lock_->ReadUsersHint());
  v->users_when_found_clean_ = v->users_seen_;
  if (options.expected_tag && !crypto::ConstantTimeEquals(v->Tag(), *options.expected_tag)) {
    return RolledBack("volume " + dir +
                      ": its state does not match the trusted tag (rolled back to an older copy, "
                      "replaced, or modified)");
  }
  writer.End();
  if (!alone) v->WaitForHandOver();
  v->closed_ = false;
  return v;
}

std::vector<std::shared_ptr<ProtectedFile>> Volume::OpenFilesLocked() const {
  std::vector<std::shared_ptr<ProtectedFile>> files;
  for (const auto& [id, weak] : open_files_) {
    if (auto f = weak.lock()) files.push_back(std::move(f));
  }
  return files;
}

bool Volume::ClosedInThisBoot(const std::optional<CloseMark>& mark, const std::vector<JournalRecord>& records) const {
  if (!mark || mark->volume_id != state_.volume_id || mark->applied_seq != applied_seq_) return false;
  const uint64_t last = records.empty() ? applied_seq_ : records.back().seq;
  if (mark->last_seq != last || mark->journal_end != journal_seen_) return false;
  const std::optional<BootId> boot = CurrentBootId();
  return boot && *boot == mark->boot;
}

void Volume::AdoptTrashLocked() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(MetaPath("trash"), ec)) {
    auto id = FromHexArray<kFileIdSize>(e.path().filename().string());
    if (!id.ok() || path_by_id_.count(*id) != 0) continue;
    trash_.push_back(*id);
    trash_bytes_ += RoomOnDisk(e.path().string());
  }
}

bool Volume::MayKeepJournalLocked(bool alone) const {
  // A failed apply is the next open's recovery to redo; a full disk wants the journal's room
  // back; a long journal is checkpointed as a commit would.
  if (apply_failed_ || reserve_released_ || journal_seen_ > checkpoint_journal_size_) return false;
  // The last process: the disk must say in use (the mark is trusted only then).
  return !alone || in_use_marked_;
}

Status Volume::GiveBackTrashLocked() {
  if (trash_.empty()) return Status::Ok();
  if (trash_bytes_ < kTrashGivenBackAtClose) {
    // On a disk that is nearly full every block counts (the next write would fail natively).
    const Result<uint64_t> free = journal_->FreeSpace();
    if (free.ok() && *free >= kLittleRoomLeft) return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  EmptyTrashLocked();
  return Status::Ok();
}

Status Volume::WriteCloseMarkLocked() {
  const std::optional<BootId> boot = CurrentBootId();
  if (!boot) return Unsupported("no boot id");
  CloseMark mark{state_.volume_id, applied_seq_, next_seq_ - 1, journal_seen_, *boot};
  const std::string path = MetaPath(kCloseMarkName);
  SCONE_RETURN_IF_ERROR(WriteCloseMark(path, CloseMarkKey(), mark));
  GiveToMetadataOwner(path);
  return Status::Ok();
}

Status Volume::CloseKeepingJournalLocked(bool alone) {
  SCONE_RETURN_IF_ERROR(GiveBackTrashLocked());
  if (!alone) return Status::Ok();  // the others have its records, and the last one closes
  if (WriteCloseMarkLocked().ok()) return Status::Ok();
  return Checkpoint(/*clean=*/true);
}

bool Volume::MarkIfAloneLocked() {
  return lock_->TryAlone() && MayKeepJournalLocked(/*alone=*/true) && GiveBackTrashLocked().ok() &&
         WriteCloseMarkLocked().ok();
}

Status Volume::LeaveForExec() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_ || resting_) return Status::Ok();
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  left_for_exec_ = MarkIfAloneLocked();
  return lock_->Share();  // the exec may fail (and a TryAlone that succeeded held the use lock alone)
}

void Volume::AfterFailedExec() {
  std::lock_guard lock(mu_);
  if (left_for_exec_) os::Sys().unlink(MetaPath(kCloseMarkName).c_str());
  left_for_exec_ = false;
}

Status Volume::Close(CloseMode mode) {
  std::vector<std::shared_ptr<ProtectedFile>> files;
  {
    std::lock_guard lock(mu_);
    if (closed_) return Status::Ok();
    files = OpenFilesLocked();
  }
  Status first;
  for (auto& f : files) {
    // (Files the runtime keeps after their last descriptor went, to open them again at once.)
    Status s = mode == CloseMode::kKeepJournal ? f->Close() : f->Sync();
    if (first.ok() && !s.ok()) first = s;
  }
  (void)buffered_.Take(nullptr);  // all committed
  KeepAlive keep;
  std::lock_guard lock(mu_);
  {
    WriterSection writer(*this, &keep);
    Status s = writer.Begin();
    // The last process to close marks the volume clean; one that changed nothing, and found no
    // change by others (none marked it in use since), leaves the state file as it found it: a
    // process that only read writes nothing (others still open close it; the last is alone
    // and found it clean, or another's mark is there for it to clear).
    const bool alone = s.ok() && lock_->TryAlone();
    auto users = alone ? lock_->ReadUsersHint() : Result<uint64_t>(uint64_t{0});
    const bool state_file_as_found = alone && found_clean_stamp_ && next_seq_ - 1 == applied_seq_ &&
                                     StampOfStateFile() == found_clean_stamp_;
    const bool untouched = !in_use_marked_ &&
                           (!alone || state_file_as_found ||
                            (found_clean_alone_ && users.ok() && *users == users_when_found_clean_));
    if (s.ok() && !untouched) {
      s = mode == CloseMode::kKeepJournal && MayKeepJournalLocked(alone) ? CloseKeepingJournalLocked(alone)
                                                                         : Checkpoint(/*clean=*/alone);
    }
    // A process that changed its user (a server's worker) may not replace the state file: what
    // it changed is durable in the journal by then (the checkpoint's first step), for another
    // process's checkpoint or recovery. It used to say so at every exit.
    if (s.sys_errno() == EACCES || s.sys_errno() == EPERM) s = Status::Ok();
    if (first.ok()) first = s;
  }
  closed_ = true;
  holds_alone_ = false;
  buffering_ = false;
  lock_->Release();  // lets go of every lock of this process's
  return first;
}

Status Volume::MakeDurable() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Status::Ok();
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  if (!shared_.load(std::memory_order_relaxed)) return MakeWindowDurableLocked();
  return MakeWindowDurableSharedLocked(writer);
}

Status Volume::MakeWindowDurableSharedLocked(WriterSection& writer) {
  if (next_seq_ - 1 <= std::max(durable_seq_.load(std::memory_order_relaxed), synced_seq_)) return Status::Ok();
  // What the window wrote in place must be on disk before the record that makes it durable.
  SCONE_RETURN_IF_ERROR(SyncWindowDataLocked());
  JournalRecord pending;
  pending.kind = JournalRecord::Kind::kSyncPending;
  SCONE_RETURN_IF_ERROR(WriteRecordLocked(pending));
  sync_seen_.store(pending.seq, std::memory_order_release);
  // The sync is the slow part (a device flush): the others publish and catch up meanwhile,
  // where they used to wait for it. Records they append now may become durable with ours;
  // nobody counts on that before a durable record of their own.
  writer.End();
  if (sync_gap_hook) sync_gap_hook();
  SCONE_RETURN_IF_ERROR(journal_->Sync());
  if (window_bytes_ < apply_window_bytes && apply_unconfirmed_ == 0) {
    // Durable now; in place later. A database's log page is rewritten at every commit: each
    // apply wrote it in place again, read and put back its times, and the next sync of the
    // journal wrote an inode block for them. The window goes in place once it holds more (or
    // at a checkpoint, another's sync, this process's close); until then every process reads
    // it from memory, as between any kSyncPending and its kSyncApplied.
    synced_seq_ = pending.seq;
    window_data_.clear();  // synced before the record (an fsync of a clean file still flushes)
    EmptyTrashLocked();    // their unlinks are durable
    return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(writer.Begin());
  // Another process's sync, or a checkpoint, may have put the window in place meanwhile.
  if (durable_seq_.load(std::memory_order_relaxed) >= pending.seq) return Status::Ok();
  return ApplySyncedWindowLocked(pending.seq);
}

Status Volume::ApplySyncedWindowLocked(uint64_t upto) {
  if (!MayApplyWindowLocked(upto)) {
    LeaveUnappliedLocked(upto);  // the others keep the window: no kSyncApplied
    return Status::Ok();
  }
  Status applied = ApplyWindowLocked(upto);
  // Not on failure: the others then keep those records in their window (a failed apply is
  // repaired from the journal at the next open).
  if (applied.ok()) applied = ConfirmAppliedLocked(upto);
  WindowDurableUpToLocked(upto);
  EmptyTrashLocked();
  return applied;
}

Status Volume::MakeDurableAndTag(VolumeTag* tag, uint64_t* generation) {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  // Closed, or resting: everything it published was made durable then. A resting process is
  // not woken for a report (it would join the process that has the volume alone).
  if (!closed_ && !resting_) {
    WriterSection writer(*this, &keep);
    SCONE_RETURN_IF_ERROR(writer.Begin());
    SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  }
  *tag = state_.Tag(tag_key_);
  *generation = next_seq_ - 1;
  return Status::Ok();
}

void Volume::BeforeFork() {
  // Published once each: a file that cannot publish what it holds (unlinked by another process,
  // which keeps its changes in memory; a failed commit) goes to the child as it is.
  std::set<const ProtectedFile*> published;
  for (;;) {
    // The order every thread takes them in: the images lock (a mapping's image loads and seals
    // its file under it), each file's lock, the volume's.
    images_mu_.lock();
    if (!held_for_fork_.empty()) {
      // Another thread's fork, whose references its thread has not dropped yet: dropped here,
      // outside every lock (a last one commits).
      std::vector<std::shared_ptr<ProtectedFile>> left = std::move(held_for_fork_);
      held_for_fork_.clear();
      images_mu_.unlock();
      continue;
    }
    {
      std::lock_guard lock(mu_);
      held_for_fork_ = OpenFilesLocked();
    }
    for (auto& f : held_for_fork_) f->HoldForFork();
    mu_.lock();
    // A file another thread opened meanwhile: held if no thread is inside it yet.
    std::set<const ProtectedFile*> held;
    for (const auto& f : held_for_fork_) held.insert(f.get());
    std::shared_ptr<ProtectedFile> busy;
    for (const auto& [id, weak] : open_files_) {
      auto f = weak.lock();
      if (f == nullptr || held.count(f.get()) != 0) continue;
      if (!f->TryHoldForFork()) {
        busy = std::move(f);
        break;
      }
      held_for_fork_.push_back(std::move(f));
    }
    // A write buffered after ShareBeforeFork's publish: the child must not start from it.
    std::shared_ptr<ProtectedFile> unpublished;
    if (busy == nullptr) {
      for (const auto& f : held_for_fork_) {
        if (published.count(f.get()) == 0 && f->UnpublishedWhileHeld()) {
          unpublished = f;
          break;
        }
      }
      if (unpublished == nullptr) break;
    }
    // Everything let go of while that thread finishes, or the write is published, then taken
    // again. The references go outside the volume's lock: a last one commits.
    for (auto& f : held_for_fork_) f->mu_.unlock();
    std::vector<std::shared_ptr<ProtectedFile>> left = std::move(held_for_fork_);
    held_for_fork_.clear();
    mu_.unlock();
    images_mu_.unlock();
    if (busy != nullptr) {
      busy->HoldForFork();
      busy->mu_.unlock();
    } else {
      published.insert(unpublished.get());
      if (Status s = unpublished->Close(); !s.ok()) std::fprintf(stderr, "scone: before a fork: %s\n", s.message().c_str());
    }
  }
  for (auto& f : held_for_fork_) f->HoldPathForFork();
  buffered_.BeforeFork();
}

void Volume::ShareBeforeFork() {
  std::lock_guard lock(mu_);
  if (closed_ || resting_) return;
  shared_ = true;
}

void Volume::AfterForkInParent() {
  if (!resting_) shared_ = true;
  if (holds_alone_) lock_->LetGoAlone();  // what it buffered was published before the fork
  holds_alone_ = false;
  buffering_ = false;
  buffered_.AfterForkInParent();
  for (auto& f : held_for_fork_) f->LetGoAfterFork(/*in_child=*/false);
  mu_.unlock();
  images_mu_.unlock();
}

// A forked child (a server's worker, a database backend) of a parent that uses the volume
// shares it at once. The child of a resting parent (no file of the volume open) rests too: its
// first use takes the use lock as any process that opens the volume does, joining (counted, and
// waiting for the hand-over) where another process has it. Shared at once without being
// counted, it was never noticed by its parent waking alone afterwards, which buffered and read
// without catching up: the child's writes were lost (hostile finding). A program it executes
// opens the volume anew, and has it alone if nobody else uses it.
void Volume::AfterForkInChild() {
  holds_alone_ = false;  // the parent's lock (on the descriptor they share until the child reopens)
  buffering_ = false;
  watched_ = false;  // the parent's watcher
  if (!resting_) shared_ = true;
  buffered_.AfterForkInChild();
  for (auto& f : held_for_fork_) f->LetGoAfterFork(/*in_child=*/true);
  mu_.unlock();
  images_mu_.unlock();
}

void Volume::DropFilesHeldForFork(bool in_child) {
  std::vector<std::shared_ptr<ProtectedFile>> held;
  {
    std::lock_guard lock(images_mu_);  // which every fork holds from BeforeFork to AfterFork
    held.swap(held_for_fork_);
  }
  if (in_child) {
    for (auto& f : held) {
      if (f.use_count() == 1) f->LeaveToParent();
    }
  }
}

Status Volume::RejoinAfterFork() {
  std::lock_guard lock(mu_);
  if (closed_) return Status::Ok();
  return lock_->ReopenInChild(/*take_use=*/!resting_).Annotate("volume " + dir_ + " in a forked process");
}

Status Volume::RestIfUnused() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_ || resting_) return Status::Ok();
  const bool files_open =
      std::any_of(open_files_.begin(), open_files_.end(), [](const auto& kv) { return !kv.second.expired(); });
  if (files_open) {
    // In use across the fork: marked now, while this process may still write the state file
    // (a server's workers change their user after the fork, then append to a log it opened).
    if (in_use_marked_) return Status::Ok();
    WriterSection writer(*this, &keep);
    SCONE_RETURN_IF_ERROR(writer.Begin());
    return MarkInUseLocked();
  }
  {
    WriterSection writer(*this, &keep);
    SCONE_RETURN_IF_ERROR(writer.Begin());
    // Another process that takes the volume alone (a shell's command) catches up with the
    // journal as this process leaves it, by the mark a close leaves (fs/close_mark.h), if this
    // one has it alone and marked in use. Else it may recover it: then nothing may be lazy.
    if (!MarkIfAloneLocked()) SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  }
  if (holds_alone_) lock_->LetGoAlone();
  holds_alone_ = false;
  buffering_ = false;
  rested_on_ = in_use_marked_ ? StampOfStateFile() : std::nullopt;
  lock_->ReleaseUse();
  resting_ = true;
  shared_ = false;
  return Status::Ok();
}

Status Volume::WakeLocked() {
  if (!resting_) return Status::Ok();
  // The joiners' count before the use lock: one that joins after this process takes it bumps
  // the count past what it read. Read after, it could hold the bump of a joiner that came in
  // between, and this process took itself for alone beside it: it buffered and read without
  // catching up, and both appended at the same offset (forked workers of a resting parent,
  // each opening the log per line: a worker's first lines lost, 1 run in 30 under load).
  SCONE_ASSIGN_OR_RETURN(const uint64_t users_before, lock_->ReadUsersHint());
  bool alone = false;
  SCONE_RETURN_IF_ERROR(lock_->TakeUse(&alone));
  resting_ = false;
  // Others may have used it meanwhile, the last of them closing it clean: marked again before
  // this process's next change, unless the state file is still the one it rested on or the last
  // of them kept the journal (its mark, taken here before this process changes anything,
  // fs/close_mark.h, was written where the disk said in use, as it still does).
  in_use_marked_ = in_use_marked_ && rested_on_ && StampOfStateFile() == rested_on_;
  if (TakeCloseMark(MetaPath(kCloseMarkName), [this] { return CloseMarkKey(); })) NoteMarkedInUseLocked();
  // (found_clean_stamp_ stays: the close compares the file with it)
  if (wake_hook) wake_hook();
  if (alone) {
    users_seen_ = users_before;
    return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(lock_->LockWriter());
  Status bumped = lock_->BumpUsersHint();
  lock_->UnlockWriter();
  SCONE_RETURN_IF_ERROR(bumped);
  shared_ = true;
  WaitForHandOver();
  SCONE_ASSIGN_OR_RETURN(users_seen_, lock_->ReadUsersHint());
  return Status::Ok();
}

namespace {
void (*alone_hook)(const std::shared_ptr<Volume>&) = nullptr;
void (*buffered_hook)() = nullptr;
// How long a process that joins waits for the one alone to hand over (then it goes on, saying
// so: that process is stopped, or a tool without the runtime's watcher).
constexpr int kHandOverLimitMs = 10'000;
}  // namespace

void Volume::SetSyncGapHookForTesting(std::function<void()> hook) { sync_gap_hook = std::move(hook); }
void Volume::SetBeforeApplyHookForTesting(std::function<void()> hook) { before_apply_hook = std::move(hook); }

void Volume::SetBeforeRecordHookForTesting(std::function<void()> hook) { before_record_hook = std::move(hook); }

void Volume::SetWakeHookForTesting(std::function<void()> hook) { wake_hook = std::move(hook); }

void Volume::SetAfterRecordHookForTesting(std::function<void()> hook) { after_record_hook = std::move(hook); }
void Volume::SetApplyWindowBytesForTesting(size_t bytes) { apply_window_bytes = bytes; }

void Volume::SetAloneHook(void (*hook)(const std::shared_ptr<Volume>& volume)) { alone_hook = hook; }

void Volume::SetBufferedHook(void (*hook)()) { buffered_hook = hook; }

void Volume::NoteBuffered(const FileId& id) {
  if (buffered_.Note(id) && buffered_hook != nullptr) buffered_hook();
}

Status Volume::PublishBuffered(const ProtectedFile* except) {
  std::vector<FileId> ids = buffered_.Take(except != nullptr ? &except->id() : nullptr);
  if (ids.empty()) return Status::Ok();
  struct Done {
    ~Done() { BufferedFiles::Published(); }
  } done;
  std::vector<std::shared_ptr<ProtectedFile>> files;
  {
    std::lock_guard lock(mu_);
    for (const FileId& id : ids) {
      if (auto it = open_files_.find(id); it != open_files_.end()) {
        if (auto f = it->second.lock()) files.push_back(std::move(f));
      }
    }
  }
  // A file closed meanwhile published as it closed.
  Status published = PublishFiles(files);
  // The volume closed meanwhile (the process exits, the watcher publishing beside it): its close
  // committed what it could, and refuses what comes after with EIO to the program itself.
  std::lock_guard lock(mu_);
  return closed_ ? Status::Ok() : published;
}

Status Volume::PublishFiles(const std::vector<std::shared_ptr<ProtectedFile>>& files) {
  Status first;
  for (const auto& f : files) {
    Status s = f->Close();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

bool Volume::MayBuffer() {
  if (buffering_.load(std::memory_order_acquire)) return !Shared();  // the watcher, or the poll, may end it
  if (Shared()) return false;
  std::lock_guard lock(mu_);
  if (shared_ || closed_ || resting_) return false;
  if (!holds_alone_) {
    // The alone lock first, then the joiners' count (a joiner bumps the count, then looks at the
    // lock): either this process sees the joiner, or the joiner waits for the hand-over.
    if (!lock_->HoldAlone().ok()) {
      shared_ = true;
      return false;
    }
    holds_alone_ = true;
    auto users = lock_->ReadUsersHint();
    if (!users.ok() || *users != users_seen_) {
      lock_->LetGoAlone();
      holds_alone_ = false;
      shared_ = true;
      return false;
    }
  }
  if (!watched_ && alone_hook != nullptr) {
    watched_ = true;
    alone_hook(shared_from_this());
  }
  buffering_.store(true, std::memory_order_release);
  return true;
}

void Volume::WaitForHandOver() {
  if (!lock_->WaitForHandOver(kHandOverLimitMs)) {
    std::fprintf(stderr, "scone: volume %s: the process that had it alone did not hand over within %d s: what it "
                 "buffered appears to this process late\n", dir_.c_str(), kHandOverLimitMs / 1000);
  }
}

Status Volume::HandOverIfJoined() {
  std::vector<std::shared_ptr<ProtectedFile>> files;
  {
    std::lock_guard lock(mu_);
    if (!holds_alone_ || closed_) return Status::Ok();
    auto users = lock_->ReadUsersHint();
    if (users.ok() && *users == users_seen_) return Status::Ok();  // the lock file changed for another reason
    shared_ = true;
    files = OpenFilesLocked();
  }
  (void)buffered_.Take(nullptr);  // every open file is published below
  // Published as the process's own calls would publish them, now that it shares.
  Status first = PublishFiles(files);
  std::lock_guard lock(mu_);
  if (holds_alone_) lock_->LetGoAlone();
  holds_alone_ = false;
  buffering_ = false;
  return first;
}

// ---- journal, commits and recovery ------------------------------------------------------

Status Volume::AppendLocked(JournalRecord& record, bool durable) {
  record.lazy = !durable;
  // What the window wrote in place must be on disk before a record that makes it durable.
  if (durable) SCONE_RETURN_IF_ERROR(SyncWindowDataLocked());
  SCONE_RETURN_IF_ERROR(WriteRecordLocked(record));
  if (durable) SCONE_RETURN_IF_ERROR(journal_->Sync());
  if (durable) {
    const bool had_window = !window_.empty();
    if (before_apply_hook) before_apply_hook();
    if (had_window && !MayApplyWindowLocked(UINT64_MAX)) {
      LeaveUnappliedLocked(record.seq);
      EmptyTrashLocked();
      return Status::Ok();
    }
    Status applied = ApplyWindowLocked();
    WindowDurableLocked(record.seq);
    EmptyTrashLocked();
    // A failed apply is repaired from the journal at the next open; report it all the same.
    SCONE_RETURN_IF_ERROR(applied);
    apply_unconfirmed_ = 0;  // another's durable record before this one: in place too now
    // The others keep the window until this says it is in place (see apply_unconfirmed_).
    if (had_window) SCONE_RETURN_IF_ERROR(ConfirmAppliedLocked(record.seq));
  }
  return Status::Ok();
}

bool Volume::MayWriteFilesOf(const std::vector<JournalRecord>& records) const {
  std::set<std::string> checked;
  for (const JournalRecord& r : records) {
    if (r.kind != JournalRecord::Kind::kCommit || !checked.insert(r.path).second) continue;
    if (!MayWriteByName(r.path)) return false;
  }
  return true;
}

bool Volume::MayWriteByName(const std::string& path) const {
  const std::string full = dir_ + "/" + path;
  // Only a refusal counts: a missing file is reported where the apply opens it.
  return faccessat(AT_FDCWD, full.c_str(), R_OK | W_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) == 0 ||
         (errno != EACCES && errno != EPERM && errno != EROFS);
}

void Volume::LeaveUnappliedLocked(uint64_t seq) {
  if (seq > durable_seq_.load(std::memory_order_relaxed)) durable_seq_.store(seq, std::memory_order_release);
  apply_unconfirmed_ = seq;
}

Status Volume::ConfirmAppliedLocked(uint64_t upto) {
  JournalRecord done;
  done.kind = JournalRecord::Kind::kSyncApplied;
  done.upto = upto;
  return AppendLocked(done, /*durable=*/false);
}

Status Volume::RedoUnconfirmedApplyLocked() {
  const uint64_t upto = apply_unconfirmed_;
  if (upto == 0 || !MayApplyWindowLocked(upto)) return Status::Ok();  // left to a process that may
  SCONE_RETURN_IF_ERROR(ApplyWindowLocked(upto));
  WindowDurableUpToLocked(upto);
  apply_unconfirmed_ = 0;
  return ConfirmAppliedLocked(upto);
}

namespace {

bool GrowsNothing(const JournalRecord& record) {
  using Kind = JournalRecord::Kind;
  switch (record.kind) {
    case Kind::kUnlink:
    case Kind::kRename:
    case Kind::kLink:  // a name, which natively takes no room either (git's link, then unlink)
    case Kind::kSync:
    case Kind::kSyncPending:
    case Kind::kSyncApplied:
      return true;
    default:
      return false;
  }
}

}  // namespace

Status Volume::WriteRecordLocked(JournalRecord& record) {
  // The journal appends after the last record it read or wrote, which must be where this
  // process caught up to (under the writer lock it always is): never over another's record.
  if (journal_->end() != journal_seen_) {
    return Internal(MetaPath("journal") + ": appending at " + std::to_string(journal_->end()) +
                    ", but this process read up to " + std::to_string(journal_seen_));
  }
  // In use before the first record: a lazy record lost in a power cut, whose change reached the
  // disk (a create, an unlink), is undone only by a recovery.
  SCONE_RETURN_IF_ERROR(MarkInUseLocked());
  // Records that remove, rename or make durable may use the reserve: an `rm` on a full disk
  // makes room, as natively. A commit's room was reserved before it was built (CommitFile).
  const auto append = [&] { return journal_->Append(next_seq_, record, /*durable=*/false); };
  SCONE_RETURN_IF_ERROR(GrowsNothing(record) ? WithReserve("a journal record", append) : append());
  SCONE_RETURN_IF_ERROR(NoteJournalChangedLocked());
  NoteRecordChangesLocked(record);
  record.seq = next_seq_++;
  // Our own record is in state_ already: catching up later need not read it back.
  journal_seen_ = journal_->end();
  return Status::Ok();
}

void Volume::NoteRecordChangesLocked(const JournalRecord& record) {
  using Kind = JournalRecord::Kind;
  switch (record.kind) {
    case Kind::kCreate:
    case Kind::kRename:
    case Kind::kUnlink:
    case Kind::kLink:
      KeepInStep(lock_->NoteNamesChanged(), changes_seen_.names);
      if (record.kind != Kind::kCreate) break;
      [[fallthrough]];
    case Kind::kCommit:
      KeepInStep(lock_->NoteFileChanged(record.entry.file_id),
                changes_seen_.files[VolumeLock::SlotOf(record.entry.file_id)]);
      break;
    default:
      break;  // syncs change what is durable, not what a lookup sees
  }
}

std::string Volume::TrashPath(const FileId& id) const { return MetaPath("trash/" + ToHex(id)); }

void Volume::EmptyTrashLocked() {
  for (const FileId& id : trash_) os::Sys().unlink(TrashPath(id).c_str());
  trash_.clear();
  trash_bytes_ = 0;
}

// Creates and unlinks of encrypted files are journaled lazily (durable with the next commit, as
// a file system makes them durable with the next fsync), and carried out on disk at once. After
// a crash the disk can hold a change whose record was lost; this puts the disk back to the
// state the journal describes:
//   - a file the state lists but that is missing, and waits in the trash: its unlink was lost,
//     it comes back;
//   - a file in the trash the state does not list: its unlink is durable, it goes;
//   - an encrypted file the state does not list, holding no more than a header this volume's
//     key authenticates (or a torn prefix of one): its create was lost, it goes.
// Anything else unknown stays, and is reported as planted.
//   - a file both at its name and in the trash (an unlink links it into the trash, then removes
//     its name, so that a watcher sees IN_DELETE): the unlink's record decides which one goes.
Status Volume::UndoLostNamespaceChanges() {
  std::set<std::pair<dev_t, ino_t>> durably_unlinked;
  SCONE_RETURN_IF_ERROR(SettleTrash(&durably_unlinked));
  return DropLostCreates(durably_unlinked);
}

Status Volume::SettleTrash(std::set<std::pair<dev_t, ino_t>>* durably_unlinked) {
  for (const auto& [path, entry] : state_.files) {
    std::string full = dir_ + "/" + path;
    SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(full));
    SCONE_ASSIGN_OR_RETURN(bool trashed, os::Exists(TrashPath(entry.file_id)));
    if (exists) {
      // Its unlink's record was lost after the link into the trash: the name stays.
      if (trashed) os::Sys().unlink(TrashPath(entry.file_id).c_str());
      continue;
    }
    if (!trashed) continue;
    SCONE_RETURN_IF_ERROR(os::MakeDirectories(full.substr(0, full.rfind('/'))));
    if (os::Sys().rename(TrashPath(entry.file_id).c_str(), full.c_str()) != 0) {
      return IoError("restore " + full, errno);
    }
  }
  SCONE_RETURN_IF_ERROR(RestoreLostNames());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(MetaPath("trash"), ec)) {
    auto id = FromHexArray<kFileIdSize>(e.path().filename().string());
    struct stat st;
    if (id.ok() && path_by_id_.count(*id) == 0 && os::Sys().lstat(e.path().c_str(), &st) == 0) {
      durably_unlinked->insert({st.st_dev, st.st_ino});
    }
  }
  RemoveEntriesOfUnknownFiles(MetaPath("trash"));
  return Status::Ok();
}

void Volume::RemoveEntriesOfUnknownFiles(const std::string& meta_dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(meta_dir, ec)) {
    auto id = FromHexArray<kFileIdSize>(e.path().filename().string());
    if (!id.ok() || path_by_id_.count(*id) == 0) {
      os::Sys().unlink(e.path().c_str());
    }
  }
}

Status Volume::DropLostCreates(const std::set<std::pair<dev_t, ino_t>>& durably_unlinked) {
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(dir_, ec), end;
  std::vector<std::string> lost;
  for (; !ec && it != end; it.increment(ec)) {
    std::string rel = it->path().lexically_relative(dir_).string();
    if (rel == kMetaDirName) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || it->is_symlink(ec) || state_.files.count(rel) != 0) continue;
    if (state_.rules.RegionOf(rel) != Region::kEncrypted) continue;
    // The name an unlink had not removed yet when the process died; its record is durable.
    struct stat st;
    if (!durably_unlinked.empty() && os::Sys().lstat(it->path().c_str(), &st) == 0 &&
        durably_unlinked.count({st.st_dev, st.st_ino}) != 0) {
      lost.push_back(it->path().string());
      continue;
    }
    auto head = ReadHead(it->path().string(), kHeaderSize);
    if (!head.ok()) continue;
    // A header this volume's key authenticates, for an id the state does not know: created
    // here, its create record lost (whatever it holds was sealed by this volume, and no durable
    // record refers to it).
    bool created_here = false;
    if (head->size() == kHeaderSize) {
      FileId id;
      std::copy(head->begin() + 16, head->begin() + 16 + kFileIdSize, id.begin());
      created_here = path_by_id_.count(id) == 0 &&
                     ProtectedFile::EncodeHeader(id, Region::kEncrypted, DeriveFileKeys(id).root) == *head;
    } else {
      size_t n = std::min(head->size(), sizeof(kFileMagic));
      created_here = std::memcmp(head->data(), kFileMagic, n) == 0;
    }
    if (created_here) lost.push_back(it->path().string());
  }
  for (const std::string& f : lost) os::Sys().unlink(f.c_str());
  return Status::Ok();
}

void Volume::ApplyToState(const JournalRecord& record) {
  using Kind = JournalRecord::Kind;
  auto drop = [&](const std::string& path) {
    auto it = state_.files.find(path);
    if (it == state_.files.end()) return;
    const FileId id = it->second.file_id;
    NameRemoved(id, path);
    // Its last name, while this process has it open: its last entry is kept, so that the open
    // file catches up with what others committed before the unlink (chunks they wrote in place).
    if (names_.CountOf(id) == 0) {
      recently_unlinked_.Note(it->second);
      if (open_files_.count(id) != 0) last_entries_[id] = it->second;
    }
    state_.files.erase(it);
  };
  auto add = [&](const std::string& path, const FileEntry& entry) {
    drop(path);
    state_.files[path] = entry;
    NameAdded(entry.file_id, path);
  };
  switch (record.kind) {
    case Kind::kCreate:
      add(record.path, record.entry);
      break;
    case Kind::kCommit:
      // Every name of the file carries its entry.
      for (const std::string& name : names_.Of(record.entry.file_id)) {
        state_.files[name] = record.entry;
      }
      break;
    case Kind::kUnlink:
      drop(record.path);
      break;
    case Kind::kLink: {
      auto it = state_.files.find(record.path);
      if (it == state_.files.end() || it->second.file_id != record.entry.file_id) break;
      const FileEntry entry = it->second;
      add(record.to, entry);
      break;
    }
    case Kind::kSync:
    case Kind::kSyncPending:
    case Kind::kSyncApplied:
      break;
    case Kind::kRename: {
      std::vector<std::pair<std::string, FileEntry>> moved;
      for (auto it = state_.files.begin(); it != state_.files.end();) {
        if (PathHasPrefix(it->first, record.path)) {
          moved.emplace_back(record.to + it->first.substr(record.path.size()), it->second);
          NameRemoved(it->second.file_id, it->first);
          it = state_.files.erase(it);
        } else {
          ++it;
        }
      }
      for (auto& [path, entry] : moved) add(path, entry);
      break;
    }
  }
}

void Volume::NoteWritingAhead(const FileId& id) {
  std::lock_guard lock(mu_);
  writing_ahead_.insert(id);
}

Status Volume::CommitFile(const FileId& id, JournalRecord& record, uint64_t record_bound, const char* reserve_for,
                          const std::function<Status(const FileEntry* current)>& build,
                          const std::function<Status()>& apply) {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Internal("volume " + dir_ + " was closed before this file's last commit");
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  auto it = path_by_id_.find(id);
  if (it == path_by_id_.end()) {  // unlinked meanwhile: nothing to commit
    std::optional<FileEntry> last = TakeLastEntryLocked(id);
    SCONE_RETURN_IF_ERROR(build(last ? &*last : nullptr));
    return apply();
  }
  // A file cut short (`: > log`, `truncate -s 0`) makes room on a full disk, as natively, and
  // an overwrite takes none: their commits may use the volume's reserve once a checkpoint gave
  // back nothing; one that writes new data may not (space_reserve.h).
  const auto room = [&] { return journal_->Reserve(record_bound + it->second.size()); };
  if (reserve_for != nullptr) {
    SCONE_RETURN_IF_ERROR(WithReserve(reserve_for, [&] { return WithCheckpointIfFull(room); }));
  } else {
    SCONE_RETURN_IF_ERROR(WithCheckpointIfFull(room));
  }
  // The build writes chunks in place ahead of the record, and a durable record applies the
  // window before the state holds it: nothing cuts the file back meanwhile.
  writing_ahead_.insert(id);
  // Until its record is appended, a crash leaves chunks written in place that no record names:
  // the next holder of the writer lock learns of it (RepairAfterDeadWriterLocked). A failed
  // build or append leaves the mark too, for this process's next commit.
  lock_->MarkInFlight({.seq = next_seq_, .file = id});
  SCONE_RETURN_IF_ERROR(build(&state_.files.at(it->second)));
  record.path = it->second;
  if (before_record_hook) before_record_hook();
  SCONE_RETURN_IF_ERROR(AppendLocked(record, /*durable=*/!record.lazy));
  touched_.insert(id);
  writing_ahead_.erase(id);  // what it wrote ahead, the record names now
  if (after_record_hook) after_record_hook();
  // A lazy record's new chunks go in place after it; a durable one's window and images too.
  Status applied = apply();
  if (applied.ok()) lock_->ClearInFlight();
  if (!applied.ok()) apply_failed_ = true;  // the journal holds what did not go in place
  if (record.lazy) AddToWindowLocked(std::make_shared<const JournalRecord>(record));
  ApplyToState(record);
  // A failed in-place apply is repaired by the journal at the next open (a lazy record's, by
  // the next holder of the writer lock); report it all the same.
  SCONE_RETURN_IF_ERROR(applied);
  // (Not while a window waits for a process that may put it in place: each try would sync.)
  if (apply_unconfirmed_ != 0) return Status::Ok();
  if (journal_seen_ > checkpoint_journal_size_) return Checkpoint(/*clean=*/false);
  if (window_bytes_ > kMaxWindowBytes) return MakeWindowDurableLocked();
  return Status::Ok();
}

Status Volume::Checkpoint(bool clean) {
  // The base state holds the window's changes: they become durable and go in place first (in
  // place before a durable record, a crash would leave pages no surviving record explains).
  SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  SCONE_RETURN_IF_ERROR(RedoUnconfirmedApplyLocked());
  // A window this process may not put in place (see MayApplyWindowLocked) keeps the journal
  // that holds it, for a process that may.
  if (!window_.empty()) return Status::Ok();
  // So does one whose apply failed (a full disk): it is the next open's recovery to put it in
  // place. A checkpoint dropped it, and the file's table no longer matched its pages on disk.
  if (apply_failed_) {
    if (!apply_failed_reported_) {
      std::fprintf(stderr, "scone: volume %s: changes that could not be put in place stay in its journal until it is next opened\n",
                   dir_.c_str());
      apply_failed_reported_ = true;
    }
    return Status::Ok();
  }
  // Everything applied in place since the last checkpoint must be durable before the journal
  // that could redo it is dropped.
  SCONE_RETURN_IF_ERROR(SyncFilesLocked(touched_));
  applied_seq_ = next_seq_ - 1;
  // Before the base: whoever loads this base finds the list of its sequence. Not durable, and
  // best effort: a list of another sequence reads as empty (see recently_unlinked.h).
  if (!recently_unlinked_.empty()) {
    if (recently_unlinked_.Write(MetaPath("unlinked"), unlinked_key_, state_.volume_id, applied_seq_).ok()) {
      GiveToMetadataOwner(MetaPath("unlinked"));
    }
  }
  SCONE_RETURN_IF_ERROR(WriteBase(clean));
  // The hint first: a checkpointer that dies before the reset leaves records the others skip
  // (their sequence numbers are in the base); one that reset first would leave them reading
  // and appending past the end of an emptied journal that the zeros ahead make long again.
  SCONE_RETURN_IF_ERROR(lock_->WriteCheckpointHint(applied_seq_));
  SCONE_RETURN_IF_ERROR(journal_->Reset());
  SCONE_RETURN_IF_ERROR(NoteJournalChangedLocked());
  journal_seen_ = 0;
  touched_.clear();
  WindowDurableLocked(applied_seq_);
  EmptyTrashLocked();
  // The journal's and the trash's room is back: the reserve a full disk took is kept again
  // (else the next full disk found none, and the volume could no longer be opened), and the
  // next checkpoint fits the disk as it is now.
  if (reserve_released_) {
    reserve_released_ = false;
    KeepReserve();
  }
  FitCheckpointsToDisk();
  return Status::Ok();
}

Status Volume::ReplayDataForFile(const FileId& id, const std::string& path,
                                 const std::vector<const JournalRecord*>& commits, bool trim,
                                 const std::set<uint64_t>* newer_on_disk, bool from_empty) {
  // The disk gets the file as of the last record applied, which a partial apply of the window
  // (up to a sync's record) may leave behind the state: cut to the state's size, the table
  // matched neither, and every process failed to open the file until the next apply
  // ("chunk table does not match"; hostile finding: SQLite's -shm cut to 3 bytes by one
  // connection while another's sync applied the commit before).
  const FileEntry entry = commits.empty() ? state_.files.at(path) : commits.back()->entry;
  Layout layout(entry.region);
  pages_in_place_.erase(id);  // its pages go as of these records now
  // Through this process's own descriptor where it has the file open: a process that changed
  // its user since may no longer open the file by name.
  std::shared_ptr<ProtectedFile> open;
  if (auto it = open_files_.find(id); it != open_files_.end()) open = it->second.lock();
  os::File opened;
  const os::File* data = open != nullptr && open->data_.valid() && !open->read_only() ? &open->data_ : nullptr;
  if (data == nullptr) {
    auto by_name = os::File::Open(dir_ + "/" + path, O_RDWR | O_NOFOLLOW);
    if (!by_name.ok()) {
      // Missing: reported when the file is opened or verified. One this process may not write
      // (its mode, another user's) is not skipped: the checkpoint after the recovery would
      // drop the records it needs (hostile finding: a file made 0444 while still being written).
      const int e = by_name.status().sys_errno();
      if (trim && e != EACCES && e != EPERM) return Status::Ok();
      return by_name.status().Annotate("writing what other processes published in place");
    }
    opened = std::move(by_name).value();
    data = &opened;
  }
  const auto times = data->Times();
  os::File side;
  if (!layout.interleaved()) {
    auto s = os::File::Open(ProtectedFile::SideFilePath(dir_, id), O_RDWR | O_CREAT, 0600);
    if (!s.ok()) return s.status();
    side = std::move(s).value();
  }
  // The newest image and entry of each chunk win; a chunk written in place by a later commit
  // must not be overwritten by an older image. A commit that shrank the file ends every entry
  // past its end: a file that grows again is holes there (records do not list them), so
  // entries at or past the smallest end (`cut`) that no later record names are holes.
  std::map<uint64_t, const uint8_t*> slots;
  std::map<uint64_t, ChunkEntry> entries;
  uint64_t cut = UINT64_MAX;
  for (const JournalRecord* r : commits) {
    for (size_t i = 0; i < r->slot_chunks.size(); ++i) slots[r->slot_chunks[i]] = r->SlotImage(i).data();
    for (uint64_t chunk : r->inplace_chunks) slots.erase(chunk);
    for (const auto& [chunk, e] : r->entries) entries[chunk] = e;
    const uint64_t end = ChunkCount(r->entry.size);
    slots.erase(slots.lower_bound(end), slots.end());
    entries.erase(entries.lower_bound(end), entries.end());
    cut = std::min(cut, end);
  }
  if (newer_on_disk != nullptr) {
    for (uint64_t chunk : *newer_on_disk) slots.erase(chunk);
  }
  uint64_t chunks = ChunkCount(entry.size);
  for (const auto& [chunk, image] : slots) {
    size_t len = kChunkSize;
    if (!layout.interleaved()) len = std::min<uint64_t>(kChunkSize, entry.size - chunk * kChunkSize);
    SCONE_RETURN_IF_ERROR(data->WriteAt(layout.SlotOffset(chunk), ByteSpan(image, len)));
  }
  // Patch the chunk table pages: those the records name, the last one (entries past the end
  // are zero), and those past the cut that hold anything on disk. Entries no record changed are
  // read back from disk below the cut: a page torn by the crash differs from its last image only
  // in entries the journal holds.
  const os::File& page_file = layout.interleaved() ? *data : side;
  const uint64_t pages = PageCount(chunks);
  std::set<uint64_t> patched;
  for (const auto& [chunk, e] : entries) patched.insert(chunk / kEntriesPerPage);
  if (chunks > 0) patched.insert(pages - 1);
  if (cut < chunks) {
    SCONE_ASSIGN_OR_RETURN(uint64_t page_file_size, page_file.Size());
    SCONE_RETURN_IF_ERROR(ForEachDataRange(page_file, page_file_size, [&](uint64_t begin, uint64_t end) {
      for (uint64_t p = std::max(cut / kEntriesPerPage, layout.PageAtOrAfter(begin));
           p < pages && layout.PageOffset(p) < end; ++p) {
        patched.insert(p);
      }
      return Status::Ok();
    }));
  }
  for (uint64_t page : patched) {
    uint8_t image[kPageSize] = {};
    SCONE_ASSIGN_OR_RETURN(size_t on_disk, page_file.ReadAt(layout.PageOffset(page), image));
    uint8_t before[kPageSize];
    std::memcpy(before, image, kPageSize);
    // The reserved bytes stay as on disk in page 0 of an encrypted file (its header, checked
    // when the file is opened) and are zeros in every other page.
    if (page != 0 || !layout.interleaved()) std::memset(image, 0, kPageReserved);
    uint64_t first = page * kEntriesPerPage;
    for (uint64_t c = first; c < first + kEntriesPerPage; ++c) {
      uint8_t* slot = image + EntryOffsetInPage(c);
      auto it = entries.find(c);
      if (it != entries.end()) {
        std::memcpy(slot, it->second.nonce.data(), crypto::kNonceSize);
        std::memcpy(slot + crypto::kNonceSize, it->second.tag.data(), crypto::kTagSize);
      } else if (c >= chunks || c >= cut || from_empty) {
        std::memset(slot, 0, kEntrySize);
      }
    }
    static_assert(kPageReserved + kEntriesPerPage * kEntrySize == kPageSize);
    // A page the disk holds as it is now stays untouched (a log's last page, when no record
    // changed its size). A page of zeros past the data file's end (the last page of a file grown
    // by ftruncate) is a hole: the file grows over it, as natively, without a block (writing its
    // zeros failed an fsync on a full disk with ENOSPC). Nobody else writes the data file now: the
    // writer lock, and mu_ for this process's writers.
    if (on_disk == kPageSize && std::memcmp(before, image, kPageSize) == 0) continue;
    if (on_disk < kPageSize && std::all_of(image, image + kPageSize, [](uint8_t b) { return b == 0; })) {
      SCONE_RETURN_IF_ERROR(page_file.Truncate(layout.PageOffset(page) + kPageSize));
      continue;
    }
    SCONE_RETURN_IF_ERROR(page_file.WriteAt(layout.PageOffset(page), ByteSpan(image, kPageSize)));
  }
  if (!trim) {
    // A file cut short (`: > log`, logrotate's copytruncate) gives its room back once the apply
    // reaches its last commit, unless a writer of this process sealed chunks past its end ahead
    // of their record (writers of other processes seal under the writer lock, held here). It
    // kept the data file's length until the next recovery: the disk space was never freed.
    if (state_.files.at(path) == entry && writing_ahead_.count(id) == 0) {
      SCONE_ASSIGN_OR_RETURN(uint64_t length, data->Size());
      if (length > layout.DataFileSize(entry.size)) SCONE_RETURN_IF_ERROR(data->Truncate(layout.DataFileSize(entry.size)));
    }
    SCONE_RETURN_IF_ERROR(DropPagesPastTheEnd(layout, *data, side, entry.size));
    if (open != nullptr) open->NoteDataCut();  // its allocations past the end went with them
    // Writing the window in place is the volume's business, not a change of the program's:
    // the file keeps the times its last write or utimensat gave it. Best effort: a process
    // that may write the file without owning it (a worker that changed its user) may not set
    // them, and the file's mtime then says when its data was put in place.
    if (times.ok()) (void)data->SetTimes(*times);
    return Status::Ok();
  }
  SCONE_RETURN_IF_ERROR(data->Truncate(layout.DataFileSize(entry.size)));
  if (open != nullptr) open->NoteDataCut();
  if (!layout.interleaved()) SCONE_RETURN_IF_ERROR(side.Truncate(layout.SideFileSize(entry.size)));
  return Status::Ok();
}

// Applying the window. The data file keeps any length past the end (a writer of this process
// may have sealed chunks there that it will commit), but no chunk table page past the end may
// stay: the file could grow over it again, and a page no commit rewrites would no longer be a
// hole page. The side file holds pages only: it gets its exact length.
Status Volume::DropPagesPastTheEnd(const Layout& layout, const os::File& data, const os::File& side,
                                   uint64_t size) {
  if (!layout.interleaved()) return side.Truncate(layout.SideFileSize(size));
  SCONE_ASSIGN_OR_RETURN(uint64_t data_size, data.Size());
  if (data_size < layout.DataFileSize(size)) return data.Truncate(layout.DataFileSize(size));
  const uint64_t pages = PageCount(ChunkCount(size));
  // A data file that ends before the first page past the end has none (the common case: a
  // file rewritten in place, a log that only grew): no need to look for its data ranges.
  if (data_size <= layout.PageOffset(pages)) return Status::Ok();
  std::vector<uint64_t> stale;
  SCONE_RETURN_IF_ERROR(ForEachDataRange(data, data_size, [&](uint64_t begin, uint64_t end) {
    for (uint64_t p = std::max(pages, layout.PageAtOrAfter(begin)); layout.PageOffset(p) < end; ++p) {
      stale.push_back(p);
    }
    return Status::Ok();
  }));
  static const uint8_t kZeroPage[kPageSize] = {};
  for (uint64_t p : stale) {
    // Page 0 keeps the file's header in its reserved bytes.
    const size_t skip = p == 0 ? kPageReserved : 0;
    SCONE_RETURN_IF_ERROR(data.WriteAt(layout.PageOffset(p) + skip, ByteSpan(kZeroPage, kPageSize - skip)));
  }
  return Status::Ok();
}

Status Volume::Recover(std::vector<JournalRecord> records) {
  using Kind = JournalRecord::Kind;
  // Lazy commits no durable record follows may lack the in-place data they refer to: not
  // synced before them (a power loss), or written by a process killed before its record (the
  // page cache holds what it wrote, newer than any record names). Per file, chunks not on disk
  // go back to a version at hand (RepairsForRecovery), or, where that cannot be judged, the
  // longest prefix of its commits whose data is on disk stands (LazyCommitsNotOnDisk): as a
  // file system keeps what a killed process wrote. Lazy creates and unlinks stay (they refer to
  // no data; a lost one is undone below).
  size_t durable_end = records.size();
  while (durable_end > 0 && records[durable_end - 1].lazy) --durable_end;
  std::map<FileId, LazyFile> lazy_files = LazyFilesOf(records, durable_end);
  std::map<FileId, std::optional<JournalRecord>> repairs = RepairsForRecovery(records, lazy_files);
  for (const auto& [id, repair] : repairs) lazy_files.erase(id);
  const std::set<size_t> dropped = LazyCommitsNotOnDisk(records, lazy_files);
  // Then records.back() below is not the journal's last record.
  const bool last_dropped = !records.empty() && dropped.count(records.size() - 1) != 0;
  if (!dropped.empty()) {
    std::vector<JournalRecord> kept;
    kept.reserve(records.size() - dropped.size());
    for (size_t i = 0; i < records.size(); ++i) {
      if (dropped.count(i) == 0) kept.push_back(std::move(records[i]));
    }
    records = std::move(kept);
  }
  std::map<FileId, std::vector<const JournalRecord*>> commits;
  // Files the checkpoint's state holds empty or not at all: every entry they have, the records
  // name (their pages on disk may be ahead of the records that stand: see ReplayDataForFile).
  FileIdSet from_empty, seen;
  for (const JournalRecord& r : records) {
    if (r.kind != Kind::kCommit || !seen.insert(r.entry.file_id).second) continue;
    auto known = path_by_id_.find(r.entry.file_id);
    if (known == path_by_id_.end() || state_.files.at(known->second).size == 0) from_empty.insert(r.entry.file_id);
  }
  for (const JournalRecord& r : records) {
    ApplyToState(r);
    if (r.kind == Kind::kCommit) commits[r.entry.file_id].push_back(&r);
    ++next_seq_;
  }
  for (const auto& [id, repair] : repairs) {
    if (!repair) continue;
    ApplyToState(*repair);
    commits[id].push_back(&*repair);
    ++next_seq_;
  }
  // Namespace changes are carried out right after their record, before the next one is
  // written: only the last record can be missing on disk (none, if records followed it).
  if (!records.empty() && !last_dropped) {
    const JournalRecord& last = records.back();
    std::string from = dir_ + "/" + last.path;
    SCONE_ASSIGN_OR_RETURN(bool from_exists, os::Exists(from));
    if (last.kind == Kind::kRename && from_exists) {
      std::string to = dir_ + "/" + last.to;
      if (os::Sys().rename(from.c_str(), to.c_str()) != 0) return IoError("rename " + from, errno);
    } else if (last.kind == Kind::kUnlink && from_exists) {
      if (os::Sys().unlink(from.c_str()) != 0) return IoError("unlink " + from, errno);
    } else if (last.kind == Kind::kLink && from_exists &&
               state_.files.count(last.to) != 0) {
      std::string to = dir_ + "/" + last.to;
      SCONE_ASSIGN_OR_RETURN(bool to_exists, os::Exists(to));
      if (!to_exists && os::Sys().link(from.c_str(), to.c_str()) != 0) {
        return IoError("link " + from, errno);
      }
    } else if (last.kind == Kind::kCreate && path_by_id_.count(last.entry.file_id) != 0 &&
               names_.CountOf(last.entry.file_id) == 1 && last.entry.size == 0) {
      // (Not the undo of a failed unlink: that file holds data, or has other names.)
      // The crash may have cut the file's creation short: write it anew (it holds no data yet).
      SCONE_RETURN_IF_ERROR(ProtectedFile::CreateOnDisk(dir_, last.path, last.entry.region,
                                                        last.entry.file_id,
                                                        DeriveFileKeys(last.entry.file_id))
                                .status());
    }
  }
  SCONE_RETURN_IF_ERROR(UndoLostNamespaceChanges());
  for (const auto& [id, list] : commits) {
    auto it = path_by_id_.find(id);
    if (it == path_by_id_.end()) continue;
    SCONE_RETURN_IF_ERROR(ReplayDataForFile(id, it->second, list, /*trim=*/true, nullptr, from_empty.count(id) != 0));
    touched_.insert(id);
  }
  // Files created just before the crash, and bytes appended in place after the last commit.
  for (const auto& [path, entry] : state_.files) {
    std::string full = dir_ + "/" + path;
    SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(full));
    if (!exists) {
      // One data file per file id: its other names are linked to it below.
      if (entry.size == 0 && path_by_id_.at(entry.file_id) == path) {
        auto created = ProtectedFile::CreateOnDisk(dir_, path, entry.region, entry.file_id,
                                                   DeriveFileKeys(entry.file_id));
        if (created.ok()) touched_.insert(entry.file_id);
      }
      continue;
    }
    Layout layout(entry.region);
    auto data = os::File::Open(full, O_RDWR | O_NOFOLLOW);
    if (!data.ok()) continue;
    SCONE_ASSIGN_OR_RETURN(uint64_t physical, data->Size());
    if (physical > layout.DataFileSize(entry.size)) {
      SCONE_RETURN_IF_ERROR(data->Truncate(layout.DataFileSize(entry.size)));
      touched_.insert(entry.file_id);
    }
    if (!layout.interleaved()) {
      auto side = os::File::Open(ProtectedFile::SideFilePath(dir_, entry.file_id), O_RDWR);
      if (side.ok()) {
        SCONE_ASSIGN_OR_RETURN(uint64_t side_size, side->Size());
        if (side_size > layout.SideFileSize(entry.size)) {
          SCONE_RETURN_IF_ERROR(side->Truncate(layout.SideFileSize(entry.size)));
        }
      }
    }
  }
  SCONE_RETURN_IF_ERROR(RestoreLostNames());
  // Chunk tables of authenticated files that no longer exist.
  RemoveEntriesOfUnknownFiles(MetaPath("meta"));
  return Checkpoint(/*clean=*/false);
}

// ---- namespace operations ---------------------------------------------------------------

Result<std::shared_ptr<ProtectedFile>> Volume::OpenInherited(const FileEntry& entry, const std::string& inode,
                                                             const std::string& path) {
  std::string named;
  FileWindow window;
  // Another process (the parent's other threads) may rename the file between the lookup and the
  // open: looked up again, a few times (a name that keeps moving is not chased for good).
  for (int attempt = 0;; ++attempt) {
    {
      KeepAlive keep;
      std::lock_guard lock(mu_);
      if (closed_) return Internal("volume " + dir_ + " is closed");
      SCONE_RETURN_IF_ERROR(CatchUpIfChangedLocked(&keep));
      named.clear();
      if (auto p = path_by_id_.find(entry.file_id); p != path_by_id_.end()) named = p->second;
      // Unlinked: what the disk holds is the state before the records still in the window.
      window = WindowOfLocked(entry.file_id, entry);
    }
    if (named.empty()) break;
    auto file = OpenFile(named, {});
    if (file.ok() && (*file)->id() == entry.file_id) return file;
    if (!file.ok() && file.status().code() != Code::kNotFound) return file;
    if (attempt == 3) return NotFound(dir_ + "/" + path + ": renamed again and again while it was opened");
  }
  if (entry.region != Region::kEncrypted) {
    return NotFound(dir_ + "/" + path + ": unlinked, and an authenticated file's chunk table went with its name");
  }
  // Through the descriptor's own inode (the data file has no name left, or only the trash's).
  SCONE_ASSIGN_OR_RETURN(os::File data, os::File::Open(inode, O_RDWR));
  auto opened = ProtectedFile::Open(shared_from_this(), dir_, path, entry, DeriveFileKeys(entry.file_id), window, &data);
  if (!opened.ok() && opened.status().code() == Code::kDataCorrupted) {
    // Most likely the program that passed it on wrote its own copy since (each process keeps
    // its own state of an unlinked file): not an alarm of tampering, which it may also be.
    return DataCorrupted(dir_ + "/" + path + ": unlinked, and changed since it was passed on (by the program that " +
                         "passed it on, which goes on writing its own copy, or behind the volume's back): not opened");
  }
  SCONE_ASSIGN_OR_RETURN(std::shared_ptr<ProtectedFile> file, std::move(opened));
  file->MarkUnlinked(/*by_this_process=*/false);  // the parent's, which may still use it
  return file;
}

Result<std::shared_ptr<ProtectedFile>> Volume::CreateFileLocked(const std::string& path, Region region, mode_t mode) {
  FileId id;
  crypto::FreshRandom(id);
  FileKeys keys = DeriveFileKeys(id);
  JournalRecord record;
  record.kind = JournalRecord::Kind::kCreate;
  record.path = path;
  record.entry.file_id = id;
  record.entry.region = region;
  record.entry.root = ProtectedFile::ComputeRoot(keys.root, 0, crypto::Hash{});
  // Encrypted files are created lazily durable (see UndoLostNamespaceChanges); an
  // authenticated one has no header that would let recovery recognize it.
  SCONE_RETURN_IF_ERROR(AppendLocked(record, /*durable=*/region != Region::kEncrypted));
  auto made = ProtectedFile::Create(shared_from_this(), dir_, path, region, id, std::move(keys), mode);
  if (made.ok() && record.lazy) (*made)->created_seq_ = record.seq;
  if (!made.ok()) {
    // Not on disk (EACCES for a process that changed its user, ENOSPC): the record is taken
    // back, or every process would list a file that is missing (hostile finding).
    ApplyToState(record);
    JournalRecord undo;
    undo.kind = JournalRecord::Kind::kUnlink;
    undo.path = path;
    if (AppendLocked(undo, /*durable=*/region != Region::kEncrypted).ok()) ApplyToState(undo);
    return made.status();
  }
  std::shared_ptr<ProtectedFile> file = std::move(made).value();
  if (region == Region::kAuthenticated) GiveToMetadataOwner(ProtectedFile::SideFilePath(dir_, id));
  ApplyToState(record);
  touched_.insert(id);
  open_files_[id] = file;
  return file;
}

Result<std::shared_ptr<ProtectedFile>> Volume::OpenFile(std::string_view raw_path,
                                                        const OpenFileOptions& options,
                                                        bool* created) {
  if (created != nullptr) *created = false;
  if (options.create || options.truncate) SCONE_RETURN_IF_ERROR(PublishBuffered());  // program order
  SCONE_ASSIGN_OR_RETURN(std::string path, NormalizeVolumePath(raw_path));
  Region region = state_.rules.RegionOf(path);
  if (region == Region::kNotProtected) {
    return Unsupported(dir_ + "/" + path + " is in a not-protected region");
  }
  std::shared_ptr<ProtectedFile> file;
  // A file this process has open already (or keeps: runtime/recent_files.h), opened without
  // truncation: no writer lock when nobody changed the volume since this process last looked
  // (the journal's length and the checkpoint hint, as for any lookup).
  if (!options.truncate && !(options.create && options.exclusive)) {
    KeepAlive keep;
    std::lock_guard lock(mu_);
    if (closed_) return Internal("volume " + dir_ + " is closed");
    SCONE_RETURN_IF_ERROR(CatchUpIfChangedLocked(&keep, {.path = &path}));
    if (!shared_.load(std::memory_order_relaxed)) NoticeJoiners();
    if (auto it = state_.files.find(path); it != state_.files.end()) {
      if (auto open = open_files_.find(it->second.file_id); open != open_files_.end()) file = open->second.lock();
    }
  }
  if (file != nullptr) {
    // Close-to-open: what other processes published to it since this process last used it.
    SCONE_RETURN_IF_ERROR(file->Refresh());
    return file;
  }
  bool already_open = false;
  KeepAlive keep;
  {
    std::lock_guard lock(mu_);
    if (closed_) return Internal("volume " + dir_ + " is closed");
    WriterSection writer(*this, &keep);
    SCONE_RETURN_IF_ERROR(writer.Begin());
    auto it = state_.files.find(path);
    if (it != state_.files.end()) {
      if (options.create && options.exclusive) return AlreadyExists(dir_ + "/" + path + " exists");
      auto open = open_files_.find(it->second.file_id);
      if (open != open_files_.end()) file = open->second.lock();
      already_open = file != nullptr;
      if (!file) {
        SCONE_ASSIGN_OR_RETURN(file, ProtectedFile::Open(shared_from_this(), dir_, path,
                                                         it->second,
                                                         DeriveFileKeys(it->second.file_id),
                                                         WindowOfLocked(it->second.file_id, it->second)));
        open_files_[it->second.file_id] = file;
      }
    } else {
      if (!options.create) return NotFound(dir_ + "/" + path + ": no such protected file");
      std::string full = dir_ + "/" + path;
      if (!options.absent) {
        SCONE_ASSIGN_OR_RETURN(bool on_disk, os::Exists(full));
        if (on_disk) {
          return DataCorrupted(full + ": exists on disk but not in the volume's metadata (added "
                               "behind the volume's back)");
        }
      }
      // A missing directory fails the create on disk, whose record is then taken back
      // (CreateFileLocked): not asked first, as that costs every create a stat.
      // On a full disk, once more after a checkpoint has given back the room of the journal and
      // of the trash: natively a new file takes no room, and SQLite's rollback journal, made
      // again after the disk filled up, must open (else "unable to open database file").
      SCONE_RETURN_IF_ERROR(WithCheckpointIfFull([&] {
        SCONE_ASSIGN_OR_RETURN(file, CreateFileLocked(path, region, options.mode));
        return Status::Ok();
      }));
      if (created != nullptr) *created = true;
    }
    std::erase_if(open_files_, [](const auto& kv) { return kv.second.expired(); });
    std::erase_if(last_entries_, [&](const auto& kv) { return open_files_.count(kv.first) == 0; });
  }
  // Close-to-open: an open sees what other processes committed while this process held the
  // file open elsewhere (its descriptors may not have been used since).
  if (already_open) SCONE_RETURN_IF_ERROR(file->Refresh());
  if (options.truncate) SCONE_RETURN_IF_ERROR(file->Truncate(0));
  return file;
}

Status Volume::Rename(std::string_view raw_from, std::string_view raw_to) {
  SCONE_RETURN_IF_ERROR(PublishBuffered());  // what the program wrote before comes first
  SCONE_ASSIGN_OR_RETURN(std::string from, NormalizeVolumePath(raw_from));
  SCONE_ASSIGN_OR_RETURN(std::string to, NormalizeVolumePath(raw_to));
  // Files referenced here must not be destroyed (and commit) while the volume's lock is held.
  KeepAlive keep;
  std::lock_guard lock(mu_);
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  if (from == to) return Status::Ok();
  if (PathHasPrefix(to, from)) return InvalidArgument("cannot move " + from + " into itself");
  if (auto a = state_.files.find(from), b = state_.files.find(to);
      a != state_.files.end() && b != state_.files.end() && a->second.file_id == b->second.file_id) {
    return Status::Ok();  // two names of one file: rename(2) does nothing
  }
  // A protected file keeps its format; moving it into another region would leave it encrypted
  // in an authenticated region, or plaintext in an encrypted one.
  bool any = false;
  for (const auto& [path, entry] : state_.files) {
    if (!PathHasPrefix(path, from)) continue;
    any = true;
    std::string dest = to + path.substr(from.size());
    if (state_.rules.RegionOf(dest) != entry.region) {
      return Status(Code::kUnsupported,
                    "cannot rename " + path + " to " + dest + ": it crosses region boundaries",
                    EXDEV);
    }
  }
  std::string full_from = dir_ + "/" + from, full_to = dir_ + "/" + to;
  if (!any) {
    if (state_.rules.RegionOf(from) != state_.rules.RegionOf(to)) {
      return Status(Code::kUnsupported, "rename " + from + " crosses region boundaries", EXDEV);
    }
    // Not a protected file (a symbolic link, a FIFO): the kernel's rename. One that replaces a
    // protected file unlinks it first, as the volume's change, or the volume would list a file
    // the disk no longer holds.
    struct stat st;
    if (os::Sys().lstat(full_from.c_str(), &st) != 0) return IoError("rename " + full_from, errno);
    if (auto replaced = state_.files.find(to); replaced != state_.files.end()) {
      if (S_ISDIR(st.st_mode)) return Status(Code::kIoError, "rename " + full_from + ": over a file", ENOTDIR);
      SCONE_RETURN_IF_ERROR(UnlinkLocked(to, replaced->second, keep));
    }
    if (os::Sys().rename(full_from.c_str(), full_to.c_str()) != 0) {
      return IoError("rename " + full_from, errno);
    }
    return Status::Ok();
  }
  std::optional<FileEntry> replaced;
  if (auto it = state_.files.find(to); it != state_.files.end()) replaced = it->second;
  // As for an unlink (see UnlinkLocked): the replaced file's waiting commits go in place first.
  if (replaced && names_.CountOf(replaced->file_id) == 1 && window_base_.count(replaced->file_id) != 0) {
    SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  }
  JournalRecord record;
  record.kind = JournalRecord::Kind::kRename;
  record.path = from;
  record.to = to;
  SCONE_RETURN_IF_ERROR(AppendLocked(record));
  if (os::Sys().rename(full_from.c_str(), full_to.c_str()) != 0) {
    Status failed = IoError("rename " + full_from, errno);
    // Undo in the journal so that state and disk agree.
    JournalRecord undo = record;
    std::swap(undo.path, undo.to);
    SCONE_RETURN_IF_ERROR(AppendLocked(undo));
    return failed;
  }
  ApplyToState(record);
  // The replaced file is gone with its last name; with others left, it only lost this one.
  if (replaced && names_.CountOf(replaced->file_id) == 0) {
    if (auto open = open_files_.find(replaced->file_id); open != open_files_.end()) {
      if (auto f = open->second.lock()) {
        f->MarkUnlinked(/*by_this_process=*/true);
        keep.push_back(std::move(f));
      }
    }
    if (replaced->region == Region::kAuthenticated) {
      os::Sys().unlink(ProtectedFile::SideFilePath(dir_, replaced->file_id).c_str());
    }
  }
  for (auto& [id, weak] : open_files_) {
    auto f = weak.lock();
    auto p = path_by_id_.find(id);
    if (f && p != path_by_id_.end()) f->SetPath(p->second);
    if (f) keep.push_back(std::move(f));
  }
  return Status::Ok();
}

Status Volume::Unlink(std::string_view raw_path) {
  SCONE_RETURN_IF_ERROR(PublishBuffered());  // what the program wrote before comes first
  SCONE_ASSIGN_OR_RETURN(std::string path, NormalizeVolumePath(raw_path));
  KeepAlive keep;
  std::lock_guard lock(mu_);
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  auto it = state_.files.find(path);
  if (it == state_.files.end()) {
    // Not a protected file (a symbolic link, a FIFO, a socket) or no file: the kernel's unlink,
    // under the writer lock. Made after it, it removed the data file of a file that another
    // process created at the name meanwhile, leaving the volume listing a missing file
    // (hostile finding: open, create, unlink churn of four processes).
    std::string full = dir_ + "/" + path;
    if (os::Sys().unlink(full.c_str()) == 0) return Status::Ok();
    if (errno == ENOENT) return NotFound(full + ": no such file");
    return IoError("unlink " + full, errno);
  }
  return UnlinkLocked(path, it->second, keep);
}

// REQUIRES: mu_, the writer lock, `path` names `entry` in the state.
Status Volume::UnlinkLocked(const std::string& path, FileEntry entry, KeepAlive& keep) {
  JournalRecord record;
  record.kind = JournalRecord::Kind::kUnlink;
  record.path = path;
  // An encrypted file is unlinked lazily durable: it waits in the trash until its record is
  // durable, so that recovery can bring it back if the record is lost. One of several names
  // goes at once: recovery links it again from another (RestoreLostNames).
  const bool lazy = entry.region == Region::kEncrypted;
  const bool last_name = names_.CountOf(entry.file_id) == 1;
  const bool to_trash = lazy && last_name;
  if (to_trash && !trash_ready_) {
    SCONE_RETURN_IF_ERROR(os::MakeDirectories(MetaPath("trash")));
    GiveToMetadataOwner(MetaPath("trash"));
    trash_ready_ = true;
  }
  // Its commits that wait in the window go in place first: none will once it has no name, and a
  // process that learns of the unlink from a checkpoint's base state catches up from the disk
  // to the file's last entry (see recently_unlinked.h).
  if (last_name && window_base_.count(entry.file_id) != 0) SCONE_RETURN_IF_ERROR(MakeWindowDurableLocked());
  SCONE_RETURN_IF_ERROR(AppendLocked(record, /*durable=*/!lazy));
  std::string full = dir_ + "/" + path;
  // Into the trash by a link and an unlink, not a rename: a watcher of the directory sees the
  // file deleted (IN_DELETE), as natively (a rename showed IN_MOVED_FROM only, and `inotifywait
  // -e delete` waited for ever: hostile finding). A crash between the two is settled by recovery
  // (SettleTrash); a file system without hard links gets the rename.
  auto remove = [&] {
    if (!to_trash) return os::Sys().unlink(full.c_str());
    const std::string trash = TrashPath(entry.file_id);
    int linked = os::Sys().link(full.c_str(), trash.c_str());
    if (linked != 0 && errno == EEXIST) {
      os::Sys().unlink(trash.c_str());  // left by an unlink a crash interrupted
      linked = os::Sys().link(full.c_str(), trash.c_str());
    }
    if (linked != 0 && (errno == EPERM || errno == EOPNOTSUPP || errno == EMLINK)) {
      return os::Sys().rename(full.c_str(), trash.c_str());
    }
    return linked != 0 ? linked : os::Sys().unlink(full.c_str());
  };
  const uint64_t room = to_trash ? RoomOnDisk(full) : 0;
  int removed = remove();
  if (removed != 0 && errno == ENOENT && to_trash && access(full.c_str(), F_OK) == 0) {
    // The trash directory itself went missing behind our back: make it again.
    SCONE_RETURN_IF_ERROR(os::MakeDirectories(MetaPath("trash")));
    removed = remove();
  }
  if (removed == 0 && to_trash) {
    trash_.push_back(entry.file_id);
    trash_bytes_ += room;
  }
  if (removed != 0 && errno != ENOENT) {
    // Leave state and disk consistent: the file stays, its entry is restored.
    Status failed = IoError("unlink " + full, errno);
    JournalRecord undo;
    undo.kind = JournalRecord::Kind::kCreate;
    undo.path = path;
    undo.entry = entry;
    SCONE_RETURN_IF_ERROR(AppendLocked(undo));
    return failed;
  }
  ApplyToState(record);
  if (last_name && entry.region == Region::kAuthenticated) {
    os::Sys().unlink(ProtectedFile::SideFilePath(dir_, entry.file_id).c_str());
  }
  if (auto open = open_files_.find(entry.file_id); open != open_files_.end()) {
    if (auto f = open->second.lock()) {
      if (last_name) {
        f->MarkUnlinked(/*by_this_process=*/true);
      } else {
        f->SetPath(path_by_id_.at(entry.file_id));
      }
      keep.push_back(std::move(f));
    }
  }
  return Status::Ok();
}

Status Volume::Link(std::string_view raw_from, std::string_view raw_to) {
  SCONE_RETURN_IF_ERROR(PublishBuffered());  // what the program wrote before comes first
  SCONE_ASSIGN_OR_RETURN(std::string from, NormalizeVolumePath(raw_from));
  SCONE_ASSIGN_OR_RETURN(std::string to, NormalizeVolumePath(raw_to));
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Internal("volume " + dir_ + " is closed");
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  auto it = state_.files.find(from);
  if (it == state_.files.end()) return NotFound(dir_ + "/" + from + ": no such protected file");
  const FileEntry entry = it->second;
  const std::string full_from = dir_ + "/" + from, full_to = dir_ + "/" + to;
  struct stat st;
  if (state_.files.count(to) != 0 || os::Sys().lstat(full_to.c_str(), &st) == 0) {
    return AlreadyExists(full_to + " exists");
  }
  const std::string parent = full_to.substr(0, full_to.rfind('/'));
  SCONE_ASSIGN_OR_RETURN(bool parent_exists, os::Exists(parent));
  if (!parent_exists) return IoError("link " + full_to, ENOENT);
  // A name in another region would serve the file in another format (as for rename).
  if (state_.rules.RegionOf(to) != entry.region) {
    return Status(Code::kUnsupported,
                  "cannot link " + from + " to " + to + ": it crosses region boundaries", EXDEV);
  }
  JournalRecord record;
  record.kind = JournalRecord::Kind::kLink;
  record.path = from;
  record.to = to;
  record.entry = entry;
  // Durable before the link exists (as a rename): recovery makes a link whose record it finds.
  SCONE_RETURN_IF_ERROR(AppendLocked(record));
  if (os::Sys().link(full_from.c_str(), full_to.c_str()) != 0) {
    Status failed = IoError("link " + full_from + " to " + full_to, errno);
    // Undone in the journal, so that state and disk agree.
    JournalRecord undo;
    undo.kind = JournalRecord::Kind::kUnlink;
    undo.path = to;
    SCONE_RETURN_IF_ERROR(AppendLocked(undo));
    return failed;
  }
  ApplyToState(record);
  return Status::Ok();
}

Result<FileEntry> Volume::Lookup(std::string_view raw_path) {
  SCONE_ASSIGN_OR_RETURN(std::string path, NormalizeVolumePath(raw_path));
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Internal("volume " + dir_ + " is closed");
  SCONE_RETURN_IF_ERROR(CatchUpIfChangedLocked(&keep, {.path = &path}));
  auto it = state_.files.find(path);
  // Not known: asked again of the journal itself, not of the count of its changes, which the
  // host could hold still (a file another process created or renamed would then pass for an
  // unknown one, its ciphertext's size for its own). Not while this process holds the volume
  // alone: a process that joins waits for its hand-over before it changes anything (a `tar -x`
  // looks up every name it creates, twice).
  if (it == state_.files.end() && !(holds_alone_ && !shared_)) {
    journal_changes_seen_ = UINT64_MAX;
    SCONE_RETURN_IF_ERROR(CatchUpIfChangedLocked(&keep));
    it = state_.files.find(path);
  }
  if (it == state_.files.end()) return NotFound(dir_ + "/" + path + ": no such protected file");
  return it->second;
}

Result<FileEntry> Volume::LatestEntry(const FileId& id) {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Internal("volume " + dir_ + " is closed");
  SCONE_RETURN_IF_ERROR(CatchUpIfChangedLocked(&keep, {.id = &id}));
  auto it = path_by_id_.find(id);
  if (it == path_by_id_.end()) return NotFound("file was unlinked");
  return state_.files.at(it->second);
}

Status Volume::WithLatestEntry(const FileId& id, const std::function<Status(const FileEntry*)>& fn) {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return Internal("volume " + dir_ + " is closed");
  WriterSection writer(*this, &keep);
  SCONE_RETURN_IF_ERROR(writer.Begin());
  auto it = path_by_id_.find(id);
  if (it != path_by_id_.end()) return fn(&state_.files.at(it->second));
  std::optional<FileEntry> last = TakeLastEntryLocked(id);
  return fn(last ? &*last : nullptr);
}

bool Volume::HasLastEntry(const FileId& id) {
  std::lock_guard lock(mu_);
  return last_entries_.count(id) != 0;
}

std::optional<FileEntry> Volume::TakeLastEntryLocked(const FileId& id) {
  // Once: the open file catches up to it, and then goes on alone (its own commits are newer).
  auto last = last_entries_.find(id);
  if (last == last_entries_.end()) return std::nullopt;
  FileEntry entry = last->second;
  last_entries_.erase(last);
  return entry;
}

Result<uint64_t> Volume::FileSize(std::string_view raw_path) {
  SCONE_ASSIGN_OR_RETURN(FileEntry entry, Lookup(raw_path));
  std::shared_ptr<ProtectedFile> open;
  {
    std::lock_guard lock(mu_);
    if (auto it = open_files_.find(entry.file_id); it != open_files_.end()) open = it->second.lock();
  }  // `open` outlives the lock
  if (!open) return entry.size;
  // Its own writes not committed yet count; what other processes committed meanwhile too.
  SCONE_RETURN_IF_ERROR(open->Refresh());
  return open->size();
}

std::shared_ptr<ProtectedFile> Volume::OpenedFile(std::string_view raw_path) {
  auto path = NormalizeVolumePath(raw_path);
  if (!path.ok()) return nullptr;
  std::lock_guard lock(mu_);
  auto entry = state_.files.find(*path);
  if (entry == state_.files.end()) return nullptr;
  auto open = open_files_.find(entry->second.file_id);
  return open != open_files_.end() ? open->second.lock() : nullptr;
}

std::vector<std::pair<std::string, FileEntry>> Volume::Files() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (!closed_) (void)CatchUpIfChangedLocked(&keep);  // on failure: the state as we know it
  return {state_.files.begin(), state_.files.end()};
}

VolumeTag Volume::Tag() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (!closed_) (void)CatchUpIfChangedLocked(&keep);
  return state_.Tag(tag_key_);
}

uint64_t Volume::Generation() {
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (!closed_) (void)CatchUpIfChangedLocked(&keep);
  return next_seq_ - 1;
}

std::optional<Volume::StateFileStamp> Volume::StampOfStateFile() const {
  struct stat st;
  if (os::Sys().lstat(MetaPath("volume").c_str(), &st) != 0) return std::nullopt;
  return StateFileStamp{st.st_dev, st.st_ino, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec, st.st_size};
}

bool Volume::KnownAfterCatchUp(const std::string& path) {
  auto normalized = NormalizeVolumePath(path);
  if (!normalized.ok()) return false;
  KeepAlive keep;
  std::lock_guard lock(mu_);
  if (closed_) return false;
  WriterSection writer(*this, &keep);
  if (!writer.Begin().ok()) return false;
  return state_.files.count(*normalized) != 0;
}

std::vector<VolumeProblem> Volume::Verify() {
  std::vector<VolumeProblem> problems;
  for (const auto& [path, entry] : Files()) {
    auto file = OpenFile(path, {});
    // Unlinked, renamed or made anew by another process since the list was read (hostile
    // findings: a service making and removing files beside `volume verify` had it report them
    // missing, and a name removed and made again between the open and the look). A name gone
    // is no damage; one that stands is opened again, a few times.
    bool gone = false;
    for (int tries = 0; !file.ok() && file.status().code() == Code::kNotFound && tries < 3; ++tries) {
      if (!KnownAfterCatchUp(path)) {
        gone = true;
        break;
      }
      file = OpenFile(path, {});
    }
    if (gone) continue;
    if (!file.ok()) {
      std::string message = file.status().message();
      std::string prefix = dir_ + "/" + path + ": ";
      if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
      problems.push_back({path, message});
      continue;
    }
    for (std::string& what : (*file)->VerifyAllChunks(kVerifyChunkProblemsPerFile)) {
      problems.push_back({path, std::move(what)});
    }
  }
  CheckLinks(&problems);
  // Files on disk that the volume does not know.
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(dir_, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::string rel = it->path().lexically_relative(dir_).string();
    if (rel == kMetaDirName) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    if (RegionOf(rel) == Region::kNotProtected) continue;
    auto known = Lookup(rel);
    // A file another process is creating is on disk before its record; one it removed is gone.
    std::error_code gone;
    if (!known.ok() && (KnownAfterCatchUp(rel) || !std::filesystem::exists(it->path(), gone))) continue;
    if (!known.ok()) {
      problems.push_back({rel, "unknown file: not in the volume's metadata (added behind the "
                               "volume's back)"});
    }
  }
  if (ec) problems.push_back({"", "cannot list " + dir_ + ": " + ec.message()});
  std::sort(problems.begin(), problems.end(),
            [](const VolumeProblem& a, const VolumeProblem& b) { return a.path < b.path; });
  return problems;
}

// ---- key files ---------------------------------------------------------------------------

Result<SecretBytes> ReadKeyFile(const std::string& path) {
  struct stat st;
  if (os::Sys().lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("key file " + path + " does not exist");
    return IoError("stat key file " + path, errno);
  }
  if ((st.st_mode & 077) != 0) {
    return PermissionDenied("key file " + path + " is accessible by other users (mode " +
                            std::to_string((st.st_mode >> 6) & 7) +
                            std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) +
                            "); run: chmod 600 " + path);
  }
  SCONE_ASSIGN_OR_RETURN(Bytes text, os::ReadWholeFile(path, 256));
  std::string_view hex(reinterpret_cast<const char*>(text.data()), text.size());
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r' || hex.back() == ' ')) {
    hex.remove_suffix(1);
  }
  auto bytes = FromHex(hex);
  Wipe(text);
  if (!bytes.ok() || bytes->size() != crypto::kKeySize) {
    if (bytes.ok()) Wipe(*bytes);
    return InvalidArgument("key file " + path + " does not hold a volume key (64 hex digits)");
  }
  SecretBytes key(*bytes);
  Wipe(*bytes);
  return key;
}

Result<SecretBytes> CreateKeyFile(const std::string& path) {
  SecretBytes key = crypto::RandomKey();
  std::string hex = ToHex(key.span()) + "\n";
  auto file = os::File::Open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!file.ok()) {
    Wipe(hex);
    return file.status().Annotate("creating key file");
  }
  Status s = file->WriteAt(0, AsBytes(hex));
  Wipe(hex);
  SCONE_RETURN_IF_ERROR(s);
  SCONE_RETURN_IF_ERROR(file->Sync());
  return key;
}

}  // namespace scone::fs
