// The TLS engine between two in-memory peers: handshakes, data both ways, readiness of
// buffered plaintext, close_notify, and the refusals (no client certificate, another CA's
// server, a wrong name, garbage).
#include "net/tls_connection.h"
#include "testing/tls_pump.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "net/test_certificates.h"

namespace scone::net {
namespace {

SecretBytes Secret(const std::string& s) { return SecretBytes(AsBytes(s)); }

class TlsConnectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new testing::TestCa(testing::MakeCa("ca"));
    other_ca_ = new testing::TestCa(testing::MakeCa("other-ca"));
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete other_ca_;
  }

  static ServerRule Server(const testing::TestCa& issuer, bool client_auth) {
    ServerRule rule;
    rule.name = "S";
    rule.identity = Identity{Secret(testing::MakeIdentity(issuer, "server.test"))};
    if (client_auth) {
      rule.client_auth = Authority{ca_->cert};
    } else {
      rule.client_auth_disabled = true;
    }
    return rule;
  }
  static ClientRule Client(bool with_identity) {
    ClientRule rule;
    rule.name = "C";
    rule.server_auth = Authority{ca_->cert};
    if (with_identity) rule.identity = Identity{Secret(testing::MakeIdentity(*ca_, "client.test"))};
    return rule;
  }

  static testing::TestCa* ca_;
  static testing::TestCa* other_ca_;
};

testing::TestCa* TlsConnectionTest::ca_ = nullptr;
testing::TestCa* TlsConnectionTest::other_ca_ = nullptr;

struct Pair {
  std::unique_ptr<TlsConnection> client, server;
};

Pair Connect(const ServerRule& s, const ClientRule& c, const std::string& name = "server.test") {
  auto server_ctx = TlsContext::ForServer(s);
  auto client_ctx = TlsContext::ForClient(c);
  EXPECT_TRUE(server_ctx.ok()) << server_ctx.status().message();
  EXPECT_TRUE(client_ctx.ok()) << client_ctx.status().message();
  Pair p;
  p.server = TlsConnection::Create(*server_ctx).value();
  p.client = TlsConnection::Create(*client_ctx, name).value();
  return p;
}

TEST_F(TlsConnectionTest, MutualTlsCarriesDataBothWays) {
  Pair p = Connect(Server(*ca_, true), Client(true));
  EXPECT_EQ(p.client->Handshake(), TlsConnection::kWantInput);
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_TRUE(p.client->HandshakeDone()) << p.client->failure();
  ASSERT_TRUE(p.server->HandshakeDone()) << p.server->failure();
  EXPECT_NE(p.server->PeerSubject().find("client.test"), std::string::npos);
  EXPECT_NE(p.client->PeerSubject().find("server.test"), std::string::npos);

  const char request[] = "GET / HTTP/1.1\r\n\r\n";
  EXPECT_EQ(p.client->Write(request, sizeof(request)), static_cast<long>(sizeof(request)));
  std::vector<uint8_t> wire;
  p.client->TakeCiphertext(&wire);
  EXPECT_EQ(std::search(wire.begin(), wire.end(), request, request + 5), wire.end());  // not in clear
  EXPECT_FALSE(p.server->Readable());
  p.server->PutCiphertext(wire.data(), wire.size());
  EXPECT_TRUE(p.server->Readable());
  char buf[64];
  EXPECT_EQ(p.server->Read(buf, sizeof(buf)), static_cast<long>(sizeof(request)));
  EXPECT_STREQ(buf, request);
  EXPECT_FALSE(p.server->Readable());
  EXPECT_EQ(p.server->Read(buf, sizeof(buf)), TlsConnection::kWantInput);  // never EOF while waiting
}

TEST_F(TlsConnectionTest, BufferedPlaintextCountsAsReadable) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_TRUE(p.server->HandshakeDone());
  std::string data(1000, 'x');
  ASSERT_EQ(p.server->Write(data.data(), data.size()), 1000);
  scone::testing::PumpTls(*p.server, *p.client);
  char buf[100];
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), 100);
  EXPECT_TRUE(p.client->Readable());  // 900 bytes decrypted and buffered: the kernel has none
  size_t total = 100;
  while (p.client->Readable()) total += static_cast<size_t>(p.client->Read(buf, sizeof(buf)));
  EXPECT_EQ(total, 1000u);
}

// The lengths of the TLS records in `wire` (whole records only).
std::vector<size_t> RecordLengths(const std::vector<uint8_t>& wire) {
  std::vector<size_t> lengths;
  for (size_t at = 0; at + 5 <= wire.size();) {
    const size_t length = size_t{wire[at + 3]} << 8 | wire[at + 4];
    lengths.push_back(length);
    at += 5 + length;
  }
  return lengths;
}

// A TLS 1.3 record's length for `plaintext` bytes: its content type and AES-GCM's tag added.
constexpr size_t SealedLength(size_t plaintext) { return plaintext + 1 + 16; }

// All the plaintext `to` can read now.
std::string ReadAll(TlsConnection& to) {
  std::string out;
  char buf[4096];
  for (long n; (n = to.Read(buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

TEST_F(TlsConnectionTest, WritesWithMoreLeaveAsOneRecordAtPush) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_TRUE(p.server->HandshakeDone());
  const std::string header = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", body(1000, 'b');
  EXPECT_EQ(p.server->Write(header.data(), header.size(), /*more=*/true), static_cast<long>(header.size()));
  EXPECT_EQ(p.server->Write(body.data(), body.size(), /*more=*/true), 1000);
  EXPECT_EQ(p.server->PendingCiphertext(), 0u);  // held back, counted as written
  EXPECT_EQ(p.server->HeldPlaintext(), header.size() + body.size());
  EXPECT_EQ(p.server->Push(), 0);
  EXPECT_EQ(p.server->HeldPlaintext(), 0u);
  std::vector<uint8_t> wire;
  p.server->TakeCiphertext(&wire);
  EXPECT_EQ(RecordLengths(wire), std::vector<size_t>{SealedLength(header.size() + body.size())});
  p.client->PutCiphertext(wire.data(), wire.size());
  EXPECT_EQ(ReadAll(*p.client), header + body);
}

TEST_F(TlsConnectionTest, AWriteWithoutMoreSealsTheHeldPlaintextWithIt) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_EQ(p.client->Write("head|", 5, /*more=*/true), 5);
  ASSERT_EQ(p.client->Write("body", 4), 4);
  EXPECT_EQ(p.client->HeldPlaintext(), 0u);
  std::vector<uint8_t> wire;
  p.client->TakeCiphertext(&wire);
  EXPECT_EQ(RecordLengths(wire), std::vector<size_t>{SealedLength(9)});
  p.server->PutCiphertext(wire.data(), wire.size());
  EXPECT_EQ(ReadAll(*p.server), "head|body");
}

TEST_F(TlsConnectionTest, HeldPlaintextIsAtMostOneRecord) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  std::string sent;
  for (int i = 0; i < 40; ++i) {
    std::string piece(1000, static_cast<char>('a' + i % 26));
    ASSERT_EQ(p.server->Write(piece.data(), piece.size(), /*more=*/true), 1000);
    sent += piece;
    EXPECT_LT(p.server->HeldPlaintext(), TlsConnection::kMaxRecordPlaintext);
  }
  const size_t full = SealedLength(TlsConnection::kMaxRecordPlaintext);
  std::vector<uint8_t> wire;
  p.server->TakeCiphertext(&wire);
  EXPECT_EQ(RecordLengths(wire), (std::vector<size_t>{full, full}));  // sealed as they filled
  // One large write with more: whole records leave, the tail waits.
  std::string large(3 * TlsConnection::kMaxRecordPlaintext + 10, 'L');
  ASSERT_EQ(p.server->Write(large.data(), large.size(), /*more=*/true), static_cast<long>(large.size()));
  sent += large;
  EXPECT_EQ(p.server->HeldPlaintext(), 40000 - 2 * TlsConnection::kMaxRecordPlaintext + 10);
  ASSERT_EQ(p.server->Push(), 0);
  p.server->TakeCiphertext(&wire);  // appended to the two records before
  EXPECT_EQ(RecordLengths(wire), (std::vector<size_t>{full, full, full, full, full, SealedLength(40000 - 2 * 16384 + 10)}));
  p.client->PutCiphertext(wire.data(), wire.size());
  EXPECT_EQ(ReadAll(*p.client), sent);
}

TEST_F(TlsConnectionTest, ShutdownSealsTheHeldPlaintextBeforeCloseNotify) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_EQ(p.server->Write("last words", 10, /*more=*/true), 10);
  p.server->Shutdown();
  std::vector<uint8_t> wire;
  p.server->TakeCiphertext(&wire);
  EXPECT_EQ(RecordLengths(wire), (std::vector<size_t>{SealedLength(10), SealedLength(2)}));  // data, then the alert
  p.client->PutCiphertext(wire.data(), wire.size());
  char buf[32];
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), 10);
  EXPECT_EQ(std::string(buf, 10), "last words");
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), TlsConnection::kClosed);
}

TEST_F(TlsConnectionTest, CloseNotifyIsEndOfStream) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  ASSERT_EQ(p.server->Write("bye", 3), 3);
  p.server->Shutdown();
  scone::testing::PumpTls(*p.server, *p.client);
  char buf[8];
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), 3);
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), TlsConnection::kClosed);
  EXPECT_TRUE(p.client->PeerClosed());
}

TEST_F(TlsConnectionTest, EndOfStreamWithoutCloseNotifyIsEndOfStream) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  p.client->PutEndOfStream();
  EXPECT_TRUE(p.client->Readable());
  char buf[8];
  EXPECT_EQ(p.client->Read(buf, sizeof(buf)), TlsConnection::kClosed);
}

TEST_F(TlsConnectionTest, ClientWithoutCertificateIsRefusedWhenClientAuthIsOn) {
  Pair p = Connect(Server(*ca_, true), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  char buf[8];
  // TLS 1.3: the client learns of the refusal at its first read.
  long r = p.client->Read(buf, sizeof(buf));
  scone::testing::PumpTls(*p.client, *p.server);
  r = p.client->Read(buf, sizeof(buf));
  EXPECT_EQ(r, TlsConnection::kFailed);
  EXPECT_TRUE(p.server->Failed());
  EXPECT_NE(p.server->failure().find("certificate"), std::string::npos) << p.server->failure();
}

TEST_F(TlsConnectionTest, ServerOfAnotherCaIsRefused) {
  Pair p = Connect(Server(*other_ca_, false), Client(false));
  scone::testing::PumpTls(*p.client, *p.server);
  EXPECT_TRUE(p.client->Failed());
  EXPECT_NE(p.client->failure().find("certificate verification failed"), std::string::npos) << p.client->failure();
}

TEST_F(TlsConnectionTest, ServerWithAnotherNameIsRefused) {
  Pair p = Connect(Server(*ca_, false), Client(false), "elsewhere.test");
  scone::testing::PumpTls(*p.client, *p.server);
  EXPECT_TRUE(p.client->Failed());
  EXPECT_NE(p.client->failure().find("hostname mismatch"), std::string::npos) << p.client->failure();
}

TEST_F(TlsConnectionTest, PlaintextOnAProtectedPortFailsTheHandshake) {
  auto server_ctx = TlsContext::ForServer(Server(*ca_, false)).value();
  auto server = TlsConnection::Create(server_ctx).value();
  const char plain[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  server->PutCiphertext(reinterpret_cast<const uint8_t*>(plain), sizeof(plain) - 1);
  char buf[8];
  EXPECT_EQ(server->Read(buf, sizeof(buf)), TlsConnection::kFailed);
  EXPECT_FALSE(server->failure().empty());
}

TEST_F(TlsConnectionTest, AHandshakeCutInTheMiddleFails) {
  Pair p = Connect(Server(*ca_, false), Client(false));
  (void)p.client->Handshake();
  std::vector<uint8_t> hello;
  p.client->TakeCiphertext(&hello);
  p.server->PutCiphertext(hello.data(), hello.size() / 2);
  EXPECT_EQ(p.server->Handshake(), TlsConnection::kWantInput);
  p.server->PutEndOfStream();
  EXPECT_EQ(p.server->Handshake(), TlsConnection::kFailed);
}

}  // namespace
}  // namespace scone::net
