#include <openssl/crypto.h>
#include "crypto/primitives.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace scone::crypto {
namespace {

// RFC 5869 test cases 1, 2 and 3 (no salt, no info), in turn: nothing of one call stays for
// the next (a thread keeps one context, given key, salt and info anew; OpenSSL 3.0's HKDF
// context keeps a salt it is not given anew, and a reused one crashed on an empty salt, so an
// empty salt has a context of its own).
TEST(HkdfTest, MatchesRfc5869) {
  Bytes ikm(22, 0x0b);
  Bytes salt = *FromHex("000102030405060708090a0b0c");
  Bytes info = *FromHex("f0f1f2f3f4f5f6f7f8f9");
  SecretBytes key(ikm);
  Bytes long_ikm, long_salt, long_info;
  for (int i = 0x00; i < 0x50; ++i) long_ikm.push_back(static_cast<uint8_t>(i));
  for (int i = 0x60; i < 0xb0; ++i) long_salt.push_back(static_cast<uint8_t>(i));
  for (int i = 0xb0; i < 0x100; ++i) long_info.push_back(static_cast<uint8_t>(i));
  SecretBytes long_key(long_ikm);
  auto text = [](const Bytes& b) { return std::string_view(reinterpret_cast<const char*>(b.data()), b.size()); };
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(ToHex(Hkdf(key, salt, text(info), 42).span()),
              "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
    EXPECT_EQ(ToHex(Hkdf(long_key, long_salt, text(long_info), 82).span()),
              "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c6"
              "5e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87");
    EXPECT_EQ(ToHex(Hkdf(key, {}, "", 42).span()),
              "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  }
}

TEST(Sha256Test, MatchesKnownDigest) {
  EXPECT_EQ(ToHex(Sha256({AsBytes("ab"), AsBytes("c")})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(HmacSha256Test, MatchesKnownMacsWithKeysInterleavedOnOneThread) {
  // RFC 4231, test case 1 and 2; and the MAC of nothing under an empty key.
  SecretBytes key1(Bytes(20, 0x0b));
  SecretBytes key2(AsBytes("Jefe"));
  const std::string mac1 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
  const std::string mac2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  for (int round = 0; round < 3; ++round) {  // the thread's context, given each key in turn
    EXPECT_EQ(ToHex(HmacSha256(key1, {AsBytes("Hi "), AsBytes("There")})), mac1);
    EXPECT_EQ(ToHex(HmacSha256(key2, {AsBytes("what do ya want for nothing?")})), mac2);
    EXPECT_EQ(ToHex(HmacSha256(SecretBytes(), {})),
              "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  }
}

TEST(AesGcmTest, SealOpenAndTamper) {
  Aes256Gcm aead(RandomKey());
  uint8_t nonce[kNonceSize];
  FreshNonce(nonce);
  std::string text = "attack at dawn, bring the keys";
  Bytes ct(text.size()), pt(text.size());
  uint8_t tag[kTagSize];
  ASSERT_TRUE(aead.Seal(ByteSpan(nonce, kNonceSize), {AsBytes("aad")}, AsBytes(text), ct.data(), tag).ok());
  EXPECT_NE(std::string(ct.begin(), ct.end()), text);
  ASSERT_TRUE(aead.Open(ByteSpan(nonce, kNonceSize), {AsBytes("aad")}, ct, pt.data(), tag).ok());
  EXPECT_EQ(std::string(pt.begin(), pt.end()), text);

  ct[3] ^= 1;
  Status s = aead.Open(ByteSpan(nonce, kNonceSize), {AsBytes("aad")}, ct, pt.data(), tag);
  EXPECT_EQ(s.code(), Code::kDataCorrupted);
  EXPECT_EQ(s.message(), "decryption failed");
  EXPECT_EQ(std::string(pt.begin(), pt.end()), std::string(text.size(), '\0'));  // wiped
  ct[3] ^= 1;
  EXPECT_FALSE(aead.Open(ByteSpan(nonce, kNonceSize), {AsBytes("aaD")}, ct, pt.data(), tag).ok());
}

TEST(AesGcmTest, InterleavedKeysOnOneThreadStayApart) {
  Aes256Gcm a(RandomKey()), b(RandomKey());
  uint8_t nonce[kNonceSize] = {};
  uint8_t ct_a[16], ct_b[16], tag_a[16], tag_b[16], out[16];
  Bytes msg(16, 7);
  ASSERT_TRUE(a.Seal(ByteSpan(nonce, 12), {}, msg, ct_a, tag_a).ok());
  ASSERT_TRUE(b.Seal(ByteSpan(nonce, 12), {}, msg, ct_b, tag_b).ok());
  EXPECT_NE(ToHex(ByteSpan(ct_a, 16)), ToHex(ByteSpan(ct_b, 16)));
  EXPECT_TRUE(a.Open(ByteSpan(nonce, 12), {}, ByteSpan(ct_a, 16), out, tag_a).ok());
  EXPECT_FALSE(a.Open(ByteSpan(nonce, 12), {}, ByteSpan(ct_b, 16), out, tag_b).ok());
  EXPECT_TRUE(b.Open(ByteSpan(nonce, 12), {}, ByteSpan(ct_b, 16), out, tag_b).ok());
  // The thread's contexts hold b's key now: another object of a's key seals as a did.
  SecretBytes key = RandomKey();
  Aes256Gcm c(key.Clone()), d(key.Clone()), e(RandomKey());
  uint8_t ct_c[16], ct_d[16], tag_c[16], tag_d[16];
  ASSERT_TRUE(c.Seal(ByteSpan(nonce, 12), {}, msg, ct_c, tag_c).ok());
  ASSERT_TRUE(e.Seal(ByteSpan(nonce, 12), {}, msg, ct_b, tag_b).ok());
  ASSERT_TRUE(d.Seal(ByteSpan(nonce, 12), {}, msg, ct_d, tag_d).ok());
  EXPECT_EQ(ToHex(ByteSpan(ct_c, 16)) + ToHex(ByteSpan(tag_c, 16)), ToHex(ByteSpan(ct_d, 16)) + ToHex(ByteSpan(tag_d, 16)));
  EXPECT_TRUE(d.Open(ByteSpan(nonce, 12), {}, ByteSpan(ct_c, 16), out, tag_c).ok());
  EXPECT_EQ(ToHex(ByteSpan(out, 16)), ToHex(msg));
}

TEST(NonceTest, ForkedChildDrawsDifferentNonces) {
  uint8_t warm[kNonceSize];
  FreshNonce(warm);  // fill this thread's batch before forking
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    uint8_t n[kNonceSize];
    FreshNonce(n);
    ssize_t w = write(fds[1], n, sizeof(n));
    _exit(w == sizeof(n) ? 0 : 1);
  }
  uint8_t mine[kNonceSize], child[kNonceSize];
  FreshNonce(mine);
  ASSERT_EQ(read(fds[0], child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  int status;
  waitpid(pid, &status, 0);
  EXPECT_NE(ToHex(ByteSpan(mine, kNonceSize)), ToHex(ByteSpan(child, kNonceSize)));
  close(fds[0]);
  close(fds[1]);
}

// A process may hold more keys than the locked heap has room for (a server with thousands of
// protected files open): the keys beyond it live in ordinary memory, never an abort.
TEST(SecretBytesTest, MoreKeysThanTheLockedHeapHolds) {
  std::vector<SecretBytes> keys;
  int beyond = 0;  // keys that did not fit in the locked heap
  for (int i = 0; i < 300000 && beyond < 100; ++i) {
    std::vector<uint8_t> bytes(64, static_cast<uint8_t>(i));
    keys.emplace_back(std::span<const uint8_t>(bytes));
    if (!CRYPTO_secure_allocated(keys.back().data())) ++beyond;
  }
  EXPECT_EQ(beyond, 100);
  for (size_t i = 0; i < keys.size(); i += 997) {
    std::vector<uint8_t> bytes(64, static_cast<uint8_t>(i));
    EXPECT_TRUE(keys[i].Equals(SecretBytes(std::span<const uint8_t>(bytes)))) << i;
  }
  keys.clear();
  EXPECT_TRUE(CRYPTO_secure_allocated(SecretBytes(32).data()) || !CRYPTO_secure_malloc_initialized());
}

TEST(SecretBytesTest, MovesAndComparesWithoutCopying) {
  SecretBytes a = RandomKey();
  SecretBytes b = a.Clone();
  EXPECT_TRUE(a.Equals(b));
  SecretBytes c = std::move(b);
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(a.Equals(c));
  static_assert(!std::is_copy_constructible_v<SecretBytes>);
}

}  // namespace
}  // namespace scone::crypto
