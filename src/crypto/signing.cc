#include "crypto/signing.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdio>

#include "os/file.h"

namespace scone::crypto {

struct SigningKey::Impl {
  EVP_PKEY* pkey = nullptr;
  ~Impl() { EVP_PKEY_free(pkey); }
};

SigningKey::SigningKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

SigningKey SigningKey::Generate() {
  auto impl = std::make_unique<Impl>();
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &impl->pkey) != 1) {
    fprintf(stderr, "scone: fatal: Ed25519 key generation failed\n");
    abort();
  }
  EVP_PKEY_CTX_free(ctx);
  return SigningKey(std::move(impl));
}

Result<SigningKey> SigningKey::Load(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return IoError("open signing key " + path, errno);
  auto impl = std::make_unique<Impl>();
  impl->pkey = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  fclose(f);
  if (impl->pkey == nullptr || EVP_PKEY_get_id(impl->pkey) != EVP_PKEY_ED25519) {
    return InvalidArgument(path + " does not hold an Ed25519 private key (PEM)");
  }
  return SigningKey(std::move(impl));
}

Status SigningKey::Save(const std::string& path) const {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return IoError("create signing key " + path, errno);
  FILE* f = fdopen(fd, "w");
  bool ok = f != nullptr &&
            PEM_write_PrivateKey(f, impl_->pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (f) fclose(f); else close(fd);
  return ok ? Status::Ok() : Internal("writing " + path + " failed");
}

PublicKey SigningKey::public_key() const {
  PublicKey out{};
  size_t len = out.size();
  EVP_PKEY_get_raw_public_key(impl_->pkey, out.data(), &len);
  return out;
}

Signature SigningKey::Sign(ByteSpan message) const {
  Signature sig{};
  size_t len = sig.size();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr || EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, impl_->pkey) != 1 ||
      EVP_DigestSign(ctx, sig.data(), &len, message.data(), message.size()) != 1) {
    fprintf(stderr, "scone: fatal: Ed25519 signing failed\n");
    abort();
  }
  EVP_MD_CTX_free(ctx);
  return sig;
}

bool VerifySignature(const PublicKey& key, ByteSpan message, const Signature& signature) {
  EVP_PKEY* pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size());
  if (pkey == nullptr) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, pkey) == 1 &&
            EVP_DigestVerify(ctx, signature.data(), signature.size(), message.data(),
                             message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  return ok;
}

}  // namespace scone::crypto
