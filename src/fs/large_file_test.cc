// Files of terabytes: memory, commits, opening and every walk over a file grow with the data
// written, not with the logical size; past 16 TiB (or what the host file system takes), a clean
// EFBIG. Tampering with a sparse file is detected as with any other.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "fs/protected_file.h"
#include "fs/tree_copy.h"
#include "fs/volume.h"
#include "os/syscalls.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// Resident memory of this process (VmRSS), in bytes.
uint64_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// Bytes a file occupies on disk (its holes excluded).
uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

std::string Pattern(size_t size, char seed) { return testing::TestPattern(size, seed); }

std::string ReadAt(ProtectedFile& f, uint64_t offset, size_t size) {
  std::string out(size, '\x55');
  auto n = f.Read(offset, MutableByteSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  EXPECT_TRUE(n.ok()) << n.status().message();
  out.resize(n.ok() ? *n : 0);
  return out;
}

void ExpectOk(const Status& s) { ASSERT_TRUE(s.ok()) << s.message(); }

// Counts the preads libscone makes while it lives (through the OS seam).
class PreadCounter {
 public:
  PreadCounter() : saved_(os::Sys()) {
    os::Syscalls counting = saved_;
    real_pread_ = saved_.pread;
    count_ = 0;
    counting.pread = [](int fd, void* buf, size_t n, off_t offset) {
      ++count_;
      return real_pread_(fd, buf, n, offset);
    };
    os::InstallSyscalls(counting);
  }
  ~PreadCounter() { os::InstallSyscalls(saved_); }
  uint64_t count() const { return count_; }

 private:
  static inline std::atomic<uint64_t> count_{0};
  static inline ssize_t (*real_pread_)(int, void*, size_t, off_t) = nullptr;
  os::Syscalls saved_;
};

// Zeros a range of a host file, as root would punch a hole in it.
void Punch(const std::string& path, uint64_t offset, uint64_t size) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(size)) != 0) {
    std::string zeros(size, '\0');  // no hole punching here: zeros read the same
    ASSERT_EQ(pwrite(fd, zeros.data(), size, static_cast<off_t>(offset)), ssize_t(size));
  }
  close(fd);
}

std::string RawAt(const std::string& path, uint64_t offset, size_t size) {
  std::string out(size, '\0');
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(pread(fd, out.data(), size, static_cast<off_t>(offset)), ssize_t(size));
  close(fd);
  return out;
}

void WriteRawAt(const std::string& path, uint64_t offset, const std::string& data) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)), ssize_t(data.size()));
  close(fd);
}

class LargeFileTest : public testing::VolumeTest {};

TEST_F(LargeFileTest, TerabyteFilesCostMemoryAndDiskForTheirDataOnly) {
  const uint64_t rss_before = ResidentBytes();
  auto v = CreateVolume();
  const std::string journal = dir_ + "/.scone/journal";
  {
    auto f = *v->OpenFile("big", {.create = true});
    const uint64_t journal_before = testing::JournalEnd(journal);
    ExpectOk(f->Truncate(8 * kTiB));
    EXPECT_EQ(f->size(), 8 * kTiB);
    EXPECT_EQ(ReadAt(*f, 8 * kTiB - kChunkSize, kChunkSize), std::string(kChunkSize, '\0'));
    EXPECT_EQ(ReadAt(*f, 4 * kTiB + 12345, 100000), std::string(100000, '\0'));
    EXPECT_EQ(ReadAt(*f, 8 * kTiB - 10, 100).size(), 10u);
    ExpectOk(f->Sync());
    // The commit of an 8 TiB extension: a size and a page, not an entry per chunk.
    EXPECT_LT(testing::JournalEnd(journal) - journal_before, 16 * 1024u);

    ExpectOk(f->Write(kTiB, AsBytes(Pattern(kChunkSize, 'a'))).status());
    ExpectOk(f->Write(8 * kTiB - 1, AsBytes(Pattern(kChunkSize, 'b'))).status());
    EXPECT_EQ(f->size(), 8 * kTiB - 1 + kChunkSize);
    ExpectOk(f->Sync());
    EXPECT_EQ(ReadAt(*f, kTiB, kChunkSize), Pattern(kChunkSize, 'a'));
    EXPECT_EQ(ReadAt(*f, 8 * kTiB - 1, kChunkSize), Pattern(kChunkSize, 'b'));
    EXPECT_EQ(ReadAt(*f, 2 * kTiB, 3 * kChunkSize), std::string(3 * kChunkSize, '\0'));
  }
  ExpectOk(v->Close());
  v = *OpenVolume();
  EXPECT_EQ(*v->FileSize("big"), 8 * kTiB - 1 + kChunkSize);
  {
    // Opening reads the pages that hold data (three), not the 15 million the size spans.
    PreadCounter preads;
    auto f = *v->OpenFile("big", {});
    EXPECT_LT(preads.count(), 16u);
    EXPECT_EQ(ReadAt(*f, kTiB, kChunkSize), Pattern(kChunkSize, 'a'));
    EXPECT_EQ(ReadAt(*f, 8 * kTiB - 1, kChunkSize), Pattern(kChunkSize, 'b'));
    EXPECT_EQ(ReadAt(*f, kTiB - 100, 100), std::string(100, '\0'));
    EXPECT_EQ(ReadAt(*f, 5 * kTiB, kChunkSize), std::string(kChunkSize, '\0'));
  }
  EXPECT_TRUE(v->Verify().empty());
  ExpectOk(v->Close());
  // Three chunks, three pages: the rest is holes on disk too.
  EXPECT_LT(AllocatedBytes(dir_ + "/big"), kMiB);
  const uint64_t rss_after = ResidentBytes();
  EXPECT_LT(rss_after - std::min(rss_after, rss_before), 64 * kMiB);
}

TEST_F(LargeFileTest, SizesPastSixteenTebibytesFailWithEfbig) {
  auto v = CreateVolume();
  auto f = *v->OpenFile("f", {.create = true});
  ExpectOk(f->Write(0, AsBytes("kept")).status());
  for (const Status& s : {f->Truncate(kMaxFileSize + 1),
                          f->Write(kMaxFileSize - 1, AsBytes("ab")).status(),
                          f->Write(UINT64_MAX - 1, AsBytes("wraps")).status(),
                          f->Reserve(kMaxFileSize + kChunkSize)}) {
    EXPECT_EQ(s.code(), Code::kTooLarge) << s.message();
    EXPECT_EQ(s.ToErrno(), EFBIG);
    EXPECT_NE(s.message().find(dir_ + "/f"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("16 TiB"), std::string::npos) << s.message();
  }
  EXPECT_EQ(f->size(), 4u);
  ExpectOk(f->Sync());
  EXPECT_EQ(ReadAt(*f, 0, 10), "kept");
}

// RLIMIT_FSIZE makes the kernel refuse file sizes (EFBIG) as a file system at its limit does.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(uint64_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    saved_handler_ = signal(SIGXFSZ, SIG_IGN);  // or the kernel's signal kills the test
    struct rlimit limit = saved_;
    limit.rlim_cur = bytes;
    EXPECT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, saved_handler_);
  }

 private:
  struct rlimit saved_;
  sighandler_t saved_handler_;
};

TEST_F(LargeFileTest, HostRefusingTheSizeIsEfbigAndTheFileStaysUsable) {
  auto v = CreateVolume();
  {
    FileSizeLimit limit(kGiB);
    auto f = *v->OpenFile("f", {.create = true});
    ExpectOk(f->Write(0, AsBytes(Pattern(kChunkSize, 'x'))).status());
    for (const Status& s : {f->Truncate(2 * kGiB), f->Write(3 * kGiB, AsBytes("y")).status()}) {
      EXPECT_EQ(s.code(), Code::kTooLarge) << s.message();
      EXPECT_EQ(s.ToErrno(), EFBIG);
      EXPECT_NE(s.message().find("host file system refuses"), std::string::npos) << s.message();
    }
    EXPECT_EQ(f->size(), kChunkSize);
    // Below the limit everything works, and the commit goes through.
    ExpectOk(f->Write(512 * kMiB, AsBytes("z")).status());
    ExpectOk(f->Sync());
  }
  ExpectOk(v->Close());
  v = *OpenVolume();
  auto f = *v->OpenFile("f", {});
  EXPECT_EQ(f->size(), 512 * kMiB + 1);
  EXPECT_EQ(ReadAt(*f, 0, kChunkSize), Pattern(kChunkSize, 'x'));
  EXPECT_EQ(ReadAt(*f, 512 * kMiB, 10), "z");
}

TEST_F(LargeFileTest, OnExt4TheCeilingIsTheDataFileThatExt4Takes) {
  struct statfs fs;
  ASSERT_EQ(statfs(tmp_.path().c_str(), &fs), 0);
  if (fs.f_type != EXT4_SUPER_MAGIC || fs.f_bsize != 4096) {
    GTEST_SKIP() << "the temporary directory is not on ext4 with 4 KiB blocks";
  }
  // ext4 takes files of up to 2^32 - 1 blocks: an encrypted file's data file (a page per 144
  // chunks) reaches that with 4265346830 chunks of plaintext, 15.89 TiB.
  const uint64_t ceiling = uint64_t{4265346830} * kChunkSize;
  ASSERT_LE(Layout(Region::kEncrypted).DataFileSize(ceiling), (uint64_t{1} << 44) - 4096);
  auto v = CreateVolume();
  auto f = *v->OpenFile("f", {.create = true});
  Status s = f->Truncate(ceiling + kChunkSize);
  EXPECT_EQ(s.code(), Code::kTooLarge) << s.message();
  EXPECT_NE(s.message().find("host file system refuses"), std::string::npos) << s.message();
  ExpectOk(f->Truncate(ceiling));
  ExpectOk(f->Write(ceiling - 3, AsBytes("end")).status());
  ExpectOk(f->Sync());
  EXPECT_EQ(ReadAt(*f, ceiling - 3, 10), "end");
}

class SparseTamperTest : public testing::VolumeTest,
                         public ::testing::WithParamInterface<Region> {};

TEST_P(SparseTamperTest, PunchedMovedOrPlantedPagesAndChunksAreDetected) {
  const Region region = GetParam();
  RegionRules rules;
  ASSERT_TRUE(rules.Add({"", region}).ok());
  auto v = CreateVolume(std::move(rules));
  const uint64_t chunk = kTiB / kChunkSize + 3;
  {
    auto f = *v->OpenFile("s", {.create = true});
    ExpectOk(f->Truncate(2 * kTiB));
    ExpectOk(f->Write(chunk * kChunkSize, AsBytes(Pattern(kChunkSize, 's'))).status());
    ExpectOk(f->Sync());
  }
  Layout layout(region);
  const std::string data = dir_ + "/s";
  const std::string pages = region == Region::kEncrypted
                                ? data
                                : dir_ + "/.scone/meta/" + ToHex(v->Lookup("s")->file_id);
  const uint64_t page = chunk / kEntriesPerPage;
  const std::string page_image = RawAt(pages, layout.PageOffset(page), kPageSize);
  const std::string slot_image = RawAt(data, layout.SlotOffset(chunk), kChunkSize);
  auto open_and_read = [&]() -> Status {
    SCONE_ASSIGN_OR_RETURN(auto f, v->OpenFile("s", {}));
    std::string out(kChunkSize, '\0');
    return f->Read(chunk * kChunkSize, MutableByteSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()))
        .status();
  };
  auto expect_detected = [&](const char* what, const char* message) {
    Status s = open_and_read();
    EXPECT_EQ(s.code(), Code::kDataCorrupted) << what;
    EXPECT_NE(s.message().find(data), std::string::npos) << what << ": " << s.message();
    EXPECT_NE(s.message().find(message), std::string::npos) << what << ": " << s.message();
  };
  ExpectOk(open_and_read());

  Punch(pages, layout.PageOffset(page), kPageSize);  // the page that holds the chunk's entry
  expect_detected("page punched", "does not match the volume's metadata");
  WriteRawAt(pages, layout.PageOffset(page + 3), page_image);  // ...moved to a hole page
  expect_detected("page moved", "does not match the volume's metadata");
  WriteRawAt(pages, layout.PageOffset(page), page_image);  // ...and copied: one page too many
  expect_detected("page planted", "does not match the volume's metadata");
  Punch(pages, layout.PageOffset(page + 3), kPageSize);
  ExpectOk(open_and_read());

  Punch(data, layout.SlotOffset(chunk), kChunkSize);  // the chunk's data
  expect_detected("chunk punched", "fails authentication");
  auto problems = v->Verify();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].what.find("chunk " + std::to_string(chunk)), std::string::npos);
  WriteRawAt(data, layout.SlotOffset(chunk), slot_image);
  ExpectOk(open_and_read());

  const uint64_t length = std::filesystem::file_size(data);
  std::filesystem::resize_file(data, length - kChunkSize);
  expect_detected("file truncated", "truncated");
  std::filesystem::resize_file(data, length + kChunkSize);  // what a killed writer leaves
  ExpectOk(open_and_read());
  std::filesystem::resize_file(data, length);
  ExpectOk(open_and_read());
  EXPECT_TRUE(v->Verify().empty());
}

INSTANTIATE_TEST_SUITE_P(Regions, SparseTamperTest,
                         ::testing::Values(Region::kEncrypted, Region::kAuthenticated),
                         [](const auto& info) { return std::string(RegionName(info.param)); });

TEST_F(LargeFileTest, ExportImportAndStreamsKeepHolesAsHoles) {
  auto v = CreateVolume();
  {
    auto f = *v->OpenFile("big", {.create = true});
    ExpectOk(f->Truncate(2 * kTiB));
    ExpectOk(f->Write(kTiB + 5, AsBytes("hello")).status());
    ExpectOk(f->Sync());
  }
  EXPECT_TRUE(v->Verify().empty());
  testing::TempDir out;
  auto exported = ExportTree(*v, out / "tree");
  ASSERT_TRUE(exported.ok()) << exported.status().message();
  const std::string plain = out / "tree/big";
  EXPECT_EQ(std::filesystem::file_size(plain), 2 * kTiB);
  EXPECT_LT(AllocatedBytes(plain), kMiB);
  EXPECT_EQ(RawAt(plain, kTiB, 10), std::string(5, '\0') + "hello");
  EXPECT_EQ(RawAt(plain, 0, 10), std::string(10, '\0'));

  // Back in: a new volume takes the exported tree, holes and all.
  testing::TempDir again;
  auto v2 = *Volume::Create(again / "vol", key_, {});
  auto imported = ImportTree(out / "tree", *v2);
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  EXPECT_EQ(*v2->FileSize("big"), 2 * kTiB);
  EXPECT_LT(AllocatedBytes(again / "vol/big"), kMiB);
  {
    auto f = *v2->OpenFile("big", {});
    EXPECT_EQ(ReadAt(*f, kTiB, 10), std::string(5, '\0') + "hello");
  }

  // A stream has no holes: they come out as zeros.
  {
    auto f = *v->OpenFile("small", {.create = true});
    ExpectOk(f->Write(3 * kMiB + 1, AsBytes("tail")).status());
    ExpectOk(f->Write(5, AsBytes("head")).status());
    ExpectOk(f->Sync());
  }
  const std::string streamed = out / "streamed";
  int fd = open(streamed.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  ASSERT_GE(fd, 0);
  ExpectOk(CopyFileToFd(*v, "small", fd));
  close(fd);
  std::string expected(3 * kMiB + 5, '\0');
  expected.replace(5, 4, "head");
  expected.replace(3 * kMiB + 1, 4, "tail");
  EXPECT_EQ(testing::RawFile(streamed), expected);
}

TEST_F(LargeFileTest, ImportedSparsePlainFilesAndNotProtectedCopiesStaySparse) {
  testing::TempDir plain;
  std::filesystem::create_directories(plain / "pub");
  for (const std::string& name : {plain / "data.img", plain / "pub/data.img"}) {
    int fd = open(name.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kTiB)), 0);
    ASSERT_EQ(pwrite(fd, "world", 5, static_cast<off_t>(512 * kGiB)), 5);
    close(fd);
  }
  RegionRules rules;
  ASSERT_TRUE(rules.Add({"pub", Region::kNotProtected}).ok());
  auto v = CreateVolume(std::move(rules));
  auto imported = ImportTree(plain.path(), *v);
  ASSERT_TRUE(imported.ok()) << imported.status().message();
  EXPECT_EQ(*v->FileSize("data.img"), kTiB);
  EXPECT_LT(AllocatedBytes(dir_ + "/data.img"), kMiB);
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/pub/data.img"), kTiB);
  EXPECT_LT(AllocatedBytes(dir_ + "/pub/data.img"), kMiB);
  auto f = *v->OpenFile("data.img", {});
  EXPECT_EQ(ReadAt(*f, 512 * kGiB - 1, 7), std::string(1, '\0') + "world" + std::string(1, '\0'));
}

TEST_F(LargeFileTest, ShrinkingAndGrowingBeforeACommitLeavesZerosAfterReopenAndRecovery) {
  const std::string data = Pattern(3 * kEntriesPerPage * kChunkSize, 'd');  // three pages' worth
  auto v = CreateVolume();
  WriteFile(*v, "f", data);
  ExpectOk(v->Close());
  auto expected = data.substr(0, 10000) + std::string(data.size() - 10000, '\0');
  // Once closed cleanly (pages applied in place), once killed after its commits (journal replay).
  for (bool crash : {false, true}) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto child = *OpenVolume();
      auto f = *child->OpenFile("f", {});
      // Within one commit, then across commits.
      bool ok = f->Write(0, AsBytes(data)).ok() && f->Sync().ok() && f->Truncate(10000).ok() &&
                f->Truncate(data.size()).ok() && f->Sync().ok();
      ok = ok && f->Write(0, AsBytes(data)).ok() && f->Sync().ok() && f->Truncate(10000).ok() &&
           f->Sync().ok() && f->Truncate(data.size()).ok() && f->Sync().ok();
      if (!crash) ok = ok && child->Close().ok();
      _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    v = *OpenVolume();
    auto content = ReadFile(*v, "f");
    ASSERT_TRUE(content.ok()) << (crash ? "after recovery: " : "") << content.status().message();
    EXPECT_TRUE(*content == expected) << (crash ? "after recovery" : "after a clean close");
    EXPECT_TRUE(v->Verify().empty());
    ExpectOk(v->Close());
  }
}

}  // namespace
}  // namespace scone::fs
