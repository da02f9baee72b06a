// Randomized operations against an in-memory model: thousands of writes, reads, truncates,
// syncs and reopens at random offsets and sizes, on several files and regions, several seeds.
// Every read must equal the model byte for byte.
#include <gtest/gtest.h>

#include <random>

#include "fs/volume.h"
#include "testing/volume_fixture.h"

namespace scone::fs {
namespace {

struct ModelCase {
  uint64_t seed;
  Region region;
};

class VolumeModelTest : public testing::VolumeTest,
                        public ::testing::WithParamInterface<ModelCase> {};

// Sizes biased toward chunk and page boundaries, where off-by-one errors live.
uint64_t RandomLength(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return rng() % 16 + 1;
    case 1:
      return kChunkSize - 2 + rng() % 5;
    case 2:
      return rng() % (3 * kChunkSize) + 1;
    case 3:
      return (rng() % 8 + 1) * kChunkSize;
    case 4:
      return rng() % (kEntriesPerPage * kChunkSize + 3 * kChunkSize);
    default:
      return rng() % 300'000 + 1;
  }
}

uint64_t RandomOffset(std::mt19937_64& rng, uint64_t size) {
  switch (rng() % 5) {
    case 0:
      return size;  // append
    case 1:
      return size + rng() % (2 * kChunkSize);  // just past the end: a gap
    case 2:
      return (rng() % (size / kChunkSize + 2)) * kChunkSize;  // chunk aligned
    case 3:
      return kEntriesPerPage * kChunkSize * (rng() % 3) + rng() % 9 - 4 + 8;  // near a page edge
    default:
      return size == 0 ? 0 : rng() % (size + 1);
  }
}

TEST_P(VolumeModelTest, MatchesModel) {
  const ModelCase param = GetParam();
  std::mt19937_64 rng(param.seed);
  RegionRules rules;
  ASSERT_TRUE(rules.Add({"", param.region}).ok());
  auto v = CreateVolume(std::move(rules));
  constexpr int kFiles = 3;
  constexpr int kSteps = 2500;
  constexpr uint64_t kMaxSize = 6u << 20;
  std::vector<std::string> model(kFiles);
  auto name = [](int i) { return "file" + std::to_string(i); };
  for (int i = 0; i < kFiles; ++i) WriteFile(*v, name(i), "");

  for (int step = 0; step < kSteps; ++step) {
    int which = static_cast<int>(rng() % kFiles);
    std::string& m = model[which];
    auto f = v->OpenFile(name(which), {});
    ASSERT_TRUE(f.ok()) << f.status().message();
    int op = static_cast<int>(rng() % 100);
    SCOPED_TRACE("seed " + std::to_string(param.seed) + " step " + std::to_string(step));
    if (op < 45) {  // write
      uint64_t off = RandomOffset(rng, m.size());
      uint64_t len = RandomLength(rng);
      if (off + len > kMaxSize) continue;
      std::string data(len, '\0');
      for (auto& c : data) c = static_cast<char>(rng());
      ASSERT_TRUE((*f)->Write(off, AsBytes(data)).ok());
      if (m.size() < off + len) m.resize(off + len, '\0');
      m.replace(off, len, data);
    } else if (op < 80) {  // read
      uint64_t off = m.empty() ? 0 : rng() % (m.size() + 10);
      uint64_t len = RandomLength(rng);
      std::string out(len, '\x55');
      auto n = (*f)->Read(off, MutableByteSpan(reinterpret_cast<uint8_t*>(out.data()), len));
      ASSERT_TRUE(n.ok()) << n.status().message();
      std::string expected = off >= m.size() ? "" : m.substr(off, len);
      ASSERT_EQ(*n, expected.size());
      ASSERT_TRUE(out.compare(0, *n, expected) == 0) << "read at " << off << " len " << len;
    } else if (op < 88) {  // truncate
      uint64_t size = rng() % 2 ? rng() % (m.size() + 1) : m.size() + rng() % (3 * kChunkSize);
      ASSERT_TRUE((*f)->Truncate(size).ok());
      m.resize(size, '\0');
    } else if (op < 95) {
      ASSERT_TRUE((*f)->Sync().ok());
    } else {  // reopen the whole volume (commits everything on close)
      f = Internal("released before the volume closes");
      ASSERT_TRUE(v->Close().ok());
      v.reset();
      auto reopened = OpenVolume();
      ASSERT_TRUE(reopened.ok()) << reopened.status().message();
      v = *reopened;
      for (int i = 0; i < kFiles; ++i) {
        auto content = ReadFile(*v, name(i));
        ASSERT_TRUE(content.ok()) << content.status().message();
        ASSERT_EQ(content->size(), model[i].size());
        ASSERT_TRUE(*content == model[i]) << name(i) << " differs after reopen";
      }
    }
    if (f.ok()) ASSERT_EQ((*f)->size(), m.size());
  }
  ASSERT_TRUE(v->Close().ok());
  auto reopened = OpenVolume();
  ASSERT_TRUE(reopened.ok()) << reopened.status().message();
  auto final_volume = *reopened;
  for (int i = 0; i < kFiles; ++i) {
    auto content = ReadFile(*final_volume, name(i));
    ASSERT_TRUE(content.ok()) << content.status().message();
    ASSERT_TRUE(*content == model[i]) << name(i) << " differs at the end";
  }
  EXPECT_TRUE(final_volume->Verify().empty());
}

INSTANTIATE_TEST_SUITE_P(Seeds, VolumeModelTest,
                         ::testing::Values(ModelCase{1, Region::kEncrypted},
                                           ModelCase{2, Region::kEncrypted},
                                           ModelCase{3, Region::kEncrypted},
                                           ModelCase{4, Region::kAuthenticated},
                                           ModelCase{5, Region::kAuthenticated}),
                         [](const auto& info) {
                           return std::string(RegionName(info.param.region)) == "encrypted"
                                      ? "encrypted_seed" + std::to_string(info.param.seed)
                                      : "authenticated_seed" + std::to_string(info.param.seed);
                         });

}  // namespace
}  // namespace scone::fs
