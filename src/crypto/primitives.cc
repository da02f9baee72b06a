#include "crypto/primitives.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include <pthread.h>
#include <sys/random.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "crypto/fork_gate.h"

namespace scone::crypto {
namespace {

const EVP_CIPHER* AesGcmCipher() {
  static const EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

const EVP_MD* Sha256Md() {
  static const EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

// Fetched once, as the cipher: a fetch takes the method store's lock (a write lock when it
// caches), which a fork can leave held in a child, and costs microseconds per call.
EVP_MAC* HmacMac() {
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

EVP_KDF* HkdfKdf() {
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  return kdf;
}

[[noreturn]] void CryptoFatal(const char* what);

std::atomic<uint64_t> next_key_id{1};
std::atomic<uint64_t> fork_generation{0};

// Per-thread cipher contexts holding the key schedule of the key used last. A context is never
// shared between threads; the cache entry is keyed by the Aes256Gcm's unique id, never reused.
// Trivially destructible, so it stays usable after the thread's destructors ran (exit() runs
// them before its own handlers); the thread's exit hook (fork_gate.cc) frees the contexts, and
// they are made again if used after that. Null when memory ran out: the call fails with ENOMEM.
// The digest and MAC contexts are kept for the same reason: a new HMAC context per call cost
// twelve allocations and a fetch of SHA-256 by name (the method store's lock), 1.4 us where a
// context set up once and given each new key takes 0.6 (a commit makes several).
struct ThreadContexts {
  EVP_CIPHER_CTX* enc;
  EVP_CIPHER_CTX* dec;
  uint64_t enc_key_id;
  uint64_t dec_key_id;
  EVP_MD_CTX* sha256;
  EVP_MAC_CTX* hmac;  // its digest set to SHA-256 once
  EVP_KDF_CTX* hkdf;  // its digest set to SHA-256 once
};
__attribute__((tls_model("initial-exec"))) thread_local ThreadContexts thread_contexts = {};

EVP_CIPHER_CTX* Context(bool encrypt) {
  EVP_CIPHER_CTX*& ctx = encrypt ? thread_contexts.enc : thread_contexts.dec;
  if (ctx == nullptr) {
    ctx = EVP_CIPHER_CTX_new();
    (encrypt ? thread_contexts.enc_key_id : thread_contexts.dec_key_id) = 0;
  }
  return ctx;
}

// Per-thread batch of random bytes for nonces and ids; invalidated in forked children.
struct RandomPool {
  static constexpr size_t kSize = 4096;
  uint8_t bytes[kSize];
  size_t next = kSize;
  uint64_t generation = UINT64_MAX;
};

void BumpForkGeneration() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

void CryptoFatal(const char* what) {
  // A failing primitive (not a failing verification) means OpenSSL itself is broken.
  char reason[256] = "no reason given";
  if (unsigned long e = ERR_peek_last_error(); e != 0) ERR_error_string_n(e, reason, sizeof(reason));
  fprintf(stderr, "scone: fatal: OpenSSL %s failed (%s)\n", what, reason);
  abort();
}

}  // namespace

void ReleaseThreadCryptoContexts() {
  EVP_CIPHER_CTX_free(thread_contexts.enc);  // frees (and cleanses) the key schedules
  EVP_CIPHER_CTX_free(thread_contexts.dec);
  EVP_MD_CTX_free(thread_contexts.sha256);
  EVP_MAC_CTX_free(thread_contexts.hmac);  // cleanses the last key's pads
  EVP_KDF_CTX_free(thread_contexts.hkdf);  // cleanses the last key
  thread_contexts = {};
}

// The kernel's generator, which seeds OpenSSL's DRBG: the DRBG's locks (its primary, which a
// thread's reseed takes) may be held by another thread when the process forks, and a forked
// child drawing from it then waited for good (a server's child writing its first file). The
// kernel's call takes no lock of this process.
void RandomBytes(MutableByteSpan out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) CryptoFatal("getrandom");
    done += static_cast<size_t>(n);
  }
}

void RegisterNonceForkHandler() {
  static const bool registered = [] { return pthread_atfork(nullptr, nullptr, BumpForkGeneration) == 0; }();
  (void)registered;
}

void NoteForkInChild() { BumpForkGeneration(); }

void FreshRandom(MutableByteSpan out) {
  if (out.size() > 64) return RandomBytes(out);
  RegisterNonceForkHandler();
  thread_local RandomPool pool;
  uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (pool.next + out.size() > RandomPool::kSize || pool.generation != generation) {
    RandomBytes(pool.bytes);
    pool.next = 0;
    pool.generation = generation;
  }
  std::memcpy(out.data(), pool.bytes + pool.next, out.size());
  OPENSSL_cleanse(pool.bytes + pool.next, out.size());
  pool.next += out.size();
}

void FreshNonce(uint8_t* out) { FreshRandom(MutableByteSpan(out, kNonceSize)); }

SecretBytes RandomKey() {
  SecretBytes key(kKeySize);
  RandomBytes(key.mutable_span());
  return key;
}

bool ConstantTimeEquals(ByteSpan a, ByteSpan b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Hash Sha256(std::initializer_list<ByteSpan> parts) {
  InsideOpenSsl inside;
  Hash out;
  EVP_MD_CTX*& ctx = thread_contexts.sha256;
  if (ctx == nullptr) ctx = EVP_MD_CTX_new();
  if (ctx == nullptr || EVP_DigestInit_ex2(ctx, Sha256Md(), nullptr) != 1) CryptoFatal("SHA-256");
  for (ByteSpan p : parts) EVP_DigestUpdate(ctx, p.data(), p.size());
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx, out.data(), &n) != 1) CryptoFatal("SHA-256");
  return out;
}

Hash HmacSha256(const SecretBytes& key, std::initializer_list<ByteSpan> parts) {
  InsideOpenSsl inside;
  Hash out;
  EVP_MAC_CTX*& ctx = thread_contexts.hmac;
  const OSSL_PARAM* params = nullptr;  // a context set up before keeps its digest
  OSSL_PARAM sha256[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  if (ctx == nullptr) {
    EVP_MAC* mac = HmacMac();
    ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    params = sha256;
  }
  // Never a null key: to a context set up before, that means "the last key again".
  static const uint8_t kEmptyKey = 0;
  const uint8_t* key_bytes = key.empty() ? &kEmptyKey : key.data();
  if (ctx == nullptr || EVP_MAC_init(ctx, key_bytes, key.size(), params) != 1) CryptoFatal("HMAC");
  for (ByteSpan p : parts) EVP_MAC_update(ctx, p.data(), p.size());
  size_t n = 0;
  if (EVP_MAC_final(ctx, out.data(), &n, out.size()) != 1) CryptoFatal("HMAC");
  return out;
}

SecretBytes Hkdf(const SecretBytes& input_key, ByteSpan salt, std::string_view info,
                 size_t out_size) {
  InsideOpenSsl inside;
  SecretBytes out(out_size);
  uint8_t empty_salt = 0;
  constexpr size_t kDigest = 3;  // the digest, then the end
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(input_key.data()),
                                        input_key.size()),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_SALT, salt.empty() ? &empty_salt : const_cast<uint8_t*>(salt.data()),
          salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  // This thread's context, its digest set once: a new one per call fetched SHA-256 by name (the
  // method store's lock). Given the key, the salt and the info anew each time; an empty salt,
  // which OpenSSL 3.0 takes as "the last one again", gets a context of its own. (OpenSSL 3.0's
  // extract still fetches HMAC and SHA-256 by name, EVP_Q_mac: HKDF stays 5 % of a `tar -x`.)
  if (salt.empty()) {
    EVP_KDF* kdf = HkdfKdf();
    EVP_KDF_CTX* ctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
    if (ctx == nullptr || EVP_KDF_derive(ctx, out.data(), out.size(), params) != 1) CryptoFatal("HKDF");
    EVP_KDF_CTX_free(ctx);
    return out;
  }
  EVP_KDF_CTX*& ctx = thread_contexts.hkdf;
  if (ctx == nullptr) {
    EVP_KDF* kdf = HkdfKdf();
    ctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
    if (ctx == nullptr || EVP_KDF_CTX_set_params(ctx, &params[kDigest]) != 1) CryptoFatal("HKDF");
  }
  params[kDigest] = OSSL_PARAM_construct_end();  // the digest stays
  if (EVP_KDF_derive(ctx, out.data(), out.size(), params) != 1) CryptoFatal("HKDF");
  return out;
}

Aes256Gcm::Aes256Gcm(SecretBytes key)
    : key_(std::move(key)), id_(next_key_id.fetch_add(1, std::memory_order_relaxed)) {
  if (key_.size() != kKeySize) CryptoFatal("AES-256-GCM key size");
}

// Wipes this thread's key schedule of the key. Other threads' contexts keep theirs until they
// next use another key or exit; they never hand it out, since ids are never reused.
Aes256Gcm::~Aes256Gcm() {
  // Not Context(): that would make contexts again after the thread's were freed.
  ThreadContexts& contexts = thread_contexts;
  if (contexts.enc != nullptr && contexts.enc_key_id == id_) {
    EVP_CIPHER_CTX_reset(contexts.enc);
    contexts.enc_key_id = 0;
  }
  if (contexts.dec != nullptr && contexts.dec_key_id == id_) {
    EVP_CIPHER_CTX_reset(contexts.dec);
    contexts.dec_key_id = 0;
  }
}

// What a primitive that cannot get memory fails with. With valid arguments (checked before),
// OpenSSL's AES-GCM calls fail only when an allocation fails (a new key makes a new provider
// context): the runtime serves the program's call with ENOMEM, and never takes it for damage.
static Status NoMemory(const char* what) {
  ERR_clear_error();
  return IoError(std::string("AES-GCM ") + what + ": no memory for a cipher context", ENOMEM);
}

// Sets up this thread's context for one message under this key: nonce, then AAD. Null when
// memory ran out.
static EVP_CIPHER_CTX* BeginMessage(bool encrypt, uint64_t key_id, const SecretBytes& key,
                                    ByteSpan nonce, std::initializer_list<ByteSpan> aad) {
  EVP_CIPHER_CTX* ctx = Context(encrypt);
  if (ctx == nullptr) return nullptr;
  uint64_t& current = encrypt ? thread_contexts.enc_key_id : thread_contexts.dec_key_id;
  bool same_key = current == key_id;  // keep the key schedule: set only the nonce
  current = 0;  // until the key is in place
  // A context that holds AES-256-GCM already is given only the new key: naming the cipher again
  // makes OpenSSL free its provider context and allocate a new one (a file's first seal or open).
  const EVP_CIPHER* cipher = EVP_CIPHER_CTX_get0_cipher(ctx) != nullptr ? nullptr : AesGcmCipher();
  if (EVP_CipherInit_ex2(ctx, same_key ? nullptr : cipher, same_key ? nullptr : key.data(),
                         nonce.data(), encrypt ? 1 : 0, nullptr) != 1) {
    return nullptr;
  }
  current = key_id;
  int n = 0;
  for (ByteSpan a : aad) {
    if (!a.empty() && EVP_CipherUpdate(ctx, nullptr, &n, a.data(), static_cast<int>(a.size())) != 1) {
      return nullptr;
    }
  }
  return ctx;
}

Status Aes256Gcm::Seal(ByteSpan nonce, std::initializer_list<ByteSpan> aad, ByteSpan plaintext,
                       uint8_t* out, uint8_t* tag) const {
  if (nonce.size() != kNonceSize) return InvalidArgument("AES-GCM nonce must be 12 bytes");
  InsideOpenSsl inside;
  EVP_CIPHER_CTX* ctx = BeginMessage(true, id_, key_, nonce, aad);
  if (ctx == nullptr) return NoMemory("seal");
  int n = 0;
  if (!plaintext.empty() &&
      EVP_CipherUpdate(ctx, out, &n, plaintext.data(), static_cast<int>(plaintext.size())) != 1) {
    return NoMemory("seal");
  }
  if (EVP_CipherFinal_ex(ctx, out + plaintext.size(), &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize, tag) != 1) {
    return NoMemory("seal");
  }
  return Status::Ok();
}

Status Aes256Gcm::Open(ByteSpan nonce, std::initializer_list<ByteSpan> aad, ByteSpan ciphertext,
                       uint8_t* out, const uint8_t* tag) const {
  if (nonce.size() != kNonceSize) return InvalidArgument("AES-GCM nonce must be 12 bytes");
  InsideOpenSsl inside;
  EVP_CIPHER_CTX* ctx = BeginMessage(false, id_, key_, nonce, aad);
  if (ctx == nullptr) return NoMemory("open");
  int n = 0;
  if (!ciphertext.empty() &&
      EVP_CipherUpdate(ctx, out, &n, ciphertext.data(), static_cast<int>(ciphertext.size())) != 1) {
    OPENSSL_cleanse(out, ciphertext.size());
    return NoMemory("open");
  }
  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize, const_cast<uint8_t*>(tag));
  if (EVP_CipherFinal_ex(ctx, out + ciphertext.size(), &n) != 1) {
    if (!ciphertext.empty()) OPENSSL_cleanse(out, ciphertext.size());
    return DataCorrupted("decryption failed");
  }
  return Status::Ok();
}

Result<bool> Authentic(const Status& opened) {
  if (opened.ok()) return true;
  if (opened.code() == Code::kDataCorrupted) return false;
  return opened;
}

size_t Base64Encode(ByteSpan bytes, char* out) {
  if (bytes.empty()) return 0;
  // EVP_EncodeBlock writes a terminating NUL: the last group goes through a small buffer.
  const size_t whole = bytes.size() / 3 * 3;
  size_t n = 0;
  if (whole > 0) {
    n = static_cast<size_t>(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out), bytes.data(), static_cast<int>(whole - 3)));
    unsigned char last[5];
    EVP_EncodeBlock(last, bytes.data() + whole - 3, 3);
    std::memcpy(out + n, last, 4);
    n += 4;
  }
  if (whole < bytes.size()) {
    unsigned char last[5];
    EVP_EncodeBlock(last, bytes.data() + whole, static_cast<int>(bytes.size() - whole));
    std::memcpy(out + n, last, 4);
    n += 4;
  }
  return n;
}

long Base64Decode(std::string_view text, uint8_t* out) {
  if (text.size() % 4 != 0) return -1;
  if (text.empty()) return 0;
  int n = EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return -1;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = text.back() == '=' ? (text[text.size() - 2] == '=' ? 2 : 1) : 0;
  return n - static_cast<long>(pad);
}

}  // namespace scone::crypto
