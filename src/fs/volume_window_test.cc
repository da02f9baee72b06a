// The window (fs/volume.h): lazy commits published but not yet in place, applied at durable
// points without cutting the data file.
#include <random>

#include "fs/volume.h"
#include "testing/volume_fixture.h"
namespace scone::fs {
namespace {
class VolumeWindowTest : public testing::VolumeTest {};

// A shrink applied from the window leaves the data file's length (and so stale chunk table
// pages past the end); a later write far past them must not find those pages again.
TEST_F(VolumeWindowTest, ShrinkThenGrowFarAcrossCheckpoints) {
  std::mt19937_64 rng(7);
  auto rnd = [&](size_t n) { std::string s(n, 0); for (auto& c : s) c = char(rng()); return s; };
  std::string m = rnd(700000);  // its chunk table has two pages
  {
    auto v = CreateVolume();
    WriteFile(*v, "f", m);
    ASSERT_TRUE(v->Close().ok());
  }
  auto v = *OpenVolume();
  {
    auto f = *v->OpenFile("f", {});
    ASSERT_TRUE(f->Truncate(6827).ok());
    m.resize(6827);
  }
  ASSERT_TRUE(v->Close().ok());
  v = *OpenVolume();
  {
    auto f = *v->OpenFile("f", {});
    std::string d = rnd(217602);
    ASSERT_TRUE(f->Write(1179657, AsBytes(d)).ok());
    m.resize(1179657, '\0'); m += d;
  }
  ASSERT_TRUE(v->Close().ok());
  auto v2 = OpenVolume();
  ASSERT_TRUE(v2.ok()) << v2.status().message();
  auto c = ReadFile(**v2, "f");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(*c == m);
}
}  // namespace
}  // namespace scone::fs
