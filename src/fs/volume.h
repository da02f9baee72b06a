// A protected volume: a directory tree whose files are protected in place, plus its metadata in
// `DIR/.scone/` (the FSPF): the sealed volume state (`volume`), the journal (`journal`), the
// chunk tables of authenticated files (`meta/`) and a lock file.
//
// The volume state lists every protected file with its identity, size and root; the volume tag
// is an HMAC over it. Opening with a trusted tag refuses a volume whose state differs: a volume
// (or any file in it) rolled back to an older copy, or replaced, is detected. Without a tag,
// every file is still checked against the state, so a single file rolled back or swapped is
// detected on open.
//
// Several processes may have a volume open at once (a program, its forked children, programs it
// executes): every change is appended to the shared journal under a cross-process writer lock,
// after catching up with what the others appended (fs/volume_lock.h). A file open in two
// processes sees the other's committed changes when it commits or is opened again
// (close-to-open consistency, as on NFS); two processes writing the same chunks of one file
// concurrently get last-writer-wins per chunk.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <algorithm>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/secret.h"
#include "fs/buffered_files.h"
#include "fs/buffered_room.h"
#include "fs/close_mark.h"
#include "fs/file_names.h"
#include "fs/journal.h"
#include "fs/protected_file.h"
#include "fs/recently_unlinked.h"
#include "fs/region_rules.h"
#include "fs/space_reserve.h"
#include "fs/volume_lock.h"
#include "fs/volume_state.h"
#include "os/file.h"

namespace scone::fs {

struct OpenFileOptions {
  bool create = false;     // create the file if it does not exist
  bool exclusive = false;  // with create: fail if it exists
  bool truncate = false;   // truncate to zero length
  // with create: the new file's permissions, restricted by the process's umask as open(2)'s
  mode_t mode = 0600;
  // with create: the caller found nothing by the name a moment ago (the volume does not ask
  // again; a file planted since is truncated and taken as the new one, its content gone).
  bool absent = false;
};

struct VolumeProblem {
  std::string path;  // volume-relative, or "" for the volume itself
  std::string what;
};

class Volume : public std::enable_shared_from_this<Volume> {
 public:
  struct OpenOptions {
    std::optional<VolumeTag> expected_tag;  // refuse any other state
  };

  // Makes `dir` (created if absent; must hold no `.scone`) a new, empty volume.
  static Result<std::shared_ptr<Volume>> Create(const std::string& dir, const SecretBytes& key,
                                                RegionRules rules);
  // Opens an existing volume, recovering from a crash if it was not closed.
  static Result<std::shared_ptr<Volume>> Open(const std::string& dir, const SecretBytes& key,
                                              const OpenOptions& options);
  static Result<std::shared_ptr<Volume>> Open(const std::string& dir, const SecretBytes& key) {
    return Open(dir, key, OpenOptions{});
  }
  ~Volume();

  const std::string& dir() const { return dir_; }

  // Region of a volume-relative path (normalized or not; invalid paths are kNotProtected).
  Region RegionOf(std::string_view path) const;

  // Opens a protected file. REQUIRES: the path's region is protected. `created`, if given, tells
  // whether this call created the file.
  Result<std::shared_ptr<ProtectedFile>> OpenFile(std::string_view path,
                                                  const OpenFileOptions& options,
                                                  bool* created = nullptr);
  // The protected file a descriptor inherited across exec refers to, `entry` as the parent's
  // last commit left it: found by its identity wherever it is named now (another process may
  // have renamed it, or given its old name to a new file), or, unlinked (no name left while the
  // parent had it open), opened from `inode` (the inherited descriptor's /proc/self/fd path) and
  // checked against `entry`. An unlinked file is then this process's alone, as it is the
  // parent's. `path`: the name it had, for messages.
  Result<std::shared_ptr<ProtectedFile>> OpenInherited(const FileEntry& entry, const std::string& inode,
                                                       const std::string& path);
  // Renames a file or a directory (and every file under it) inside the volume.
  Status Rename(std::string_view from, std::string_view to);
  // Removes one name of a file; its data goes with its last name.
  // A protected file's name goes with a journal record; any other name (a symbolic link, a
  // FIFO) by the kernel's unlink, under the writer lock.
  Status Unlink(std::string_view path);
  // Gives the protected file at `from` a second name `to` (a hard link, made natively: both names
  // are one data file, one file id, one entry). Fails with kAlreadyExists if `to` exists, with
  // EXDEV if `to` lies in another region, with kNotFound if `from` is no protected file.
  Status Link(std::string_view from, std::string_view to);
  // The entry of a protected file, kNotFound if the volume has none at `path`.
  Result<FileEntry> Lookup(std::string_view path);
  // Whether the volume has a protected file at `path` (Lookup without copying the entry).
  bool Knows(std::string_view path) { return Lookup(path).ok(); }
  // The plaintext size of a protected file, whether or not it is open with unsynced writes.
  Result<uint64_t> FileSize(std::string_view path);
  // The protected file at `path` if this process has it open, else nullptr.
  std::shared_ptr<ProtectedFile> OpenedFile(std::string_view path);
  // Protected files in path order.
  std::vector<std::pair<std::string, FileEntry>> Files();
  const RegionRules& rules() const { return state_.rules; }

  VolumeTag Tag();
  // The sequence number of the last committed change: it only grows, so an older copy of the
  // volume has a smaller one (authenticated with the state).
  uint64_t Generation();

  // Checks every protected file (header, size, chunk table, every chunk) and looks for files
  // the volume does not know or misses. Returns one problem per damaged file. Other processes
  // may go on using the volume meanwhile: what they change is no damage.
  std::vector<VolumeProblem> Verify();

  // Commits every open file. kCheckpoint: checkpoints the journal (everything synced) and, if
  // no other process has the volume open, marks it closed cleanly. kKeepJournal (a program's
  // exit, fs/close_mark.h): nothing is synced, as a native close syncs nothing; the last process
  // leaves the journal and a mark naming this boot, so that the next open in this boot catches up
  // with the journal instead of recovering. Durability comes at fsync, as natively.
  enum class CloseMode { kCheckpoint, kKeepJournal };
  Status Close(CloseMode mode = CloseMode::kCheckpoint);

  // Before the process executes another program, which the exec gives a fresh start (this
  // process's memory, and the volume's state in it, go): where it has the volume alone and
  // marked in use, it leaves the mark a close leaves (fs/close_mark.h), so that the program
  // opens the volume without a recovery. AfterFailedExec takes it back.
  Status LeaveForExec();
  void AfterFailedExec();

  // Whether other processes may use the volume now: then every write is published to them at
  // once (a short transaction under the volume's writer lock) and every read first catches up
  // with what they published. A process alone with its volume buffers and commits at fsync and
  // close. A forked child makes both processes sharers at once; a process that opens the volume
  // while another has it open bumps a counter in the lock file, which a process alone reads at
  // most every few milliseconds.
  bool Shared();
  // Whether this process may buffer a change (it has the volume alone, and holds the alone lock
  // from now on, so that a process that joins waits for the hand-over). One atomic load once
  // it holds it. REQUIRES: no lock of the volume's (a file's own may be held).
  bool MayBuffer();
  // Room on the disk for a change this process buffers (fs/buffered_room.h); false: the change
  // must commit at once instead, to meet a full disk at its write.
  bool PromiseBufferedRoom(uint64_t bytes);
  void ReleaseBufferedRoom(uint64_t bytes) { buffered_room_.Release(bytes); }
  // Publishes the writes this process buffered (fs/buffered_files.h) to every file but
  // `except`, in the order it wrote them: before anything that follows them in the program's
  // order leaves the process. REQUIRES: no lock of the volume's or of a file's.
  Status PublishBuffered(const ProtectedFile* except = nullptr);
  // Whether any volume of the process holds writes PublishBuffered would publish.
  static bool AnyBuffered() { return BufferedFiles::AnyInProcess(); }
  // Whether any volume of the process holds such writes or is publishing them on some thread.
  static bool AnyUnpublished() { return BufferedFiles::AnyUnpublishedInProcess(); }
  // Called when a volume starts to hold such writes (none did since its last publish): the
  // runtime's watcher publishes them within a bounded delay (runtime/alone_watcher.h).
  static void SetBufferedHook(void (*hook)());
  // Records up to this sequence number are durable (journal synced) and applied in place.
  uint64_t DurableSeq() const { return durable_seq_.load(std::memory_order_acquire); }
  // The last sync record this process appended or read (a kSyncPending may still be syncing,
  // or its window wait out of place): records up to it may be durable, so no chunk they wrote
  // in place is overwritten in place again (ProtectedFile::lazy_in_place_). Else a power loss
  // after the fsync returned could leave a chunk its durable record names rewritten.
  uint64_t LastSyncSeq() const {
    return std::max(durable_seq_.load(std::memory_order_acquire), sync_seen_.load(std::memory_order_acquire));
  }
  // Makes every record published so far durable (fsync of a file whose changes are all
  // published already).
  Status MakeDurable();
  // Makes everything published durable and returns the tag and generation of that state, in
  // one step: what is reported to CAS must survive a crash (lazy records after the last
  // durable one would not).
  Status MakeDurableAndTag(VolumeTag* tag, uint64_t* generation);

  // Shared images of mapped files (runtime/files/shared_image.h): the key with which processes
  // that share one prove to each other that they hold the volume's key, and a cross-process lock
  // around looking for one and making one.
  SecretBytes SharingKey(const FileId& id) const;
  Status LockImages();
  void UnlockImages();
  // A count of the images made of the volume's files by any process (VolumeLock::ImagesMade),
  // and its bump by a maker (under the images lock, once its image is served).
  uint64_t ImagesMade() const { return lock_ ? lock_->ImagesMade() : 0; }
  Status NoteImageMade() { return lock_ ? lock_->NoteImageMade() : Status::Ok(); }
  // The journal's changes by any process, this one's publishes included
  // (VolumeLock::JournalChanges): a load from the lock file's mapping, nullopt where unmapped.
  std::optional<uint64_t> JournalChanges() const { return lock_ ? lock_->JournalChanges() : std::nullopt; }
  // Names removed and links made in the volume by any process (VolumeLock::DirectoriesChanged).
  std::optional<uint64_t> DirectoriesChanged() const { return lock_ ? lock_->DirectoriesChanged() : std::nullopt; }
  void NoteDirectoriesChanged() const {
    if (lock_) (void)lock_->NoteDirectoriesChanged();
  }

  // The hand-over (fs/volume_lock.h, byte 3): a process that has the volume alone buffers
  // writes; one that joins waits until it has published them. A watcher of the lock file (the
  // runtime's: a joiner writes the lock file) calls HandOverIfJoined from a thread that holds
  // none of the volume's locks; `SetAloneHook` names what starts that watcher, called whenever
  // a process takes the volume alone (at open, and waking from rest).
  Status HandOverIfJoined();
  std::string LockPath() const { return MetaPath("lock"); }
  // The owner of a volume's directory owns its metadata: a program that gives the volume's root
  // to another user (`chown -R postgres /data`) gives the metadata too, so that the program it
  // then runs as that user (`setpriv`, `su`, `runuser`) opens the volume. -1: unchanged.
  static Status ChownMetadata(const std::string& dir, uid_t uid, gid_t gid);
  static void SetAloneHook(void (*hook)(const std::shared_ptr<Volume>& volume));
  // Tests: called while a sync of the window runs without the writer lock (others publish).
  static void SetSyncGapHookForTesting(std::function<void()> hook);
  // Tests: called after a durable record is written and synced, before the window goes in place.
  static void SetBeforeApplyHookForTesting(std::function<void()> hook);
  // Tests: called in a commit before its record is appended, and after (before what goes in
  // place after the record).
  static void SetBeforeRecordHookForTesting(std::function<void()> hook);
  static void SetAfterRecordHookForTesting(std::function<void()> hook);
  // Tests: a shared volume's sync leaves its window out of place while it holds fewer bytes
  // (0: every sync puts it in place).
  static void SetApplyWindowBytesForTesting(size_t bytes);
  static constexpr size_t kApplyWindowBytes = 2u << 20;
  // Tests: called when a resting process takes the use lock again, before it reads the count of
  // joiners.
  static void SetWakeHookForTesting(std::function<void()> hook);

  // Fork support, for the runtime (runtime/process/fork.h): BeforeFork holds the volume's lock
  // across fork; the parent releases it; the child releases it right after the fork (without
  // allocating: the C library may not have reset its allocator yet) and, before it uses the
  // volume, takes its own cross-process lock (RejoinAfterFork: the inherited one is shared with
  // the parent).
  // Before a fork: a process with no file of the volume open makes what it published durable
  // and lets go of the volume until it uses it again, so that a program its child executes (a
  // shell's command) can have the volume alone, with buffered writes, while the parent waits.
  // One with files open marks the volume in use (MarkInUseLocked) if it has not yet: its child
  // may change its user and no longer be allowed to.
  Status RestIfUnused();
  // BeforeFork also holds every file of the volume this process has open (ProtectedFile::
  // HoldForFork): a thread inside a file's write when the child was made left the file locked
  // there, and the child hung at its first use of an inherited descriptor, or at exec (hostile
  // finding). It waits for every thread inside a file to leave it: call it with none of the
  // runtime's locks a thread inside a file may wait for.
  void BeforeFork();
  // Before a fork, ahead of publishing what the process wrote: from now on every write is
  // published as it is made (as after the fork). A write another thread buffered after the
  // publish stayed in the file's memory in the child, which laid it, stale, over what the parent
  // wrote after the fork: a run of the parent's appends lost (hostile finding). BeforeFork
  // publishes any that still slipped in before it holds the files.
  void ShareBeforeFork();
  void AfterForkInParent();
  void AfterForkInChild();
  // Once the fork is complete and memory may be freed: the references BeforeFork took go (a
  // last one commits, in the parent; in the child, what only the parent uses is left to it).
  void DropFilesHeldForFork(bool in_child);
  Status RejoinAfterFork();

 private:
  friend class ProtectedFile;

  Volume(std::string dir, SecretBytes key);
  static Result<std::shared_ptr<Volume>> OpenOnce(const std::string& dir, const SecretBytes& key,
                                                  const OpenOptions& options);

  // Derived keys, bound to the volume's identity.
  SecretBytes DeriveKey(std::string_view purpose) const;
  FileKeys DeriveFileKeys(const FileId& id) const;

  Status LoadBase(bool* was_clean);
  // ---- closes that keep the journal (fs/close_mark.h) ----
  SecretBytes CloseMarkKey() const { return DeriveKey("scone fs v1 close mark"); }
  // Whether `mark` (taken at an open alone) says the journal as read (`records`, up to
  // journal_seen_) is the one a close in this boot left.
  bool ClosedInThisBoot(const std::optional<CloseMark>& mark, const std::vector<JournalRecord>& records) const;
  // Files the trash holds for unlinks of records caught up with at such an open: they go when
  // those records are durable, as they would have in the process that closed.
  void AdoptTrashLocked();
  // Whether this close may leave the journal as it is. REQUIRES: mu_, the writer lock.
  bool MayKeepJournalLocked(bool alone) const;
  // Files removed go from the trash at a close, as natively their room comes back at the unlink
  // (their records made durable first: a sync), where they hold room a user would miss: a
  // megabyte, or any room on a disk that is nearly full. A few small files wait for the next
  // durable point: `tar -x` removes the placeholders of its links, and its exit synced every
  // file it wrote for them (0.58 s of 2.7 for /usr/include).
  Status GiveBackTrashLocked();
  // Writes the mark for the journal as this process read it. REQUIRES: mu_, the writer lock,
  // and no other process using the volume (VolumeLock::TryAlone).
  Status WriteCloseMarkLocked();
  // Where no other process uses the volume (VolumeLock::TryAlone, which holds the use lock alone
  // from then on) and it may keep its journal: the trash given back (GiveBackTrashLocked) and
  // the mark written.
  // Whether it was. REQUIRES: mu_, the writer lock.
  bool MarkIfAloneLocked();
  // The last process writes the mark (a checkpoint where it cannot); one that leaves others
  // behind has nothing to do. REQUIRES: mu_, the writer lock.
  Status CloseKeepingJournalLocked(bool alone);
  // Files touched under mu_ are kept alive here, in a vector declared before the lock, so that
  // the last reference (whose release commits the file) never goes while mu_ is held.
  using KeepAlive = std::vector<std::shared_ptr<ProtectedFile>>;
  class WriterSection;
  // Applies what other processes appended to the journal (or a checkpoint they made) to the
  // in-memory state. REQUIRES: mu_ and the writer lock.
  Status CatchUpLocked(KeepAlive* keep);
  // Whether `path` names a protected file once every process's records are read, under the
  // writer lock, which a create, rename or unlink in progress holds (Verify).
  bool KnownAfterCatchUp(const std::string& path);
  // Bumps the count of journal changes (VolumeLock::JournalChanges), and what this process saw
  // of it if it was current. REQUIRES: mu_ and the writer lock.
  Status NoteJournalChangedLocked();
  Status UnlinkLocked(const std::string& path, FileEntry entry, KeepAlive& keep);
  // A metadata file root made gets the owner of the metadata (see ChownMetadata).
  void GiveToMetadataOwner(const std::string& path) const;
  void ApplyOthersRecord(JournalRecord record);
  // A file now holds buffered writes (under its lock: buffered_ is a leaf).
  void NoteBuffered(const FileId& id);
  // Publishes each file's writes (ProtectedFile::Close); the first error. REQUIRES: no lock.
  static Status PublishFiles(const std::vector<std::shared_ptr<ProtectedFile>>& files);
  // A commit record read or appended: into the window if lazy, to the file if this process has
  // it open (it catches up to it), and touched. REQUIRES: mu_.
  void PublishCommitLocked(const std::shared_ptr<const JournalRecord>& commit);
  // For lookups: catches up only if the journal or the checkpoint hint moved since we last
  // looked (loads from the lock file's mapping, no lock, in the common case). A lookup of one
  // file (by name or by id) skips records that changed only other files (VolumeLock::Changes).
  // REQUIRES: mu_.
  struct ChangeInterest {  // members left out are null
    const std::string* path;
    const FileId* id;
  };
  Status CatchUpIfChangedLocked(KeepAlive* keep, const ChangeInterest& interest = {});
  // Counts this process's record in the lock file's changes (names, or the file's slot).
  void NoteRecordChangesLocked(const JournalRecord& record);
  // Loads the state file another process's checkpoint wrote, and reads the journal from its
  // start again. REQUIRES: the writer lock.
  Status TakeOthersCheckpointLocked();
  // Cuts a torn append (bytes past the last good record) off the journal. REQUIRES: the writer
  // lock.
  Status TrimJournalLocked();
  // Reads the checkpoint sequence from the state file's authenticated-later header.
  Result<uint64_t> PeekBaseSeq() const;
  Status WriteBase(bool clean);
  // Runs a change of the volume's metadata; where the disk is full, once more after releasing
  // the volume's reserve (see space_reserve.h), saying so in one `scone:` line.
  Status WithReserve(const char* what, const std::function<Status()>& change);
  // Runs a change that stores data; where the disk is full, once more after a checkpoint, which
  // gives back the room of the journal and of the trash (files removed since: a database's
  // rollback journal each transaction), room that natively was free already.
  // REQUIRES: mu_ and the writer lock, caught up.
  Status WithCheckpointIfFull(const std::function<Status()>& change);
  // For a file's write while alone (no volume lock held), on a full disk: a checkpoint if the
  // trash holds files (removed since the last one) or the journal is long, whose room it gives
  // back; else the journal's zeros ahead go back to the disk (kZerosAhead, a write's first
  // retry), or its records' room with a checkpoint (kRecords, once the zeros were not enough).
  // Whether room may have come back.
  enum class RoomFrom { kZerosAhead, kRecords };
  bool CheckpointForRoom(RoomFrom from = RoomFrom::kZerosAhead);
  // Creates the file at `path` (on disk, and its record), or changes nothing.
  // REQUIRES: mu_ and the writer lock, caught up.
  Result<std::shared_ptr<ProtectedFile>> CreateFileLocked(const std::string& path, Region region, mode_t mode);
  // Allocates the reserve again where the disk has room (best effort; at an open, and after a
  // checkpoint gave back the journal's room).
  void KeepReserve();
  // A small or nearly full disk checkpoints sooner: a 4 MiB disk filled up with the journal of
  // a log's appends (1,800 lines, where natively 54,000 fit).
  void FitCheckpointsToDisk();
  Status DropPagesPastTheEnd(const Layout& layout, const os::File& data, const os::File& side,
                             uint64_t size);
  Status Recover(std::vector<JournalRecord> records);
  // Recovery: the files with lazy commits from `first` on, where each one's data file is once
  // every record is carried out, and the indices of its commits.
  struct LazyFile {
    std::string path;
    bool unlinked = false;  // since its last commit: in the trash if that was its last name
    Region region = Region::kEncrypted;
    std::vector<size_t> commits;
  };
  std::map<FileId, LazyFile> LazyFilesOf(const std::vector<JournalRecord>& records, size_t first) const;
  std::string DataPathOf(const FileId& id, const LazyFile& file) const;
  // Recovery: per file, a commit that repairs what a killed writer left (nullopt: nothing to
  // repair); files it cannot judge are not listed. REQUIRES: alone with the volume.
  std::map<FileId, std::optional<JournalRecord>> RepairsForRecovery(const std::vector<JournalRecord>& records,
                                                                    const std::map<FileId, LazyFile>& files);
  // Recovery, for the files not repaired: the indices of the lazy commits to drop, per file
  // those after the longest prefix whose chunks are on disk.
  std::set<size_t> LazyCommitsNotOnDisk(const std::vector<JournalRecord>& records,
                                        const std::map<FileId, LazyFile>& files) const;
  // How many of a file's lazy `commits` (in order) form that prefix.
  size_t CommitsOnDisk(const FileId& id, const std::string& data_path,
                       const std::vector<const JournalRecord*>& commits) const;
  // A process that died inside a commit (the writer lock's last holder, see
  // VolumeLock::InFlight) may have overwritten in place a chunk that only lazy records put
  // there, with no record naming the new version: this publishes a commit that takes each such
  // chunk back to a version at hand (ProtectedFile::BuildRepair). REQUIRES: mu_ and the writer
  // lock, caught up.
  Status RepairAfterDeadWriterLocked();
  // Writes the newest images and chunk table entries of `commits` (a file's records in order)
  // in place; with `trim`, cuts the data file to the state's length (recovery). `newer_on_disk`:
  // chunks later records (not applied now) put in place, which no image of `commits` may cover.
  // `from_empty`: the file was empty (or not there) before `commits`, so every entry it holds is
  // one they name, whatever its pages on disk say (a process that created it may have put them
  // in place with later records: ProtectedFile::PagesGoInPlace).
  Status ReplayDataForFile(const FileId& id, const std::string& path,
                           const std::vector<const JournalRecord*>& commits, bool trim,
                           const std::set<uint64_t>* newer_on_disk = nullptr, bool from_empty = false);
  Status Checkpoint(bool clean);
  // Appends a record. A lazy one becomes durable with the next durable one (the journal is
  // appended in order); after a durable one, files unlinked lazily are deleted for good.
  Status AppendLocked(JournalRecord& record, bool durable = true);
  // Writes a record at the journal's end and numbers it, without a sync (AppendLocked's first
  // half). REQUIRES: mu_, writer lock.
  Status WriteRecordLocked(JournalRecord& record);
  // Where a lazily unlinked file waits until its unlink record is durable.
  std::string TrashPath(const FileId& id) const;
  // Whether .scone/trash holds anything (a close cut short after its checkpoint): then an open
  // that finds the volume clean still settles it. One directory read.
  bool TrashHoldsFiles() const;
  // The state file says "in use" (a crash from then on is recovered at the next open) before
  // this process's first journal record, not at open: a process that only reads (a shell's
  // `cat`, `grep`) writes nothing at open or close. Records are what recovery needs the mark
  // for: a lazy one lost in a power cut, whose change reached the disk (a create, an unlink),
  // is undone only by a recovery. Changes in place before a record need none: chunks no
  // record references are ignored, and cut off by the file's next commit. REQUIRES: mu_,
  // writer lock.
  Status MarkInUseLocked();
  // The disk now says in use (this process marked it, or found another's mark or records).
  void NoteMarkedInUseLocked() {
    in_use_marked_ = true;
    found_clean_alone_ = false;
    found_clean_stamp_.reset();
  }
  void EmptyTrashLocked();
  // Recovery: files whose create or unlink record did not reach the disk before a crash.
  Status UndoLostNamespaceChanges();
  // `durably_unlinked`: the (device, inode) of trash entries whose unlink is durable; a name
  // still left to such an inode (a crash between the trash's link and the unlink) goes too.
  Status SettleTrash(std::set<std::pair<dev_t, ino_t>>* durably_unlinked);
  Status DropLostCreates(const std::set<std::pair<dev_t, ino_t>>& durably_unlinked);
  // Removes the entries of `meta_dir` (named by file id) of files the state does not list.
  void RemoveEntriesOfUnknownFiles(const std::string& meta_dir);
  void ApplyToState(const JournalRecord& record);
  // Keep names_ and path_by_id_ (a file's first name in path order) in step with state_.files.
  void NameAdded(const FileId& id, const std::string& path);
  void NameRemoved(const FileId& id, const std::string& path);
  // Recovery: a name the state lists that is missing on disk while another name of the same
  // file is there (an unlink of one of several names whose record was lost) is linked again.
  Status RestoreLostNames();
  // Verify: names of one file that are not one data file (a link replaced behind our back).
  void CheckLinks(std::vector<VolumeProblem>* problems);
  uint32_t StateVersion() const;

  // The same, without the writer lock when nothing changed since this process last looked (two
  // reads of the metadata): for a file open in several processes, before each use.
  Result<FileEntry> LatestEntry(const FileId& id);
  // Whether an open file that another process unlinked has yet to catch up to its last entry
  // (WithLatestEntry hands it over, once).
  bool HasLastEntry(const FileId& id);
  // Runs `fn` with the file's current entry (nullptr if it was unlinked) under the volume's
  // locks, after catching up with other processes. Called with the file's lock held.
  Status WithLatestEntry(const FileId& id, const std::function<Status(const FileEntry*)>& fn);
  // Called by ProtectedFile with the file's lock held. Under the volume's locks, after catching
  // up with other processes: `build` fills the record, given the file's current entry (nullptr
  // if it was unlinked: then nothing is journaled); the record is appended, applied with
  // `apply`, and folded into the state. `record_bound`: at most how large the record gets; the
  // journal has room for it before `build` runs (ENOSPC then, with nothing changed).
  // Called by ProtectedFile (its lock held, not the volume's) before it writes chunks in place
  // ahead of the record that will name them: until that record, applying the window does not
  // cut the data file back to the file's size (the chunks lie past it).
  void NoteWritingAhead(const FileId& id);
  // `reserve_for`: what the commit does that takes no room natively (a file cut short, an
  // overwrite), for which it may take the journal's room from the reserve; nullptr: it may not.
  Status CommitFile(const FileId& id, JournalRecord& record, uint64_t record_bound, const char* reserve_for,
                    const std::function<Status(const FileEntry* current)>& build,
                    const std::function<Status()>& apply);

  std::string MetaPath(std::string_view name) const { return MetaPathIn(dir_, name); }
  // `name` in the metadata directory of the volume at `dir` ("" for the directory itself).
  static std::string MetaPathIn(const std::string& dir, std::string_view name);

  // ---- the window: what was published since the last durable record (volume_window.cc) ----
  // A lazy commit is appended without a sync and is not applied in place (its new chunks are
  // written in place, where no durable record looks); every process keeps it in memory until a
  // durable record follows, whose writer first syncs the window's in-place data, then appends,
  // then applies the window in place. Recovery drops lazy records no durable one follows.
  // REQUIRES: mu_. A file's window (its base is `current` when it has none).
  FileWindow WindowOfLocked(const FileId& id, const FileEntry& current) const;
  // A lazy commit record (ours or another's) joins the window. REQUIRES: mu_, before the record
  // is folded into state_.
  void AddToWindowLocked(const std::shared_ptr<const JournalRecord>& record);
  // The file put its table pages and chunks in place with its record `seq` itself
  // (ProtectedFile::PagesGoInPlace): an apply of the window that ends with that record
  // has nothing to write for it. REQUIRES: mu_.
  void NotePagesInPlaceLocked(const FileId& id, uint64_t seq) { pages_in_place_[id] = seq; }
  // The files of the window up to `upto` that are so in place. REQUIRES: mu_.
  FileIdSet InPlaceAlreadyLocked(uint64_t upto) const;
  // A durable record was appended (by us or another process): the window is on disk now.
  void WindowDurableLocked(uint64_t seq);
  // The window's records up to `seq` are durable and in place (a kSyncApplied); later ones
  // stay, on the entries those left as their base.
  void WindowDurableUpToLocked(uint64_t seq);
  // Another process's durable record said the window up to it goes in place, and no kSyncApplied
  // confirmed it yet (its writer confirms before it lets go of the writer lock); 0: none.
  uint64_t apply_unconfirmed_ = 0;
  // A writer killed between its durable record and the end of its apply (SIGKILL) left the
  // window half in place, and every process read the half-written tables as damage, for good
  // after the next checkpoint dropped the records (hostile finding). Found under the writer
  // lock, the apply is made again (the records are durable; it is idempotent) and confirmed.
  // REQUIRES: mu_, the writer lock.
  Status RedoUnconfirmedApplyLocked();
  // Whether this process may write every file the window's records up to `upto` change (the
  // apply is all or nothing: half of it would leave the others reading tables newer than their
  // window's base). A file of mode 0444, or another user's, waits for a process that may.
  bool MayApplyWindowLocked(uint64_t upto) const;
  // The same for the commit records a process that opens the volume alone finds to recover.
  bool MayWriteFilesOf(const std::vector<JournalRecord>& records) const;
  // Whether this process may read and write the volume's file at `path` (the kernel's refusal).
  bool MayWriteByName(const std::string& path) const;
  // A durable point (`seq`) whose window this process may not put in place: durable, the window
  // kept whole and unconfirmed, for a process that may.
  void LeaveUnappliedLocked(uint64_t seq);
  Status ConfirmAppliedLocked(uint64_t upto);
  // A process alone reads the lock file's count of joiners: changed, it shares from now on.
  void NoticeJoiners();
  // A resting process takes the volume again. REQUIRES: mu_, not the writer lock.
  Status WakeLocked();
  // The files open now (their last reference, which commits, must go without mu_ held).
  // REQUIRES: mu_.
  std::vector<std::shared_ptr<ProtectedFile>> OpenFilesLocked() const;
  // A joiner, out of the writer lock: waits for the process alone to hand over.
  void WaitForHandOver();
  // fsyncs the data (and side) files of `ids`; many at once with one syncfs.
  Status SyncFilesLocked(const FileIdSet& ids);
  // Syncs the data files the window's records wrote in place. REQUIRES: mu_, writer lock.
  Status SyncWindowDataLocked();
  // Writes the images and chunk table entries of the window's records up to `upto` in place.
  // REQUIRES: mu_, writer lock.
  Status ApplyWindowLocked(uint64_t upto = UINT64_MAX);
  // Appends a durable kSync record if the window holds anything. REQUIRES: mu_, writer lock.
  Status MakeWindowDurableLocked();
  // The same for a volume shared with other processes, without holding the writer lock during
  // the journal's sync (a kSyncPending, then a kSyncApplied): the others append meanwhile.
  // While the window holds less than kApplyWindowBytes it stays out of place after the sync.
  // REQUIRES: mu_, `writer` begun; ends with it begun again, or ended where the window stays.
  Status MakeWindowDurableSharedLocked(WriterSection& writer);
  // After a sync up to `upto`: the window up to it in place and a kSyncApplied naming it (or,
  // where this process may not write its files, left to one that may). REQUIRES: mu_, writer lock.
  Status ApplySyncedWindowLocked(uint64_t upto);
  // Others' commit records of files this process has open, for their next catch-up.
  std::vector<std::shared_ptr<const JournalRecord>> TakePublishedLocked(const FileId& id);
  std::vector<std::shared_ptr<const JournalRecord>> TakePublished(const FileId& id);
  FileWindow WindowOf(const FileId& id, const FileEntry& current);

  const std::string dir_;
  const SecretBytes key_;
  SecretBytes state_key_;
  SecretBytes tag_key_;
  SecretBytes unlinked_key_;

  mutable std::mutex mu_;
  std::mutex images_mu_;  // LockImages within the process; taken before mu_
  VolumeState state_;
  FileIdMap<std::string> path_by_id_;  // a file's first name (see names_)
  // Files this process has open whose last name another process removed: their entry then,
  // until the open file takes it (TakeLastEntryLocked) to catch up once.
  FileIdMap<FileEntry> last_entries_;
  std::optional<FileEntry> TakeLastEntryLocked(const FileId& id);
  // Every file's last entry when its last name went, the newest kept; beside the base state
  // for processes that catch up by loading it (see recently_unlinked.h).
  RecentlyUnlinked recently_unlinked_;
  SpaceReserve reserve_{MetaPath("reserve")};
  bool reserve_released_ = false;   // by this process: kept again after its next checkpoint
  bool reserve_reported_ = false;   // its release was told (once per process)
  uint64_t checkpoint_journal_size_ = 32u << 20;  // see FitCheckpointsToDisk
  BufferedRoom buffered_room_;
  bool opened_alone_ = false;       // no other process had it open: this one keeps the reserve
  uint64_t base_size_ = 0;          // of the state file, as last read or written
  bool apply_failed_ = false;       // an apply in place failed: the journal must stay (Checkpoint)
  bool apply_failed_reported_ = false;
  FileIdSet writing_ahead_;  // see NoteWritingAhead; cleared by the file's next record
  FileNames names_;                           // every name of every file
  std::unique_ptr<Journal> journal_;
  uint64_t journal_seen_ = 0;  // end of the last record folded into state_
  // The lock file's count of journal changes when this process last looked past its last record
  // or changed the journal itself (VolumeLock::JournalChanges): while it stands, nothing was
  // appended since.
  uint64_t journal_changes_seen_ = UINT64_MAX;
  // The lock file's changes of names and per file slot as of journal_seen_ (VolumeLock::Changes);
  // valid once a catch-up under the writer lock read them.
  VolumeLock::Changes changes_seen_;
  bool changes_seen_valid_ = false;
  bool trash_ready_ = false;   // .scone/trash exists
  uint64_t next_seq_ = 1;
  uint64_t applied_seq_ = 0;  // last record folded into the base state file
  FileIdSet touched_;  // files with in-place writes not yet fsync'ed by a checkpoint
  std::vector<FileId> trash_;  // unlinked lazily: deleted once their record is durable
  uint64_t trash_bytes_ = 0;   // the room trash_ holds
  FileIdMap<std::weak_ptr<ProtectedFile>> open_files_;
  std::vector<std::shared_ptr<ProtectedFile>> held_for_fork_;  // BeforeFork to DropFilesHeldForFork
  std::optional<VolumeLock> lock_;
  bool closed_ = true;  // until Create or Open succeeds; then until Close
  bool left_for_exec_ = false;  // LeaveForExec wrote the mark

  std::vector<std::shared_ptr<const JournalRecord>> window_;
  size_t window_bytes_ = 0;
  FileIdMap<FileEntry> window_base_;
  FileIdSet window_data_;  // files with in-place data of window records, not synced yet
  FileIdMap<uint64_t> pages_in_place_;  // see NotePagesInPlaceLocked
  FileIdMap<std::vector<std::shared_ptr<const JournalRecord>>> published_;
  std::atomic<uint64_t> durable_seq_{0};
  // This process's last kSyncPending whose window it left out of place (durable_seq_ moves at
  // the apply): an fsync with nothing newer needs no sync. REQUIRES: mu_.
  uint64_t synced_seq_ = 0;
  std::atomic<uint64_t> sync_seen_{0};  // see LastSyncSeq
  std::atomic<bool> shared_{false};
  bool resting_ = false;  // no use lock held (RestIfUnused); WakeLocked takes it again
  bool holds_alone_ = false;  // the alone lock (under mu_)
  std::atomic<bool> buffering_{false};  // holds_alone_ and not shared: MayBuffer's fast path
  BufferedFiles buffered_;  // files with writes not published yet (a process alone)
  bool watched_ = false;  // the alone hook ran
  std::atomic<int64_t> next_share_poll_{0};
  uint64_t users_seen_ = 0;  // the lock file's count of processes that joined, when last read
  // The disk says this process's records would be recovered after a crash: the state file is
  // marked in use (by this process, or by another that cannot mark it clean while this one has
  // the volume open), or the journal holds records past it. False after an open or a wake
  // that found the volume clean, until MarkInUseLocked. (Under mu_.)
  bool in_use_marked_ = true;
  // Opened alone and clean, and not marked in use since (by this process or, as far as it saw,
  // another): with no joiner since (the count then), a close that changed nothing leaves the
  // state file as it is. Processes that used the volume while this one rested (a shell's
  // commands) left it clean: the last of them to close was alone.
  bool found_clean_alone_ = false;
  uint64_t users_when_found_clean_ = 0;
  // Opened (alone or beside others) while the state file was clean with no record past it:
  // that file then (a hint: the host can only make a close write the clean mark anyway, or skip
  // it and leave the next open a recovery). Closing last, a process that changed nothing
  // leaves the state file as it is if it is still that file and no record followed, whoever
  // joined meanwhile: before, of two readers that overlapped (`find vol | xargs cat`, python
  // and a child it started), the one that closed last rewrote and synced it.
  struct StateFileStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    int64_t mtime_ns = 0;
    off_t size = 0;
    bool operator==(const StateFileStamp&) const = default;
  };
  std::optional<StateFileStamp> StampOfStateFile() const;
  std::optional<StateFileStamp> found_clean_stamp_;
  // The state file, marked in use, as a process left it when it rested (RestIfUnused): found
  // so when it wakes, it is still marked (the others kept the journal at their close).
  std::optional<StateFileStamp> rested_on_;
};

// Volume key files: 64 hex digits and a newline, mode 0600.
Result<SecretBytes> ReadKeyFile(const std::string& path);
// Creates a new random key file (fails if it exists).
Result<SecretBytes> CreateKeyFile(const std::string& path);

}  // namespace scone::fs
