#include "runtime/console/console_input.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <cstring>

#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/runtime.h"

namespace scone::runtime {

using console::RecordType;

// In the shared memory descriptor, the same for every process of the run reading this stdin.
struct ConsoleInput::Shared {
  pthread_mutex_t mu;  // process-shared, robust: a reader killed inside leaves it usable
  enum State : uint32_t { kFresh, kStarted, kEnded, kFailed };
  State state;
  console::StreamId stream;
  uint64_t next;      // the number the next record must carry
  uint64_t records;   // read so far, for messages (from 1)
  uint32_t have;      // bytes of the record being read
  uint32_t plain_off, plain_len;
  uint8_t record[console::kOverhead + kMaxInputPayload];
  uint8_t plain[kMaxInputPayload];
};

Result<std::shared_ptr<ConsoleInput>> ConsoleInput::Create(const SecretBytes& key, int memfd) {
  const bool fresh = memfd < 0;
  if (fresh) {
    long fd = RawSyscall(SYS_memfd_create, Arg("scone-console-stdin"), MFD_CLOEXEC);
    if (fd < 0) return IoError("sealed stdin: memfd_create", static_cast<int>(-fd));
    memfd = static_cast<int>(fd);
    long r = RawSyscall(SYS_ftruncate, memfd, sizeof(Shared));
    if (r != 0) return IoError("sealed stdin: ftruncate", static_cast<int>(-r));
  } else {
    (void)RawSyscall(SYS_fcntl, memfd, F_SETFD, FD_CLOEXEC);  // handed over across exec
  }
  memfd = files::KeepOwn(memfd);
  long addr = RawSyscall6(SYS_mmap, 0, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (addr < 0 && addr > -4096) return IoError("sealed stdin: mmap", static_cast<int>(-addr));
  auto* shared = reinterpret_cast<Shared*>(addr);
  if (fresh) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&shared->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    shared->state = Shared::kFresh;
  }
  return std::shared_ptr<ConsoleInput>(new ConsoleInput(key, memfd, shared));
}

ConsoleInput::~ConsoleInput() { RawSyscall(SYS_munmap, Arg(shared_), sizeof(Shared)); }

long ConsoleInput::Fail(const std::string& why) {
  shared_->state = Shared::kFailed;
  Log("console stdin: input record " + std::to_string(shared_->records) + ": " + why +
      "; reads of stdin fail (EIO) from here on");
  return -EIO;
}

long ConsoleInput::NextRecord(int fd) {
  Shared& s = *shared_;
  for (;;) {
    console::RecordHeader h;
    std::string why;
    size_t need = console::kHeaderSize;
    if (s.have >= console::kHeaderSize) {
      if (!console::ParseHeader(ByteSpan(s.record, s.have), &h, &why)) return Fail(why + " (sealed input expected: scone console encrypt)");
      if (h.size > kMaxInputPayload) return Fail("a record larger than an input record");
      need = h.RecordSize();
    } else if (s.have > 0 && s.record[0] != console::kVersion) {
      return Fail("not a console record (sealed input expected: scone console encrypt)");
    }
    if (s.have < need) {
      long r = RawSyscall(SYS_read, fd, Arg(s.record + s.have), static_cast<long>(need - s.have));
      if (r == -EINTR || r == -EAGAIN) return r;  // what came so far stays for the next read
      if (r < 0) return r;
      if (r == 0) {
        if (s.have > 0) return Fail("cut short (" + std::to_string(s.have) + " bytes of a record at the end): truncated");
        if (s.state == Shared::kFresh) return Fail("no sealed input at all (empty)");
        return Fail("the input ended without its final record: truncated");
      }
      if (s.have == 0) s.records++;
      s.have += static_cast<uint32_t>(r);
      continue;
    }
    // A whole record.
    s.have = 0;
    if (s.state == Shared::kFresh && (h.type != RecordType::kStart || h.sequence != 0)) {
      return Fail("the input's first records are missing");
    }
    if (s.state != Shared::kFresh && h.stream != s.stream) {
      return Fail("a record of another stream (another input, or a program's output)");
    }
    if (cipher_ == nullptr || cipher_stream_ != h.stream) {
      cipher_ = console::StreamCipher(key_, h.stream);
      cipher_stream_ = h.stream;
    }
    if (!console::OpenRecord(*cipher_, h, ByteSpan(s.record, h.RecordSize()), s.plain).ok()) {
      return Fail(std::string("authentication failed: the record was modified") +
                  (s.state == Shared::kFresh ? ", or the key is not the one the input was sealed with" : ""));
    }
    if (s.state != Shared::kFresh && h.sequence != s.next) {
      return Fail(h.sequence < s.next ? "its record #" + std::to_string(h.sequence) + " again (duplicated or replayed)"
                                      : std::to_string(h.sequence - s.next) + " record(s) missing before #" +
                                            std::to_string(h.sequence) + " (removed or reordered)");
    }
    s.next = h.sequence + 1;
    switch (h.type) {
      case RecordType::kStart: {
        console::StartInfo info;
        if (s.state != Shared::kFresh || !console::ParseStart(ByteSpan(s.plain, h.size), &info)) {
          return Fail("a malformed start record");
        }
        if (info.channel != console::Channel::kStdin) {
          return Fail(std::string("a program's ") + console::ChannelName(info.channel) +
                      ", not input sealed by scone console encrypt");
        }
        s.stream = h.stream;
        s.state = Shared::kStarted;
        continue;
      }
      case RecordType::kData:
        s.plain_off = 0;
        s.plain_len = h.size;
        if (h.size == 0) continue;
        return 0;
      case RecordType::kEnd:
        s.state = Shared::kEnded;
        return 0;
      case RecordType::kFork:
        return Fail("a record an input never has");
    }
  }
}

long ConsoleInput::Read(int fd, void* buf, size_t count) {
  Shared& s = *shared_;
  if (count == 0) return 0;
  int locked = pthread_mutex_lock(&s.mu);
  if (locked == EOWNERDEAD) {
    pthread_mutex_consistent(&s.mu);  // a reader died holding it: the state is whole between reads
  } else if (locked != 0) {
    return -EIO;
  }
  long result;
  for (;;) {
    if (s.plain_off < s.plain_len) {
      size_t n = std::min<size_t>(count, s.plain_len - s.plain_off);
      std::memcpy(buf, s.plain + s.plain_off, n);
      s.plain_off += static_cast<uint32_t>(n);
      result = static_cast<long>(n);
      break;
    }
    if (s.state == Shared::kEnded) {
      result = 0;
      break;
    }
    if (s.state == Shared::kFailed) {
      result = -EIO;
      break;
    }
    long r = NextRecord(fd);
    if (r < 0) {
      result = r;
      break;
    }
  }
  pthread_mutex_unlock(&s.mu);
  return result;
}

}  // namespace scone::runtime
