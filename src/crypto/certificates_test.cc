// Certificates CAS issues: every field built with OpenSSL's structured API, so a name is always
// one name, and limits are errors, never silent.
#include "crypto/certificates.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace scone::crypto {
namespace {

X509* ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

std::vector<std::string> DnsNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_DNS) continue;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                     static_cast<size_t>(ASN1_STRING_length(n->d.dNSName)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

TEST(CertificatesTest, ACommaInADnsNameStaysInThatName) {
  SecretBytes key = GeneratePrivateKeyPem().value();
  CertificateRequest request;
  request.common_name = "api.example";
  request.dns = {"api.example,DNS:evil.example", "second.example"};
  auto pem = IssueCertificate(key, request, std::nullopt);
  ASSERT_TRUE(pem.ok()) << pem.status().message();
  X509* cert = ReadCert(*pem);
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(DnsNames(cert), (std::vector<std::string>{"api.example,DNS:evil.example", "second.example"}));
  X509_free(cert);
}

TEST(CertificatesTest, IssuedChainVerifiesWithStructuredExtensions) {
  SecretBytes ca_key = GeneratePrivateKeyPem().value();
  CertificateRequest ca_request;
  ca_request.common_name = "session-ca";
  ca_request.is_ca = true;
  std::string ca_pem = IssueCertificate(ca_key, ca_request, std::nullopt).value();
  SecretBytes key = GeneratePrivateKeyPem().value();
  CertificateRequest request;
  request.common_name = "api.example";
  request.dns = {"api.example"};
  std::string pem = IssueCertificate(key, request, Issuer{ca_pem, &ca_key}).value();
  X509* ca = ReadCert(ca_pem);
  X509* cert = ReadCert(pem);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  EXPECT_EQ(X509_verify_cert(ctx), 1) << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
  EXPECT_EQ(X509_check_ca(ca), 1);
  EXPECT_EQ(X509_check_ca(cert), 0);
  EXPECT_NE(X509_get_ext_by_NID(cert, NID_authority_key_identifier, -1), -1);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  X509_free(ca);
}

TEST(CertificatesTest, ACommonNameOverSixtyFourCharactersIsAnError) {
  SecretBytes key = GeneratePrivateKeyPem().value();
  CertificateRequest request;
  request.common_name = std::string(65, 'a');
  auto pem = IssueCertificate(key, request, std::nullopt);
  ASSERT_FALSE(pem.ok());
  EXPECT_NE(pem.status().message().find("at most 64 characters"), std::string::npos) << pem.status().message();
  request.common_name = std::string(64, 'a');
  EXPECT_TRUE(IssueCertificate(key, request, std::nullopt).ok());
}

}  // namespace
}  // namespace scone::crypto
