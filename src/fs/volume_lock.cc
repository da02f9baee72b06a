#include "fs/volume_lock.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>

#include "os/syscalls.h"

namespace scone::fs {

Status VolumeLock::Set(short type, off_t byte, bool wait) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  for (;;) {
    if (os::Sys().fcntl(file_.fd(), wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return Status::Ok();
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) {
      return Status(Code::kIoError, "volume lock is held by another process", EBUSY);
    }
    return IoError("lock " + file_.path(), errno);
  }
}

Result<VolumeLock> VolumeLock::Acquire(const std::string& path, bool* alone) {
  SCONE_ASSIGN_OR_RETURN(os::File file, os::File::Open(path, O_RDWR | O_CREAT, 0600));
  VolumeLock lock(std::move(file));
  lock.MapHints();
  *alone = lock.Set(F_WRLCK, 1, /*wait=*/false).ok();
  if (!*alone) SCONE_RETURN_IF_ERROR(lock.Set(F_RDLCK, 1, /*wait=*/true));
  return lock;
}

Status VolumeLock::LockWriter() { return Set(F_WRLCK, 0, /*wait=*/true); }

void VolumeLock::UnlockWriter() { (void)Set(F_UNLCK, 0, /*wait=*/false); }

Status VolumeLock::SetByte(off_t byte, bool exclusive, bool wait) {
  return Set(exclusive ? F_WRLCK : F_RDLCK, byte, wait);
}

void VolumeLock::LetGoAlone() { (void)Set(F_UNLCK, kAloneByte, /*wait=*/false); }

bool VolumeLock::WaitForHandOver(int limit_ms) {
  // Polled, not blocking: a process alone that never hands over (stopped, or a tool without the
  // runtime's watcher) must not hold the newcomer forever.
  for (int waited_us = 0; waited_us < limit_ms * 1000; waited_us += 500) {
    if (Set(F_RDLCK, kAloneByte, /*wait=*/false).ok()) {
      (void)Set(F_UNLCK, kAloneByte, /*wait=*/false);
      return true;
    }
    struct timespec pause = {0, 500'000};
    nanosleep(&pause, nullptr);
  }
  return false;
}

Status VolumeLock::LockImages() { return Set(F_WRLCK, 2, /*wait=*/true); }

void VolumeLock::UnlockImages() { (void)Set(F_UNLCK, 2, /*wait=*/false); }

bool VolumeLock::TryAlone() { return Set(F_WRLCK, 1, /*wait=*/false).ok(); }

Status VolumeLock::Share() { return Set(F_RDLCK, 1, /*wait=*/true); }

// The lock file's hints, little-endian: bytes 8-15 the checkpoint sequence, 16-23 the users
// count, 24-31 the journal's changes, 32-39 the images made, 40-63 the commit in flight (its
// sequence number, then its file), 64-71 the names' changes, 72-79 the removals and links (DirectoriesChanged),
// 128-2175 the commits per file slot.
constexpr off_t kCheckpointHintAt = 8;
constexpr off_t kUsersHintAt = 16;
constexpr off_t kJournalChangesAt = 24;
constexpr off_t kImagesMadeAt = 32;
constexpr off_t kInFlightAt = 40;
constexpr off_t kNamesChangedAt = 64;
constexpr off_t kDirectoriesChangedAt = 72;
constexpr off_t kFileChangesAt = 128;
constexpr off_t kHintsSize = kFileChangesAt + 256 * 8;
constexpr size_t kMappedSize = 4096;
static_assert(std::endian::native == std::endian::little, "the hints are little-endian");

void VolumeLock::Unmap::operator()(uint64_t* words) const { munmap(words, kMappedSize); }

void VolumeLock::MapHints() {
  // Never shrunk, so two processes growing it at once agree. A mapping only reads and writes
  // the hints' bytes, which the file holds: no access past its end (SIGBUS) unless the file is
  // cut behind the volume's back, which only stops the process (denial of service).
  // Through an open file description of its own: a mapping keeps its description alive, and
  // with it the description's locks, which must go when file_ is closed.
  auto own = os::File::Open(file_.path(), O_RDWR);
  if (!own.ok()) return;
  auto size = own->Size();
  if (!size.ok()) return;
  if (*size < static_cast<uint64_t>(kHintsSize) && !own->Truncate(kHintsSize).ok()) return;
  void* p = mmap(nullptr, kMappedSize, PROT_READ | PROT_WRITE, MAP_SHARED, own->fd(), 0);
  if (p == MAP_FAILED) return;
  hints_.reset(static_cast<uint64_t*>(p));
}

Result<uint64_t> VolumeLock::ReadHint(off_t at) const {
  if (hints_) return std::atomic_ref<uint64_t>(hints_.get()[at / 8]).load(std::memory_order_acquire);
  uint8_t bytes[8] = {};
  SCONE_ASSIGN_OR_RETURN(size_t n, file_.ReadAt(at, bytes));
  uint64_t value = 0;
  for (size_t i = 0; i < n; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

// Written with pwrite even where the hints are mapped (the mapping sees it: one page cache): a
// store through a mapping raises no inotify event, and a process alone learns that another
// joined from the IN_MODIFY of the users hint's write (runtime/alone_watcher.h). Writes are
// rare (a checkpoint, a process joining); reads, on every lookup, are the ones made cheap.
Status VolumeLock::WriteHint(off_t at, uint64_t value) const {
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
  return file_.WriteAt(at, ByteSpan(bytes, sizeof(bytes)));
}

Result<uint64_t> VolumeLock::ReadCheckpointHint() const { return ReadHint(kCheckpointHintAt); }

Status VolumeLock::WriteCheckpointHint(uint64_t seq) const { return WriteHint(kCheckpointHintAt, seq); }

Result<uint64_t> VolumeLock::ReadUsersHint() const { return ReadHint(kUsersHintAt); }

Status VolumeLock::BumpUsersHint() const {
  SCONE_ASSIGN_OR_RETURN(uint64_t users, ReadHint(kUsersHintAt));
  return WriteHint(kUsersHintAt, users + 1);
}

std::optional<uint64_t> VolumeLock::JournalChanges() const {
  if (!hints_) return std::nullopt;
  return std::atomic_ref<uint64_t>(hints_.get()[kJournalChangesAt / 8]).load(std::memory_order_acquire);
}

Status VolumeLock::NoteJournalChanged() const { return CountInHint(kJournalChangesAt); }

uint64_t VolumeLock::ImagesMade() const {
  auto made = ReadHint(kImagesMadeAt);
  // Unreadable: a count no descriptor has seen yet, so that each looks for holders (once).
  return made.ok() ? *made : ~uint64_t{0};
}

Status VolumeLock::NoteImageMade() const { return CountInHint(kImagesMadeAt); }

std::optional<uint64_t> VolumeLock::DirectoriesChanged() const {
  if (!hints_) return std::nullopt;
  return std::atomic_ref<uint64_t>(hints_.get()[kDirectoriesChangedAt / 8]).load(std::memory_order_acquire);
}

Status VolumeLock::NoteDirectoriesChanged() const { return CountInHint(kDirectoriesChangedAt); }

void VolumeLock::MarkInFlight(const InFlight& commit) const {
  if (!hints_) return;
  uint64_t* words = hints_.get() + kInFlightAt / 8;
  uint64_t file[2];
  std::memcpy(file, commit.file.data(), sizeof(file));
  std::atomic_ref<uint64_t>(words[1]).store(file[0], std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(words[2]).store(file[1], std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(words[0]).store(commit.seq, std::memory_order_release);
}

void VolumeLock::ClearInFlight() const {
  if (hints_) std::atomic_ref<uint64_t>(hints_.get()[kInFlightAt / 8]).store(0, std::memory_order_release);
}

std::optional<VolumeLock::InFlight> VolumeLock::TakeInFlight() const {
  if (!hints_) return std::nullopt;
  uint64_t* words = hints_.get() + kInFlightAt / 8;
  // Read first: every catch-up asks, and a store would dirty the shared page each time.
  std::atomic_ref<uint64_t> seq(words[0]);
  if (seq.load(std::memory_order_acquire) == 0) return std::nullopt;
  InFlight commit;
  commit.seq = seq.exchange(0, std::memory_order_acquire);
  if (commit.seq == 0) return std::nullopt;
  const uint64_t file[2] = {std::atomic_ref<uint64_t>(words[1]).load(std::memory_order_relaxed),
                            std::atomic_ref<uint64_t>(words[2]).load(std::memory_order_relaxed)};
  std::memcpy(commit.file.data(), file, sizeof(file));
  return commit;
}

bool VolumeLock::ReadChanges(Changes* out) const {
  if (!hints_) return false;
  out->names = std::atomic_ref<uint64_t>(hints_.get()[kNamesChangedAt / 8]).load(std::memory_order_acquire);
  uint64_t* files = hints_.get() + kFileChangesAt / 8;
  for (size_t i = 0; i < out->files.size(); ++i) {
    out->files[i] = std::atomic_ref<uint64_t>(files[i]).load(std::memory_order_relaxed);
  }
  return true;
}

bool VolumeLock::UnchangedSince(const Changes& seen, const std::array<uint8_t, 16>* file_id) const {
  if (!hints_) return false;
  if (std::atomic_ref<uint64_t>(hints_.get()[kNamesChangedAt / 8]).load(std::memory_order_acquire) != seen.names) {
    return false;
  }
  if (file_id == nullptr) return true;
  const size_t slot = SlotOf(*file_id);
  return std::atomic_ref<uint64_t>(hints_.get()[kFileChangesAt / 8 + slot]).load(std::memory_order_acquire) ==
         seen.files[slot];
}

std::optional<uint64_t> VolumeLock::NoteNamesChanged() const {
  if (!hints_) return std::nullopt;
  return std::atomic_ref<uint64_t>(hints_.get()[kNamesChangedAt / 8]).fetch_add(1, std::memory_order_acq_rel);
}

std::optional<uint64_t> VolumeLock::NoteFileChanged(const std::array<uint8_t, 16>& file_id) const {
  if (!hints_) return std::nullopt;
  return std::atomic_ref<uint64_t>(hints_.get()[kFileChangesAt / 8 + SlotOf(file_id)])
      .fetch_add(1, std::memory_order_acq_rel);
}

Status VolumeLock::CountInHint(off_t at) const {
  // Through the mapping where there is one: no inotify event for the processes alone to wake
  // up to. A process without one writes the file, which the others' mappings see.
  if (hints_) {
    std::atomic_ref<uint64_t>(hints_.get()[at / 8]).fetch_add(1, std::memory_order_acq_rel);
    return Status::Ok();
  }
  SCONE_ASSIGN_OR_RETURN(uint64_t count, ReadHint(at));
  return WriteHint(at, count + 1);
}

Status VolumeLock::ReopenInChild(bool take_use) {
  std::string path = file_.path();
  // The inherited descriptor shares the parent's locks; drop it without unlocking them.
  SCONE_ASSIGN_OR_RETURN(os::File fresh, os::File::Open(path, O_RDWR, 0600));
  file_ = std::move(fresh);
  return take_use ? Set(F_RDLCK, 1, /*wait=*/true) : Status::Ok();
}

void VolumeLock::ReleaseUse() { (void)Set(F_UNLCK, 1, /*wait=*/false); }

Status VolumeLock::TakeUse(bool* alone) {
  *alone = Set(F_WRLCK, 1, /*wait=*/false).ok();
  return Set(F_RDLCK, 1, /*wait=*/true);  // an exclusive hold is downgraded at once
}

}  // namespace scone::fs
