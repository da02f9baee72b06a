#include "policy/session.h"

#include <gtest/gtest.h>

namespace scone::policy {
namespace {

constexpr char kValid[] = R"(name: shop
version: "0.3"
access_policy:
  read: [CREATOR]
  update: [CREATOR]
security:
  attestation:
    tolerate: [sim, debug-mode]
volumes:
  - name: data
services:
  - name: api
    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000001]
    command: python3 /app/main.py --token $$SCONE::token$$
    environment:
      DB_PASSWORD: $$SCONE::db_password$$
    pwd: /app
    image_name: api-image
  - name: worker
    mrsigner: 00000000000000000000000000000000000000000000000000000000000000ff
    isvprodid: 7
    isvsvn: 2
secrets:
  - name: token
    kind: ascii
    size: 32
  - name: db_password
    kind: ascii
    value: "given"
  - name: tls_key
    kind: private-key
  - name: ca
    kind: x509-ca
  - name: tls_cert
    kind: x509
    private_key: tls_key
    issuer: ca
    dns: [api.shop]
  - name: shared
    kind: binary
    size: 16
    export:
      - session: other
images:
  - name: api-image
    volumes:
      - name: data
        path: /data
    injection_files:
      - path: /app/config.json
        content: '{"key": "$$SCONE::token$$"}'
)";

TEST(SessionTest, ParsesSconeStyleSession) {
  auto s = Session::Parse(kValid);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->name, "shop");
  ASSERT_EQ(s->services.size(), 2u);
  EXPECT_EQ(s->services[0].environment.at("DB_PASSWORD"), "$$SCONE::db_password$$");
  EXPECT_EQ(s->services[1].isvprodid, 7);
  EXPECT_EQ(s->FindSecret("tls_cert")->issuer, "ca");
  EXPECT_EQ(s->FindSecret("shared")->export_to, std::vector<std::string>{"other"});
  EXPECT_EQ(s->images[0].injection_files[0].path, "/app/config.json");
  EXPECT_EQ(s->tolerate, (std::vector<std::string>{"sim", "debug-mode"}));
}

// Each edit of the valid session must be rejected with the line and the reason.
struct BadCase {
  const char* from;
  const char* to;
  const char* expected;
};

TEST(SessionTest, RejectsBadSessionsWithLineAndReason) {
  const BadCase cases[] = {
      {"    pwd: /app", "    pwd: /app\n    colour: blue", "line 18: unknown key 'colour' in a service"},
      {"version: \"0.3\"", "version: \"0.9\"", "unsupported session version"},
      {"DB_PASSWORD: $$SCONE::db_password$$", "DB_PASSWORD: $$SCONE::nope$$", "unknown secret 'nope'"},
      {"    issuer: ca", "    issuer: token", "is not an x509-ca secret"},
      {"    private_key: tls_key", "    private_key: ca", "is not a private-key secret"},
      {"    image_name: api-image", "    image_name: missing", "unknown image 'missing'"},
      {"      - name: data\n        path: /data", "      - name: other\n        path: /data", "undeclared volume 'other'"},
      {"    mrsigner: 00000000000000000000000000000000000000000000000000000000000000ff\n", "", "names neither mrenclaves nor an mrsigner"},
      {"    isvprodid: 7", "    isvprodid: 70000", "at most 65535"},
      {"    isvsvn: 2", "    isvsvn: -2", "non-negative integer"},
      {"    mrenclaves: [0000000000000000000000000000000000000000000000000000000000000001]", "    mrenclaves: [abc]", "64 hex digits"},
      {"  - name: worker", "  - name: api", "services has 'api' twice"},
      {"    kind: x509-ca", "    kind: x509-cb", "unknown secret kind"},
      {"    tolerate: [sim, debug-mode]", "    tolerate: [everything]", "unknown tolerate value"},
      {"    value: \"given\"", "    value: \"given\"\n    size: 3", "both a value and a size"},
      {"  - name: tls_key\n    kind: private-key", "  - name: tls_key\n    kind: private-key\n    value: x", "never given"},
      {"name: shop", "name: \"shop/../x\"", "may hold only"},
      {"        content: '{\"key\": \"$$SCONE::token$$\"}'", "        content: '$$SCONE::missing$$'", "unknown secret 'missing'"},
      {"      - path: /app/config.json", "      - path: relative.json", "absolute"},
      // An empty generated secret would remove the argument it stands for.
      {"    size: 32", "    size: 0", "size 0 (an empty secret)"},
      // A reference without its closing $$ reached the program as text, silently.
      {"--token $$SCONE::token$$", "--token $$SCONE::token", "without its closing $$"},
      {"        content: '{\"key\": \"$$SCONE::token$$\"}'", "        content: 'k=$$SCONE::token'", "without its closing $$"},
      // An environment key with '=' would set another variable ("A=B: x" sets A to "B=x").
      {"      DB_PASSWORD: $$SCONE::db_password$$", "      PATH=/tmp/evil:x: y", "must be non-empty and hold no '='"},
      {"name: shop", "name: ..", "is not '.' or '..'"},
      {"name: shop", "name: .", "is not '.' or '..'"},
      {"  - name: token", "  - name: ..", "is not '.' or '..'"},
      // A comma would have added another subject alternative name; a space, a scheme: refused.
      {"    dns: [api.shop]", "    dns: [\"api.shop,DNS:evil.example\"]", "is not a host name"},
      {"    dns: [api.shop]", "    dns: [\"api shop\"]", "is not a host name"},
      {"    dns: [api.shop]", "    dns: [a.b..c]", "is not a host name"},
      // X.509 allows 64 characters in a common name: more is refused, never silently dropped.
      {"    dns: [api.shop]", "    dns: [a123456789012345678901234567890123456789012345678901234567890.shop]",
       "more than X.509's 64"},
  };
  for (const BadCase& c : cases) {
    std::string text = kValid;
    size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    text.replace(at, strlen(c.from), c.to);
    auto s = Session::Parse(text);
    ASSERT_FALSE(s.ok()) << "accepted after replacing: " << c.from;
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.expected), std::string::npos)
        << "message: " << s.status().message() << "\nexpected: " << c.expected;
    EXPECT_EQ(s.status().message().rfind("line ", 0), 0u) << s.status().message();
  }
}

TEST(SessionTest, AcceptsWildcardAndLongNamesWithinLimits) {
  std::string text = kValid;
  text.replace(text.find("    dns: [api.shop]"), 19, "    dns: [\"*.shop.example\", api-1.shop, " +
                                                     std::string(63, 'a') + ".example]");
  auto s = Session::Parse(text);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->FindSecret("tls_cert")->CommonName(), "*.shop.example");
}

TEST(SessionTest, MalformedYamlNamesTheLine) {
  auto s = Session::Parse("name: a\nversion: \"0.3\"\nservices: [\n  - {name: x\n");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("malformed YAML"), std::string::npos);
  EXPECT_FALSE(Session::Parse("").ok());
  EXPECT_FALSE(Session::Parse(std::string(2 << 20, 'a')).ok());
}

TEST(SessionTest, SubstitutesSecrets) {
  auto out = Substitute("a $$SCONE::x$$ b $$SCONE::y$$ $$ c", [](std::string_view n) -> Result<std::string> {
    if (n == "x") return std::string("1");
    if (n == "y") return std::string("2");
    return NotFound("no secret " + std::string(n));
  });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "a 1 b 2 $$ c");
  EXPECT_FALSE(Substitute("$$SCONE::z$$", [](std::string_view) -> Result<std::string> {
                 return NotFound("z");
               }).ok());
  EXPECT_EQ(ReferencedSecrets("$$SCONE::a$$/$$SCONE::b$$"), (std::vector<std::string>{"a", "b"}));
}

TEST(SessionTest, HashNamesTheExactText) {
  EXPECT_NE(Session::HashOf(kValid), Session::HashOf(std::string(kValid) + " "));
  EXPECT_EQ(Session::HashOf(kValid), Session::HashOf(kValid));
}

}  // namespace
}  // namespace scone::policy
