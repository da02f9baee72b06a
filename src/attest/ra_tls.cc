#include "attest/ra_tls.h"

#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/certificates.h"

namespace scone::attest {
namespace {

// A UUID-derived OID (2.25 arc, ITU-T X.667): the RA-TLS evidence extension of this project.
constexpr char kEvidenceOid[] = "2.25.174397426155313187330263937829263934210.1";
constexpr size_t kMaxEvidenceSize = 8192;

ASN1_OBJECT* EvidenceObject() {
  static ASN1_OBJECT* obj = OBJ_txt2obj(kEvidenceOid, 1);
  return obj;
}

Result<X509*> SelfSignedCertificate(EVP_PKEY* key, const std::string& common_name,
                                    const Bytes* evidence) {
  X509* cert = crypto::NewCertificate(key, common_name, 24L * 3600);
  if (cert == nullptr) return Internal("cannot make the RA-TLS certificate");
  X509_set_issuer_name(cert, X509_get_subject_name(cert));
  bool ok = true;
  if (evidence != nullptr) {
    ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
    ok = data != nullptr &&
         ASN1_OCTET_STRING_set(data, evidence->data(), static_cast<int>(evidence->size())) == 1;
    X509_EXTENSION* ext = ok ? X509_EXTENSION_create_by_OBJ(nullptr, EvidenceObject(), 0, data) : nullptr;
    ok = ext != nullptr && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(data);
  }
  if (!ok || X509_sign(cert, key, EVP_sha256()) <= 0) {
    X509_free(cert);
    return Internal("cannot issue the RA-TLS certificate");
  }
  return cert;
}

}  // namespace

ReportData BindReportData(const crypto::Hash& key_hash, const Nonce& nonce) {
  ReportData data{};
  std::copy(key_hash.begin(), key_hash.end(), data.begin());
  std::copy(nonce.begin(), nonce.end(), data.begin() + key_hash.size());
  return data;
}

struct TlsCredential::Impl {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  std::string common_name;
  crypto::Hash key_hash{};
  ~Impl() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

TlsCredential::TlsCredential(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsCredential::TlsCredential(TlsCredential&&) noexcept = default;
TlsCredential& TlsCredential::operator=(TlsCredential&&) noexcept = default;
TlsCredential::~TlsCredential() = default;

Result<TlsCredential> TlsCredential::Generate(const std::string& common_name) {
  auto impl = std::make_unique<Impl>();
  impl->common_name = common_name;
  impl->key = EVP_EC_gen("P-256");
  if (impl->key == nullptr) return Internal("TLS key generation failed");
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(impl->key, &der);
  if (len <= 0) return Internal("cannot encode the TLS public key");
  impl->key_hash = crypto::Sha256({ByteSpan(der, static_cast<size_t>(len))});
  OPENSSL_free(der);
  return TlsCredential(std::move(impl));
}

EVP_PKEY* TlsCredential::key() const { return impl_->key; }
X509* TlsCredential::certificate() const {
  // Made on first use: the runtime only ever presents the one that carries evidence.
  if (impl_->cert == nullptr) {
    auto cert = SelfSignedCertificate(impl_->key, impl_->common_name, nullptr);
    if (cert.ok()) impl_->cert = *cert;
  }
  return impl_->cert;
}
const crypto::Hash& TlsCredential::key_hash() const { return impl_->key_hash; }

Status TlsCredential::AttachEvidence(const Evidence& evidence) {
  Bytes encoded = evidence.Encode();
  SCONE_ASSIGN_OR_RETURN(X509* cert, SelfSignedCertificate(impl_->key, impl_->common_name, &encoded));
  X509_free(impl_->cert);
  impl_->cert = cert;
  return Status::Ok();
}

Result<SecretBytes> TlsCredential::ExportKey() const { return crypto::PrivateKeyPem(impl_->key); }

Bytes TlsCredential::CertificateDer() const {
  unsigned char* der = nullptr;
  int len = i2d_X509(impl_->cert, &der);
  if (len <= 0) return {};
  Bytes out(der, der + len);
  OPENSSL_free(der);
  return out;
}

Result<TlsCredential> TlsCredential::Import(const SecretBytes& key_pem, ByteSpan cert_der) {
  auto impl = std::make_unique<Impl>();
  auto key = crypto::ReadPrivateKeyPem(key_pem);
  impl->key = key.ok() ? *key : nullptr;
  const unsigned char* p = cert_der.data();
  impl->cert = d2i_X509(nullptr, &p, static_cast<long>(cert_der.size()));
  if (impl->key == nullptr || impl->cert == nullptr || X509_check_private_key(impl->cert, impl->key) != 1) {
    return InvalidArgument("handed-over TLS identity is malformed");
  }
  impl->key_hash = crypto::PublicKeyHash(impl->cert);
  return TlsCredential(std::move(impl));
}

Result<Evidence> EvidenceFromCertificate(X509* cert) {
  int at = X509_get_ext_by_OBJ(cert, EvidenceObject(), -1);
  if (at < 0) return PermissionDenied("the client certificate carries no attestation evidence");
  ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(cert, at));
  int size = ASN1_STRING_length(data);
  if (size <= 0 || static_cast<size_t>(size) > kMaxEvidenceSize) {
    return InvalidArgument("the certificate's evidence extension has a bad size");
  }
  const uint8_t* p = ASN1_STRING_get0_data(data);
  return Evidence::Decode(ByteSpan(p, static_cast<size_t>(size)));
}

}  // namespace scone::attest
