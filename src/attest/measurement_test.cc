#include "attest/measurement.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace scone::attest {
namespace {

crypto::Hash H(const std::string& s) { return crypto::Sha256({AsBytes(s)}); }

ImageDescription Sample() {
  ImageDescription d;
  d.runtime_version = "1.2.3";
  d.settings = {"fs-shield=v1"};
  d.files = {{MeasuredFile::Kind::kExecutable, "main", H("exe")},
             {MeasuredFile::Kind::kLibrary, "libc.so.6", H("libc")},
             {MeasuredFile::Kind::kLibrary, "libz.so.1", H("libz")},
             {MeasuredFile::Kind::kInterpreter, "ld.so", H("ld")},
             {MeasuredFile::Kind::kRuntime, "libscone-runtime.so", H("rt")}};
  return d;
}

TEST(MeasurementTest, IndependentOfLoadOrder) {
  ImageDescription a = Sample(), b = Sample();
  std::reverse(b.files.begin(), b.files.end());
  EXPECT_EQ(a.Measurement(), b.Measurement());
  EXPECT_EQ(a.Canonical().rfind("scone-measurement-v1\n", 0), 0u);
}

TEST(MeasurementTest, EveryInputChangesIt) {
  crypto::Hash base = Sample().Measurement();
  for (size_t i = 0; i < Sample().files.size(); ++i) {
    ImageDescription d = Sample();
    d.files[i].hash = H("modified");
    EXPECT_NE(d.Measurement(), base) << i;
    d = Sample();
    d.files[i].name += "x";
    EXPECT_NE(d.Measurement(), base) << i;
  }
  ImageDescription extra = Sample();
  extra.files.push_back({MeasuredFile::Kind::kLibrary, "libevil.so", H("evil")});
  EXPECT_NE(extra.Measurement(), base);
  ImageDescription version = Sample();
  version.runtime_version = "1.2.4";
  EXPECT_NE(version.Measurement(), base);
  ImageDescription setting = Sample();
  setting.settings.push_back("insecure__debug=1");
  EXPECT_NE(setting.Measurement(), base);
}

TEST(MeasurementTest, HashFileMatchesSha256) {
  auto h = HashFile("/proc/self/cmdline");  // small, always readable
  EXPECT_TRUE(h.ok());
  EXPECT_FALSE(HashFile("/nonexistent/file").ok());
}

}  // namespace
}  // namespace scone::attest
