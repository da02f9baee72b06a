// The console shield inside a program (docs/console-shield.md): what the program writes on the
// descriptors 1 and 2 it started with (and every dup of them, in this process and in the
// processes it forks and the programs they execute) reaches the kernel only as sealed, numbered
// records (console/record.h).
//
// One ConsoleStream per console description per process: its own numbering and key (HKDF of the
// console key with the stream's random id). A forked child gets fresh streams, which the parent
// announces in its own (a kFork record) and which name the parent's in their start record, so
// a child's stream that is removed is evident. A program executed by the process carries its
// streams on (the configuration hands the id and the next number over).
//
// Each record is one write(2) of its own descriptor (a dup of the console description, kept out
// of the program's reach): up to 64 KiB on a regular file (one write(2) to a file is atomic
// against its description's other writers) and on a pipe under the pipe's flock (kept across
// records while the program streams: kept_locks.h), else at most PIPE_BUF bytes. Records of
// processes writing into one pipe or file side by side never interleave inside a record.
//
// Cost: one AES-GCM pass and one write(2) per record (a program's write larger than a record
// makes several). Thread-safety: a stream's writes are serialized by its lock, held across the
// kernel's write so that records land in the order they are numbered.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "console/record.h"
#include "runtime/config.h"
#include "runtime/console/console_input.h"
#include "runtime/fd_table.h"

namespace scone::runtime {

class ConsoleStream {
 public:
  // `own_fd`: the stream's own descriptor of the console description (the runtime's).
  // REQUIRES: `key` outlives the stream.
  ConsoleStream(const SecretBytes& key, int own_fd, const ConsoleStreamConfig& state);

  // The program's write: its bytes as kData records. Returns `count` as the program would see
  // it natively, or how many bytes went out before the description would block (non-blocking
  // console), or -errno when none did. A record once begun is always written whole.
  // `may_keep_lock`: a pipe's lock may stay held after the last record (kept_locks.h); the
  // runtime's own lines, written where it may hold other locks, let go at once.
  long Write(const void* buf, size_t count, bool may_keep_lock = true);
  // The final record (a start record first if the stream wrote none); then its descriptor
  // closes. Idempotent.
  void End();
  bool ended();
  // Whether the kernel's object (dev, ino) is this stream's console.
  bool Is(dev_t dev, ino_t ino) const { return dev == dev_ && ino == ino_; }
  int own_fd() const { return own_fd_; }
  // The program sets the description's status flags (F_SETFL through this process's runtime).
  void NoteStatusFlags(int flags);
  // For a program this process executes. `fds`: the program's descriptors that keep the stream.
  ConsoleStreamConfig Describe(std::vector<int> fds);

  // Fork (ConsoleShield's). LockForFork runs before the kernel's call, where allocating is safe:
  // it makes room for the child's announcement, which UnlockInParent only notes (no allocation,
  // no lock: glibc's fork may still hold the allocator's locks); AnnounceChildren writes it once
  // the fork is complete, and every record of the stream writes what is still unannounced first.
  void LockForFork(const console::StreamId& child);
  void UnlockInParent(bool forked);
  void BecomeChild();
  void AnnounceChildren();
  // Lets go of the pipe's lock kept after the last record (kept_locks.h), unless another thread
  // is inside a record of the stream. `if_idle`: only if no record went out since the last such
  // look (the runtime's thread).
  void LetGoOfKeptLock(bool if_idle);

 private:
  // Seals and writes one record. -EAGAIN (nothing written) only when `may_refuse`; else waits
  // until the description takes it. REQUIRES: mu_.
  // `keep_lock`: a data record of the program's, after which a pipe's lock may stay held.
  long WriteRecord(console::RecordType type, ByteSpan payload, bool may_refuse, bool keep_lock = false);
  // After a record written under the pipe's lock: keeps it (a stream writing record after
  // record, on a blocking pipe) or lets go. REQUIRES: mu_.
  void KeepOrUnlock(bool keep);
  // Unlocks the pipe, and the stream keeps its lock no longer. REQUIRES: mu_.
  void LetGoOfLock();
  long WriteSealed(console::RecordType type, ByteSpan payload, bool may_refuse);
  // A pipe's lock (flock on a description of this process's own), held across a record's write.
  // 0: locked; 1: no lock to be had (records then stay at most PIPE_BUF); -EAGAIN: another
  // writer holds it and the console is non-blocking (only when `may_refuse`). REQUIRES: mu_.
  long LockPipe(bool may_refuse);
  void OpenPipeLock();
  void UnlockPipe();
  // Whether the description is non-blocking, as last learnt (REQUIRES: mu_): asked of the kernel
  // once, then kept from this process's F_SETFL and from an EAGAIN. A change the stream does not
  // see (another process's F_SETFL, ioctl FIONBIO) is learnt at the first EAGAIN; until then the
  // records are larger than on a non-blocking pipe, and one the full pipe cuts is finished
  // waiting, as every record once begun.
  bool NonBlocking();
  // REQUIRES: mu_.
  long StartIfNeeded(bool may_refuse);
  // The kFork records of children forked since the last. REQUIRES: mu_.
  void WriteAnnouncements();

  std::mutex mu_;
  const SecretBytes& key_;
  int own_fd_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  console::StreamId id_;
  console::StreamId parent_;
  console::StreamId run_;
  std::vector<console::StreamId> siblings_;  // a first stream's (console/record.h StartInfo)
  console::StreamId child_{};  // chosen for the child of a fork in progress
  // Children forked, not yet announced. Its capacity is reserved before each fork (LockForFork).
  std::vector<console::StreamId> unannounced_;
  console::Channel channel_;
  uint64_t next_;
  bool started_;
  bool ended_;
  bool rekey_ = false;  // a forked child that has not made its own cipher yet
  // A terminal: records as base64 lines (its line discipline would rewrite a binary record).
  bool text_ = false;
  bool pipe_ = false;  // a pipe or FIFO: records up to 64 KiB, under the pipe's lock
  std::atomic<int> nonblocking_{-1};  // -1: not asked yet (NonBlocking); set without mu_ by F_SETFL
  static constexpr int kLockUnavailable = -2;
  int lock_fd_ = -1;   // -1: not opened yet in this process
  bool kept_ = false;  // the pipe's lock stays held after the last record (kept_locks.h)
  int kept_records_ = 0;  // records written since it was taken
  uint64_t records_here_ = 0;  // records written under the pipe's lock by this process image
  uint64_t seen_ = 0;  // next_ at the runtime thread's last look
  size_t max_payload_;
  std::unique_ptr<crypto::Aes256Gcm> cipher_;
  std::vector<uint8_t> record_;  // one record's room
  std::vector<char> text_record_;  // its line, on a terminal
};

// A descriptor of the console in the descriptor table.
class ConsoleFd : public ShieldedFd {
 public:
  explicit ConsoleFd(std::shared_ptr<ConsoleStream> stream) : stream_(std::move(stream)) {}
  ConsoleStream* stream() const { return stream_.get(); }
  bool IsConsole() const override { return true; }

  long Read(int fd, void* buf, size_t count) override;
  long Write(int fd, const void* buf, size_t count) override;
  long ReadAt(void* buf, size_t count, uint64_t offset) override;
  // A record, appended as by write: a record cannot be placed at an offset.
  long WriteAt(const void* buf, size_t count, uint64_t offset) override;
  long Seek(int fd, int64_t offset, int whence) override;
  void ShareWithOtherProcesses(int) override {}
  void PatchStat(struct stat*) override {}
  uint64_t PlaintextSize() override { return 0; }
  long Truncate(int64_t length) override;
  long Allocate(int mode, int64_t offset, int64_t length) override;
  long Sync() override;
  long KeepTimes(bool, bool) override { return 0; }
  // A mapping would reach the console without records.
  long Map(void*, size_t, int, int, int64_t) override { return -EACCES; }
  int StatusFlags(int kernel_flags) override { return kernel_flags; }
  int SetStatusFlags(int flags) override {
    stream_->NoteStatusFlags(flags);
    return flags;
  }
  long LastClose() override;
  void ForgetParentWrites() override {}
  bool Describe(int, InheritedFd*) override { return false; }  // ConsoleShield::ForExec

 private:
  std::shared_ptr<ConsoleStream> stream_;
};

class ConsoleShield {
 public:
  bool Active() const { return active_; }
  // At start-up: the streams `config` names (from the program that executed this one), or, for
  // the run's first process, one for each of the descriptors 1 and 2 that is open.
  Status Start(ConsoleConfig config, FdTable& fds);
  // (Start's) Sealed stdin: `config.input` in the run's first process, else the reader state a
  // program that executed this one handed over.
  Status StartInput(const ConsoleConfig& config, FdTable& fds);
  // For a program this one executes: the streams its descriptors keep. A stream whose every
  // descriptor closes at exec ends now.
  ConsoleConfig ForExec(FdTable& fds);
  // An open by path with O_TRUNC of the console's file (`> /dev/stdout`, the file's name): the
  // flags without O_TRUNC, which would destroy the records sealed so far (it writes at the
  // stream's end instead). Else `flags`. One stat per open with O_TRUNC while a stream lives.
  int OpenFlags(int dirfd, const char* path, int flags);
  // Whether `path` names a console's regular file (truncate(2) of it is refused).
  bool IsConsoleFile(int dirfd, const char* path);
  // A descriptor the program opened (by path) on a console's file, pipe or terminal
  // (/dev/stdout, /proc/self/fd/1, a FIFO's name): it writes through the console's stream.
  void AdoptIfConsole(long fd, FdTable& fds);
  // The runtime's own message (Log), as a record on the stream of descriptor 2 (dropped if that
  // stream has ended, as at exit after the final records); false if descriptor 2 is not the
  // console's.
  bool Log(const std::string& line, FdTable& fds);

  // Fork: the forking thread holds every live stream's lock across the kernel's call and
  // chooses the child's stream ids; the child takes them, the parent announces them.
  // AfterForkInParent (`forked`: the kernel made a child) only notes the announcements: it runs
  // where glibc's fork may still hold the allocator's locks, and sealing allocates.
  void BeforeFork();
  void AfterForkInParent(bool forked);
  void AfterForkInChild();
  // In the parent once the fork is complete (the C library let go of its locks): writes the
  // announcements. REQUIRES: a RuntimeSection.
  void AnnounceChildren();

 private:
  bool active_ = false;
  bool any_stream_ = false;
  SecretBytes key_;
  std::vector<std::shared_ptr<ConsoleStream>> streams_;  // never shrinks (the fork path keeps pointers)
  std::shared_ptr<ConsoleInput> input_;  // sealed stdin, shared by every descriptor reading it
};

}  // namespace scone::runtime
