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

// A kept hash must not outlive a change: a file anyone but root may write can be changed through
// a shared mapping without any of its times moving, so its hash is never kept.
TEST(MeasurementTest, OnlyFilesOnlyRootWritesKeepTheirHash) {
  struct timespec now = {1000000, 0};
  struct stat st = {};
  st.st_ctim.tv_sec = now.tv_sec - 60;
  st.st_uid = 0;
  st.st_mode = S_IFREG | 0755;
  EXPECT_TRUE(MayKeepHash(st, now));
  st.st_mode = S_IFREG | 0775;  // the group may write it
  EXPECT_FALSE(MayKeepHash(st, now));
  st.st_mode = S_IFREG | 0757;  // anyone may
  EXPECT_FALSE(MayKeepHash(st, now));
  st.st_mode = S_IFREG | 0755;
  st.st_uid = 1000;  // its owner, not root
  EXPECT_FALSE(MayKeepHash(st, now));
  st.st_uid = 0;
  st.st_ctim.tv_sec = now.tv_sec - 1;  // changed within the last two seconds
  EXPECT_FALSE(MayKeepHash(st, now));
}

TEST(MeasurementTest, HashFileMatchesSha256) {
  auto h = HashFile("/proc/self/cmdline");  // small, always readable
  EXPECT_TRUE(h.ok());
  EXPECT_FALSE(HashFile("/nonexistent/file").ok());
}

}  // namespace
}  // namespace scone::attest
