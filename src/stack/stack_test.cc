// The stack file's parser and its translation into a session and a Compose file: pure, no
// Docker, no CAS. Every bad input names the file and the line.
#include <gtest/gtest.h>

#include "policy/session.h"
#include "stack/secret_refs.h"
#include "stack/stack_file.h"
#include "stack/translate.h"

namespace scone::stack {
namespace {

const char kStack[] = R"(version: "3.8"
services:
  web:
    image: scone-native/python
    command: python3 /app/app.py
    environment:
      TOKEN: $api_token
      GREETING: "costs $$5"
    ports:
      - "18000:8000"
    configs:
      - source: app
        target: /app/app.py
  redis:
    image: scone-native/redis
    volumes:
      - redis-data:/data
    console_shield: disabled
  helper:
    image: scone-native/redis
    not_scone: "true"
    command: sleep infinity
secrets:
  api_token:
    kind: ascii
    length: 24
  given:
    kind: ascii
    value: s3cr3t-given
configs:
  app:
    file: app.py
volumes:
  redis-data:
)";

Result<StackFile> Parse(const std::string& text) { return ParseStackFile(text, "stack.yml"); }

// The error for `text`, which must not parse.
std::string ErrorOf(const std::string& text) {
  auto f = Parse(text);
  EXPECT_FALSE(f.ok()) << text;
  return f.ok() ? "" : f.status().message();
}

TEST(SecretRefsTest, ReferencesBecomeSessionReferences) {
  std::set<std::string> declared = {"pw", "t_1"};
  EXPECT_EQ(*ToSessionValue("a=$pw,b=${t_1}", declared), "a=$$SCONE::pw$$,b=$$SCONE::t_1$$");
  EXPECT_EQ(*ToSessionValue("costs $$5 $$pw", declared), "costs $5 $pw");
  EXPECT_EQ(*ToSessionValue("plain", declared), "plain");
  EXPECT_FALSE(ToSessionValue("$HOME", declared).ok());
  EXPECT_NE(ToSessionValue("$HOME", declared).status().message().find("undefined secret 'HOME'"),
            std::string::npos);
  EXPECT_FALSE(ToSessionValue("a $", declared).ok());
  EXPECT_FALSE(ToSessionValue("${pw", declared).ok());
  EXPECT_FALSE(ToSessionValue("${}", declared).ok());
  EXPECT_EQ(SecretsReferenced("x $pw $$t_1 ${t_1} $other", declared),
            (std::vector<std::string>{"pw", "t_1"}));
  EXPECT_EQ(EscapeForCompose("a$b$$"), "a$$b$$$$");
}

TEST(StackFileTest, ParsesServicesSecretsAndExtensions) {
  auto f = Parse(kStack);
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->services.size(), 3u);
  const StackService& web = f->services[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_TRUE(web.secure);
  EXPECT_EQ(*web.command, (std::vector<std::string>{"python3", "/app/app.py"}));
  EXPECT_EQ(web.environment[0],
            (std::pair<std::string, std::string>{"TOKEN", "$$SCONE::api_token$$"}));
  EXPECT_EQ(web.environment[1].second, "costs $5");
  ASSERT_EQ(web.ports.size(), 1u);
  EXPECT_EQ(web.ports[0].published, 18000);
  EXPECT_EQ(web.ports[0].target, 8000);
  EXPECT_EQ(web.configs[0].target, "/app/app.py");
  const StackService& redis = f->services[1];
  EXPECT_FALSE(redis.console_shield);
  EXPECT_TRUE(redis.file_shield);
  EXPECT_EQ(redis.volume_targets, std::vector<std::string>{"/data"});
  EXPECT_FALSE(f->services[2].secure);
  ASSERT_EQ(f->secrets.size(), 2u);
  EXPECT_EQ(*f->secrets[0].length, 24u);
  EXPECT_EQ(*f->secrets[1].value, "s3cr3t-given");
}

TEST(StackFileTest, BadInputNamesFileAndLine) {
  std::string unknown = std::string(kStack);
  unknown.replace(unknown.find("    console_shield: disabled"), 28, "    consol_shield: disabled");
  EXPECT_EQ(ErrorOf(unknown), "stack.yml:18: unknown key 'consol_shield' in service redis");

  std::string undefined = std::string(kStack);
  undefined.replace(undefined.find("$api_token"), 10, "$api_tokn");
  EXPECT_NE(ErrorOf(undefined).find("stack.yml:7: environment TOKEN: undefined secret 'api_tokn'"),
            std::string::npos)
      << ErrorOf(undefined);

  std::string no_kind = std::string(kStack);
  no_kind.replace(no_kind.find("    kind: ascii\n    length: 24"), 15, "");
  EXPECT_NE(ErrorOf(no_kind).find("stack.yml:24: secret api_token has no kind"), std::string::npos)
      << ErrorOf(no_kind);

  std::string standard = std::string(kStack);
  standard.replace(standard.find("sleep infinity"), 14, "echo $given");
  EXPECT_NE(ErrorOf(standard).find("stack.yml:22: $given: service helper is not_scone"),
            std::string::npos)
      << ErrorOf(standard);

  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\nsecrets:\n  s:\n    file: ./s.txt\n")
                .find("stack.yml:5: secret s: Docker secrets are not used"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    secrets: [s]\n")
                .find("stack.yml:4: service a: Docker secrets"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    deploy:\n      replica: 2\n")
                .find("stack.yml:5: unknown key 'replica' in deploy of a"),
            std::string::npos);
  EXPECT_NE(ErrorOf("servics:\n  a: {}\n").find("stack.yml:1: unknown key 'servics'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    command: sh -c \"echo hi\"\n")
                .find("stack.yml:4:"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    labels: {k: $s}\nsecrets: {s: {kind: "
                    "ascii, length: 4}}\n")
                .find("stack.yml:4: $s: labels goes to Docker"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    network_shield: off\n")
                .find("stack.yml:4: network_shield must be"),
            std::string::npos);
  EXPECT_NE(
      ErrorOf("services:\n  a:\n    image: x\n    not_scone: \"true\"\n    file_shield: disabled\n")
          .find("stack.yml:5: file_shield is for secure services"),
      std::string::npos);
  EXPECT_NE(ErrorOf("services: [\n").find("stack.yml:"), std::string::npos);
  // A key given twice (Docker refuses it; the YAML library kept the last, so a plaintext value
  // could override a secret's reference unnoticed: helper's finding).
  EXPECT_EQ(ErrorOf("services:\n  a:\n    image: x\n    environment:\n      PW: $s\n      PW: plain\n"
                    "secrets: {s: {kind: ascii, length: 4}}\n"),
            "stack.yml:6: mapping key 'PW' already defined at line 5");
  EXPECT_EQ(ErrorOf("services:\n  a:\n    image: x\n    image: y\n"),
            "stack.yml:4: mapping key 'image' already defined at line 3");
  EXPECT_EQ(ErrorOf("services:\n  a:\n    image: x\n  a:\n    image: y\n"),
            "stack.yml:4: mapping key 'a' already defined at line 2");
}

Deployment TestDeployment() {
  Deployment d;
  d.stack = "shop";
  ServiceImage py{"scone-stack/shop-web", {}, {"python3"}, {{"PATH", "/usr/bin:/bin"}}, "/", {}};
  py.measurement[0] = 1;
  ServiceImage redis{"scone-stack/shop-redis", {}, {"redis-server", "--dir", "/data"}, {}, "/", {}};
  redis.measurement[0] = 2;
  d.images = {{"web", py}, {"redis", redis}};
  d.config_contents = {{"app", "print('hello')\n"}};
  d.stack_dir = "/home/u/shop";
  d.cas_addr = "172.18.0.1:18765";
  d.cas_key_hash = std::string(64, 'a');
  d.las_socket = "/root/.local/state/scone/las/las.sock";
  d.no_ipvs = true;
  return d;
}

TEST(TranslateTest, SessionHoldsWhatSecureServicesAreGiven) {
  auto f = Parse(kStack);
  ASSERT_TRUE(f.ok());
  auto t = Translate(*f, TestDeployment());
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto s = policy::Session::Parse(t->session_yaml);
  ASSERT_TRUE(s.ok()) << s.status().message() << "\n" << t->session_yaml;
  EXPECT_EQ(s->name, "shop");
  ASSERT_EQ(s->services.size(), 2u);  // the standard helper is not in it
  const policy::Service* web = s->FindService("web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->mrenclaves[0][0], 1);
  EXPECT_EQ(web->command, "python3 /app/app.py");
  EXPECT_EQ(web->environment.at("TOKEN"), "$$SCONE::api_token$$");
  EXPECT_EQ(web->environment.at("PATH"), "/usr/bin:/bin");
  EXPECT_EQ(web->environment.at("SCONE_NETWORK_SHIELD"), "protected");
  EXPECT_EQ(web->environment.at("SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000_PORT"), "TCP:8000");
  EXPECT_EQ(web->environment.at("SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000_CLIENT_AUTH"),
            "disabled");
  EXPECT_EQ(web->environment.at("SCONE_CONSOLE_SHIELD"), "protected");
  const policy::Service* redis = s->FindService("redis");
  EXPECT_EQ(redis->command, "redis-server --dir /data");
  EXPECT_EQ(redis->environment.count("SCONE_CONSOLE_SHIELD"), 0u);  // opted out
  EXPECT_EQ(s->FindImage("redis")->volumes[0].path, "/data");
  EXPECT_EQ(s->FindImage("web")->injection_files[0].content, "print('hello')\n");
  ASSERT_NE(s->FindSecret("api_token"), nullptr);
  EXPECT_EQ(*s->FindSecret("api_token")->size, 24u);
  EXPECT_EQ(*s->FindSecret("given")->value, "s3cr3t-given");
  EXPECT_NE(std::find(s->tolerate.begin(), s->tolerate.end(), "sim"), s->tolerate.end());
}

// A published port whose rule the stack sets unprotected gets no TLS default: the runtime
// refuses TLS settings on a rule without TLS.
TEST(TranslateTest, APublishedPortTheStackLeavesUnprotectedGetsNoTlsSetting) {
  std::string text = kStack;
  const std::string at = "      GREETING: \"costs $$5\"\n";
  text.replace(text.find(at), at.size(), at + "      SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000: unprotected\n");
  auto f = Parse(text);
  ASSERT_TRUE(f.ok()) << f.status().message();
  auto t = Translate(*f, TestDeployment());
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto s = policy::Session::Parse(t->session_yaml);
  ASSERT_TRUE(s.ok()) << s.status().message();
  const policy::Service* web = s->FindService("web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->environment.at("SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000"), "unprotected");
  EXPECT_EQ(web->environment.at("SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000_PORT"), "TCP:8000");
  EXPECT_EQ(web->environment.count("SCONE_NETWORK_SHIELD_SERVER_PUBLISHED_8000_CLIENT_AUTH"), 0u);
}

TEST(TranslateTest, ComposeFileHoldsNoSecretAndNoScone) {
  auto f = Parse(kStack);
  ASSERT_TRUE(f.ok());
  auto t = Translate(*f, TestDeployment());
  ASSERT_TRUE(t.ok()) << t.status().message();
  const std::string& c = t->compose_yaml;
  for (const char* absent : {"s3cr3t-given", "api_token", "not_scone", "console_shield", "app.py",
                             "python3", "GREETING"}) {
    EXPECT_EQ(c.find(absent), std::string::npos) << absent << " in\n" << c;
  }
  EXPECT_NE(c.find("version: \"3.8\""), std::string::npos)
      << c;  // a string for Docker, not a number
  YAML::Node n = YAML::Load(c);
  YAML::Node web = n["services"]["web"];
  EXPECT_EQ(web["image"].as<std::string>(), "scone-stack/shop-web");
  EXPECT_EQ(web["environment"]["SCONE_CONFIG_ID"].as<std::string>(), "shop/web");
  EXPECT_EQ(web["environment"]["SCONE_CAS_ADDR"].as<std::string>(), "172.18.0.1:18765");
  EXPECT_EQ(web["environment"].size(), 4u);
  EXPECT_FALSE(web["command"]);
  EXPECT_EQ(web["deploy"]["endpoint_mode"].as<std::string>(), "dnsrr");
  EXPECT_EQ(web["ports"][0]["mode"].as<std::string>(), "host");
  EXPECT_EQ(web["ports"][0]["published"].as<int>(), 18000);
  EXPECT_EQ(web["volumes"][0]["target"].as<std::string>(), kServiceLasPath);
  // The console shield's records reach `docker service logs` as text lines (a terminal's).
  EXPECT_TRUE(web["tty"].as<bool>());
  EXPECT_FALSE(n["services"]["redis"]["tty"]);  // console_shield: disabled
  EXPECT_FALSE(n["services"]["helper"]["tty"]);  // not_scone
  EXPECT_EQ(n["services"]["redis"]["volumes"].size(), 2u);
  YAML::Node helper = n["services"]["helper"];
  EXPECT_EQ(helper["image"].as<std::string>(), "scone-native/redis");
  EXPECT_EQ(helper["command"].as<std::string>(), "sleep infinity");
  EXPECT_FALSE(helper["environment"]);
  EXPECT_FALSE(n["secrets"]);
  EXPECT_TRUE(n["volumes"]["redis-data"]);

  Deployment with_ipvs = TestDeployment();
  with_ipvs.no_ipvs = false;
  auto vip = Translate(*f, with_ipvs);
  ASSERT_TRUE(vip.ok());
  YAML::Node v = YAML::Load(vip->compose_yaml);
  EXPECT_FALSE(v["services"]["web"]["deploy"]);
  EXPECT_EQ(v["services"]["web"]["ports"][0].as<std::string>(), "18000:8000");
}

TEST(TranslateTest, KeepsWhatTheUserWrote) {
  // A standard service's quoted strings stay strings for Docker; an explicit port mode and
  // endpoint mode stand even without IPVS.
  auto f = Parse(
      "services:\n  h:\n    image: x\n    not_scone: \"true\"\n    labels: {flag: \"true\"}\n"
      "    deploy: {endpoint_mode: vip}\n    ports:\n      - {target: 80, published: 8080, mode: ingress}\n");
  ASSERT_TRUE(f.ok()) << f.status().message();
  auto t = Translate(*f, TestDeployment());
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_NE(t->compose_yaml.find("flag: \"true\""), std::string::npos) << t->compose_yaml;
  YAML::Node n = YAML::Load(t->compose_yaml);
  EXPECT_EQ(n["services"]["h"]["deploy"]["endpoint_mode"].as<std::string>(), "vip");
  EXPECT_EQ(n["services"]["h"]["ports"][0]["mode"].as<std::string>(), "ingress");
  EXPECT_TRUE(t->session_yaml.empty());  // no secure service, no session
}

TEST(StackFileTest, SecureServicesRefuseWhatWouldBypassCas) {
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    entrypoint: [/bin/sh]\n").find("stack.yml:4: entrypoint"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    env_file: a.env\n").find("stack.yml:4: env_file"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    configs: [c]\nconfigs:\n  c: {external: true}\n")
                .find("stack.yml:4: config c is external"),
            std::string::npos);
  EXPECT_NE(ErrorOf("services:\n  a:\n    image: x\n    environment: [K]\n").find("stack.yml:4: environment K"),
            std::string::npos);
}

TEST(TranslateTest, CommandMustStartTheMeasuredProgram) {
  auto f = Parse("services:\n  web:\n    image: scone-native/python\n    command: redis-server\n");
  ASSERT_TRUE(f.ok());
  Deployment d = TestDeployment();
  auto t = Translate(*f, d);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("stack.yml:4: service web: command starts redis-server"),
            std::string::npos)
      << t.status().message();
}

}  // namespace
}  // namespace scone::stack
