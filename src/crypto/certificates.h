// X.509 material CAS generates for sessions: EC P-256 private keys and certificates, either
// self-signed (a session's CA) or issued by such a CA, as PEM. Private keys are returned as
// SecretBytes and never written anywhere by this code.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"
#include "crypto/secret.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

namespace scone::crypto {

// A new X.509 v3 certificate for `key`: a random serial, valid from a minute ago for
// `valid_seconds`, subject CN `common_name`. The caller sets the issuer, adds extensions and
// signs it. nullptr if OpenSSL fails or `common_name` is longer than 64 characters.
X509* NewCertificate(EVP_PKEY* key, const std::string& common_name, long valid_seconds);

// Adds a subject alternative name extension with `dns` names and `ips` (textual IPv4/IPv6),
// each built as its own GeneralName (never parsed from a configuration string). False if
// OpenSSL fails or an IP address does not parse.
bool AddSubjectAltNames(X509* cert, const std::vector<std::string>& dns, const std::vector<std::string>& ips);

// SHA-256 of a certificate's DER SubjectPublicKeyInfo: the identity of its key (all zero if
// OpenSSL cannot encode it).
Hash PublicKeyHash(X509* cert);

// A private key as PEM (PKCS#8) in secret memory, and back (the caller frees the key).
Result<SecretBytes> PrivateKeyPem(EVP_PKEY* key);
Result<EVP_PKEY*> ReadPrivateKeyPem(const SecretBytes& pem);

// A new P-256 private key, PEM (PKCS#8).
Result<SecretBytes> GeneratePrivateKeyPem();

struct CertificateRequest {
  std::string common_name;
  std::vector<std::string> dns;  // subject alternative names
  std::vector<std::string> ips;  // subject alternative names: IPv4/IPv6 addresses, as text
  bool is_ca = false;
  int valid_days = 365;
};

struct Issuer {
  std::string cert_pem;
  const SecretBytes* key_pem = nullptr;
};

// Certifies the public half of `subject_key_pem`; signed by `issuer`, or self-signed without one.
Result<std::string> IssueCertificate(const SecretBytes& subject_key_pem, const CertificateRequest& request,
                                     const std::optional<Issuer>& issuer);

}  // namespace scone::crypto
