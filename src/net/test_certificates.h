// Test PEM material for the network shield's tests: a CA and certificates it issues, made with
// the crypto module (P-256, fresh for each call).
#pragma once

#include <string>

#include "crypto/certificates.h"

namespace scone::net::testing {

struct TestCa {
  SecretBytes key;
  std::string cert;
};

inline TestCa MakeCa(const std::string& name) {
  TestCa ca{crypto::GeneratePrivateKeyPem().value(), ""};
  crypto::CertificateRequest request;
  request.common_name = name;
  request.is_ca = true;
  ca.cert = crypto::IssueCertificate(ca.key, request, std::nullopt).value();
  return ca;
}

// Private key + certificate issued by `ca` for `dns_name`, as one PEM text (an _IDENTITY value).
inline std::string MakeIdentity(const TestCa& ca, const std::string& dns_name) {
  SecretBytes key = crypto::GeneratePrivateKeyPem().value();
  crypto::CertificateRequest request;
  request.common_name = dns_name;
  request.dns = {dns_name};
  std::string cert = crypto::IssueCertificate(key, request, crypto::Issuer{ca.cert, &ca.key}).value();
  return std::string(reinterpret_cast<const char*>(key.data()), key.size()) + cert;
}

}  // namespace scone::net::testing
