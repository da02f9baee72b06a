// Cross-process locks of one volume, on `.scone/lock`, as open-file-description locks (they
// belong to this open of the file, so threads of one process share them and a forked child
// that reopens the file gets its own):
//   byte 0, the writer lock: held exclusively around every journal append and checkpoint;
//   byte 1, the use lock: held shared while the volume is open; an exclusive hold means no
//           other process has the volume open (so recovery or a clean close may happen);
//   byte 2, the images lock: held exclusively while a process looks for another's shared image
//           of a file, or makes one (runtime/files/image_broker.h);
//   byte 3, the alone lock: held exclusively by the process that has the volume alone (and so
//           may buffer writes); a process that joins waits until it is let go, which the
//           process alone does once it has published what it buffered (the hand-over).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "os/file.h"

namespace scone::fs {

class VolumeLock {
 public:
  // Opens the lock file and takes the use lock: exclusive if no other process uses the
  // volume (`*alone` true), else shared.
  static Result<VolumeLock> Acquire(const std::string& path, bool* alone);

  // Blocks until this process is the only writer.
  Status LockWriter();
  void UnlockWriter();
  // Blocks until this process alone looks for or makes a shared image.
  Status LockImages();
  void UnlockImages();
  // The alone lock: taken by a process that opened the volume alone (no wait: nobody else can
  // hold it), let go at the hand-over; a process that joined waits for that, up to `limit_ms`
  // (false if it had to stop waiting).
  Status HoldAlone() { return SetByte(kAloneByte, /*exclusive=*/true, /*wait=*/false); }
  void LetGoAlone();
  bool WaitForHandOver(int limit_ms);
  // True when no other process holds the use lock; upgrades ours to exclusive if so.
  bool TryAlone();
  // Downgrades an exclusive use lock to shared.
  Status Share();
  // In a forked child: a new open of the file, with its own (shared) use lock if `take_use`.
  Status ReopenInChild(bool take_use = true);
  // A process that rests (no file of the volume open) lets go of its use lock, and takes it
  // again (shared; `*alone` says whether it could have had it exclusively) when it wakes.
  void ReleaseUse();
  Status TakeUse(bool* alone);
  void Release() { (void)file_.Close(); }

  // A hint for other processes, kept in the lock file (which is never replaced): the sequence
  // number of the last checkpoint. Read and written under the writer lock.
  Result<uint64_t> ReadCheckpointHint() const;
  Status WriteCheckpointHint(uint64_t seq) const;
  // A count of processes that opened the volume while others had it open: a process alone
  // watches it to learn that it no longer is. Bumped under the writer lock.
  Result<uint64_t> ReadUsersHint() const;
  Status BumpUsersHint() const;
  // A count of the journal's changes (appends, resets, trims of a torn append), so that a
  // process can tell without a system call that the journal is as it last saw it. Read only
  // where the hints are mapped (nullopt elsewhere: look past the last record read). Bumped under
  // the writer lock, after the change. A hint the host can write: it may make a process read
  // the journal sooner, never skip reading it under the writer lock (Volume::CatchUpLocked).
  std::optional<uint64_t> JournalChanges() const;
  Status NoteJournalChanged() const;
  // A count of the shared images ever made of the volume's files (runtime/files/shared_image.h),
  // bumped by the maker under the images lock once its image is served: a process whose
  // descriptors use a file without mapping it looks for a holder of the file's image only when
  // the count moved (one load where the hints are mapped).
  uint64_t ImagesMade() const;
  Status NoteImageMade() const;
  // A count of names removed (rename, unlink, rmdir) and links made in the volume by any of its
  // processes (runtime/runtime.h Locate: what a process learnt of directories free of symbolic
  // links holds while it stands). Bumped after the kernel's call, without the writer lock. Read only
  // where the hints are mapped (nullopt elsewhere: nothing is learnt then). A hint the host can
  // write: held still, a process may take a path through a link the host made by its name
  // (its ciphertext lands where the link leads), as when the host swaps a directory meanwhile.
  std::optional<uint64_t> DirectoriesChanged() const;
  Status NoteDirectoriesChanged() const;
  // Which files changed, for lookups that need one file's news and not the whole journal's (two
  // nginx workers: each appends to the access log between any two calls of the other, whose
  // stat, open and read of the file it serves each caught up under the writer lock). A count of
  // name changes (creates, renames, unlinks, links) and one of commits per slot of 256 (a file's
  // slot: the first byte of its random id), bumped by the writer after its record, under the
  // writer lock. Hints the host can write, as JournalChanges: they may let a lookup skip others'
  // records (a stale view, as when the host holds the count still), never a writer (every commit
  // catches up under the writer lock). Only where the hints are mapped.
  struct Changes {
    uint64_t names = 0;
    std::array<uint64_t, 256> files{};
  };
  static size_t SlotOf(const std::array<uint8_t, 16>& file_id) { return file_id[0]; }
  bool ReadChanges(Changes* out) const;
  // Whether the names and the file's slot (if any) still stand as in `seen`.
  bool UnchangedSince(const Changes& seen, const std::array<uint8_t, 16>* file_id) const;
  // Bumps and returns the count before (nullopt where not mapped).
  std::optional<uint64_t> NoteNamesChanged() const;
  std::optional<uint64_t> NoteFileChanged(const std::array<uint8_t, 16>& file_id) const;

  // The commit in flight: the sequence number its record will get and its file, set by a
  // writer before it writes chunks in place and cleared once the record is appended, both under
  // the writer lock. Set when the writer lock is taken: its holder died inside a commit. A hint
  // only (the host can write it): what it leads to is checked against the journal and the disk.
  // Only where the hints are mapped (stores, no system call).
  struct InFlight {
    uint64_t seq = 0;
    std::array<uint8_t, 16> file{};
  };
  void MarkInFlight(const InFlight& commit) const;
  void ClearInFlight() const;
  std::optional<InFlight> TakeInFlight() const;

 private:
  struct Unmap {
    void operator()(uint64_t* words) const;
  };
  explicit VolumeLock(os::File file) : file_(std::move(file)) {}
  static constexpr off_t kAloneByte = 3;
  Status Set(short type, off_t byte, bool wait);
  Status SetByte(off_t byte, bool exclusive, bool wait);
  // Maps the hints, so that reading them costs no system call (best effort: where the file
  // cannot be mapped, they are read with pread as before). They are written with pwrite.
  void MapHints();
  Result<uint64_t> ReadHint(off_t at) const;
  Status WriteHint(off_t at, uint64_t value) const;
  // Adds one to a count others read without a system call (the journal's changes, the images
  // made): through the mapping, atomically, where there is one.
  Status CountInHint(off_t at) const;

  os::File file_;
  std::unique_ptr<uint64_t, Unmap> hints_;  // the lock file's first page; survives ReopenInChild
};

}  // namespace scone::fs
