// The network shield's variables: SCONE's names, every rule's attributes, and an error naming
// the variable for each kind of bad input.
#include "net/network_rules.h"

#include <gtest/gtest.h>

#include "net/test_certificates.h"

namespace scone::net {
namespace {

using Vars = std::vector<std::pair<std::string, std::string>>;

class NetworkRulesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new testing::TestCa(testing::MakeCa("test-ca"));
    identity_ = new std::string(testing::MakeIdentity(*ca_, "server.test"));
  }
  static void TearDownTestSuite() {
    delete ca_;
    delete identity_;
  }

  // The error's message, or "" if it parsed.
  static std::string Error(const Vars& vars, ParseOptions options = {}) {
    auto r = NetworkRules::Parse(vars, options);
    return r.ok() ? "" : r.status().message();
  }

  static testing::TestCa* ca_;
  static std::string* identity_;
};

testing::TestCa* NetworkRulesTest::ca_ = nullptr;
std::string* NetworkRulesTest::identity_ = nullptr;

TEST_F(NetworkRulesTest, NoVariablesLeaveTheShieldOff) {
  auto r = NetworkRules::Parse({{"PATH", "/bin"}, {"SCONE_VOLUME_ROOTS", ""}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->Enabled());
  EXPECT_TRUE(r->servers.empty());
}

TEST_F(NetworkRulesTest, RefusingUnsupportedProtocolsAloneTurnsTheShieldOn) {
  auto r = NetworkRules::Parse({{"SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS", "refuse"}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->Enabled());
  EXPECT_EQ(r->unsupported_protocols, Protection::kRefuse);
  auto off = NetworkRules::Parse(
      {{"SCONE_NETWORK_SHIELD", "disabled"}, {"SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS", "refuse"}});
  ASSERT_FALSE(off.ok());
  EXPECT_NE(off.status().message().find("would be ignored"), std::string::npos) << off.status().message();
}

TEST_F(NetworkRulesTest, ServerRuleWithEveryAttribute) {
  auto r = NetworkRules::Parse({{"SCONE_NETWORK_SHIELD", "protected"},
                                {"SCONE_NETWORK_SHIELD_SERVER_WEB_PORT", "TCP:8443"},
                                {"SCONE_NETWORK_SHIELD_SERVER_WEB", "protected"},
                                {"SCONE_NETWORK_SHIELD_SERVER_WEB_IDENTITY", *identity_},
                                {"SCONE_NETWORK_SHIELD_SERVER_WEB_CLIENT_AUTH", ca_->cert},
                                {"SCONE_NETWORK_SHIELD_SERVER_OLD", "refuse"},
                                {"SCONE_NETWORK_SHIELD_SERVER_OLD_PORT", "unix:/run/old.sock"}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->mode, ShieldMode::kProtected);
  ASSERT_EQ(r->servers.size(), 2u);
  const ServerRule* web = r->ServerForPort(8443);
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->name, "WEB");
  EXPECT_EQ(web->protection, Protection::kProtected);
  ASSERT_TRUE(web->identity.has_value());
  ASSERT_TRUE(web->client_auth.has_value());
  EXPECT_FALSE(web->client_auth_disabled);
  const ServerRule* old = r->ServerForPath("/run/old.sock");
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->protection, Protection::kRefuse);
  EXPECT_EQ(r->ServerForPort(80), nullptr);
}

TEST_F(NetworkRulesTest, RuleNamesMayHoldUnderscoresAndClientAuthMayBeDisabled) {
  auto r = NetworkRules::Parse({{"SCONE_NETWORK_SHIELD_SERVER_MY_APP", "protected"},
                                {"SCONE_NETWORK_SHIELD_SERVER_MY_APP_PORT", "tcp:443"},
                                {"SCONE_NETWORK_SHIELD_SERVER_MY_APP_IDENTITY", *identity_},
                                {"SCONE_NETWORK_SHIELD_SERVER_MY_APP_CLIENT_AUTH", "disabled"}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->mode, ShieldMode::kUnprotected);  // rules alone: unnamed connections pass
  ASSERT_EQ(r->servers.size(), 1u);
  EXPECT_EQ(r->servers[0].name, "MY_APP");
  EXPECT_TRUE(r->servers[0].client_auth_disabled);
  EXPECT_FALSE(r->servers[0].client_auth.has_value());
}

TEST_F(NetworkRulesTest, ClientRuleWithEveryAttribute) {
  auto r = NetworkRules::Parse({{"SCONE_NETWORK_SHIELD_CLIENT_DB", "protected"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_DB_DESTINATION", "TCP:db.internal:5432"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_DB_DESTINATION_IP", "10.0.0.5,fd00::5"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_DB_SERVER_DNS_NAME", "postgres.internal"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_DB_IDENTITY", *identity_},
                                {"SCONE_NETWORK_SHIELD_CLIENT_DB_SERVER_AUTH", ca_->cert},
                                {"SCONE_NETWORK_SHIELD_CLIENT_V6", "unprotected"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_V6_DESTINATION", "TCP:[::1]:80"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_SOCK", "refuse"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_SOCK_DESTINATION", "unix:/tmp/s"},
                                {"SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS", "refuse"}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->unsupported_protocols, Protection::kRefuse);
  ASSERT_EQ(r->clients.size(), 3u);
  const ClientRule* db = nullptr;
  const ClientRule* v6 = nullptr;
  for (const ClientRule& c : r->clients) {
    if (c.name == "DB") db = &c;
    if (c.name == "V6") v6 = &c;
  }
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->destination.host, "db.internal");
  EXPECT_EQ(db->destination.port, 5432);
  EXPECT_EQ(db->destination_ips, (std::vector<std::string>{"10.0.0.5", "fd00::5"}));
  EXPECT_EQ(db->server_dns_name, "postgres.internal");
  EXPECT_TRUE(db->identity.has_value());
  ASSERT_NE(v6, nullptr);
  EXPECT_EQ(v6->destination.host, "::1");
  EXPECT_EQ(v6->server_dns_name, "");  // an IP destination: no name to check
  ASSERT_NE(r->ClientForPath("/tmp/s"), nullptr);
  EXPECT_EQ(r->ClientForPath("/tmp/s")->protection, Protection::kRefuse);
}

TEST_F(NetworkRulesTest, TheServerNameDefaultsToTheDestinationsHost) {
  auto r = NetworkRules::Parse({{"SCONE_NETWORK_SHIELD_CLIENT_A", "protected"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_A_DESTINATION", "TCP:server.test:443"},
                                {"SCONE_NETWORK_SHIELD_CLIENT_A_SERVER_AUTH", ca_->cert}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->clients[0].server_dns_name, "server.test");
  EXPECT_FALSE(r->clients[0].identity.has_value());
}

TEST_F(NetworkRulesTest, BadValuesNameTheVariable) {
  struct Case {
    Vars vars;
    std::string variable;
    std::string what;
  };
  const std::vector<Case> cases = {
      {{{"SCONE_NETWORK_SHIELD", "on"}}, "SCONE_NETWORK_SHIELD:", "'on' is not one of disabled, unprotected, protected"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "maybe"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"}},
       "SCONE_NETWORK_SHIELD_SERVER_A:", "'maybe' is not one of"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:http"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_PORT:", "is not a number"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:70000"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_PORT:", "not between 1 and 65535"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "UDP:53"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_PORT:", "is not TCP:<port> or unix:<path>"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "unix:rel"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_PORT:", "not absolute"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}}, "SCONE_NETWORK_SHIELD_SERVER_A_PORT:", "missing"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"}}, "SCONE_NETWORK_SHIELD_SERVER_A_PORT:",
       "no SCONE_NETWORK_SHIELD_SERVER_A gives"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "disabled"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY:", "missing"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "disabled"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY:", "no PEM private key"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", *identity_}},
       "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH:", "missing"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", *identity_}, {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "yes"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH:", "no PEM certificate"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_B", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_B_PORT", "TCP:1"}},
       "SCONE_NETWORK_SHIELD_SERVER_B_PORT:", "is also rule A's"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:1.2.3.4"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION:", "is not TCP:<host>:<port>"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "unprotected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
        {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION_IP", "10.0.0"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION_IP:", "not an IPv4 or IPv6 address"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH:", "missing"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
        {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH", "disabled"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_DNS_NAME", "a b"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_DNS_NAME:", "not a DNS name"},
      // A private key alone: no certificate, said so (before: "certificate 1 does not parse").
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", std::string(ca_->key.span().begin(), ca_->key.span().end())}, {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "disabled"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY:", "no PEM certificate in the value"},
      // TLS settings on a rule without TLS would be ignored: refused, not read as protection.
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", *identity_}},
       "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY:", "given for a rule that is 'unprotected'"},
      {{{"SCONE_NETWORK_SHIELD_SERVER_A", "refuse"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "disabled"}},
       "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH:", "given for a rule that is 'refuse'"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "unprotected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
        {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_DNS_NAME", "h"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_DNS_NAME:", "TLS settings apply to protected rules only"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "refuse"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
        {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH", "disabled"}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH:", "given for a rule that is 'refuse'"},
      {{{"SCONE_NETWORK_SHIELD_CLIENT_C", "unprotected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
        {"SCONE_NETWORK_SHIELD_CLIENT_C_IDENTITY", *identity_}},
       "SCONE_NETWORK_SHIELD_CLIENT_C_IDENTITY:", "given for a rule that is 'unprotected'"},
      {{{"SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS", "protected"}}, "SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS:",
       "not possible"},
      {{{"SCONE_NETWORK_SHIELD_TYPO", "x"}}, "SCONE_NETWORK_SHIELD_TYPO:", "not one of the network shield's variables"},
      {{{"SCONE_NETWORK_SHIELD", "disabled"}, {"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"},
        {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"}},
       "SCONE_NETWORK_SHIELD:", "rules are given"},
  };
  for (const Case& c : cases) {
    std::string error = Error(c.vars);
    EXPECT_EQ(error.rfind(c.variable, 0), 0u) << "got: " << error;
    EXPECT_NE(error.find(c.what), std::string::npos) << "got: " << error;
  }
}

// SCONE's values are lowercase words, matched exactly, for every switch: another case is refused
// (with a hint), never read as another value or as a CA.
TEST_F(NetworkRulesTest, SwitchValuesAreLowercaseWordsMatchedExactly) {
  std::string error = Error({{"SCONE_NETWORK_SHIELD", "Protected"}});
  EXPECT_EQ(error, "SCONE_NETWORK_SHIELD: 'Protected' is not one of disabled, unprotected, protected "
                   "(values are lowercase: 'protected')");
  error = Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "REFUSE"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"}});
  EXPECT_EQ(error.rfind("SCONE_NETWORK_SHIELD_SERVER_A: 'REFUSE' is not one of", 0), 0u) << error;
  error = Error({{"SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS", "Refuse"}});
  EXPECT_EQ(error.rfind("SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS: 'Refuse' is not one of", 0), 0u) << error;
  error = Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
                 {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", *identity_},
                 {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "Disabled"}});
  EXPECT_EQ(error, "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH: 'Disabled' is not one of disabled "
                   "(values are lowercase: 'disabled')");
  error = Error({{"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"},
                 {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
                 {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH", "DISABLED"}});
  EXPECT_EQ(error.rfind("SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH: 'DISABLED' is not one of disabled", 0), 0u) << error;
}

// OpenSSL's PEM reader skips text outside the blocks: junk before, between or after them (a
// truncated paste, two values run together) is refused, naming the variable, never echoed.
TEST_F(NetworkRulesTest, PemWithJunkAroundItIsRefused) {
  const std::string junk = "SECRET-JUNK";
  auto server = [&](const std::string& identity, const std::string& client_auth) {
    return Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
                  {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", identity},
                  {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", client_auth}});
  };
  EXPECT_EQ(server(*identity_, ca_->cert), "");
  EXPECT_EQ(server(*identity_ + "\n\n", "\n" + ca_->cert + ca_->cert), "");  // white space, two CAs
  struct Case {
    std::string identity, client_auth, message;
  };
  const std::vector<Case> cases = {
      {*identity_, ca_->cert + junk, "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH: text that is not PEM after PEM block 1"},
      {*identity_, junk + "\n" + ca_->cert, "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH: text that is not PEM before the first"},
      {*identity_ + junk, ca_->cert, "SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY: text that is not PEM after PEM block 2"},
      {*identity_, ca_->cert + "-----BEGIN CERTIFICATE-----\nMIIB", "SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH: certificate 2 does not parse"},
  };
  for (const Case& c : cases) {
    std::string error = server(c.identity, c.client_auth);
    EXPECT_EQ(error.rfind(c.message, 0), 0u) << "got: " << error;
    EXPECT_EQ(error.find(junk), std::string::npos) << "the value was echoed: " << error;
  }
  std::string client = Error({{"SCONE_NETWORK_SHIELD_CLIENT_C", "protected"},
                              {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", "TCP:h:1"},
                              {"SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH", ca_->cert + junk}});
  EXPECT_EQ(client.rfind("SCONE_NETWORK_SHIELD_CLIENT_C_SERVER_AUTH: text that is not PEM", 0), 0u) << client;
}

// A unix socket path is used up to its first NUL: a newline or NUL in it names another socket
// than the value reads.
TEST_F(NetworkRulesTest, UnixPathsWithControlCharactersAreRefused) {
  for (const std::string& path : {std::string("unix:/run/a\nb.sock"), std::string("unix:/run/a\0b.sock", 18),
                                  std::string("unix:/run/a\tb.sock")}) {
    std::string server = Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", path}});
    EXPECT_EQ(server.rfind("SCONE_NETWORK_SHIELD_SERVER_A_PORT: unix socket path holds a control character", 0), 0u)
        << server;
    std::string client =
        Error({{"SCONE_NETWORK_SHIELD_CLIENT_C", "unprotected"}, {"SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION", path}});
    EXPECT_EQ(client.rfind("SCONE_NETWORK_SHIELD_CLIENT_C_DESTINATION: unix socket path holds a control character", 0), 0u)
        << client;
  }
  EXPECT_EQ(Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "unprotected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "unix:/run/a b.sock"}}),
            "");
}

TEST_F(NetworkRulesTest, AnIdentityWhoseKeyIsNotTheCertificatesIsRefused) {
  std::string other = testing::MakeIdentity(*ca_, "other.test");
  // The key of one identity with the certificate of another.
  std::string key = identity_->substr(0, identity_->find("-----BEGIN CERTIFICATE-----"));
  std::string cert = other.substr(other.find("-----BEGIN CERTIFICATE-----"));
  std::string error = Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"},
                             {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"},
                             {"SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY", key + cert},
                             {"SCONE_NETWORK_SHIELD_SERVER_A_CLIENT_AUTH", "disabled"}});
  EXPECT_NE(error.find("SCONE_NETWORK_SHIELD_SERVER_A_IDENTITY: the first certificate is not the private key's"),
            std::string::npos)
      << error;
  EXPECT_EQ(error.find("PRIVATE KEY"), std::string::npos);  // never echoes the value
}

TEST_F(NetworkRulesTest, WithASessionCaIdentityAndAuthoritiesMayBeLeftOut) {
  ParseOptions options;
  options.session_ca = true;
  EXPECT_EQ(Error({{"SCONE_NETWORK_SHIELD_SERVER_A", "protected"}, {"SCONE_NETWORK_SHIELD_SERVER_A_PORT", "TCP:1"}},
                  options),
            "");
}

}  // namespace
}  // namespace scone::net
