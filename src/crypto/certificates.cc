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
  if (!bio) return Internal("out of memory reading a certificate");
  Owned<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidArgument("not a PEM certificate");
  return cert;
}

// Adds `value` (an OpenSSL extension structure) as extension `nid`; frees nothing.
bool AddStructured(X509* cert, int nid, void* value, bool critical) {
  return X509_add1_ext_i2d(cert, nid, value, critical ? 1 : 0, X509V3_ADD_REPLACE) == 1;
}

bool AddBasicConstraints(X509* cert, bool is_ca) {
  BASIC_CONSTRAINTS* bc = BASIC_CONSTRAINTS_new();
  if (bc == nullptr) return false;
  bc->ca = is_ca ? 0xff : 0;
  bool ok = AddStructured(cert, NID_basic_constraints, bc, true);
  BASIC_CONSTRAINTS_free(bc);
  return ok;
}

bool AddKeyUsage(X509* cert, std::initializer_list<int> bits) {
  ASN1_BIT_STRING* usage = ASN1_BIT_STRING_new();
  if (usage == nullptr) return false;
  bool ok = true;
  for (int bit : bits) ok = ok && ASN1_BIT_STRING_set_bit(usage, bit, 1) == 1;
  ok = ok && AddStructured(cert, NID_key_usage, usage, true);
  ASN1_BIT_STRING_free(usage);
  return ok;
}

bool AddExtendedKeyUsage(X509* cert) {
  EXTENDED_KEY_USAGE* eku = sk_ASN1_OBJECT_new_null();
  if (eku == nullptr) return false;
  bool ok = sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0 &&
            sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0 &&
            AddStructured(cert, NID_ext_key_usage, eku, false);
  sk_ASN1_OBJECT_free(eku);  // the objects are static
  return ok;
}

// The SHA-1 of the certificate's public key bits (RFC 5280's method 1), as key identifiers.
bool KeyIdOf(X509* cert, ASN1_OCTET_STRING** out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  *out = nullptr;
  if (X509_pubkey_digest(cert, EVP_sha1(), md, &len) != 1) return false;
  *out = ASN1_OCTET_STRING_new();
  return *out != nullptr && ASN1_OCTET_STRING_set(*out, md, static_cast<int>(len)) == 1;
}

bool AddKeyIdentifiers(X509* cert, X509* issuer) {
  ASN1_OCTET_STRING* own = nullptr;
  bool ok = KeyIdOf(cert, &own) && AddStructured(cert, NID_subject_key_identifier, own, false);
  ASN1_OCTET_STRING_free(own);
  if (!ok || issuer == nullptr) return ok;
  AUTHORITY_KEYID* akid = AUTHORITY_KEYID_new();
  ok = akid != nullptr && KeyIdOf(issuer, &akid->keyid) &&
       AddStructured(cert, NID_authority_key_identifier, akid, false);
  AUTHORITY_KEYID_free(akid);
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
  if (size <= 0 || data == nullptr) return Internal("cannot encode a private key");
  return SecretBytes(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(data), static_cast<size_t>(size)));
}

Result<EVP_PKEY*> ReadPrivateKeyPem(const SecretBytes& pem) {
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (key == nullptr) return InvalidArgument("not a PEM private key");
  return key;
}

X509* NewCertificate(EVP_PKEY* key, const std::string& common_name, long valid_seconds) {
  Owned<X509> cert(X509_new());
  if (!cert) return nullptr;
  uint8_t serial[16];
  RandomBytes(serial);
  serial[0] &= 0x7f;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  bool ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(bn);
  // X509_NAME_add_entry_by_txt refuses a CN over 64 characters (ub-common-name): an error,
  // never a certificate without a subject.
  ok = ok && X509_set_version(cert.get(), 2) == 1 &&
       X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60) != nullptr &&
       X509_gmtime_adj(X509_getm_notAfter(cert.get()), valid_seconds) != nullptr &&
       X509_set_pubkey(cert.get(), key) == 1 &&
       X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0) == 1;
  return ok ? cert.release() : nullptr;
}

bool AddSubjectAltNames(X509* cert, const std::vector<std::string>& dns, const std::vector<std::string>& ips) {
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  if (names == nullptr) return false;
  bool ok = true;
  auto add = [&](int type, ASN1_STRING* value) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    if (name == nullptr || value == nullptr) {
      GENERAL_NAME_free(name);
      ASN1_STRING_free(value);
      return false;
    }
    GENERAL_NAME_set0_value(name, type, value);
    if (sk_GENERAL_NAME_push(names, name) <= 0) {
      GENERAL_NAME_free(name);
      return false;
    }
    return true;
  };
  // Each name is one IA5String: a ',' in it stays inside it and never starts another entry.
  for (const std::string& d : dns) {
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    if (s != nullptr && ASN1_STRING_set(s, d.data(), static_cast<int>(d.size())) != 1) {
      ASN1_IA5STRING_free(s);
      s = nullptr;
    }
    ok = ok && add(GEN_DNS, s);
  }
  for (const std::string& ip : ips) ok = ok && add(GEN_IPADD, a2i_IPADDRESS(ip.c_str()));
  ok = ok && AddStructured(cert, NID_subject_alt_name, names, false);
  GENERAL_NAMES_free(names);
  return ok;
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
  if (!cert) {
    return InvalidArgument("cannot make a certificate for '" + request.common_name +
                           "' (a common name has at most 64 characters)");
  }
  X509* signer_cert = issuer ? issuer_cert.get() : cert.get();
  bool ok = X509_set_issuer_name(cert.get(), X509_get_subject_name(signer_cert)) == 1 &&
            AddBasicConstraints(cert.get(), request.is_ca) &&
            (request.is_ca ? AddKeyUsage(cert.get(), {5, 6})  // keyCertSign, cRLSign
                           : AddKeyUsage(cert.get(), {0, 4})) &&  // digitalSignature, keyAgreement
            AddKeyIdentifiers(cert.get(), issuer ? issuer_cert.get() : nullptr) &&
            (request.is_ca || AddExtendedKeyUsage(cert.get())) &&
            ((request.dns.empty() && request.ips.empty()) || AddSubjectAltNames(cert.get(), request.dns, request.ips));
  EVP_PKEY* signing_key = issuer ? issuer_key.get() : subject_key.get();
  if (!ok || X509_sign(cert.get(), signing_key, EVP_sha256()) <= 0) {
    return Internal("cannot issue certificate for " + request.common_name);
  }
  Owned<BIO> out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_X509(out.get(), cert.get()) != 1) return Internal("cannot encode certificate");
  char* data = nullptr;
  long size = BIO_get_mem_data(out.get(), &data);
  if (size <= 0 || data == nullptr) return Internal("cannot encode certificate");
  return std::string(data, static_cast<size_t>(size));
}

}  // namespace scone::crypto
