// Secrets CAS generates and releases: every kind, stability, certificate chains, import/export.
#include "cas/secrets.h"
#include "cas/release.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/sim/sim_platform.h"
#include "os/file.h"
#include "testing/temp_dir.h"

namespace scone::cas {
namespace {

std::string Text(const SecretBytes& s) { return std::string(s.span().begin(), s.span().end()); }

X509* ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

EVP_PKEY* ReadKey(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return key;
}

class SecretsTest : public ::testing::Test {
 protected:
  // Creates the session (or, with `replaces`, updates it) with its generated secrets.
  policy::Session Session(const std::string& text, const std::optional<std::string>& replaces = std::nullopt) {
    auto s = policy::Session::Parse(text);
    EXPECT_TRUE(s.ok()) << s.status().message();
    auto secrets = PlanSecrets(*store_, *s, replaces.has_value());
    EXPECT_TRUE(secrets.ok()) << secrets.status().message();
    EXPECT_TRUE(store_->Put({s->name, ToHex(policy::Session::HashOf(text)), "me", text}, replaces, *secrets).ok());
    return std::move(s).value();
  }
  std::string Value(const policy::Session& s, const std::string& ref) {
    auto v = SecretText(*store_, s, ref);
    EXPECT_TRUE(v.ok()) << ref << ": " << v.status().message();
    return v.ok() ? Text(*v) : "";
  }

  testing::TempDir dir_;
  attest::sim::SimPlatform platform_ = [this] {
    EXPECT_TRUE(os::MakeDirectories(dir_ / "las").ok());
    return attest::sim::SimPlatform::OpenOrCreate(dir_ / "las/platform.key").value();
  }();
  std::unique_ptr<Store> store_ = std::move(Store::Open(dir_.path(), PlatformAnchor(&platform_)).value());
};

constexpr char kShop[] = R"(name: shop
version: "0.3"
secrets:
  - name: token
    kind: ascii
    size: 40
  - name: blob
    kind: binary
    size: 16
  - name: given
    kind: ascii
    value: "as-given"
  - name: server_key
    kind: private-key
  - name: ca
    kind: x509-ca
  - name: server
    kind: x509
    private_key: server_key
    issuer: ca
    dns: [api.shop.example, shop.example]
  - name: shared
    kind: ascii
    size: 12
    export:
      - session: partner
)";

TEST_F(SecretsTest, GeneratesEveryKindOnceAndKeepsThem) {
  policy::Session s = Session(kShop);
  std::string token = Value(s, "token");
  EXPECT_EQ(token.size(), 40u);
  for (char c : token) EXPECT_TRUE(isalnum(static_cast<unsigned char>(c))) << token;
  std::string blob = Value(s, "blob");
  EXPECT_EQ(blob.size(), 32u);  // 16 bytes, in hex
  EXPECT_TRUE(FromHex(blob).ok());
  EXPECT_EQ(Value(s, "given"), "as-given");
  EXPECT_NE(Value(s, "server_key").find("BEGIN PRIVATE KEY"), std::string::npos);
  // An update that changes nothing about them keeps the values.
  std::string update = std::string(kShop) + "predecessor: " + ToHex(policy::Session::HashOf(kShop)) + "\n";
  s = Session(update, ToHex(policy::Session::HashOf(kShop)));
  EXPECT_EQ(Value(s, "token"), token);
  // Two sessions never share generated values.
  std::string other = kShop;
  other.replace(other.find("name: shop"), 10, "name: mall");
  policy::Session m = Session(other);
  EXPECT_NE(Value(m, "token"), token);
}

// An update that changes how a secret is made makes it anew (never a 40-character token kept
// where 12 are asked for); a certificate whose names or CA change is issued anew.
TEST_F(SecretsTest, AnUpdateRemakesWhatItChangesAndKeepsTheRest) {
  policy::Session s = Session(kShop);
  std::string token = Value(s, "token"), blob = Value(s, "blob"), server = Value(s, "server");
  std::string ca = Value(s, "ca"), server_key = Value(s, "server_key");
  std::string text = kShop;
  auto edit = [](std::string& t, const std::string& from, const std::string& to) { t.replace(t.find(from), from.size(), to); };
  edit(text, "    size: 40", "    size: 12");
  edit(text, "dns: [api.shop.example, shop.example]", "dns: [api.shop.example]");
  text += "predecessor: " + ToHex(policy::Session::HashOf(kShop)) + "\n";
  s = Session(text, ToHex(policy::Session::HashOf(kShop)));
  EXPECT_EQ(Value(s, "token").size(), 12u);
  EXPECT_EQ(Value(s, "blob"), blob);
  EXPECT_EQ(Value(s, "ca"), ca);
  EXPECT_EQ(Value(s, "server_key"), server_key);
  EXPECT_NE(Value(s, "server"), server);
  X509* cert = ReadCert(Value(s, "server"));
  ASSERT_NE(cert, nullptr);
  EXPECT_NE(X509_check_host(cert, "shop.example", 0, 0, nullptr), 1);
  X509_free(cert);
  // The kind changes: binary becomes ascii of the same size, made anew.
  std::string third = text;
  edit(third, "    kind: binary", "    kind: ascii");
  third.replace(third.find("predecessor: "), 77, "predecessor: " + ToHex(policy::Session::HashOf(text)));
  s = Session(third, ToHex(policy::Session::HashOf(text)));
  EXPECT_EQ(Value(s, "blob").size(), 16u);
  // A removed secret is gone from the store.
  std::string fourth = third;
  fourth.erase(fourth.find("  - name: blob\n"), std::string("  - name: blob\n    kind: ascii\n    size: 16\n").size());
  fourth.replace(fourth.find("predecessor: "), 77, "predecessor: " + ToHex(policy::Session::HashOf(third)));
  s = Session(fourth, ToHex(policy::Session::HashOf(third)));
  EXPECT_FALSE(store_->GetSecret("shop", "blob").value().has_value());
}

TEST_F(SecretsTest, CertificatesChainToTheSessionCaAndMatchTheirKeys) {
  policy::Session s = Session(kShop);
  X509* ca = ReadCert(Value(s, "ca.crt"));
  X509* server = ReadCert(Value(s, "server"));
  EVP_PKEY* server_key = ReadKey(Value(s, "server.key"));
  ASSERT_TRUE(ca && server && server_key);
  EXPECT_EQ(Value(s, "server.key"), Value(s, "server_key"));  // the named key is the one certified
  EXPECT_EQ(X509_check_private_key(server, server_key), 1);
  X509_STORE* trust = X509_STORE_new();
  X509_STORE_add_cert(trust, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, trust, server, nullptr);
  EXPECT_EQ(X509_verify_cert(ctx), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  EXPECT_EQ(X509_check_host(server, "api.shop.example", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(server, "evil.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ca(ca), 1);
  EXPECT_EQ(X509_check_ca(server), 0);
  std::string chain = Value(s, "server.chain");
  EXPECT_EQ(chain, Value(s, "server.crt") + Value(s, "ca.crt"));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(trust);
  EVP_PKEY_free(server_key);
  X509_free(server);
  X509_free(ca);
}

TEST_F(SecretsTest, ImportOnlyWhatTheOtherSessionExportsToThisOne) {
  policy::Session shop = Session(kShop);
  policy::Session partner = Session(R"(name: partner
version: "0.3"
secrets:
  - name: shared
    import:
      session: shop
  - name: stolen
    import:
      session: shop
      secret: token
)");
  EXPECT_EQ(Value(partner, "shared"), Value(shop, "shared"));
  auto stolen = SecretText(*store_, partner, "stolen");
  ASSERT_FALSE(stolen.ok());
  EXPECT_EQ(stolen.status().code(), Code::kPermissionDenied);
  // A third session that the export does not name gets nothing either.
  policy::Session outsider = Session(R"(name: outsider
version: "0.3"
secrets:
  - name: shared
    import:
      session: shop
)");
  EXPECT_FALSE(SecretText(*store_, outsider, "shared").ok());
}

TEST_F(SecretsTest, SecretsAreSealedInTheDatabase) {
  policy::Session s = Session(kShop);
  std::string token = Value(s, "token");
  std::string key_line = Value(s, "server_key").substr(30, 40);
  for (const char* file : {"cas.db", "cas.db-wal"}) {
    std::FILE* f = std::fopen((dir_ / file).c_str(), "rb");
    if (f == nullptr) continue;
    std::string raw;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) raw.append(buf, n);
    std::fclose(f);
    EXPECT_EQ(raw.find(token), std::string::npos) << file;
    EXPECT_EQ(raw.find(key_line), std::string::npos) << file;
    EXPECT_EQ(raw.find("as-given"), std::string::npos) << file;  // given values: in the sealed session
  }
}

// A secret is exactly one argument whatever it holds: the command is split before the values go
// in (before, an exported value with spaces added flags to the importer's command line).
TEST_F(SecretsTest, ASecretIsOneArgumentWhateverItHolds) {
  auto s = Session(R"(name: args
version: "0.3"
services:
  - name: app
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000001]
    command: redis-server --requirepass $$SCONE::spaced$$ --dir /srv/safe
secrets:
  - name: spaced
    kind: ascii
    value: "tok --dir /tmp/attacker"
)");
  auto config = ReleaseConfig(*store_, s, s.services[0]);
  ASSERT_TRUE(config.ok()) << config.status().message();
  const std::vector<std::string> expected = {"redis-server", "--requirepass", "tok --dir /tmp/attacker", "--dir",
                                             "/srv/safe"};
  EXPECT_EQ(config->argv, expected);
}

}  // namespace
}  // namespace scone::cas
