#include "common/bytes.h"

#include <gtest/gtest.h>

namespace scone {
namespace {

TEST(HexTest, RoundTrips) {
  Bytes b = {0x00, 0x01, 0xab, 0xff};
  EXPECT_EQ(ToHex(b), "0001abff");
  EXPECT_EQ(*FromHex("0001ABff"), b);
}

TEST(HexTest, RejectsMalformed) {
  EXPECT_FALSE(FromHex("abc").ok());
  EXPECT_FALSE(FromHex("zz").ok());
}

TEST(ByteReaderTest, NeverReadsPastTheEnd) {
  ByteWriter w;
  w.U32(7);
  w.Str("hello");
  w.U64(1ull << 40);
  Bytes data = w.Take();
  ByteReader r(data);
  uint32_t a;
  std::string s;
  uint64_t b;
  ASSERT_TRUE(r.U32(&a) && r.Str(&s, 100) && r.U64(&b));
  EXPECT_EQ(a, 7u);
  EXPECT_EQ(s, "hello");
  EXPECT_EQ(b, 1ull << 40);
  EXPECT_TRUE(r.done());
  EXPECT_FALSE(r.U8(nullptr));

  // Every truncation of the encoding fails somewhere, and never crashes.
  for (size_t n = 0; n < data.size(); ++n) {
    ByteReader t(ByteSpan(data.data(), n));
    bool ok = t.U32(&a) && t.Str(&s, 100) && t.U64(&b);
    EXPECT_FALSE(ok) << n;
  }
}

TEST(ByteReaderTest, BlobLengthIsBounded) {
  ByteWriter w;
  w.U32(1000);  // claims 1000 bytes, has none
  ByteReader r(w.bytes());
  Bytes out;
  EXPECT_FALSE(r.Blob(&out, 2000));
  ByteReader r2(w.bytes());
  EXPECT_FALSE(r2.Blob(&out, 10));
}

TEST(HexTest, FixedSizeArrays) {
  auto two = FromHexArray<2>("0aFF");
  ASSERT_TRUE(two.ok());
  EXPECT_EQ((*two)[0], 0x0a);
  EXPECT_EQ((*two)[1], 0xff);
  EXPECT_FALSE(FromHexArray<2>("0a").ok());
  EXPECT_FALSE(FromHexArray<2>("0a0b0c").ok());
  EXPECT_FALSE(FromHexArray<2>("0g0b").ok());
}

}  // namespace
}  // namespace scone
