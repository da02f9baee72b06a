// TLS identities: an EC P-256 key and a self-signed X.509 certificate, as PEM files (the key
// 0600). CAS uses one for its server; clients use one to identify themselves (the CREATOR of a
// session is the client certificate that created it). An identity is named by the SHA-256 of
// its certificate's public key (SubjectPublicKeyInfo, DER), which survives re-issued
// certificates for the same key.
#pragma once

#include <string>

#include "common/status.h"

namespace scone::crypto {

struct TlsIdentityFiles {
  std::string key_path;
  std::string cert_path;
};

// Creates key and certificate (CN = `common_name`, SAN DNS/IP for servers) if they do not exist.
Status EnsureTlsIdentity(const TlsIdentityFiles& files, const std::string& common_name);

// Hex SHA-256 of the DER public key of a certificate (a PEM file or an X509*).
Result<std::string> PublicKeyFingerprintOfFile(const std::string& cert_path);
std::string PublicKeyFingerprint(const void* x509);

}  // namespace scone::crypto
