// RA-TLS: evidence inside a TLS certificate (ARCHITECTURE §4.2). The runtime makes a fresh key
// pair in memory, asks LAS for evidence whose report data is
//     SHA-256(the key's SubjectPublicKeyInfo) || CAS's nonce (32 bytes)
// and presents a self-signed certificate for that key, carrying the evidence in a private
// extension, as its TLS client certificate. The TLS handshake proves possession of the key, the
// report data ties the evidence to the key and to one nonce CAS handed out (so evidence cannot
// be replayed on another connection), and the platform's signature ties it to the code.
#pragma once

#include <memory>

#include "attest/evidence.h"
#include "common/status.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

namespace scone::attest {

using Nonce = std::array<uint8_t, 32>;

// The report data that binds evidence to a key (its SPKI hash) and a nonce.
ReportData BindReportData(const crypto::Hash& key_hash, const Nonce& nonce);

// A key pair and its self-signed certificate, held in memory only.
class TlsCredential {
 public:
  // A fresh P-256 key; until AttachEvidence, its certificate (made on first use) carries none.
  static Result<TlsCredential> Generate(const std::string& common_name);
  TlsCredential(TlsCredential&&) noexcept;
  TlsCredential& operator=(TlsCredential&&) noexcept;
  ~TlsCredential();

  EVP_PKEY* key() const;
  X509* certificate() const;
  const crypto::Hash& key_hash() const;
  // Re-issues the certificate with `evidence` in the RA-TLS extension.
  Status AttachEvidence(const Evidence& evidence);

  // For handing an attested identity to a program this one executes (in the runtime's secret
  // descriptor): the key as PEM, the certificate as DER, and back.
  Result<SecretBytes> ExportKey() const;
  Bytes CertificateDer() const;
  static Result<TlsCredential> Import(const SecretBytes& key_pem, ByteSpan cert_der);

 private:
  struct Impl;
  explicit TlsCredential(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The evidence a peer certificate carries; kPermissionDenied if it carries none.
Result<Evidence> EvidenceFromCertificate(X509* cert);

}  // namespace scone::attest
