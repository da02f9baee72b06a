// CAS's attestation port over real TLS on a loopback socket: the checks a service must pass and
// the ways a hostile client can misuse the port.
#include "cas/attestation_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "attest/sim/sim_platform.h"
#include "cas/attestation_client.h"
#include "crypto/tls_identity.h"
#include "os/file.h"
#include "testing/temp_dir.h"

namespace scone::cas {
namespace {

const attest::Measurement kProgram = crypto::Sha256({AsBytes("the service's program")});

class AttestationServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crypto::TlsIdentityFiles tls{dir_ / "cas.key", dir_ / "cas.crt"};
    ASSERT_TRUE(crypto::EnsureTlsIdentity(tls, "scone-cas").ok());
    ASSERT_TRUE(os::MakeDirectories(dir_ / "las").ok());
    las_ = std::make_unique<attest::sim::SimPlatform>(attest::sim::SimPlatform::OpenOrCreate(dir_ / "las/platform.key").value());
    store_ = std::move(Store::Open(dir_.path(), PlatformAnchor(las_.get())).value());
    server_ = std::move(AttestationServer::Create(store_.get(), tls.cert_path, tls.key_path).value());
    auto port = server_->Bind("127.0.0.1", 0);
    ASSERT_TRUE(port.ok());
    server_->Start(2);
    endpoint_.host = "127.0.0.1";
    endpoint_.port = *port;
    endpoint_.cas_key_hash =
        FromHexArray<crypto::kHashSize>(crypto::PublicKeyFingerprintOfFile(tls.cert_path).value()).value();
    ASSERT_TRUE(store_->TrustPlatform(platform_.platform_key(), "test").ok());
    std::string session = "name: shop\nversion: \"0.3\"\nsecurity:\n  attestation:\n    tolerate: [sim]\n"
                          "volumes:\n  - name: data\n"
                          "services:\n  - name: api\n    mrenclaves: [" + ToHex(kProgram) + "]\n"
                          "    command: server --key $$SCONE::k$$\n    image_name: img\n"
                          "images:\n  - name: img\n    volumes:\n      - name: data\n        path: /srv/data\n"
                          "secrets:\n  - name: k\n    kind: ascii\n    value: given-secret\n";
    ASSERT_TRUE(store_->Put({"shop", "h", "creator", session}, std::nullopt, {}).ok());
  }

  attest::TlsCredential NewCredential() { return std::move(attest::TlsCredential::Generate("test").value()); }

  Result<Bytes> Ask(const attest::TlsCredential& c, RequestKind kind, const std::string& id = "shop/api") {
    Request r;
    r.kind = kind;
    r.config_id = id;
    return Exchange(endpoint_, c, r);
  }

  attest::Nonce FreshNonce(const attest::TlsCredential&) { return FetchNonce(endpoint_).value(); }

  // A fresh key with evidence about kProgram from `platform`, bound to it and a fresh nonce.
  attest::TlsCredential WithEvidence(const attest::Platform& platform) {
    attest::TlsCredential c = NewCredential();
    EXPECT_TRUE(c.AttachEvidence(EvidenceFor(platform, c.key_hash(), FreshNonce(c))).ok());
    return c;
  }

  // The configuration request is refused, for a reason that says `why`.
  void ExpectRefused(const attest::TlsCredential& c, const std::string& why, const std::string& id = "shop/api") {
    auto reply = Ask(c, RequestKind::kConfig, id);
    ASSERT_FALSE(reply.ok()) << id;
    EXPECT_NE(reply.status().message().find(why), std::string::npos) << reply.status().message();
  }

  // Evidence about kProgram from `platform`, bound to `key_hash` and `nonce`.
  attest::Evidence EvidenceFor(const attest::Platform& platform, const crypto::Hash& key_hash,
                               const attest::Nonce& nonce) {
    attest::Report report;
    report.measurement = kProgram;
    report.report_data = attest::BindReportData(key_hash, nonce);
    return platform.Attest(report).value();
  }

  // A credential that attested properly (its evidence is already used up).
  attest::TlsCredential Attested(ServiceConfig* config) {
    attest::TlsCredential c = NewCredential();
    attest::Nonce n = FreshNonce(c);
    EXPECT_TRUE(c.AttachEvidence(EvidenceFor(platform_, c.key_hash(), n)).ok());
    auto reply = Ask(c, RequestKind::kConfig);
    EXPECT_TRUE(reply.ok()) << reply.status().message();
    if (reply.ok()) *config = ServiceConfig::Decode(*reply).value();
    return c;
  }

  testing::TempDir dir_;
  std::unique_ptr<attest::sim::SimPlatform> las_;  // the anchor of the store
  std::unique_ptr<Store> store_;
  std::unique_ptr<AttestationServer> server_;
  AttestationEndpoint endpoint_;
  attest::sim::SimPlatform platform_{crypto::SigningKey::Generate()};
};

TEST_F(AttestationServerTest, ReleasesTheConfigurationToAnAttestedService) {
  ServiceConfig config;
  Attested(&config);
  EXPECT_EQ(config.argv, (std::vector<std::string>{"server", "--key", "given-secret"}));
  ASSERT_EQ(config.volumes.size(), 1u);
  EXPECT_EQ(config.volumes[0].path, "/srv/data");
  EXPECT_EQ(config.volumes[0].key.size(), crypto::kKeySize);
  EXPECT_FALSE(config.volumes[0].expected.has_value());
}

// Nothing is released while its audit record cannot be written (a full disk); once it can,
// the service is served again.
TEST_F(AttestationServerTest, NothingIsReleasedWhileTheAuditLogCannotBeWritten) {
  store_->SetAuditPageLimit(1);
  for (int i = 0; i < 8; ++i) store_->Audit("test", "filler", "", std::string(4000, 'x'));
  store_->FlushAudit();
  ASSERT_FALSE(store_->AuditHealth().ok());
  ExpectRefused(WithEvidence(platform_), "the audit log cannot be written");
  store_->SetAuditPageLimit(0);
  store_->FlushAudit();
  ServiceConfig config;
  Attested(&config);
  EXPECT_EQ(config.argv.size(), 3u);
}

TEST_F(AttestationServerTest, EvidenceReplayedOnASecondConnectionIsRefused) {
  ServiceConfig config;
  attest::TlsCredential c = Attested(&config);
  ExpectRefused(c, "already used");
}

TEST_F(AttestationServerTest, EvidenceBoundToAnotherKeyIsRefused) {
  attest::TlsCredential victim = NewCredential(), thief = NewCredential();
  attest::Nonce n = FreshNonce(victim);
  ASSERT_TRUE(thief.AttachEvidence(EvidenceFor(platform_, victim.key_hash(), n)).ok());
  ExpectRefused(thief, "another key");
}

TEST_F(AttestationServerTest, NonceCasNeverIssuedIsRefused) {
  attest::TlsCredential c = NewCredential();
  attest::Nonce made_up{};
  ASSERT_TRUE(c.AttachEvidence(EvidenceFor(platform_, c.key_hash(), made_up)).ok());
  ExpectRefused(c, "did not issue");
}

TEST_F(AttestationServerTest, UntrustedPlatformIsRefused) {
  attest::sim::SimPlatform rogue{crypto::SigningKey::Generate()};
  ExpectRefused(WithEvidence(rogue), "not trusted");
}

TEST_F(AttestationServerTest, CertificateWithoutEvidenceIsRefused) {
  ExpectRefused(NewCredential(), "no attestation evidence");
}

// Names are told only to genuine evidence: made-up evidence asking for a session that does not
// exist learns nothing about it (before: "no session nosuch", a way to probe names).
TEST_F(AttestationServerTest, EvidenceOfAnUntrustedPlatformLearnsNoNames) {
  attest::sim::SimPlatform rogue{crypto::SigningKey::Generate()};
  ExpectRefused(WithEvidence(rogue), "not trusted", "nosuch/api");
  ExpectRefused(WithEvidence(rogue), "not trusted", "shop/nosuch");
}

TEST_F(AttestationServerTest, UnknownSessionOrServiceIsRefused) {
  ExpectRefused(WithEvidence(platform_), "no session nosuch", "nosuch/api");
  ExpectRefused(WithEvidence(platform_), "has no service nosuch", "shop/nosuch");
  ExpectRefused(WithEvidence(platform_), "is not SESSION/SERVICE", "no-slash");
  ExpectRefused(WithEvidence(platform_), "is not SESSION/SERVICE", "a/b/c");
}

TEST_F(AttestationServerTest, VolumeReportsComeOnlyFromAttestedKeysAndOnlyMoveForward) {
  ServiceConfig config;
  attest::TlsCredential c = Attested(&config);
  Request report;
  report.kind = RequestKind::kReport;
  report.config_id = "shop/api";
  report.reports = {{"data", {crypto::Sha256({AsBytes("state 5")}), 5}}};
  ASSERT_TRUE(Exchange(endpoint_, c, report).ok());
  // A stranger's key may not report.
  EXPECT_FALSE(Exchange(endpoint_, NewCredential(), report).ok());
  // An older state may not replace a newer one.
  report.reports = {{"data", {crypto::Sha256({AsBytes("state 4")}), 4}}};
  EXPECT_FALSE(Exchange(endpoint_, c, report).ok());
  // The next attestation names the reported state.
  ServiceConfig next;
  Attested(&next);
  ASSERT_TRUE(next.volumes[0].expected.has_value());
  EXPECT_EQ(next.volumes[0].expected->generation, 5u);
  // A volume that is not the service's.
  report.reports = {{"other", {crypto::Sha256({AsBytes("state 9")}), 9}}};
  EXPECT_FALSE(Exchange(endpoint_, c, report).ok());
  // Same generation, another tag: a replaced volume.
  report.reports = {{"data", {crypto::Sha256({AsBytes("forged")}), 5}}};
  EXPECT_FALSE(Exchange(endpoint_, c, report).ok());
}

// A TCP connection to the port on the loopback address, or -1.
int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  close(fd);
  return -1;
}

// Sends raw bytes on a TLS connection to the port; returns what came back (may be empty).
std::string RawExchange(int port, const std::string& bytes, bool close_early) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "connect failed";
  attest::TlsCredential c = std::move(attest::TlsCredential::Generate("raw").value());
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  SSL_use_certificate(ssl, c.certificate());
  SSL_use_PrivateKey(ssl, c.key());
  SSL_set_fd(ssl, fd);
  std::string out;
  if (SSL_connect(ssl) == 1) {
    size_t written = 0;
    SSL_write_ex(ssl, bytes.data(), bytes.size(), &written);
    if (!close_early) {
      char buf[4096];
      size_t got = 0;
      while (SSL_read_ex(ssl, buf, sizeof(buf), &got) == 1) out.append(buf, got);
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return out;
}

// Sends `bytes` over plain TCP, half-closes, and returns what came back.
std::string RawTcp(int port, const std::string& bytes) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "connect failed";
  (void)!write(fd, bytes.data(), bytes.size());
  shutdown(fd, SHUT_WR);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST_F(AttestationServerTest, MalformedOversizedAndTruncatedRequestsGetReasonsAndCasKeepsServing) {
  std::string garbage = std::string("\x05\x00\x00\x00", 4) + "hello";
  std::string reply = RawExchange(endpoint_.port, garbage, false);
  ASSERT_GE(reply.size(), 5u);
  EXPECT_NE(reply.find("malformed"), std::string::npos);
  std::string oversized = std::string("\xff\xff\xff\x7f", 4);
  EXPECT_NE(RawExchange(endpoint_.port, oversized, false).find("too large"), std::string::npos);
  std::string truncated = std::string("\x00\x01\x00\x00", 4) + "short";
  RawExchange(endpoint_.port, truncated, true);
  // A nonce request that is not one: no nonce comes back.
  EXPECT_EQ(RawTcp(endpoint_.port, "scone-nonce-v0\n"), "");
  EXPECT_EQ(RawTcp(endpoint_.port, "s"), "");
  EXPECT_EQ(RawTcp(endpoint_.port, kNonceRequest).size(), 32u);
  // Plain TCP garbage, no TLS at all.
  int fd = ConnectLoopback(endpoint_.port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
  close(fd);
  ServiceConfig config;
  Attested(&config);
  EXPECT_EQ(config.argv.size(), 3u);
}

TEST(NonceBookTest, EachNonceIsGoodOnce) {
  NonceBook book;
  attest::Nonce n = book.Issue();
  EXPECT_TRUE(book.Consume(n));
  EXPECT_FALSE(book.Consume(n));
  EXPECT_FALSE(book.Consume(attest::Nonce{}));
}

}  // namespace
}  // namespace scone::cas
