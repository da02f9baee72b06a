#include "fs/volume_lock.h"

#include <fcntl.h>

#include <time.h>

#include <cerrno>

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

// The lock file's hints: bytes 8-15 the checkpoint sequence, 16-23 the users count.
constexpr off_t kCheckpointHintAt = 8;
constexpr off_t kUsersHintAt = 16;

Result<uint64_t> VolumeLock::ReadHint(off_t at) const {
  uint8_t bytes[8] = {};
  SCONE_ASSIGN_OR_RETURN(size_t n, file_.ReadAt(at, bytes));
  uint64_t value = 0;
  for (size_t i = 0; i < n; ++i) value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

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
