#include "runtime/console/console_shield.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <linux/falloc.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "runtime/console/kept_locks.h"
#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/process/signal_calls.h"

namespace scone::runtime {
namespace {

using console::RecordType;

// Records of a stream on a regular file may be large (a write(2) to a file is atomic against other
// writers of its description); on a pipe, a FIFO, a socket or a terminal a record is at most
// PIPE_BUF, which the kernel writes whole and never interleaves with another writer's.
constexpr size_t kFileRecordSize = 64 * 1024;

// The streams whose locks the forking thread holds.
constexpr int kMaxForkStreams = 8;
__attribute__((tls_model("initial-exec"))) thread_local ConsoleStream* fork_streams[kMaxForkStreams];
__attribute__((tls_model("initial-exec"))) thread_local int fork_count = 0;

}  // namespace

// ---- ConsoleStream -------------------------------------------------------------------------

ConsoleStream::ConsoleStream(const SecretBytes& key, int own_fd, const ConsoleStreamConfig& state)
    : key_(key),
      own_fd_(own_fd),
      id_(state.id),
      parent_(state.parent),
      run_(state.run),
      siblings_(state.siblings.begin(), state.siblings.end()),
      channel_(static_cast<console::Channel>(state.channel)),
      next_(state.next_sequence),
      started_(state.started),
      ended_(state.ended) {
  struct stat st;
  bool file = false;
  if (RawSyscall(SYS_fstat, own_fd, Arg(&st)) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    file = S_ISREG(st.st_mode);
    pipe_ = S_ISFIFO(st.st_mode);
  }
  struct termios tty;
  text_ = !file && RawSyscall(SYS_ioctl, own_fd, TCGETS, Arg(&tty)) == 0;
  if (text_) {
    // The line at most PIPE_BUF, as a record on a pipe: base64 makes 3 bytes 4.
    max_payload_ = (PIPE_BUF - 1) / 4 * 3 - console::kOverhead;
    text_record_.resize(console::TextRecordSize(max_payload_ + console::kOverhead));
  } else {
    max_payload_ = (file || pipe_ ? kFileRecordSize : PIPE_BUF) - console::kOverhead;
  }
  record_.resize(max_payload_ + console::kOverhead);
  cipher_ = console::StreamCipher(key_, id_);
}

void ConsoleStream::OpenPipeLock() {
  if (lock_fd_ == -1) {
    // A description of the pipe of this stream's own: flock excludes every other description,
    // so every other stream, in this process or another, of this run or another.
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/fd/%d", own_fd_);
    long fd = RawSyscall(SYS_openat, AT_FDCWD, Arg(path), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      lock_fd_ = kLockUnavailable;  // no /proc, or no reader: records of at most PIPE_BUF
      max_payload_ = PIPE_BUF - console::kOverhead;
      return;
    }
    lock_fd_ = files::KeepOwn(static_cast<int>(fd));
  }
}

long ConsoleStream::LockPipe(bool may_refuse) {
  OpenPipeLock();
  if (lock_fd_ < 0) return 1;
  long r = RawSyscall(SYS_flock, lock_fd_, LOCK_EX | LOCK_NB);
  if (r == 0) return 0;
  // Perhaps another stream of this process keeps it, and another thread is inside its record:
  // told that this one waits, that thread lets go at the record's end.
  KeptConsoleLocks::Waiting waiting;
  KeptConsoleLocks::LetGoAll(this);
  r = RawSyscall(SYS_flock, lock_fd_, LOCK_EX | LOCK_NB);
  if (r == 0) return 0;
  // Another writer is inside a record (perhaps waiting for a full pipe): a non-blocking console
  // says EAGAIN, as the full pipe would; a blocking one waits its turn.
  long flags = RawSyscall(SYS_fcntl, own_fd_, F_GETFL);
  if (flags >= 0) NoteStatusFlags(static_cast<int>(flags));
  if (may_refuse && flags >= 0 && (flags & O_NONBLOCK)) return -EAGAIN;
  for (;;) {
    r = RawSyscall(SYS_flock, lock_fd_, LOCK_EX);
    if (r != -EINTR) return r == 0 ? 0 : 1;
    // A signal for the program while it waits (for another writer's record, or a writer stopped
    // while it keeps the lock): the program's write ends with EINTR, none of it written, as a
    // write waiting for a full pipe natively (unless the handlers restart it); SIGTERM ends the
    // process. The runtime's own records (a start, an end) wait on.
    const uint64_t held = HeldSignals();
    if (may_refuse && held != 0 && !process::RestartsAfter(held)) return -EINTR;
  }
}

void ConsoleStream::UnlockPipe() { (void)RawSyscall(SYS_flock, lock_fd_, LOCK_UN); }

bool ConsoleStream::NonBlocking() {
  if (nonblocking_ < 0) {
    long flags = RawSyscall(SYS_fcntl, own_fd_, F_GETFL);
    NoteStatusFlags(flags >= 0 ? static_cast<int>(flags) : 0);
  }
  return nonblocking_ == 1;
}

void ConsoleStream::NoteStatusFlags(int flags) { nonblocking_ = (flags & O_NONBLOCK) ? 1 : 0; }

long ConsoleStream::WriteRecord(RecordType type, ByteSpan payload, bool may_refuse, bool keep_lock) {
  if (rekey_) {
    cipher_ = console::StreamCipher(key_, id_);
    rekey_ = false;
  }
  // On a pipe, records up to 64 KiB: larger than PIPE_BUF, the kernel may interleave another
  // writer's bytes when the pipe fills, so every record goes out under the pipe's lock. Before
  // taking it, this process lets go of every other lock it keeps: the writer holding this one
  // may be waiting for one of those.
  long lock = 1;
  if (kept_) {
    lock = 0;
  } else if (pipe_) {
    KeptConsoleLocks::LetGoAll(this);
    lock = LockPipe(may_refuse);
    if (lock < 0) return lock;
  }
  long r = WriteSealed(type, payload, may_refuse);
  if (lock == 0) KeepOrUnlock(keep_lock && r == 0);
  return r;
}

void ConsoleStream::KeepOrUnlock(bool keep) {
  // A program writing record after record on a blocking pipe keeps the lock; its first records
  // (a short program's only ones) let go at once, so that it needs no runtime thread. Counted
  // in this process image: the stream's numbering goes on across exec, and a short program a
  // chatty shell executes late started the thread at its first record.
  constexpr uint64_t kKeepFrom = 16;
  ++records_here_;
  keep = keep && records_here_ >= kKeepFrom && kept_records_ < KeptConsoleLocks::kMaxRecords && !NonBlocking() &&
         !KeptConsoleLocks::AnyWaiting();
  if (keep && (kept_ || KeptConsoleLocks::Add(this))) {
    kept_ = true;
    ++kept_records_;
    return;
  }
  LetGoOfLock();
}

void ConsoleStream::LetGoOfLock() {
  if (kept_) KeptConsoleLocks::Remove(this);
  kept_ = false;
  kept_records_ = 0;
  UnlockPipe();
}

void ConsoleStream::LetGoOfKeptLock(bool if_idle) {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || !kept_) return;
  if (if_idle && seen_ != next_) {
    seen_ = next_;
    return;
  }
  LetGoOfLock();
}

long ConsoleStream::WriteSealed(RecordType type, ByteSpan payload, bool may_refuse) {
  console::SealRecord(*cipher_, type, id_, next_, payload, record_.data());
  size_t size = console::kOverhead + payload.size();
  const uint8_t* out = record_.data();
  if (text_) {
    size = console::EncodeTextRecord(ByteSpan(record_.data(), size), text_record_.data());
    out = reinterpret_cast<const uint8_t*>(text_record_.data());
  }
  size_t done = 0;
  while (done < size) {
    long r = RawSyscall(SYS_write, own_fd_, Arg(out + done), static_cast<long>(size - done));
    if (r > 0) {
      done += static_cast<size_t>(r);
    } else if (r == -EINTR) {
    } else if (r == -EAGAIN && done == 0 && may_refuse) {
      nonblocking_ = 1;
      return -EAGAIN;  // nothing of it went out: its number is still free
    } else if (r == -EAGAIN) {
      nonblocking_ = 1;  // (set by another process, or by ioctl): the next records are small
      (void)WaitWritable(own_fd_);  // a record begun is finished, or it would be cut in the middle
    } else {
      if (done > 0) next_++;  // a part of it is out there: the reader will say so
      return r == 0 ? -EIO : r;
    }
  }
  next_++;
  return 0;
}

long ConsoleStream::StartIfNeeded(bool may_refuse) {
  if (started_) return 0;
  auto payload = console::StartPayload({parent_, channel_, run_, siblings_});
  long r = WriteRecord(RecordType::kStart, payload, may_refuse);
  if (r == 0) started_ = true;
  return r;
}

void ConsoleStream::WriteAnnouncements() {
  if (unannounced_.empty()) return;
  // Waits as a final record does: a child that is never announced reads as spliced in.
  if (StartIfNeeded(false) == 0) {
    for (const console::StreamId& child : unannounced_) (void)WriteRecord(RecordType::kFork, child, false);
  }
  unannounced_.clear();  // keeps its capacity: no memory is freed
}

long ConsoleStream::Write(const void* buf, size_t count, bool may_keep_lock) {
  std::lock_guard lock(mu_);
  if (ended_) return -EIO;  // never plaintext: the stream is over
  WriteAnnouncements();
  if (count == 0) return 0;
  size_t limit = max_payload_;
  if (pipe_) {
    OpenPipeLock();  // (may find no lock: records then stay at most PIPE_BUF)
    // A non-blocking pipe: records the kernel takes whole or refuses (EAGAIN), so that the
    // program sees a full pipe as natively, never a record that waits half-written.
    if (NonBlocking()) limit = std::min(limit, PIPE_BUF - console::kOverhead);
  }
  if (long r = StartIfNeeded(true); r < 0) return r;
  const auto* p = static_cast<const uint8_t*>(buf);
  size_t done = 0;
  while (done < count) {
    size_t n = std::min(count - done, limit);
    long r = WriteRecord(RecordType::kData, ByteSpan(p + done, n), true, may_keep_lock);
    if (r < 0) return done > 0 ? static_cast<long>(done) : r;
    done += n;
  }
  return static_cast<long>(count);
}

void ConsoleStream::End() {
  std::lock_guard lock(mu_);
  if (ended_) return;
  ended_ = true;
  WriteAnnouncements();
  // (Each record written here lets go of a kept lock: none stays kept past them.)
  if (StartIfNeeded(false) == 0) (void)WriteRecord(RecordType::kEnd, {}, false);
  files::CloseOwn(own_fd_);
  own_fd_ = -1;
  if (lock_fd_ >= 0) files::CloseOwn(lock_fd_);
  lock_fd_ = kLockUnavailable;
}

bool ConsoleStream::ended() {
  std::lock_guard lock(mu_);
  return ended_;
}

ConsoleStreamConfig ConsoleStream::Describe(std::vector<int> fds) {
  std::lock_guard lock(mu_);
  if (!ended_) WriteAnnouncements();  // the next program numbers on from here
  ConsoleStreamConfig c;
  c.id = id_;
  c.parent = parent_;
  c.channel = static_cast<uint8_t>(channel_);
  c.run = run_;
  c.siblings.assign(siblings_.begin(), siblings_.end());
  c.next_sequence = next_;
  c.started = started_;
  c.ended = ended_;
  c.fds = std::move(fds);
  return c;
}

void ConsoleStream::LockForFork(const console::StreamId& child) {
  mu_.lock();
  unannounced_.reserve(unannounced_.size() + 1);
  child_ = child;
}

void ConsoleStream::UnlockInParent(bool forked) {
  if (forked) unannounced_.push_back(child_);  // within the capacity reserved: no allocation
  mu_.unlock();
}

// The child's own stream, on the same description: numbered from 0, keyed by its own id (the
// cipher is made at its first record: the child's allocator may not be usable yet).
void ConsoleStream::BecomeChild() {
  siblings_.clear();  // a child's stream is announced by its parent
  kept_ = false;  // the parent's to let go of (KeptConsoleLocks::AfterForkInChild)
  kept_records_ = 0;
  records_here_ = 0;
  unannounced_.clear();  // the parent's children, the parent's to announce
  if (lock_fd_ >= 0) {
    files::CloseOwn(lock_fd_);  // the parent's description: the child locks one of its own
    lock_fd_ = -1;
  }
  parent_ = id_;
  id_ = child_;
  next_ = 0;
  started_ = false;
  rekey_ = true;
  mu_.unlock();
}

void ConsoleStream::AnnounceChildren() {
  std::lock_guard lock(mu_);
  if (!ended_) WriteAnnouncements();
}

// ---- ConsoleFd ------------------------------------------------------------------------------

long ConsoleFd::Read(int fd, void* buf, size_t count) {
  return RawSyscall(SYS_read, fd, Arg(buf), static_cast<long>(count));
}

long ConsoleFd::Write(int, const void* buf, size_t count) { return stream_->Write(buf, count); }

long ConsoleFd::ReadAt(void* buf, size_t count, uint64_t offset) {
  return RawSyscall(SYS_pread64, stream_->own_fd(), Arg(buf), static_cast<long>(count), static_cast<long>(offset));
}

long ConsoleFd::WriteAt(const void* buf, size_t count, uint64_t) { return stream_->Write(buf, count); }

long ConsoleFd::Seek(int fd, int64_t offset, int whence) { return RawSyscall(SYS_lseek, fd, offset, whence); }

// Cutting the file would destroy records sealed already: the console is a stream, as a pipe.
long ConsoleFd::Truncate(int64_t) { return -EINVAL; }

long ConsoleFd::Allocate(int mode, int64_t offset, int64_t length) {
  if (mode & ~FALLOC_FL_KEEP_SIZE) return -EOPNOTSUPP;  // punching, collapsing, zeroing records
  return RawSyscall(SYS_fallocate, stream_->own_fd(), mode, offset, length);
}

long ConsoleFd::Sync() { return RawSyscall(SYS_fsync, stream_->own_fd()); }

long ConsoleFd::LastClose() {
  stream_->End();
  return 0;
}

// ---- ConsoleShield --------------------------------------------------------------------------

namespace {

// A descriptor on a protected file (`scone run ... > vol/out`) is the file shield's already;
// /dev/null and its kin (memory devices) carry nothing to protect: left as they are, so that a
// daemon that closes its stdout and opens /dev/null again does not find it failing.
bool Shieldable(int fd, FdTable& fds, struct stat* st) {
  if (fd < 0 || fd >= FdTable::kMaxFds || fds.Has(fd) || RawSyscall(SYS_fstat, fd, Arg(st)) != 0) return false;
  return !(S_ISCHR(st->st_mode) && major(st->st_rdev) == 1);
}

}  // namespace

Status ConsoleShield::StartInput(const ConsoleConfig& config, FdTable& fds) {
  std::vector<int> readers = config.first ? std::vector<int>{0} : config.input_fds;
  if (config.first ? !config.input : config.input_memfd < 0) return Status::Ok();
  if (config.first) {
    struct stat st;
    if (fds.Has(0) || RawSyscall(SYS_fstat, 0, Arg(&st)) != 0) {
      return InvalidArgument("sealed stdin (-i): descriptor 0 is not open");
    }
  }
  SCONE_ASSIGN_OR_RETURN(input_, ConsoleInput::Create(key_, config.input_memfd));
  auto d = std::make_shared<ConsoleInputFd>(input_);
  for (int fd : readers) {
    if (fd >= 0 && fd < FdTable::kMaxFds && !fds.Has(fd) && RawSyscall(SYS_fcntl, fd, F_GETFD) >= 0) fds.Set(fd, d);
  }
  return Status::Ok();
}

Status ConsoleShield::Start(ConsoleConfig config, FdTable& fds) {
  active_ = true;
  key_ = std::move(config.key);
  auto own = [](int fd) -> long {
    long d = RawSyscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
    return d < 0 ? d : files::KeepOwn(static_cast<int>(d));
  };
  SCONE_RETURN_IF_ERROR(StartInput(config, fds));
  if (config.first) {
    // The run's first streams; those on one file, pipe or terminal name each other (a reader
    // of that console then misses none of them unnoticed).
    const console::StreamId run = console::NewStreamId();
    struct stat st[2];
    bool shielded[2];
    for (int fd : {1, 2}) {
      ConsoleStreamConfig c;
      c.id = console::NewStreamId();
      c.channel = static_cast<uint8_t>(fd);
      c.run = run;
      c.fds = {fd};
      shielded[fd - 1] = Shieldable(fd, fds, &st[fd - 1]);
      config.streams.push_back(std::move(c));
    }
    if (shielded[0] && shielded[1] && st[0].st_dev == st[1].st_dev && st[0].st_ino == st[1].st_ino) {
      config.streams[0].siblings = {config.streams[1].id};
      config.streams[1].siblings = {config.streams[0].id};
    }
  }
  for (const ConsoleStreamConfig& c : config.streams) {
    std::vector<int> open;
    for (int fd : c.fds) {
      struct stat st;
      if (Shieldable(fd, fds, &st)) open.push_back(fd);
    }
    if (open.empty()) continue;  // not open (a run with its stdout closed): nothing to shield
    long own_fd = c.ended ? -1 : own(open.front());
    if (own_fd < 0 && !c.ended) return IoError("console descriptor " + std::to_string(open.front()), static_cast<int>(-own_fd));
    auto stream = std::make_shared<ConsoleStream>(key_, static_cast<int>(own_fd), c);
    auto d = std::make_shared<ConsoleFd>(stream);
    for (int fd : open) fds.Set(fd, d);
    streams_.push_back(std::move(stream));
    any_stream_ = true;
  }
  return Status::Ok();
}

ConsoleConfig ConsoleShield::ForExec(FdTable& fds) {
  ConsoleConfig config;
  config.key = key_.Clone();
  auto all = fds.All();
  if (input_ != nullptr) {
    for (auto& [fd, d] : all) {
      if (!d->IsConsoleInput()) continue;
      long flags = RawSyscall(SYS_fcntl, fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) config.input_fds.push_back(fd);
    }
    // The shared state goes with them (the new program maps it again and keeps it from exec on).
    if (!config.input_fds.empty() && RawSyscall(SYS_fcntl, input_->memfd(), F_SETFD, 0) == 0) {
      config.input_memfd = input_->memfd();
    }
  }
  for (auto& stream : streams_) {
    std::vector<int> kept;
    for (auto& [fd, d] : all) {
      if (!d->IsConsole() || static_cast<ConsoleFd*>(d.get())->stream() != stream.get()) continue;
      long flags = RawSyscall(SYS_fcntl, fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) kept.push_back(fd);
    }
    if (kept.empty()) {
      stream->End();  // every descriptor of it closes at exec
      continue;
    }
    // An ended stream's descriptors stay dead in the new program (an exec that failed after its
    // streams ended): never the console's plaintext.
    config.streams.push_back(stream->Describe(std::move(kept)));
  }
  return config;
}

bool ConsoleShield::IsConsoleFile(int dirfd, const char* path) {
  if (!any_stream_ || path == nullptr) return false;
  struct stat st;
  if (RawSyscall(SYS_newfstatat, dirfd, Arg(path), Arg(&st), 0) != 0 || !S_ISREG(st.st_mode)) return false;
  for (auto& stream : streams_) {
    if (stream->Is(st.st_dev, st.st_ino)) return true;
  }
  return false;
}

int ConsoleShield::OpenFlags(int dirfd, const char* path, int flags) {
  if (!(flags & O_TRUNC) || !IsConsoleFile(dirfd, path)) return flags;
  return flags & ~O_TRUNC;
}

void ConsoleShield::AdoptIfConsole(long fd, FdTable& fds) {
  if (!any_stream_ || fd < 0 || fd >= FdTable::kMaxFds) return;
  struct stat st;
  if (RawSyscall(SYS_fstat, fd, Arg(&st)) != 0) return;
  // Most opens are of other files: decided without the table.
  bool console = false;
  for (auto& stream : streams_) console = console || stream->Is(st.st_dev, st.st_ino);
  if (!console) return;
  std::shared_ptr<ConsoleStream> ended;
  auto all = fds.All();
  for (auto& stream : streams_) {
    if (!stream->Is(st.st_dev, st.st_ino)) continue;
    // The stream's one description in the table: it ends when its last descriptor closes.
    for (auto& [other, d] : all) {
      if (d->IsConsole() && static_cast<ConsoleFd*>(d.get())->stream() == stream.get()) {
        fds.Set(static_cast<int>(fd), d);
        return;
      }
    }
    if (ended == nullptr) ended = stream;
  }
  // Every stream on it ended (their descriptors all closed) and the program opens the console
  // again by name (a FIFO's path): writes fail (EIO), never reach the console as plaintext.
  if (ended != nullptr) fds.Set(static_cast<int>(fd), std::make_shared<ConsoleFd>(ended));
}

bool ConsoleShield::Log(const std::string& line, FdTable& fds) {
  if (!fds.Has(2)) return false;
  auto d = fds.Get(2);
  if (d == nullptr || !d->IsConsole()) return false;
  // Written, or lost with the stream (after its final record): never plaintext on the console.
  (void)static_cast<ConsoleFd*>(d.get())->stream()->Write(line.data(), line.size(), false);
  return true;
}

void ConsoleShield::BeforeFork() {
  fork_count = 0;
  for (auto& stream : streams_) {
    if (fork_count == kMaxForkStreams) break;
    if (stream->ended()) continue;
    stream->LockForFork(console::NewStreamId());
    fork_streams[fork_count++] = stream.get();
  }
}

void ConsoleShield::AfterForkInParent(bool forked) {
  for (int i = 0; i < fork_count; ++i) fork_streams[i]->UnlockInParent(forked);
  fork_count = 0;
}

void ConsoleShield::AfterForkInChild() {
  KeptConsoleLocks::AfterForkInChild();
  for (int i = 0; i < fork_count; ++i) fork_streams[i]->BecomeChild();
  fork_count = 0;
}

void ConsoleShield::AnnounceChildren() {
  for (auto& stream : streams_) stream->AnnounceChildren();
}

}  // namespace scone::runtime
