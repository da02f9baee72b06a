// CAS's attestation port: the protocol between the runtime in a service and CAS (SCONE's CAS has
// a port of its own for enclaves, apart from the REST API people use). One request per
// connection.
//
// A nonce is asked for in the clear: the connection starts with kNonceRequest and CAS answers
// with 32 random bytes, good for one attestation within a minute. A nonce is no secret (it ends
// up in the evidence) and needs no authenticity: one that did not come from CAS is refused when
// it comes back, so a TLS handshake would buy nothing here.
//
// Everything else is TLS 1.3 (a connection starting with a TLS record); each message is a frame:
// u32 size (little-endian) | body, bodies encoded with ByteWriter:
//   kConfig   config id "session/service", from a client certificate that carries evidence
//             bound to its key and a nonce (attest/ra_tls.h)  -> the ServiceConfig
//   kReport   config id + the volumes' new states, from a key that attested for that config
//             id  -> ok
// Replies: u8 ok | payload, or u8 0 | reason (for people; never a secret).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "attest/ra_tls.h"
#include "common/bytes.h"
#include "crypto/secret.h"
#include "fs/volume_state.h"

typedef struct ssl_st SSL;

namespace scone::cas {

inline constexpr size_t kMaxFrame = 1 << 20;
inline constexpr int kDefaultAttestationPort = 18765;  // SCONE's enclave port

inline constexpr char kNonceRequest[] = "scone-nonce-v1\n";  // without the terminating NUL
inline constexpr size_t kNonceRequestSize = sizeof(kNonceRequest) - 1;

enum class RequestKind : uint8_t { kConfig = 2, kReport = 3 };

// A volume's state as a service last reported it: its tag and its commit sequence number, which
// only grows. CAS refuses an older sequence (a rolled-back copy) or the same sequence with
// another tag (a replaced volume); a newer sequence is a crash after a commit not yet reported.
struct VolumeMark {
  fs::VolumeTag tag{};
  uint64_t generation = 0;
};

struct VolumeGrant {
  std::string name;
  std::string path;  // where the service sees it
  SecretBytes key;
  std::optional<VolumeMark> expected;  // none: never used, may be created
};

struct InjectedFile {
  std::string path;
  SecretBytes content;
};

// What CAS releases to an attested service. Its text is wiped when it is destroyed.
struct ServiceConfig {
  ServiceConfig() = default;
  ServiceConfig(ServiceConfig&&) = default;
  ServiceConfig& operator=(ServiceConfig&&) = default;
  ~ServiceConfig();

  std::vector<std::string> argv;
  std::vector<std::string> environment;  // NAME=value
  std::string pwd;
  std::vector<VolumeGrant> volumes;
  std::vector<InjectedFile> injected_files;
  // For the network shield (cas/network_identity.h): the service's key and certificate (PEM),
  // and the session CA's certificate; both empty for a service that does not use the shield.
  SecretBytes network_identity;
  std::string session_ca;
  // The console shield's key for this service (SCONE_CONSOLE_SHIELD=protected in its
  // environment; docs/console-shield.md); empty: the console is the program's.
  SecretBytes console_key;

  SecretBytes Encode() const;
  static Result<ServiceConfig> Decode(ByteSpan bytes);
};

struct VolumeReport {
  std::string name;
  VolumeMark mark;
};

struct Request {
  RequestKind kind = RequestKind::kConfig;
  std::string config_id;
  std::vector<VolumeReport> reports;

  Bytes Encode() const;
  static Result<Request> Decode(ByteSpan bytes);
};

// Frames over a TLS connection.
Status SendFrame(SSL* ssl, ByteSpan body);
Result<Bytes> ReceiveFrame(SSL* ssl, size_t max_size);

// Replies.
Bytes OkReply(ByteSpan payload);
Bytes ErrorReply(const std::string& reason);
// The payload of an ok reply, or the reason as a kPermissionDenied status.
Result<Bytes> ParseReply(ByteSpan reply);

// A config id (SCONE_CONFIG_ID, --config-id) "SESSION/SERVICE" -> its parts; an error names what
// is wrong. Checked where it is given too, before any attestation.
Status SplitConfigId(const std::string& id, std::string* session, std::string* service);

}  // namespace scone::cas
