// Runs the fuzz entry points on thousands of deterministic mutations of valid inputs, in every
// build (the libFuzzer targets need clang; this needs nothing).
#include <gtest/gtest.h>

#include <random>

#include "attest/las.h"
#include "attest/sim/sim_platform.h"
#include "cas/protocol.h"
#include "console/record.h"
#include "fs/journal.h"
#include "runtime/config.h"
#include "fs/volume_state.h"
#include "fuzz/parsers.h"

namespace scone::fuzz {
namespace {

Bytes Mutate(const Bytes& seed, std::mt19937_64& rng) {
  Bytes out = seed;
  int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 4) {
      case 0:
        if (!out.empty()) out[rng() % out.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:
        if (!out.empty()) out[rng() % out.size()] = static_cast<uint8_t>(rng());
        break;
      case 2:
        out.resize(rng() % (out.size() + 1));
        break;
      default:
        out.insert(out.begin() + static_cast<long>(rng() % (out.size() + 1)),
                   static_cast<uint8_t>(rng()));
    }
  }
  return out;
}

Bytes ValidRecord() {
  fs::JournalRecord r;
  r.path = "dir/file";
  r.entry.size = 5000;
  r.inplace_chunks = {1, 2};
  r.entries.emplace_back(1, fs::ChunkEntry{});
  r.slot_chunks = {0};
  r.slot_data.assign(fs::kChunkSize, 9);
  Bytes b = r.EncodeHead();
  b.insert(b.end(), r.slot_data.begin(), r.slot_data.end());
  return b;
}

Bytes ValidState() {
  fs::VolumeState s;
  s.files["a/b"] = fs::FileEntry{};
  s.files["c"] = fs::FileEntry{};
  (void)s.rules.Add(*fs::RegionRules::ParseRule("lib=authenticated"));
  ByteWriter w;
  s.Encode(w);
  return w.Take();
}

TEST(ParserMutationTest, JournalRecords) {
  std::mt19937_64 rng(1);
  Bytes seed = ValidRecord();
  for (int i = 0; i < 20000; ++i) {
    Bytes input = Mutate(seed, rng);
    JournalRecordParser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, VolumeStates) {
  std::mt19937_64 rng(2);
  Bytes seed = ValidState();
  for (int i = 0; i < 20000; ++i) {
    Bytes input = Mutate(seed, rng);
    VolumeStateParser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, PathsAndRules) {
  std::mt19937_64 rng(3);
  for (const char* text : {"lib/../x=authenticated", "a//b/./c", "/=not-protected", "00ff"}) {
    Bytes seed(text, text + strlen(text));
    for (int i = 0; i < 5000; ++i) {
      Bytes input = Mutate(seed, rng);
      PathAndRuleParser(input.data(), input.size());
    }
  }
}

TEST(ParserMutationTest, Sessions) {
  std::mt19937_64 rng(5);
  const char* seed_text =
      "name: s\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: "
      "[0000000000000000000000000000000000000000000000000000000000000001]\n    command: x "
      "$$SCONE::k$$\nsecrets:\n  - name: k\n    kind: ascii\n    size: 8\n";
  Bytes seed(seed_text, seed_text + strlen(seed_text));
  for (int i = 0; i < 3000; ++i) {
    Bytes input = Mutate(seed, rng);
    SessionParser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, StackFiles) {
  std::mt19937_64 rng(12);
  const char* seed_text =
      "version: \"3.8\"\nservices:\n  web:\n    image: py\n    command: prog /app.py\n    environment:\n"
      "      T: $tok\n    ports: [\"18000:8000\"]\n    configs: [{source: app, target: /app.py}]\n"
      "    volumes: [data:/data]\n  helper:\n    image: r\n    not_scone: \"true\"\n"
      "secrets:\n  tok: {kind: ascii, value: given-secret-value-123}\nconfigs:\n  app: {file: app.py}\n"
      "volumes:\n  data:\n";
  Bytes seed(seed_text, seed_text + strlen(seed_text));
  for (int i = 0; i < 3000; ++i) {
    Bytes input = Mutate(seed, rng);
    StackFileParser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, NetworkRules) {
  std::mt19937_64 rng(11);
  const char* seed_text =
      "SCONE_NETWORK_SHIELD=protected\n"
      "SCONE_NETWORK_SHIELD_SERVER_WEB=unprotected\nSCONE_NETWORK_SHIELD_SERVER_WEB_PORT=TCP:8443\n"
      "SCONE_NETWORK_SHIELD_SERVER_OLD=refuse\nSCONE_NETWORK_SHIELD_SERVER_OLD_PORT=unix:/run/old.sock\n"
      "SCONE_NETWORK_SHIELD_CLIENT_DB=unprotected\nSCONE_NETWORK_SHIELD_CLIENT_DB_DESTINATION=TCP:[::1]:5432\n"
      "SCONE_NETWORK_SHIELD_CLIENT_DB_DESTINATION_IP=10.0.0.1,::1\n"
      "SCONE_NETWORK_SHIELD_CLIENT_DB_SERVER_DNS_NAME=db.test\n"
      "SCONE_NETWORK_SHIELD_UNSUPPORTED_PROTOCOLS=refuse\n";
  Bytes seed(seed_text, seed_text + strlen(seed_text));
  NetworkRulesParser(seed.data(), seed.size());
  for (int i = 0; i < 3000; ++i) {
    Bytes input = Mutate(seed, rng);
    NetworkRulesParser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, JournalFiles) {
  std::mt19937_64 rng(4);
  Bytes seed = ValidRecord();
  for (int i = 0; i < 300; ++i) {
    Bytes input = Mutate(seed, rng);
    JournalFileParser(input.data(), input.size());
  }
}

// Runs `parser` on `count` mutations of `seed`.
void Mutations(void (*parser)(const uint8_t*, size_t), const Bytes& seed, uint64_t rng_seed, int count) {
  std::mt19937_64 rng(rng_seed);
  parser(seed.data(), seed.size());
  for (int i = 0; i < count; ++i) {
    Bytes input = Mutate(seed, rng);
    parser(input.data(), input.size());
  }
}

TEST(ParserMutationTest, LasRequestsAndReplies) {
  attest::LasRequest evidence;
  evidence.report_data[0] = 1;
  Mutations(LasRequestParser, attest::EncodeLasRequest(evidence), 10, 20000);
  attest::LasRequest counter;
  counter.kind = attest::LasRequest::kCounter;
  counter.name = "scone-cas/0011";
  counter.at_least = 7;
  Mutations(LasRequestParser, attest::EncodeLasRequest(counter), 11, 20000);
  Mutations(LasReplyParser, attest::EncodeLasReply(Bytes(80, 3)), 12, 20000);
  Mutations(LasReplyParser, attest::EncodeLasReply(PermissionDenied("refused")), 13, 20000);
}

TEST(ParserMutationTest, CasRequests) {
  cas::Request r;
  r.kind = cas::RequestKind::kReport;
  r.config_id = "shop/api";
  r.reports = {{"data", {crypto::Hash{1}, 7}}, {"logs", {crypto::Hash{2}, 9}}};
  Mutations(CasRequestParser, r.Encode(), 6, 20000);
}

TEST(ParserMutationTest, ServiceConfigs) {
  cas::ServiceConfig c;
  c.argv = {"python3", "/app/main.py", "--token", "x"};
  c.environment = {"A=1", "PATH=/usr/bin"};
  c.pwd = "/app";
  cas::VolumeGrant g;
  g.name = "data";
  g.path = "/data";
  g.key = SecretBytes(Bytes(32, 3));
  g.expected = cas::VolumeMark{crypto::Hash{5}, 11};
  c.volumes.push_back(std::move(g));
  c.injected_files.push_back({"/etc/app.conf", SecretBytes(AsBytes("password=x\n"))});
  c.network_identity = SecretBytes(AsBytes("-----BEGIN PRIVATE KEY-----"));
  c.session_ca = "-----BEGIN CERTIFICATE-----";
  SecretBytes encoded = c.Encode();
  Mutations(ServiceConfigParser, Bytes(encoded.span().begin(), encoded.span().end()), 7, 20000);
}

TEST(ParserMutationTest, Evidence) {
  attest::sim::SimPlatform platform{crypto::SigningKey::Generate()};
  attest::Report report;
  report.measurement = crypto::Hash{9};
  report.mode = "sim";
  Mutations(EvidenceParser, platform.Attest(report)->Encode(), 8, 20000);
}

TEST(ParserMutationTest, RuntimeConfigs) {
  runtime::RuntimeConfig c;
  runtime::VolumeConfig v;
  v.dir = "/data";
  v.key = SecretBytes(Bytes(32, 4));
  v.expected_tag = crypto::Hash{6};
  v.cas_name = "data";
  c.volumes.push_back(std::move(v));
  c.fds.push_back({5, "/data", "a/b", 2, 4096});
  c.injected_files.push_back({"/etc/x", SecretBytes(AsBytes("y"))});
  runtime::CasHandover h;
  h.config_id = "s/a";
  h.host = "127.0.0.1";
  h.port = 18765;
  h.key_pem = SecretBytes(AsBytes("-----BEGIN PRIVATE KEY-----"));
  h.cert_der = Bytes(40, 1);
  c.cas = std::move(h);
  runtime::ConsoleConfig console;
  console.key = SecretBytes(Bytes(32, 7));
  runtime::ConsoleStreamConfig stream;
  stream.id[0] = 1;
  stream.next_sequence = 9;
  stream.fds = {1, 10};
  console.streams.push_back(stream);
  c.console = std::move(console);
  c.network.push_back({"SCONE_NETWORK_SHIELD", SecretBytes(AsBytes("protected"))});
  c.network_defaults = runtime::NetworkDefaults{SecretBytes(AsBytes("-----BEGIN PRIVATE KEY-----")), "ca"};
  SecretBytes encoded = c.Encode();
  Mutations(RuntimeConfigParser, Bytes(encoded.span().begin(), encoded.span().end()), 9, 20000);
}

TEST(ParserMutationTest, ConsoleRecords) {
  // A parent's stream and a child's, as the runtime seals them.
  auto id = console::NewStreamId(), child = console::NewStreamId();
  auto parent_cipher = console::StreamCipher(ConsoleFuzzKey(), id);
  auto child_cipher = console::StreamCipher(ConsoleFuzzKey(), child);
  Bytes seed;
  auto add = [&](const crypto::Aes256Gcm& c, const console::StreamId& s, uint64_t n, console::RecordType t,
                 ByteSpan payload) {
    size_t at = seed.size();
    seed.resize(at + console::kOverhead + payload.size());
    console::SealRecord(c, t, s, n, payload, seed.data() + at);
  };
  add(*parent_cipher, id, 0, console::RecordType::kStart, console::StartPayload({{}, console::Channel::kStdout, {}, {}}));
  add(*parent_cipher, id, 1, console::RecordType::kData, AsBytes("hello\n"));
  add(*parent_cipher, id, 2, console::RecordType::kFork, child);
  add(*child_cipher, child, 0, console::RecordType::kStart, console::StartPayload({id, console::Channel::kStdout, {}, {}}));
  add(*child_cipher, child, 1, console::RecordType::kEnd, {});
  add(*parent_cipher, id, 3, console::RecordType::kEnd, {});
  ConsoleParser(seed.data(), seed.size());
  std::mt19937_64 rng(11);
  for (int i = 0; i < 3000; ++i) {
    Bytes input = Mutate(seed, rng);
    ConsoleParser(input.data(), input.size());
  }
}

}  // namespace
}  // namespace scone::fuzz
