// Helpers for volume tests: a fresh volume in a temporary directory and whole-file I/O.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "crypto/primitives.h"
#include "fs/volume.h"
#include "testing/temp_dir.h"

namespace scone::testing {

// Raw bytes of a file on disk, as root on the host sees them.
inline std::string RawFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void WriteRaw(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Where a volume journal's records end, as the host sees the file: its frames
// (u32 body size | u64 sequence | 12-byte nonce | body | 16-byte tag) up to the first zero
// header (the zeros written ahead) or the file's end.
inline uint64_t JournalEnd(const std::string& path) {
  const std::string raw = RawFile(path);
  constexpr uint64_t kHeader = 4 + 8 + 12, kTag = 16;
  uint64_t at = 0;
  while (at + kHeader <= raw.size()) {
    uint32_t body = 0;
    for (int i = 0; i < 4; ++i) body |= uint32_t{static_cast<uint8_t>(raw[at + i])} << (8 * i);
    if (body == 0 || at + kHeader + body + kTag > raw.size()) break;
    at += kHeader + body + kTag;
  }
  return at;
}

// Deterministic test content: every byte depends on its position and the seed.
inline std::string TestPattern(size_t size, uint32_t seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13 ^ (i >> 9));
  return s;
}

class VolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = crypto::RandomKey();
    dir_ = tmp_ / "vol";
  }

  std::shared_ptr<fs::Volume> CreateVolume(fs::RegionRules rules = {}) {
    auto v = fs::Volume::Create(dir_, key_, std::move(rules));
    EXPECT_TRUE(v.ok()) << v.status().message();
    return v.ok() ? *v : nullptr;
  }
  Result<std::shared_ptr<fs::Volume>> OpenVolume(
      const fs::Volume::OpenOptions& options = fs::Volume::OpenOptions{}) {
    return fs::Volume::Open(dir_, key_, options);
  }

  static void WriteFile(fs::Volume& v, const std::string& path, const std::string& data,
                        bool sync = true) {
    auto f = v.OpenFile(path, {.create = true, .truncate = true});
    ASSERT_TRUE(f.ok()) << f.status().message();
    auto n = (*f)->Write(0, AsBytes(data));
    ASSERT_TRUE(n.ok()) << n.status().message();
    if (sync) {
      ASSERT_TRUE((*f)->Sync().ok());
    }
  }

  static Result<std::string> ReadFile(fs::Volume& v, const std::string& path) {
    SCONE_ASSIGN_OR_RETURN(auto f, v.OpenFile(path, {}));
    std::string out(f->size(), '\0');
    SCONE_ASSIGN_OR_RETURN(size_t n,
                           f->Read(0, MutableByteSpan(reinterpret_cast<uint8_t*>(out.data()), out.size())));
    out.resize(n);
    return out;
  }

  TempDir tmp_;
  std::string dir_;
  SecretBytes key_;
};

}  // namespace scone::testing
