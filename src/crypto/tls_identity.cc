#include "crypto/tls_identity.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <functional>

#include "crypto/certificates.h"
#include "crypto/primitives.h"
#include "os/file.h"

namespace scone::crypto {
namespace {

Status WritePem(const std::string& path, mode_t mode, const std::function<int(FILE*)>& write) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return IoError("create " + path, errno);
  FILE* f = fdopen(fd, "w");
  if (f == nullptr) {
    close(fd);
    return IoError("fdopen " + path, errno);
  }
  int ok = write(f);
  bool closed = fclose(f) == 0;
  return ok == 1 && closed ? Status::Ok() : Internal("writing " + path + " failed");
}

}  // namespace

Status EnsureTlsIdentity(const TlsIdentityFiles& files, const std::string& common_name) {
  SCONE_ASSIGN_OR_RETURN(bool key_exists, os::Exists(files.key_path));
  SCONE_ASSIGN_OR_RETURN(bool cert_exists, os::Exists(files.cert_path));
  if (key_exists && cert_exists) return Status::Ok();
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = key ? NewCertificate(key, common_name, 10L * 365 * 24 * 3600) : nullptr;
  if (key == nullptr || cert == nullptr) {
    EVP_PKEY_free(key);
    X509_free(cert);
    return Internal("TLS key generation failed");
  }
  bool signed_ok = X509_set_issuer_name(cert, X509_get_subject_name(cert)) == 1 &&
                   AddSubjectAltNames(cert, {common_name, "localhost"}, {"127.0.0.1"}) &&
                   X509_sign(cert, key, EVP_sha256()) > 0;
  Status s = signed_ok ? Status::Ok() : Internal("certificate signing failed");
  if (s.ok()) {
    s = WritePem(files.key_path, 0600, [&](FILE* f) {
      return PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
  }
  if (s.ok()) s = WritePem(files.cert_path, 0644, [&](FILE* f) { return PEM_write_X509(f, cert); });
  X509_free(cert);
  EVP_PKEY_free(key);
  return s;
}

std::string PublicKeyFingerprint(const void* x509) {
  Hash h = PublicKeyHash(const_cast<X509*>(static_cast<const X509*>(x509)));
  return h == Hash{} ? "" : ToHex(h);
}

Result<std::string> PublicKeyFingerprintOfFile(const std::string& cert_path) {
  FILE* f = fopen(cert_path.c_str(), "r");
  if (f == nullptr) return IoError("open " + cert_path, errno);
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  fclose(f);
  if (cert == nullptr) return InvalidArgument(cert_path + " is not a PEM certificate");
  std::string fp = PublicKeyFingerprint(cert);
  X509_free(cert);
  return fp;
}

}  // namespace scone::crypto
