// Sealed stdin (`scone run --console-key-file K -i`, docs/console-shield.md): what the program
// reads on descriptor 0 arrives as the records of one input stream (`scone console encrypt`);
// the runtime authenticates each record whole before the program gets a byte of it. Damage
// (a modified, removed, reordered or replayed record, an input cut short, plaintext, another
// key) makes the read fail with EIO, with a `scone:` line naming the record; the stream stays
// failed. A clean end is the stream's final record: EOF without it is damage too.
//
// Every process of the run that reads this stdin (forked children, the programs they execute)
// shares one reader state, in a shared memory descriptor (memfd) handed on across fork and exec:
// each byte of input goes to exactly one reader, as with a pipe natively, whichever process
// reads next. A process-shared robust lock serializes readers (one waiting in the kernel's read
// holds it, as natively one reader takes the next bytes).
//
// Cost: one AES-GCM pass per record and two read(2) calls (header, rest) per record.
// Limits: poll/select/epoll see the kernel's readiness, not the plaintext buffered here.
#pragma once

#include <sys/stat.h>

#include <pthread.h>

#include <memory>
#include <vector>

#include "console/record.h"
#include "runtime/fd_table.h"

namespace scone::runtime {

using console::kMaxInputPayload;

class ConsoleInput {
 public:
  // Maps the shared state in `memfd` (a new one: created and initialized here when -1).
  // REQUIRES: `key` outlives this object.
  static Result<std::shared_ptr<ConsoleInput>> Create(const SecretBytes& key, int memfd);
  ~ConsoleInput();

  // The program's read of descriptor `fd`: plaintext, 0 at the stream's clean end, -EIO on any
  // damage, -EAGAIN (non-blocking) or -EINTR (a signal) with nothing consumed.
  long Read(int fd, void* buf, size_t count);
  int memfd() const { return memfd_; }

 private:
  struct Shared;
  ConsoleInput(const SecretBytes& key, int memfd, Shared* shared) : key_(key), memfd_(memfd), shared_(shared) {}
  // REQUIRES: the shared lock. Reads until one whole record is in, authenticates it, and takes
  // its payload. 0 when something was taken (or the stream ended), else -errno.
  long NextRecord(int fd);
  long Fail(const std::string& why);

  const SecretBytes& key_;
  int memfd_;
  Shared* shared_;
  std::unique_ptr<crypto::Aes256Gcm> cipher_;  // of the stream, made at its first record here
  console::StreamId cipher_stream_{};
};

// Descriptor 0 (and its dups) on sealed input.
class ConsoleInputFd : public ShieldedFd {
 public:
  explicit ConsoleInputFd(std::shared_ptr<ConsoleInput> input) : input_(std::move(input)) {}
  ConsoleInput* input() const { return input_.get(); }
  bool IsConsoleInput() const override { return true; }

  long Read(int fd, void* buf, size_t count) override { return input_->Read(fd, buf, count); }
  long Write(int, const void*, size_t) override { return -EBADF; }
  long ReadAt(void*, size_t, uint64_t) override { return -ESPIPE; }
  long WriteAt(const void*, size_t, uint64_t) override { return -EBADF; }
  long Seek(int, int64_t, int) override { return -ESPIPE; }
  void ShareWithOtherProcesses(int) override {}
  // A stream of records, not the file that holds them: shown as a pipe (its size is the
  // ciphertext's, and reads are what it decrypts). `wc -c` took the size of a sealed regular
  // file, could not seek, and printed 0; `tail -c` failed to seek.
  void PatchStat(struct stat* st) override {
    if (S_ISREG(st->st_mode)) {
      st->st_mode = (st->st_mode & ~S_IFMT) | S_IFIFO;
      st->st_size = 0;
      st->st_blocks = 0;
    }
  }
  uint64_t PlaintextSize() override { return 0; }
  long Truncate(int64_t) override { return -EINVAL; }
  long Allocate(int, int64_t, int64_t) override { return -ESPIPE; }
  long Sync() override { return -EINVAL; }
  long KeepTimes(bool, bool) override { return 0; }
  long Map(void*, size_t, int, int, int64_t) override { return -EACCES; }
  int StatusFlags(int kernel_flags) override { return kernel_flags; }
  int SetStatusFlags(int flags) override { return flags; }
  long LastClose() override { return 0; }
  void ForgetParentWrites() override {}
  bool Describe(int, InheritedFd*) override { return false; }  // ConsoleShield::ForExec

 private:
  std::shared_ptr<ConsoleInput> input_;
};

}  // namespace scone::runtime
