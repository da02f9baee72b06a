#include "fuzz/parsers.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "fs/journal.h"
#include "fs/region_rules.h"
#include "fs/volume_path.h"
#include "fs/volume_state.h"
#include "attest/evidence.h"
#include "attest/las.h"
#include "cas/protocol.h"
#include "console/reader.h"
#include "policy/session.h"
#include "net/network_rules.h"
#include "runtime/config.h"
#include "stack/stack_file.h"
#include "stack/translate.h"

namespace scone::fuzz {

void JournalRecordParser(const uint8_t* data, size_t size) {
  fs::JournalRecord record;
  if (fs::JournalRecord::Decode(ByteSpan(data, size), &record)) {
    // Whatever decodes must re-encode to the same bytes.
    Bytes again = record.EncodeHead();
    again.insert(again.end(), record.slot_data.begin(), record.slot_data.end());
    if (again != Bytes(data, data + size)) abort();
  }
}

void VolumeStateParser(const uint8_t* data, size_t size) {
  ByteReader r(ByteSpan(data, size));
  fs::VolumeState state;
  if (fs::VolumeState::Decode(r, &state)) {
    for (const auto& [path, entry] : state.files) (void)fs::NormalizeVolumePath(path);
  }
}

void PathAndRuleParser(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto path = fs::NormalizeVolumePath(text);
  if (path.ok()) {
    // A normalized path never leaves the volume: no empty, "." or ".." component, no leading '/'.
    std::string p = "/" + *path + "/";
    if (p.find("//") != std::string::npos || p.find("/./") != std::string::npos ||
        p.find("/../") != std::string::npos) {
      abort();
    }
  }
  auto rule = fs::RegionRules::ParseRule(text);
  if (rule.ok()) {
    fs::RegionRules rules;
    (void)rules.Add(*rule);
    (void)rules.RegionOf(text);
  }
  (void)FromHex(text);
}

// A journal file's bytes, read back as after a crash.
void JournalFileParser(const uint8_t* data, size_t size) {
  char path[] = "/tmp/scone-fuzz-journal-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return;
  if (write(fd, data, size) != static_cast<ssize_t>(size)) {
    close(fd);
    unlink(path);
    return;
  }
  close(fd);
  static const SecretBytes key(Bytes(32, 7));
  auto journal = fs::Journal::Open(path, key.Clone(), std::array<uint8_t, 16>{});
  if (journal.ok()) (void)(*journal)->ReadFrom(1);
  unlink(path);
}

void SessionParser(const uint8_t* data, size_t size) {
  auto session = policy::Session::Parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (session.ok() && session->name.empty()) abort();  // a parsed session always has a name
}

void StackFileParser(const uint8_t* data, size_t size) {
  auto file = stack::ParseStackFile(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yml");
  if (!file.ok()) return;
  stack::Deployment d;
  d.stack = "fuzz";
  for (const stack::StackService& s : file->services) {
    if (s.secure) d.images[s.name] = {"img", {}, {"prog"}, {}, "/", {}};
    for (const stack::ConfigRef& c : s.configs) d.config_contents[c.source] = "content";
  }
  auto t = stack::Translate(*file, d);
  if (!t.ok()) return;
  for (const stack::StackSecret& secret : file->secrets) {
    if (secret.value && secret.value->size() >= 16 && t->compose_yaml.find(*secret.value) != std::string::npos) abort();
  }
}

void NetworkRulesParser(const uint8_t* data, size_t size) {
  std::vector<std::pair<std::string, std::string>> variables;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    size_t eq = line.find('=');
    if (eq != std::string_view::npos) {
      // "\\n" in a value stands for a newline (PEM values span lines).
      std::string value;
      std::string_view v = line.substr(eq + 1);
      for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\\' && i + 1 < v.size() && v[i + 1] == 'n') {
          value += '\n';
          ++i;
        } else {
          value += v[i];
        }
      }
      variables.emplace_back(std::string(line.substr(0, eq)), value);
    }
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  auto rules = net::NetworkRules::Parse(variables);
  if (!rules.ok()) return;
  for (const net::ServerRule& r : rules->servers) {
    if (r.protection == net::Protection::kProtected && !r.identity) abort();  // without CAS: required
  }
}

void CasRequestParser(const uint8_t* data, size_t size) {
  auto request = cas::Request::Decode(ByteSpan(data, size));
  if (request.ok() && request->Encode() != Bytes(data, data + size)) abort();
}

namespace {
// Secret-bearing configurations: whatever decodes encodes back to exactly the same bytes.
template <typename Config>
void SecretRoundTrip(const uint8_t* data, size_t size) {
  auto config = Config::Decode(ByteSpan(data, size));
  if (!config.ok()) return;
  SecretBytes again = config->Encode();
  if (again.size() != size || !std::equal(again.span().begin(), again.span().end(), data)) abort();
}
}  // namespace

void ServiceConfigParser(const uint8_t* data, size_t size) {
  SecretRoundTrip<cas::ServiceConfig>(data, size);
}

void EvidenceParser(const uint8_t* data, size_t size) {
  auto evidence = attest::Evidence::Decode(ByteSpan(data, size));
  if (evidence.ok() && evidence->Encode() != Bytes(data, data + size)) abort();
}

void LasRequestParser(const uint8_t* data, size_t size) {
  auto request = attest::ParseLasRequest(ByteSpan(data, size));
  if (request.ok() && attest::EncodeLasRequest(*request) != Bytes(data, data + size)) abort();
}

void LasReplyParser(const uint8_t* data, size_t size) {
  auto payload = attest::ParseLasReply(ByteSpan(data, size));
  if (payload.ok() && attest::EncodeLasReply(*payload) != Bytes(data, data + size)) abort();
}

void RuntimeConfigParser(const uint8_t* data, size_t size) {
  SecretRoundTrip<runtime::RuntimeConfig>(data, size);
}

const SecretBytes& ConsoleFuzzKey() {
  static const SecretBytes key(Bytes(crypto::kKeySize, 0x5c));
  return key;
}

void ConsoleParser(const uint8_t* data, size_t size) {
  console::Reader reader(ConsoleFuzzKey().Clone(), [](ByteSpan, int, console::Channel) { return Status::Ok(); });
  size_t half = size / 2;
  if (reader.Consume(ByteSpan(data, half)).ok() && reader.Consume(ByteSpan(data + half, size - half)).ok()) {
    (void)reader.Finish();
  }
}

}  // namespace scone::fuzz
