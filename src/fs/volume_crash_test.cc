// A writer process is SIGKILLed at random points while it writes, truncates, syncs and
// atomically replaces files. Afterwards the volume must open, and every file must hold exactly
// the state after some operation at or after its last completed fsync: nothing fsync'ed is lost,
// and no operation is half applied (a replacement is a rename, or a hard link renamed into place
// whose first name is then unlinked). The same for sparse files: writes terabytes apart, and
// truncations that shrink and grow them across terabytes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>

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
  s.exchange = InjectCall<&os::Syscalls::exchange, const char*, const char*>;
  s.unlink = InjectCall<&os::Syscalls::unlink, const char*>;
  s.link = InjectCall<&os::Syscalls::link, const char*, const char*>;
  os::InstallSyscalls(s);
}

// Runs in the child: performs the ops, reporting after each one (op index, synced file or -1).
[[noreturn]] void Writer(const std::string& dir, const SecretBytes& key, const std::vector<Op>& ops,
                         int out, CrashMode mode, long crash_at) {
  if (mode != CrashMode::kAsyncKill) InstallInjector(mode, crash_at);
  auto report = [&](int32_t index, int32_t synced_file) {
    int32_t msg[2] = {index, synced_file};
    if (write(out, msg, sizeof(msg)) != sizeof(msg)) _exit(2);
  };
  auto v = Volume::Open(dir, key);
  if (!v.ok()) _exit(3);
  std::vector<std::shared_ptr<ProtectedFile>> files;
  for (int i = 0; i < 2; ++i) files.push_back(*(*v)->OpenFile(Name(i), {}));
  for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
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
      if (op.data_seed % 2 == 0) {
        ok = ok && (*v)->Rename("file2.tmp", Name(2)).ok();
      } else {
        // As git finalizes an object: a second name, moved into place; the first name goes.
        ok = ok && (*v)->Link("file2.tmp", "file2.new").ok() &&
             (*v)->Rename("file2.new", Name(2)).ok() && (*v)->Unlink("file2.tmp").ok();
      }
      synced = 2;
    }
    if (!ok) _exit(4);
    report(i, synced);
  }
  _exit(0);
}

struct CrashOutcome {
  int last_done = -1;                      // the last op the writer reported done
  std::vector<int> last_sync{-1, -1, -1};  // per file: the op of its last completed fsync
};

class VolumeCrashTest : public testing::VolumeTest, public ::testing::WithParamInterface<int> {
 protected:
  // Creates the volume with empty files, runs `ops` in a writer process and kills it: after a
  // random number of completed ops (kAsyncKill) or by injection at mutating call `crash_at`.
  void RunAndKill(const std::vector<Op>& ops, CrashMode mode, long crash_at, std::mt19937_64& rng,
                  CrashOutcome* out) {
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
      Writer(dir_, key_, ops, fds[1], mode, crash_at);
    }
    close(fds[1]);
    // Kill after a random number of completed operations: the writer is somewhere in the next.
    // (With crash injection the writer kills itself; the parent only listens.)
    const int count = static_cast<int>(ops.size());
    int kill_after = mode == CrashMode::kAsyncKill ? 1 + static_cast<int>(rng() % (count - 20)) : count;
    int32_t msg[2];
    for (int seen = 0; seen < kill_after && read(fds[0], msg, sizeof(msg)) == sizeof(msg); ++seen) {
      out->last_done = msg[0];
      if (msg[1] >= 0) out->last_sync[msg[1]] = msg[0];
    }
    kill(pid, SIGKILL);
    // Reports already in the pipe were written before the kill: they count too.
    while (read(fds[0], msg, sizeof(msg)) == sizeof(msg)) {
      out->last_done = msg[0];
      if (msg[1] >= 0) out->last_sync[msg[1]] = msg[0];
    }
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        << "writer failed with exit " << WEXITSTATUS(status);
  }

  // Round `round` (its kind of crash is round % 4): the writer of `ops` is killed after a random
  // number of ops, or by injection at a random one of its first `calls` mutating calls; then
  // the volume is opened again (nullptr and a failure if it does not open).
  static void ExpectStatesSinceLastSync(Volume& v, const std::vector<Op>& ops, const CrashOutcome& outcome);

  std::shared_ptr<Volume> CrashAndReopen(int round, uint64_t seed, const std::vector<Op>& ops,
                                         long calls, CrashOutcome* out) {
    std::mt19937_64 rng(seed * 7919);
    const auto mode = static_cast<CrashMode>(round % 4);
    const long crash_at = 1 + static_cast<long>(rng() % calls);
    RunAndKill(ops, mode, crash_at, rng, out);
    if (HasFatalFailure()) return nullptr;
    auto v = OpenVolume();
    EXPECT_TRUE(v.ok()) << "volume does not open after the crash: " << v.status().message();
    return v.ok() ? *v : nullptr;
  }
};

// Every file holds the state after some op from its last completed fsync to the op the writer
// was in when it died, and the volume verifies.
void VolumeCrashTest::ExpectStatesSinceLastSync(Volume& v, const std::vector<Op>& ops, const CrashOutcome& outcome) {
  const int last_done = outcome.last_done;
  const std::vector<int>& last_sync = outcome.last_sync;
  // Model states after each op, starting from empty files.
  std::vector<std::vector<std::string>> states;  // states[j + 1]: after op j
  states.push_back(std::vector<std::string>(kFiles));
  for (int j = 0; j <= std::min(last_done + 1, kOps - 1); ++j) {
    states.push_back(states.back());
    ApplyToModel(ops[j], states.back());
  }
  for (int f = 0; f < kFiles; ++f) {
    auto content = ReadFile(v, Name(f));
    ASSERT_TRUE(content.ok()) << content.status().message();
    bool matched = false;
    for (int j = last_sync[f]; j <= last_done + 1 && j < kOps && !matched; ++j) {
      matched = *content == states[j + 1][f];
    }
    EXPECT_TRUE(matched) << Name(f) << " (" << content->size() << " bytes) matches no state from "
                         << "its last fsync (op " << last_sync[f] << ") to op " << last_done + 1
                         << "; killed after op " << last_done;
  }
  auto problems = v.Verify();
  for (const auto& p : problems) ADD_FAILURE() << p.path << ": " << p.what;
}

TEST_P(VolumeCrashTest, EveryFsyncedByteSurvivesSigkill) {
  const uint64_t seed = 1000 + GetParam();
  std::vector<Op> ops = MakeOps(seed);
  CrashOutcome outcome;
  auto v = CrashAndReopen(GetParam(), seed, ops, 1500, &outcome);
  ASSERT_TRUE(v);
  ExpectStatesSinceLastSync(*v, ops, outcome);
}

// Found by a search of every crash point of round 16's ops (it failed 1 run in a few hundred
// with an asynchronous kill): the writer dies after its lazy record and the first of the chunks
// it writes in place after it. The record grew the file with new chunks (which did not reach
// the disk) and wrote 28 bytes into a hole chunk inside it (which did): the repair undid the
// growth but kept the 28 bytes, a state that never was. A hole the undone record wrote is a
// hole again. (The crash point is a count of system calls: a change in how many a write makes
// moves it, and this case then checks another point.)
TEST_F(VolumeCrashTest, AnUndoneRecordTakesItsWriteIntoAHoleWithIt) {
  std::vector<Op> ops = MakeOps(1016);
  CrashOutcome outcome;
  std::mt19937_64 rng(1);
  RunAndKill(ops, CrashMode::kAfterCall, 609, rng, &outcome);
  auto v = OpenVolume();
  ASSERT_TRUE(v.ok()) << v.status().message();
  ExpectStatesSinceLastSync(**v, ops, outcome);
}

// Rounds cycle through: asynchronous SIGKILL, crash before / after a mutating call, torn write.
INSTANTIATE_TEST_SUITE_P(Rounds, VolumeCrashTest, ::testing::Range(0, 40));

// A process that opens a volume it finds clean marks it in use only before its first change
// (Volume::MarkInUse). Here that change is in place, with no record before it, and the process
// dies at each of its first mutating calls in turn: new chunks in a hole of a file made earlier
// and past its end; a truncation that cuts the file; one that grows it, then a write past the
// old end. The next open finds a volume that verifies, and the file holds its old contents or
// its new ones.
TEST_F(VolumeCrashTest, AFirstChangeInPlaceSurvivesWhereverTheProcessDies) {
  constexpr uint64_t kSize = 200 * 1024;
  const std::string before(kSize, 'a');
  std::string old_contents = before;
  std::fill(old_contents.begin() + 64 * 1024, old_contents.begin() + 128 * 1024, '\0');
  struct Change {
    const char* name;
    std::function<Status(ProtectedFile&)> apply;
    std::string result;
  };
  std::string in_hole = old_contents;
  in_hole.replace(64 * 1024, 3000, std::string(3000, 'b'));
  in_hole.resize(kSize + 70000, 'c');
  std::string grown = old_contents;
  grown.resize(kSize + 300000, '\0');
  grown.replace(kSize + 100000, 5000, std::string(5000, 'd'));
  const std::vector<Change> changes = {
      {"writes in a hole and past the end",
       [](ProtectedFile& f) {
         SCONE_RETURN_IF_ERROR(f.Write(64 * 1024, AsBytes(std::string(3000, 'b'))).status());
         return f.Write(kSize, AsBytes(std::string(70000, 'c'))).status();
       },
       in_hole},
      {"a truncation that cuts", [](ProtectedFile& f) { return f.Truncate(10000); }, old_contents.substr(0, 10000)},
      {"a truncation that grows, and a write past the old end",
       [](ProtectedFile& f) {
         SCONE_RETURN_IF_ERROR(f.Truncate(kSize + 300000));
         return f.Write(kSize + 100000, AsBytes(std::string(5000, 'd'))).status();
       },
       grown},
  };
  for (const Change& change : changes) {
    for (CrashMode mode : {CrashMode::kAfterCall, CrashMode::kTornWrite, CrashMode::kBeforeCall}) {
      for (long crash_at = 1; crash_at <= 10; ++crash_at) {
        SCOPED_TRACE(std::string(change.name) + ", crash mode " + std::to_string(static_cast<int>(mode)) +
                     " at mutating call " + std::to_string(crash_at));
        std::filesystem::remove_all(dir_);
        {
          // The file, with a hole, closed cleanly.
          auto v = CreateVolume();
          WriteFile(*v, "f", "");
          auto f = v->OpenFile("f", {});
          ASSERT_TRUE(f.ok());
          ASSERT_TRUE((*f)->Write(0, AsBytes(before.substr(0, 64 * 1024))).ok());
          ASSERT_TRUE((*f)->Write(128 * 1024, AsBytes(before.substr(128 * 1024))).ok());
          ASSERT_TRUE((*f)->Close().ok());
          f = Internal("closed");
          ASSERT_TRUE(v->Close().ok());
        }
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
          InstallInjector(mode, crash_at);
          auto v = Volume::Open(dir_, key_);
          if (!v.ok()) _exit(3);
          auto f = (*v)->OpenFile("f", {});
          if (!f.ok()) _exit(4);
          if (!change.apply(**f).ok()) _exit(5);
          if (!(*f)->Sync().ok()) _exit(6);
          _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
            << "writer failed with exit " << WEXITSTATUS(status);
        auto v = OpenVolume();
        ASSERT_TRUE(v.ok()) << "volume does not open after the crash: " << v.status().message();
        for (const auto& p : (*v)->Verify()) ADD_FAILURE() << p.path << ": " << p.what;
        auto content = ReadFile(**v, "f");
        ASSERT_TRUE(content.ok()) << content.status().message();
        EXPECT_TRUE(*content == old_contents || *content == change.result)
            << "f holds " << content->size() << " bytes, neither its old contents nor its new ones";
      }
    }
  }
}

// ---- sparse files ---------------------------------------------------------------------------

constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr int kSparseOps = 150;

// Writes cluster in eight regions 512 GiB apart, so that they overlap; truncations reach 8 TiB
// and come back, so that committed pages are cut and grown over again.
std::vector<Op> MakeSparseOps(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops;
  for (int i = 0; i < kSparseOps; ++i) {
    Op op{Op::kWrite, static_cast<int>(rng() % 2), 0, 0, static_cast<uint32_t>(rng())};
    int r = static_cast<int>(rng() % 100);
    if (r < 60) {
      op.offset = (rng() % 8) * (kTiB / 2) + (rng() % 300) * kChunkSize + rng() % kChunkSize;
      op.length = rng() % 3 == 0 ? rng() % 100 + 1 : rng() % (5 * kChunkSize) + 1;
    } else if (r < 75) {
      op.kind = Op::kTruncate;
      op.length = rng() % 2 == 0 ? rng() % (8 * kTiB) : (rng() % 8) * (kTiB / 2) + rng() % (1 << 20);
    } else {
      op.kind = Op::kSync;
    }
    ops.push_back(op);
  }
  return ops;
}

// A sparse file's content: its size and the chunks ever written (zeros elsewhere).
struct SparseModel {
  uint64_t size = 0;
  std::map<uint64_t, std::string> chunks;

  void Apply(const Op& op) {
    if (op.kind == Op::kWrite) {
      std::string data = OpData(op);
      size = std::max(size, op.offset + op.length);
      for (uint64_t done = 0; done < op.length;) {
        uint64_t at = op.offset + done;
        std::string& chunk = Chunk(at / kChunkSize);
        uint64_t n = std::min<uint64_t>(op.length - done, kChunkSize - at % kChunkSize);
        chunk.replace(at % kChunkSize, n, data, done, n);
        done += n;
      }
    } else if (op.kind == Op::kTruncate) {
      if (op.length < size) {
        chunks.erase(chunks.lower_bound(ChunkCount(op.length)), chunks.end());
        if (op.length % kChunkSize != 0 && chunks.count(op.length / kChunkSize) != 0) {
          std::string& tail = chunks[op.length / kChunkSize];
          std::fill(tail.begin() + op.length % kChunkSize, tail.end(), '\0');
        }
      }
      size = op.length;
    }
  }
  std::string& Chunk(uint64_t index) {
    auto [it, added] = chunks.try_emplace(index);
    if (added) it->second.assign(kChunkSize, '\0');
    return it->second;
  }
  // The bytes of chunk `index` that lie before the end of the file.
  std::string Read(uint64_t index) const {
    if (index * kChunkSize >= size) return "";
    auto it = chunks.find(index);
    std::string chunk = it == chunks.end() ? std::string(kChunkSize, '\0') : it->second;
    chunk.resize(std::min<uint64_t>(kChunkSize, size - index * kChunkSize));
    return chunk;
  }
};

class SparseVolumeCrashTest : public VolumeCrashTest {};

TEST_P(SparseVolumeCrashTest, EveryFsyncedByteSurvivesSigkill) {
  const uint64_t seed = 5000 + GetParam();
  std::vector<Op> ops = MakeSparseOps(seed);
  CrashOutcome outcome;
  auto v = CrashAndReopen(GetParam(), seed, ops, 250, &outcome);
  ASSERT_TRUE(v);
  const int last = std::min(outcome.last_done + 1, kSparseOps - 1);
  for (int f = 0; f < 2; ++f) {
    // Where the states can differ: every chunk a write touched, every truncation's last chunk,
    // and one chunk in the middle of nowhere.
    std::set<uint64_t> probes = {kTiB / kChunkSize + 7};
    for (int j = 0; j <= last; ++j) {
      const Op& op = ops[j];
      if (op.file != f || op.kind == Op::kSync) continue;
      if (op.kind == Op::kWrite) {
        for (uint64_t c = op.offset / kChunkSize; c * kChunkSize < op.offset + op.length; ++c) probes.insert(c);
      } else if (op.length > 0) {
        probes.insert((op.length - 1) / kChunkSize);
      }
    }
    auto file = v->OpenFile(Name(f), {});
    ASSERT_TRUE(file.ok()) << file.status().message();
    const uint64_t size = (*file)->size();
    std::map<uint64_t, std::string> seen;
    for (uint64_t c : probes) {
      std::string chunk(kChunkSize, '\0');
      auto n = (*file)->Read(c * kChunkSize, MutableByteSpan(reinterpret_cast<uint8_t*>(chunk.data()), kChunkSize));
      ASSERT_TRUE(n.ok()) << Name(f) << " chunk " << c << ": " << n.status().message();
      chunk.resize(*n);
      seen[c] = std::move(chunk);
    }
    auto matches = [&](const SparseModel& model) {
      if (model.size != size) return false;
      for (const auto& [c, content] : seen) {
        if (model.Read(c) != content) return false;
      }
      return true;
    };
    SparseModel model;  // empty: the state before the first op
    bool matched = outcome.last_sync[f] < 0 && matches(model);
    for (int j = 0; j <= last && !matched; ++j) {
      if (ops[j].file == f) model.Apply(ops[j]);
      matched = j >= outcome.last_sync[f] && matches(model);
    }
    EXPECT_TRUE(matched) << Name(f) << " (" << size << " bytes) matches no state from its last "
                         << "fsync (op " << outcome.last_sync[f] << ") to op " << last
                         << "; killed after op " << outcome.last_done;
  }
  for (const auto& p : v->Verify()) ADD_FAILURE() << p.path << ": " << p.what;
}

INSTANTIATE_TEST_SUITE_P(Rounds, SparseVolumeCrashTest, ::testing::Range(0, 24));

}  // namespace
}  // namespace scone::fs

