// The network shield's CAS defaults: the session CA (implicit, or the session's own), the
// identities CAS issues to the services that use the shield, what a release hands over, and two
// services of one session doing mutual TLS with those alone (and refusing another session's).
#include "cas/network_identity.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/sim/sim_platform.h"
#include "cas/secrets.h"
#include "net/network_rules.h"
#include "net/tls_connection.h"
#include "testing/tls_pump.h"
#include "os/file.h"
#include "testing/temp_dir.h"

namespace scone::cas {
namespace {

std::string Text(const SecretBytes& s) { return std::string(s.span().begin(), s.span().end()); }

struct CertDeleter {
  void operator()(X509* c) const { X509_free(c); }
};
using Cert = std::unique_ptr<X509, CertDeleter>;

// The first certificate in a PEM text.
Cert ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return Cert(cert);
}

std::string CommonName(X509* cert) {
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  return cn;
}

bool ChainsTo(X509* cert, const std::string& ca_pem) {
  Cert ca = ReadCert(ca_pem);
  X509_STORE* trust = X509_STORE_new();
  X509_STORE_add_cert(trust, ca.get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, trust, cert, nullptr);
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(trust);
  return ok;
}

bool KeyMatches(const std::string& identity, X509* cert) {
  BIO* bio = BIO_new_mem_buf(identity.data(), static_cast<int>(identity.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  bool ok = key != nullptr && X509_check_private_key(cert, key) == 1;
  EVP_PKEY_free(key);
  return ok;
}

constexpr char kStack[] = R"(name: stack
version: "0.3"
services:
  - name: web
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000000]
    environment:
      SCONE_NETWORK_SHIELD: protected
  - name: shop
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000000]
    environment:
      SCONE_NETWORK_SHIELD_CLIENT_API: protected
      SCONE_NETWORK_SHIELD_CLIENT_API_DESTINATION: TCP:api.stack.internal:443
      SCONE_NETWORK_SHIELD_CLIENT_DB: protected
      SCONE_NETWORK_SHIELD_CLIENT_DB_DESTINATION: TCP:10.0.0.7:5432
      SCONE_NETWORK_SHIELD_CLIENT_CACHE: protected
      SCONE_NETWORK_SHIELD_CLIENT_CACHE_DESTINATION: TCP:[fd00::1]:11211
      SCONE_NETWORK_SHIELD_CLIENT_CACHE_SERVER_DNS_NAME: cache.stack.internal
  - name: batch
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000000]
    environment:
      GREETING: hello
)";

class NetworkIdentityTest : public ::testing::Test {
 protected:
  // Creates the session (or, with `replaces`, updates it) with its generated secrets.
  policy::Session Put(const std::string& text, const std::optional<std::string>& replaces = std::nullopt) {
    auto s = policy::Session::Parse(text);
    EXPECT_TRUE(s.ok()) << s.status().message();
    auto secrets = PlanSecrets(*store_, *s, replaces.has_value());
    EXPECT_TRUE(secrets.ok()) << secrets.status().message();
    EXPECT_TRUE(store_->Put({s->name, ToHex(policy::Session::HashOf(text)), "me", text}, replaces, *secrets).ok());
    return std::move(s).value();
  }
  // `text` as an update of `previous`.
  policy::Session Update(const std::string& previous, const std::string& text) {
    std::string hash = ToHex(policy::Session::HashOf(previous));
    return Put(text + "predecessor: " + hash + "\n", hash);
  }
  NetworkIdentity Released(const policy::Session& s, const std::string& service) {
    auto r = ReleaseNetworkIdentity(*store_, s, *s.FindService(service));
    EXPECT_TRUE(r.ok()) << r.status().message();
    EXPECT_TRUE(r.ok() && r->has_value()) << service << " got no identity";
    return r.ok() && r->has_value() ? std::move(**r) : NetworkIdentity{};
  }

  testing::TempDir dir_;
  attest::sim::SimPlatform platform_ = [this] {
    EXPECT_TRUE(os::MakeDirectories(dir_ / "las").ok());
    return attest::sim::SimPlatform::OpenOrCreate(dir_ / "las/platform.key").value();
  }();
  std::unique_ptr<Store> store_ = std::move(Store::Open(dir_.path(), PlatformAnchor(&platform_)).value());
};

TEST_F(NetworkIdentityTest, EveryShieldedServiceGetsAnIdentityFromTheImplicitSessionCa) {
  policy::Session s = Put(kStack);
  auto ca = SessionCaCertificate(*store_, s);
  ASSERT_TRUE(ca.ok()) << ca.status().message();
  Cert ca_cert = ReadCert(*ca);
  ASSERT_TRUE(ca_cert);
  EXPECT_EQ(X509_check_ca(ca_cert.get()), 1);
  EXPECT_EQ(CommonName(ca_cert.get()), "SCONE session stack");

  NetworkIdentity web = Released(s, "web");
  EXPECT_EQ(web.session_ca, *ca);
  std::string web_pem = Text(web.identity);
  ASSERT_EQ(web_pem.find("-----BEGIN PRIVATE KEY-----"), 0u);  // the key first, then its certificate
  Cert web_cert = ReadCert(web_pem);
  ASSERT_TRUE(web_cert);
  EXPECT_TRUE(KeyMatches(web_pem, web_cert.get()));
  EXPECT_TRUE(ChainsTo(web_cert.get(), *ca));
  EXPECT_EQ(X509_check_ca(web_cert.get()), 0);
  EXPECT_EQ(CommonName(web_cert.get()), "web");
  // Its own name, the loopback, and what the session's client rules check servers against.
  for (const char* name : {"web", "localhost", "api.stack.internal", "cache.stack.internal"}) {
    EXPECT_EQ(X509_check_host(web_cert.get(), name, 0, 0, nullptr), 1) << name;
  }
  for (const char* ip : {"127.0.0.1", "::1", "10.0.0.7", "fd00::1"}) {
    EXPECT_EQ(X509_check_ip_asc(web_cert.get(), ip, 0), 1) << ip;
  }
  EXPECT_NE(X509_check_host(web_cert.get(), "evil.example", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_ip_asc(web_cert.get(), "10.0.0.8", 0), 1);

  // A key per service.
  NetworkIdentity shop = Released(s, "shop");
  Cert shop_cert = ReadCert(Text(shop.identity));
  ASSERT_TRUE(shop_cert);
  EXPECT_EQ(CommonName(shop_cert.get()), "shop");
  EXPECT_TRUE(ChainsTo(shop_cert.get(), *ca));
  EXPECT_FALSE(KeyMatches(web_pem, shop_cert.get()));
  // A service that does not use the shield gets nothing.
  auto batch = ReleaseNetworkIdentity(*store_, s, *s.FindService("batch"));
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(batch->has_value());
}

TEST_F(NetworkIdentityTest, TheCaKeyAndTheEntriesAreOutOfReferencesReach) {
  policy::Session s = Put(kStack);
  EXPECT_FALSE(SecretText(*store_, s, "scone:session-ca.key").ok());
  EXPECT_FALSE(SecretText(*store_, s, "scone:service:web.key").ok());
  std::string text = kStack;
  text.replace(text.find("GREETING: hello"), 15, "GREETING: $$SCONE::scone:session-ca.key$$");
  EXPECT_FALSE(policy::Session::Parse(text).ok());
}

TEST_F(NetworkIdentityTest, IdentitiesAndTheCaAreStableAcrossUpdatesAndRestarts) {
  policy::Session s = Put(kStack);
  std::string ca = SessionCaCertificate(*store_, s).value();
  std::string web = Text(Released(s, "web").identity);
  // An update that changes nothing they are made from keeps them.
  std::string second = std::string(kStack);
  second.replace(second.find("GREETING: hello"), 15, "GREETING: bonjour");
  s = Update(kStack, second);
  EXPECT_EQ(SessionCaCertificate(*store_, s).value(), ca);
  EXPECT_EQ(Text(Released(s, "web").identity), web);
  // So does a restart of CAS.
  store_.reset();
  store_ = std::move(Store::Open(dir_.path(), PlatformAnchor(&platform_)).value());
  EXPECT_EQ(SessionCaCertificate(*store_, s).value(), ca);
  EXPECT_EQ(Text(Released(s, "web").identity), web);
  // A new name a client rule checks: the certificates are issued anew, for the same keys.
  std::string third = second;
  third.replace(third.find("api.stack.internal"), 18, "api2.stack.internal");
  s = Update(second + "predecessor: " + ToHex(policy::Session::HashOf(kStack)) + "\n", third);
  EXPECT_EQ(SessionCaCertificate(*store_, s).value(), ca);
  std::string renewed = Text(Released(s, "web").identity);
  EXPECT_NE(renewed, web);
  EXPECT_EQ(renewed.substr(0, renewed.find("-----BEGIN CERTIFICATE")), web.substr(0, web.find("-----BEGIN CERTIFICATE")));
  Cert cert = ReadCert(renewed);
  EXPECT_EQ(X509_check_host(cert.get(), "api2.stack.internal", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(cert.get(), "api.stack.internal", 0, 0, nullptr), 1);
}

TEST_F(NetworkIdentityTest, TheSessionsOwnCaIsTheSessionCaWhenItDeclaresOne) {
  std::string one = std::string(kStack) + "secrets:\n  - name: my_ca\n    kind: x509-ca\n";
  policy::Session s = Put(one);
  EXPECT_EQ(SessionCaCertificate(*store_, s).value(), Text(SecretText(*store_, s, "my_ca.crt").value()));
  EXPECT_FALSE(store_->GetSecret("stack", "scone:session-ca").value().has_value());
  Cert web = ReadCert(Text(Released(s, "web").identity));
  EXPECT_TRUE(ChainsTo(web.get(), Text(SecretText(*store_, s, "my_ca").value())));
  // Two CAs of its own: which one would be a guess; the implicit CA it is.
  std::string two = one + "  - name: other_ca\n    kind: x509-ca\n";
  s = Update(one, two);
  std::string ca = SessionCaCertificate(*store_, s).value();
  EXPECT_NE(ca, Text(SecretText(*store_, s, "my_ca").value()));
  EXPECT_NE(ca, Text(SecretText(*store_, s, "other_ca").value()));
  web = ReadCert(Text(Released(s, "web").identity));
  EXPECT_TRUE(ChainsTo(web.get(), ca));
}

// SCONE_NETWORK_SHIELD=protected and nothing else, with what CAS released to `service`.
net::NetworkRules DefaultRules(const NetworkIdentity& released) {
  auto rules = net::NetworkRules::Parse({{"SCONE_NETWORK_SHIELD", "protected"}}, {.session_ca = true});
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  Status s = rules->UseSessionDefaults(released.identity, released.session_ca);
  EXPECT_TRUE(s.ok()) << s.message();
  return std::move(rules).value();
}

// Whether a client with `client` rules and a server with `server` rules complete a handshake
// (no name checked: a default client knows none).
bool Handshake(const net::NetworkRules& client, const net::NetworkRules& server) {
  auto server_ctx = net::TlsContext::ForServer(*server.default_server);
  auto client_ctx = net::TlsContext::ForClient(*client.default_client);
  EXPECT_TRUE(server_ctx.ok() && client_ctx.ok());
  auto s = net::TlsConnection::Create(*server_ctx).value();
  auto c = net::TlsConnection::Create(*client_ctx).value();
  testing::PumpTls(*c, *s);
  return c->HandshakeDone() && s->HandshakeDone() && !c->Failed() && !s->Failed() && !s->PeerSubject().empty();
}

TEST_F(NetworkIdentityTest, ServicesOfOneSessionTalkMutualTlsAndRefuseAnotherSessions) {
  policy::Session s = Put(kStack);
  std::string other_text = kStack;
  other_text.replace(other_text.find("name: stack"), 11, "name: other");
  policy::Session other = Put(other_text);
  net::NetworkRules web = DefaultRules(Released(s, "web"));
  net::NetworkRules shop = DefaultRules(Released(s, "shop"));
  net::NetworkRules intruder = DefaultRules(Released(other, "shop"));
  ASSERT_TRUE(web.default_server && web.default_client);
  EXPECT_TRUE(Handshake(shop, web));
  EXPECT_TRUE(Handshake(web, shop));
  EXPECT_FALSE(Handshake(intruder, web));  // the server refuses a client of another session's CA
  EXPECT_FALSE(Handshake(web, intruder));  // the client refuses a server of another session's CA
}

TEST_F(NetworkIdentityTest, SessionDefaultsFillOnlyWhatRulesLeaveOut) {
  policy::Session s = Put(kStack);
  NetworkIdentity web = Released(s, "web");
  std::string given_ca = Text(SecretText(*store_, Put(std::string(kStack).replace(6, 5, "mine") +
                                                      "secrets:\n  - name: ca\n    kind: x509-ca\n"),
                                         "ca").value());
  auto rules = net::NetworkRules::Parse({{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"},
                                         {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
                                         {"SCONE_NETWORK_SHIELD_SERVER_B", "protected"},
                                         {"SCONE_NETWORK_SHIELD_SERVER_B_PORT", "TCP:2"},
                                         {"SCONE_NETWORK_SHIELD_SERVER_B_CLIENT_AUTH", "disabled"},
                                         {"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"},
                                         {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:db:5432"},
                                         {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH", given_ca}},
                                        {.session_ca = true});
  ASSERT_TRUE(rules.ok()) << rules.status().message();
  ASSERT_TRUE(rules->UseSessionDefaults(web.identity, web.session_ca).ok());
  const net::ServerRule* a = rules->ServerForPort(1);
  const net::ServerRule* b = rules->ServerForPort(2);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(Text(a->identity->pem), Text(web.identity));
  EXPECT_EQ(a->client_auth->pem, web.session_ca);
  EXPECT_TRUE(b->client_auth_disabled);  // `disabled` stays disabled
  EXPECT_FALSE(b->client_auth.has_value());
  EXPECT_EQ(rules->clients[0].server_auth->pem, given_ca);  // a CA given stays
  EXPECT_EQ(Text(rules->clients[0].identity->pem), Text(web.identity));
  // SCONE_NETWORK_SHIELD unset with rules is `unprotected`: no rule for unnamed connections.
  EXPECT_FALSE(rules->default_server.has_value());
  EXPECT_FALSE(rules->default_client.has_value());
  // What CAS sent must parse.
  EXPECT_FALSE(rules->UseSessionDefaults(SecretBytes(AsBytes(std::string("garbage"))), web.session_ca).ok());
  EXPECT_FALSE(rules->UseSessionDefaults(web.identity, "garbage").ok());
}

}  // namespace
}  // namespace scone::cas
