// LAS, the local attestation service (one per host): turns a runtime's request into evidence
// that CAS can verify, and gives local services the platform's sealing keys and monotonic
// counters. With the sim platform, LAS measures the requesting process itself (its executable
// and every file it maps executable, via /proc), so a process cannot claim another program's
// measurement; it then signs the report with the platform key.
//
// Evidence is only for the process that asks. Every message carries the sender's credentials
// (SCM_CREDENTIALS, checked by the kernel), and LAS refuses a message whose sender is not the
// process that connected (a forked child writing on its parent's socket). An evidence request
// also carries a descriptor on the sender's /proc/self/environ, opened before sending: the
// kernel ties it to the address space of that moment, and reading it yields nothing once the
// process has executed another program or exited. LAS reads it after measuring, so evidence
// never describes a program that replaced the one that asked (a process that sends, then
// execs the genuine program while a forked child waits for the reply). LAS also refuses a
// process that is being traced, and requesters of other users than its own, root and those
// allowed explicitly (the socket is 0600 unless other users are allowed). docs/attestation-and-
// cas.md says what this does and does not stop in `sim`.
//
// Protocol on a unix stream socket: request = u32 size | body, response likewise.
//   request body:  label | u8 kind | kind's fields
//     kEvidence:   report_data (64) | u8 has_sigstruct | [sigstruct]   (+ SCM_RIGHTS environ fd)
//     kSealingKey: label of the key
//     kCounter:    name | u64 at_least
//   response body: label | u8 ok | evidence, key, u64 value, or error message
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "attest/evidence.h"
#include "attest/sigstruct.h"
#include "attest/platform.h"

namespace scone::attest {

// Asks the LAS at `socket_path` for evidence about the calling process.
Result<Evidence> RequestEvidence(const std::string& socket_path, const ReportData& report_data,
                                 const std::optional<SigStruct>& sigstruct);

// The steps of RequestEvidence, for callers that hold the connection themselves (tests that
// play an attacker). SendEvidenceRequest sends as the calling process.
Result<int> ConnectLas(const std::string& socket_path);
Status SendEvidenceRequest(int fd, const ReportData& report_data, const std::optional<SigStruct>& sigstruct);
Result<Evidence> ReceiveEvidence(int fd);

// The platform's sealing key named `label` for the calling process's user (Platform::SealingKey).
Result<SecretBytes> RequestSealingKey(const std::string& socket_path, const std::string& label);
// Advances the calling user's counter `name` to at least `at_least`; returns its value
// (Platform::AdvanceCounter). `at_least` 0 reads it.
Result<uint64_t> RequestCounter(const std::string& socket_path, const std::string& name, uint64_t at_least);

// A request and a reply as they arrive (untrusted bytes; parsed here, fuzzed in fuzz/).
struct LasRequest {
  enum Kind { kEvidence, kSealingKey, kCounter } kind = kEvidence;
  ReportData report_data{};              // kEvidence
  std::optional<SigStruct> sigstruct;    // kEvidence
  std::string name;                      // kSealingKey: its label; kCounter: its name
  uint64_t at_least = 0;                 // kCounter
};
Bytes EncodeLasRequest(const LasRequest& request);
Result<LasRequest> ParseLasRequest(ByteSpan body);
// A reply: the payload, or the refusal's message.
Bytes EncodeLasReply(const Result<Bytes>& payload);
// The payload of an ok reply, or LAS's refusal as kPermissionDenied.
Result<Bytes> ParseLasReply(ByteSpan body);

struct LasOptions {
  // Users besides LAS's own and root whose processes may ask. Empty: the socket is 0600.
  std::vector<uid_t> allowed_uids;
  // Called once the socket accepts connections.
  std::function<void()> on_listening;
};

// Serves requests until `stop` becomes true (checked between connections). `runtime_library`
// names the runtime in measurements.
Status ServeLas(const std::string& socket_path, const Platform& platform,
                const std::string& runtime_library, const volatile bool* stop,
                const LasOptions& options = {});

}  // namespace scone::attest
