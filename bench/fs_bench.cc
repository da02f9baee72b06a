// Protected files vs plain files vs the AES-256-GCM limit of one core, measured in one run.
//
// Prints throughput for sequential 1 MiB and random 4 KiB reads and writes through the
// file system shield (the library, in process) and through plain pread/pwrite on the same file
// system, and the ratios shielded/native and shielded/AES-GCM limit; then random 4 KiB writes and
// reads scattered over an 8 TiB sparse file (every chunk on a table page of its own: the most
// metadata per byte). Not a test: nothing here passes or fails.
//
// usage: scone_fs_bench [DIR] [FILE_MIB]   (DIR defaults to /dev/shm, so the disk hides nothing)
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include "crypto/primitives.h"
#include "fs/volume.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMiB = 1 << 20;
constexpr size_t kBlock = 4096;

// Best of three runs, in bytes per second.
double Rate(uint64_t bytes, const std::function<void()>& run) {
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    auto start = Clock::now();
    run();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, bytes / seconds);
  }
  return best;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "scone_fs_bench: %s failed\n", what);
    std::exit(1);
  }
}

// The physical limit: AES-256-GCM over 4 KiB buffers on one core, key schedule done once (what
// `openssl speed -evp aes-256-gcm -bytes 4096` measures).
double AesGcmLimit() {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  uint8_t key[32] = {1}, iv[12] = {2}, tag[16];
  std::vector<uint8_t> in(kBlock, 3), out(kBlock);
  EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), key, iv, nullptr);
  const uint64_t blocks = 256 * 1024;  // 1 GiB
  double rate = Rate(blocks * kBlock, [&] {
    int n;
    for (uint64_t i = 0; i < blocks; ++i) {
      iv[0] = static_cast<uint8_t>(i);
      EVP_EncryptInit_ex2(ctx, nullptr, nullptr, iv, nullptr);
      EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), kBlock);
      EVP_EncryptFinal_ex(ctx, out.data() + n, &n);
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
    }
  });
  EVP_CIPHER_CTX_free(ctx);
  return rate;
}

struct Results {
  double seq_write_new, seq_overwrite, seq_read, rand_read, rand_write;
  double sparse_write, sparse_read;
};

// One file under test: plain or protected.
struct Target {
  std::function<void()> recreate;  // start over with a new, empty file
  std::function<void(uint64_t, uint8_t*, size_t)> read;
  std::function<void(uint64_t, const uint8_t*, size_t)> write;
  std::function<void()> sync;
  std::function<void(uint64_t)> truncate;
};

// The workloads over a file of `size` bytes.
Results RunWorkloads(uint64_t size, const Target& t) {
  auto& read = t.read;
  auto& write = t.write;
  auto& sync = t.sync;
  std::vector<uint8_t> buffer(kMiB);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>(i * 31 + 7);
  Results r;
  auto write_all = [&] {
    for (uint64_t off = 0; off < size; off += kMiB) write(off, buffer.data(), kMiB);
    sync();
  };
  r.seq_write_new = Rate(size, [&] {
    t.recreate();
    write_all();
  });
  r.seq_overwrite = Rate(size, write_all);
  r.seq_read = Rate(size, [&] {
    for (uint64_t off = 0; off < size; off += kMiB) read(off, buffer.data(), kMiB);
  });
  const uint64_t ops = 65536;
  std::mt19937_64 rng(7);
  std::vector<uint64_t> offsets(ops);
  for (auto& o : offsets) o = (rng() % (size / kBlock)) * kBlock;
  r.rand_read = Rate(ops * kBlock, [&] {
    for (uint64_t o : offsets) read(o, buffer.data(), kBlock);
  });
  r.rand_write = Rate(ops * kBlock, [&] {
    for (uint64_t o : offsets) write(o, buffer.data(), kBlock);
    sync();
  });

  // Sparse: an 8 TiB file, 16384 chunks written at random 4 KiB offsets all over it.
  const uint64_t sparse_size = uint64_t{8} << 40;
  const uint64_t sparse_ops = 16384;
  offsets.resize(sparse_ops);
  for (auto& o : offsets) o = (rng() % (sparse_size / kBlock)) * kBlock;
  t.recreate();
  t.truncate(sparse_size);
  sync();
  r.sparse_write = Rate(sparse_ops * kBlock, [&] {
    for (uint64_t o : offsets) write(o, buffer.data(), kBlock);
    sync();
  });
  r.sparse_read = Rate(sparse_ops * kBlock, [&] {
    for (uint64_t o : offsets) read(o, buffer.data(), kBlock);
  });
  t.recreate();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/dev/shm";
  uint64_t size = (argc > 2 ? std::stoull(argv[2]) : 256) * kMiB;
  std::string work = dir + "/scone-fs-bench-" + std::to_string(getpid());
  std::filesystem::create_directories(work);

  double limit = AesGcmLimit();

  // Native: plain pread/pwrite on the same file system.
  std::string plain_path = work + "/plain.bin";
  int fd = -1;
  Target plain{
      [&] {
        if (fd >= 0) close(fd);
        unlink(plain_path.c_str());
        fd = open(plain_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        Check(fd >= 0, "open plain file");
      },
      [&](uint64_t o, uint8_t* b, size_t n) { Check(pread(fd, b, n, o) == ssize_t(n), "pread"); },
      [&](uint64_t o, const uint8_t* b, size_t n) { Check(pwrite(fd, b, n, o) == ssize_t(n), "pwrite"); },
      [&] { fdatasync(fd); },
      [&](uint64_t n) { Check(ftruncate(fd, static_cast<off_t>(n)) == 0, "ftruncate"); }};
  Results native = RunWorkloads(size, plain);
  close(fd);

  // Shielded: the same through a protected file of an encrypted volume.
  auto volume = scone::fs::Volume::Create(work + "/vol", scone::crypto::RandomKey(), {});
  Check(volume.ok(), "create volume");
  std::shared_ptr<scone::fs::ProtectedFile> f;
  Target protected_file{
      [&] {
        f.reset();
        (void)(*volume)->Unlink("bench.bin");
        auto file = (*volume)->OpenFile("bench.bin", {.create = true});
        Check(file.ok(), "create protected file");
        f = *file;
      },
      [&](uint64_t o, uint8_t* b, size_t n) { Check(f->Read(o, {b, n}).ok(), "protected read"); },
      [&](uint64_t o, const uint8_t* b, size_t n) { Check(f->Write(o, {b, n}).ok(), "protected write"); },
      [&] { Check(f->Sync().ok(), "protected sync"); },
      [&](uint64_t n) { Check(f->Truncate(n).ok(), "protected truncate"); }};
  Results shielded = RunWorkloads(size, protected_file);
  f.reset();
  Check((*volume)->Close().ok(), "close volume");
  std::filesystem::remove_all(work);

  std::printf("scone fs benchmark: %llu MiB file on %s, best of 3, one core\n",
              static_cast<unsigned long long>(size / kMiB), dir.c_str());
  std::printf("AES-256-GCM limit (4 KiB, EVP): %8.0f MB/s\n\n", limit / 1e6);
  std::printf("%-24s %10s %10s %16s %18s\n", "workload", "native", "shielded", "shielded/native",
              "shielded/AES-GCM");
  auto row = [&](const char* name, double n, double s) {
    std::printf("%-24s %7.0f MB/s %7.0f MB/s %16.2f %18.2f\n", name, n / 1e6, s / 1e6, s / n, s / limit);
  };
  row("seq write 1 MiB (new)", native.seq_write_new, shielded.seq_write_new);
  row("seq overwrite 1 MiB", native.seq_overwrite, shielded.seq_overwrite);
  row("sequential read 1 MiB", native.seq_read, shielded.seq_read);
  row("random write 4 KiB", native.rand_write, shielded.rand_write);
  row("random read 4 KiB", native.rand_read, shielded.rand_read);
  row("sparse rand write 4 KiB", native.sparse_write, shielded.sparse_write);
  row("sparse rand read 4 KiB", native.sparse_read, shielded.sparse_read);
  return 0;
}
