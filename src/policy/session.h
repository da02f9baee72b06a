// Sessions (policies): what CAS stores and releases to attested services. YAML following SCONE's
// session schema (version 0.3 style) where it fits. Parsing is strict: an unknown key, a wrong
// type or a dangling reference is an error naming its line and the reason, never ignored.
//
// Pure library: no I/O; CAS, images and stacks share this one model.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"

namespace scone::policy {

struct Secret {
  enum class Kind { kAscii, kBinary, kPrivateKey, kX509, kX509Ca };
  std::string name;
  Kind kind = Kind::kAscii;
  std::optional<size_t> size;           // generated secrets
  std::optional<std::string> value;     // given secrets
  std::string private_key;              // x509: the private-key secret it certifies
  std::string issuer;                   // x509: the x509-ca secret that signs it
  std::vector<std::string> dns;         // x509: subject alternative names
  std::optional<std::string> import_session;  // imported from another session...
  std::string import_secret;                  // ...under this name there
  std::vector<std::string> export_to;         // sessions allowed to import it
  int line = 0;

  // x509: the subject's common name (the first dns name, else the secret's name).
  const std::string& CommonName() const { return dns.empty() ? name : dns.front(); }
  bool IsCertificate() const { return kind == Kind::kX509 || kind == Kind::kX509Ca; }
};

struct VolumeRef {
  std::string name;
  std::string path;
};

struct InjectionFile {
  std::string path;
  std::string content;
};

struct Image {
  std::string name;
  std::vector<VolumeRef> volumes;
  std::vector<InjectionFile> injection_files;
  int line = 0;
};

struct Service {
  std::string name;
  std::vector<crypto::Hash> mrenclaves;
  std::optional<crypto::Hash> mrsigner;
  uint16_t isvprodid = 0;
  uint16_t isvsvn = 0;
  std::string command;
  std::map<std::string, std::string> environment;
  std::string pwd;
  std::string image_name;
  int line = 0;
};

struct Session {
  std::string name;
  std::string version;
  std::optional<crypto::Hash> predecessor;
  std::vector<std::string> read_access = {"CREATOR"};
  std::vector<std::string> update_access = {"CREATOR"};
  std::vector<std::string> tolerate;           // security.attestation.tolerate
  std::vector<std::string> ignore_advisories;  // security.attestation.ignore_advisories
  std::string attestation_mode;                // security.attestation.mode
  std::vector<Service> services;
  std::vector<Secret> secrets;
  std::vector<Image> images;
  std::vector<std::string> volumes;

  // Parses and validates. `text` is untrusted.
  static Result<Session> Parse(std::string_view text);
  // SHA-256 of the session text as submitted: what a successor names as its predecessor.
  static crypto::Hash HashOf(std::string_view text);

  const Secret* FindSecret(std::string_view name) const;
  // What $$SCONE::ref$$ names: a secret, or a part of an x509 secret ("NAME.crt", "NAME.key",
  // "NAME.chain"; a private key's "NAME.key"). nullopt if nothing.
  struct SecretPart {
    const Secret* secret = nullptr;
    std::string part;  // "" for the secret's value (a certificate for x509 kinds)
  };
  std::optional<SecretPart> ResolveReference(std::string_view ref) const;
  const Service* FindService(std::string_view name) const;
  const Image* FindImage(std::string_view name) const;
};

// A host name for a certificate's subject alternative names: labels of letters, digits and '-',
// a wildcard only as the whole first label. Anything else (a comma, a space, "DNS:") is refused.
bool ValidDnsName(const std::string& s);

// Replaces every $$SCONE::name$$ in `text` with the value `lookup` gives; an unknown name is an
// error naming it. `$$` not followed by `SCONE::` is kept as it is.
Result<std::string> Substitute(std::string_view text,
                               const std::function<Result<std::string>(std::string_view)>& lookup);
// The secret names `text` refers to with $$SCONE::name$$.
std::vector<std::string> ReferencedSecrets(std::string_view text);

}  // namespace scone::policy
