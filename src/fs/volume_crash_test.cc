// A writer process is SIGKILLed at random points while it writes, truncates, syncs and
// atomically replaces files. Afterwards the volume must open, and every file must hold exactly
// the state after some operation at or after its last completed fsync: nothing fsync'ed is lost,
// and no operation is half applied.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>

#include "fs/volume.h"
#include "os/syscalls.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

constexpr int kFiles = 3;  // 0 and 1: written in place; 2: replaced by rename
constexpr int kOps = 300;

struct Op {
  enum Kind { kWrite, kTruncate, kSync, kReplace } kind;
  int file;
  uint64_t offset;
  uint64_t length;
  uint32_t data_seed;
};

std::vector<Op> MakeOps(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops;
  for (int i = 0; i < kOps; ++i) {
    Op op{Op::kWrite, static_cast<int>(rng() % 2), 0, 0, static_cast<uint32_t>(rng())};
    int r = static_cast<int>(rng() % 100);
    if (r < 60) {
      op.offset = rng() % (600 * 1024);
      op.length = rng() % 3 == 0 ? rng() % 100 + 1 : rng() % (96 * 1024) + 1;
    } else if (r < 68) {
      op.kind = Op::kTruncate;
      op.length = rng() % (700 * 1024);
    } else if (r < 90) {
      op.kind = Op::kSync;
    } else {
      op.kind = Op::kReplace;
      op.file = 2;
      op.length = rng() % (40 * 1024) + 1;
    }
    ops.push_back(op);
  }
  return ops;
}

std::string OpData(const Op& op) {
  std::string s(op.length, '\0');
  std::mt19937 rng(op.data_seed);
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

void ApplyToModel(const Op& op, std::vector<std::string>& model) {
  std::string& m = model[op.file];
  if (op.kind == Op::kWrite) {
    if (m.size() < op.offset + op.length) m.resize(op.offset + op.length, '\0');
    m.replace(op.offset, op.length, OpData(op));
  } else if (op.kind == Op::kTruncate) {
    m.resize(op.length, '\0');
  } else if (op.kind == Op::kReplace) {
    m = OpData(op);
  }
}

std::string Name(int file) { return "file" + std::to_string(file); }

// Crash injection through the OS seam (child only): the process kills itself at the N-th
// mutating call, before it, after it, or in the middle of a write (a torn write, as the kernel
// leaves one when a fatal signal arrives between pages).
enum class CrashMode { kAsyncKill, kBeforeCall, kAfterCall, kTornWrite };
struct Injector {
  os::Syscalls real;
  CrashMode mode;
  long target;
  long calls = 0;
};
Injector* injector = nullptr;

bool CrashNow() { return ++injector->calls == injector->target; }
[[noreturn]] void Die() {
  raise(SIGKILL);
  _exit(99);
}

ssize_t InjectPwrite(int fd, const void* buf, size_t n, off_t off) {
  if (!CrashNow()) return injector->real.pwrite(fd, buf, n, off);
  if (injector->mode == CrashMode::kTornWrite) injector->real.pwrite(fd, buf, n / 2, off);
  if (injector->mode == CrashMode::kAfterCall) injector->real.pwrite(fd, buf, n, off);
  Die();
}
ssize_t InjectPwritev(int fd, const struct iovec* iov, int count, off_t off) {
  if (!CrashNow()) return injector->real.pwritev(fd, iov, count, off);
  if (injector->mode == CrashMode::kTornWrite) injector->real.pwritev(fd, iov, count / 2, off);
  if (injector->mode == CrashMode::kTornWrite && count == 1) {
    injector->real.pwrite(fd, iov[0].iov_base, iov[0].iov_len / 2, off);
  }
  if (injector->mode == CrashMode::kAfterCall) injector->real.pwritev(fd, iov, count, off);
  Die();
}
template <auto Member, typename... Args>
int InjectCall(Args... args) {
  bool crash = CrashNow();
  if (crash && injector->mode != CrashMode::kAfterCall) Die();
  int r = (injector->real.*Member)(args...);
  if (crash) Die();
  return r;
}

void InstallInjector(CrashMode mode, long target) {
  injector = new Injector{os::LibcSyscalls(), mode, target};
  os::Syscalls s = injector->real;
  s.pwrite = InjectPwrite;
  s.pwritev = InjectPwritev;
  s.fsync = InjectCall<&os::Syscalls::fsync, int>;
  s.fdatasync = InjectCall<&os::Syscalls::fdatasync, int>;
  s.ftruncate = InjectCall<&os::Syscalls::ftruncate, int, off_t>;
  s.rename = InjectCall<&os::Syscalls::rename, const char*, const char*>;
  s.unlink = InjectCall<&os::Syscalls::unlink, const char*>;
  os::InstallSyscalls(s);
}

// Runs in the child: performs the ops, reporting after each one (op index, synced file or -1).
[[noreturn]] void Writer(const std::string& dir, const SecretBytes& key, uint64_t seed, int out,
                         CrashMode mode, long crash_at) {
  if (mode != CrashMode::kAsyncKill) InstallInjector(mode, crash_at);
  auto report = [&](int32_t index, int32_t synced_file) {
    int32_t msg[2] = {index, synced_file};
    if (write(out, msg, sizeof(msg)) != sizeof(msg)) _exit(2);
  };
  auto v = Volume::Open(dir, key);
  if (!v.ok()) _exit(3);
  std::vector<std::shared_ptr<ProtectedFile>> files;
  for (int i = 0; i < 2; ++i) files.push_back(*(*v)->OpenFile(Name(i), {}));
  std::vector<Op> ops = MakeOps(seed);
  for (int i = 0; i < kOps; ++i) {
    const Op& op = ops[i];
    int synced = -1;
    bool ok = true;
    if (op.kind == Op::kWrite) {
      ok = files[op.file]->Write(op.offset, AsBytes(OpData(op))).ok();
    } else if (op.kind == Op::kTruncate) {
      ok = files[op.file]->Truncate(op.length).ok();
    } else if (op.kind == Op::kSync) {
      ok = files[op.file]->Sync().ok();
      synced = op.file;
    } else {
      auto tmp = (*v)->OpenFile("file2.tmp", {.create = true, .truncate = true});
      ok = tmp.ok() && (*tmp)->Write(0, AsBytes(OpData(op))).ok() && (*tmp)->Sync().ok();
      tmp = Internal("closed");
      ok = ok && (*v)->Rename("file2.tmp", Name(2)).ok();
      synced = 2;
    }
    if (!ok) _exit(4);
    report(i, synced);
  }
  _exit(0);
}

class VolumeCrashTest : public testing::VolumeTest, public ::testing::WithParamInterface<int> {};

TEST_P(VolumeCrashTest, EveryFsyncedByteSurvivesSigkill) {
  const int round = GetParam();
  const uint64_t seed = 1000 + round;
  std::mt19937_64 rng(seed * 7919);
  const auto mode = static_cast<CrashMode>(round % 4);
  const long crash_at = 1 + static_cast<long>(rng() % 1500);
  {
    auto v = CreateVolume();
    for (int i = 0; i < kFiles; ++i) WriteFile(*v, Name(i), "");
    ASSERT_TRUE(v->Close().ok());
  }
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    Writer(dir_, key_, seed, fds[1], mode, crash_at);
  }
  close(fds[1]);
  // Kill after a random number of completed operations: the writer is somewhere in the next.
  // (With crash injection the writer kills itself; the parent only listens.)
  int kill_after = mode == CrashMode::kAsyncKill ? 1 + static_cast<int>(rng() % (kOps - 20)) : kOps;
  int last_done = -1;
  std::vector<int> last_sync(kFiles, -1);
  int32_t msg[2];
  for (int seen = 0; seen < kill_after && read(fds[0], msg, sizeof(msg)) == sizeof(msg); ++seen) {
    last_done = msg[0];
    if (msg[1] >= 0) last_sync[msg[1]] = msg[0];
  }
  kill(pid, SIGKILL);
  // Reports already in the pipe were written before the kill: they count too.
  while (read(fds[0], msg, sizeof(msg)) == sizeof(msg)) {
    last_done = msg[0];
    if (msg[1] >= 0) last_sync[msg[1]] = msg[0];
  }
  close(fds[0]);
  int status;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
      << "writer failed with exit " << WEXITSTATUS(status);

  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << "volume does not open after the crash: " << v.status().message();
  // Model states after each op, starting from empty files.
  std::vector<Op> ops = MakeOps(seed);
  std::vector<std::vector<std::string>> states;  // states[j + 1]: after op j
  states.push_back(std::vector<std::string>(kFiles));
  for (int j = 0; j <= std::min(last_done + 1, kOps - 1); ++j) {
    states.push_back(states.back());
    ApplyToModel(ops[j], states.back());
  }
  for (int f = 0; f < kFiles; ++f) {
    auto content = ReadFile(**v, Name(f));
    ASSERT_TRUE(content.ok()) << content.status().message();
    bool matched = false;
    for (int j = last_sync[f]; j <= last_done + 1 && j < kOps && !matched; ++j) {
      matched = *content == states[j + 1][f];
    }
    EXPECT_TRUE(matched) << Name(f) << " (" << content->size() << " bytes) matches no state from "
                         << "its last fsync (op " << last_sync[f] << ") to op " << last_done + 1
                         << "; killed after op " << last_done;
  }
  auto problems = (*v)->Verify();
  for (const auto& p : problems) ADD_FAILURE() << p.path << ": " << p.what;
}

// Rounds cycle through: asynchronous SIGKILL, crash before / after a mutating call, torn write.
INSTANTIATE_TEST_SUITE_P(Rounds, VolumeCrashTest, ::testing::Range(0, 40));

}  // namespace
}  // namespace scone::fs
