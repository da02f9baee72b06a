#include "crypto/certificates.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "crypto/primitives.h"

namespace scone::crypto {
namespace {

struct Freer {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Freer>;

Result<Owned<EVP_PKEY>> ReadKey(const SecretBytes& pem) {
  SCONE_ASSIGN_OR_RETURN(EVP_PKEY* key, ReadPrivateKeyPem(pem));
  return Owned<EVP_PKEY>(key);
}

Result<Owned<X509>> ReadCert(const std::string& pem) {
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Owned<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidArgument("not a PEM certificate");
  return cert;
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

}  // namespace

Hash PublicKeyHash(X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (len <= 0) return Hash{};
  Hash h = Sha256({ByteSpan(der, static_cast<size_t>(len))});
  OPENSSL_free(der);
  return h;
}

Result<SecretBytes> PrivateKeyPem(EVP_PKEY* key) {
  Owned<BIO> bio(BIO_new(BIO_s_secmem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("cannot encode a private key");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return SecretBytes(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(data), static_cast<size_t>(size)));
}

Result<EVP_PKEY*> ReadPrivateKeyPem(const SecretBytes& pem) {
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (key == nullptr) return InvalidArgument("not a PEM private key");
  return key;
}

X509* NewCertificate(EVP_PKEY* key, const std::string& common_name, long valid_seconds) {
  X509* cert = X509_new();
  if (cert == nullptr) return nullptr;
  uint8_t serial[16];
  RandomBytes(serial);
  serial[0] &= 0x7f;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
  BN_free(bn);
  X509_set_version(cert, 2);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), valid_seconds);
  X509_set_pubkey(cert, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  return cert;
}

Result<SecretBytes> GeneratePrivateKeyPem() {
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return Internal("private key generation failed");
  return PrivateKeyPem(key.get());
}

Result<std::string> IssueCertificate(const SecretBytes& subject_key_pem, const CertificateRequest& request,
                                     const std::optional<Issuer>& issuer) {
  SCONE_ASSIGN_OR_RETURN(Owned<EVP_PKEY> subject_key, ReadKey(subject_key_pem));
  Owned<X509> issuer_cert;
  Owned<EVP_PKEY> issuer_key;
  if (issuer) {
    SCONE_ASSIGN_OR_RETURN(issuer_cert, ReadCert(issuer->cert_pem));
    SCONE_ASSIGN_OR_RETURN(issuer_key, ReadKey(*issuer->key_pem));
  }
  Owned<X509> cert(NewCertificate(subject_key.get(), request.common_name, 24L * 3600 * request.valid_days));
  if (!cert) return Internal("cannot make a certificate");
  X509* signer_cert = issuer ? issuer_cert.get() : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer_cert));
  bool ok = AddExtension(cert.get(), signer_cert, NID_basic_constraints,
                         request.is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
            AddExtension(cert.get(), signer_cert, NID_key_usage,
                         request.is_ca ? "critical,keyCertSign,cRLSign"
                                       : "critical,digitalSignature,keyAgreement") &&
            AddExtension(cert.get(), signer_cert, NID_subject_key_identifier, "hash");
  if (ok && issuer) ok = AddExtension(cert.get(), signer_cert, NID_authority_key_identifier, "keyid");
  if (ok && !request.is_ca) ok = AddExtension(cert.get(), signer_cert, NID_ext_key_usage, "serverAuth,clientAuth");
  if (ok && !request.dns.empty()) {
    std::string san;
    for (const std::string& d : request.dns) san += (san.empty() ? "DNS:" : ",DNS:") + d;
    ok = AddExtension(cert.get(), signer_cert, NID_subject_alt_name, san);
  }
  EVP_PKEY* signing_key = issuer ? issuer_key.get() : subject_key.get();
  if (!ok || X509_sign(cert.get(), signing_key, EVP_sha256()) <= 0) {
    return Internal("cannot issue certificate for " + request.common_name);
  }
  Owned<BIO> out(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(out.get(), cert.get()) != 1) return Internal("cannot encode certificate");
  char* data = nullptr;
  long size = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

}  // namespace scone::crypto
