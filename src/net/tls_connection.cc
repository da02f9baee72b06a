#include "net/tls_connection.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "crypto/fork_gate.h"
#include "net/ciphertext_sink.h"

namespace scone::net {
namespace {

// The held-back plaintext buffer a connection keeps between records (a small response's).
constexpr size_t kKeptHeldCapacity = 4096;

std::string OpenSslReason() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    out = reason != nullptr ? reason : buf;
  }
  ERR_clear_error();
  return out;
}

// Loads the key and certificate chain of a PEM identity into `ctx`.
Status LoadIdentity(SSL_CTX* ctx, const Identity& identity, const std::string& what) {
  BIO* bio = BIO_new_mem_buf(identity.pem.data(), static_cast<int>(identity.pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  bio = BIO_new_mem_buf(identity.pem.data(), static_cast<int>(identity.pem.size()));
  X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  bool ok = key != nullptr && leaf != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
            SSL_CTX_use_certificate(ctx, leaf) == 1;
  while (ok) {
    X509* chain = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (chain == nullptr) break;
    if (SSL_CTX_add0_chain_cert(ctx, chain) != 1) {
      X509_free(chain);
      ok = false;
    }
  }
  BIO_free(bio);
  EVP_PKEY_free(key);
  X509_free(leaf);
  ok = ok && SSL_CTX_check_private_key(ctx) == 1;
  std::string reason = OpenSslReason();
  if (!ok) return InvalidArgument(what + ": identity does not load: " + reason);
  return Status::Ok();
}

// Trusts the CA certificates of `authority` for verifying peers; for a server, also names them in
// its CertificateRequest.
Status LoadAuthority(SSL_CTX* ctx, const Authority& authority, bool server, const std::string& what) {
  BIO* bio = BIO_new_mem_buf(authority.pem.data(), static_cast<int>(authority.pem.size()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  for (;;) {
    X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (ca == nullptr) break;
    bool ok = X509_STORE_add_cert(store, ca) == 1 && (!server || SSL_CTX_add_client_CA(ctx, ca) == 1);
    X509_free(ca);
    if (!ok) {
      BIO_free(bio);
      return InvalidArgument(what + ": CA does not load: " + OpenSslReason());
    }
    ++count;
  }
  BIO_free(bio);
  ERR_clear_error();
  if (count == 0) return InvalidArgument(what + ": no CA certificate");
  return Status::Ok();
}

// No ALPN protocol acknowledged: the program behind the shield speaks its own protocol, and a
// client offering several (curl: h2, http/1.1) falls back to its default.
int NoAlpn(SSL*, const unsigned char**, unsigned char*, const unsigned char*, unsigned int, void*) {
  return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX* NewContext(bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // A peer that closes without close_notify is an end of stream, as on a plain socket.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  if (server) {
    SSL_CTX_set_num_tickets(ctx, 0);  // no resumption: nothing to send after the handshake
    SSL_CTX_set_alpn_select_cb(ctx, NoAlpn, nullptr);
  }
  return ctx;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> TlsContext::ForServer(const ServerRule& rule) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  const std::string what = "server rule " + rule.name;
  if (!rule.identity) return InvalidArgument(what + ": no identity");
  SSL_CTX* ctx = NewContext(/*server=*/true);
  if (ctx == nullptr) return Internal(what + ": SSL_CTX_new failed: " + OpenSslReason());
  std::shared_ptr<TlsContext> out(new TlsContext(ctx, true, what));
  SCONE_RETURN_IF_ERROR(LoadIdentity(ctx, *rule.identity, what));
  if (rule.client_auth) {
    SCONE_RETURN_IF_ERROR(LoadAuthority(ctx, *rule.client_auth, true, what));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // _CLIENT_AUTH=disabled
  }
  return out;
}

Result<std::shared_ptr<TlsContext>> TlsContext::ForClient(const ClientRule& rule) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  const std::string what = "client rule " + rule.name;
  SSL_CTX* ctx = NewContext(/*server=*/false);
  if (ctx == nullptr) return Internal(what + ": SSL_CTX_new failed: " + OpenSslReason());
  std::shared_ptr<TlsContext> out(new TlsContext(ctx, false, what));
  if (rule.identity) SCONE_RETURN_IF_ERROR(LoadIdentity(ctx, *rule.identity, what));
  if (rule.server_auth) {
    SCONE_RETURN_IF_ERROR(LoadAuthority(ctx, *rule.server_auth, false, what));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // _SERVER_AUTH=disabled
  }
  return out;
}

TlsContext::~TlsContext() {
  crypto::InsideOpenSsl inside;
  SSL_CTX_free(ctx_);
}

Result<std::unique_ptr<TlsConnection>> TlsConnection::Create(std::shared_ptr<TlsContext> context,
                                                             const std::string& server_name) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  SSL* ssl = SSL_new(context->ctx_);
  if (ssl == nullptr) return Internal(context->description() + ": SSL_new failed: " + OpenSslReason());
  std::unique_ptr<TlsConnection> connection(new TlsConnection(context, ssl));  // frees ssl
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = NewCiphertextSink(&connection->ciphertext_);
  if (in == nullptr || out == nullptr) {
    BIO_free(in);
    BIO_free(out);
    return Internal(context->description() + ": BIO_new failed: " + OpenSslReason());
  }
  BIO_set_mem_eof_return(in, -1);  // empty: "retry", until PutEndOfStream
  SSL_set_bio(ssl, in, out);
  connection->in_ = in;
  if (context->server()) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (!server_name.empty()) {
      unsigned char ip[16];
      bool is_ip = inet_pton(AF_INET, server_name.c_str(), ip) == 1 || inet_pton(AF_INET6, server_name.c_str(), ip) == 1;
      bool ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name.c_str()) == 1
                      : SSL_set_tlsext_host_name(ssl, server_name.c_str()) == 1 && SSL_set1_host(ssl, server_name.c_str()) == 1;
      if (!ok) {
        return InvalidArgument(context->description() + ": server name '" + server_name + "' not usable: " + OpenSslReason());
      }
    }
  }
  // The moment the handshake completes, also inside a read that then fails: after a failure
  // OpenSSL's state is "in init" again, so a failure's name cannot be judged from it.
  SSL_set_app_data(ssl, connection.get());
  SSL_set_info_callback(ssl, [](const SSL* s, int where, int) {
    if (where & SSL_CB_HANDSHAKE_DONE) static_cast<TlsConnection*>(SSL_get_app_data(s))->handshake_completed_ = true;
  });
  return connection;
}

TlsConnection::~TlsConnection() {
  crypto::InsideOpenSsl inside;
  SSL_free(ssl_);
}

void TlsConnection::PutCiphertext(const uint8_t* data, size_t size) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (size == 0) return;
  received_ += size;
  BIO_write(in_, data, static_cast<int>(size));
}

void TlsConnection::PutEndOfStream() {
  BIO_set_mem_eof_return(in_, 0);
  end_of_stream_ = true;
}

size_t TlsConnection::PendingCiphertext() const { return ciphertext_.size(); }

size_t TlsConnection::TakeCiphertext(std::vector<uint8_t>* out) {
  const size_t n = ciphertext_.size();
  if (out->empty()) {
    out->swap(ciphertext_);  // the common case: no copy; the caller's emptied buffer is reused here
  } else {
    out->insert(out->end(), ciphertext_.begin(), ciphertext_.end());
  }
  ciphertext_.clear();
  return n;
}

long TlsConnection::Fail(int ret, const char* during) {
  int error = SSL_get_error(ssl_, ret);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return kWantInput;
  }
  if (error == SSL_ERROR_ZERO_RETURN) {
    peer_closed_ = true;
    ERR_clear_error();
    return kClosed;
  }
  failed_ = true;
  std::string reason = OpenSslReason();
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    reason = "certificate verification failed: " + std::string(X509_verify_cert_error_string(verify));
  } else if (reason.empty()) {
    reason = error == SSL_ERROR_SYSCALL ? "the peer closed the connection" : "TLS error " + std::to_string(error);
  }
  failure_ = std::string(handshake_completed_ ? during : "handshake") + ": " + reason;
  return kFailed;
}

long TlsConnection::Handshake() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (failed_) return kFailed;
  if (SSL_is_init_finished(ssl_)) return 1;
  int r = SSL_do_handshake(ssl_);
  if (r == 1) return 1;
  long f = Fail(r, "handshake");
  if (f == kClosed) {  // close_notify in the middle of a handshake
    failed_ = true;
    failure_ = "handshake: the peer closed the connection";
    return kFailed;
  }
  return f;
}

bool TlsConnection::HandshakeDone() const { return SSL_is_init_finished(ssl_) == 1; }

long TlsConnection::Read(void* buf, size_t size) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (failed_) return kFailed;
  if (size == 0) return HandshakeDone() ? 0 : Handshake() == 1 ? 0 : kWantInput;
  if (peer_closed_ && SSL_pending(ssl_) == 0 && BIO_ctrl_pending(in_) == 0) return kClosed;
  size_t done = 0;
  int r = SSL_read_ex(ssl_, buf, size, &done);
  if (r == 1) return static_cast<long>(done);
  return Fail(0, "read");
}

long TlsConnection::Peek(void* buf, size_t size) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (failed_) return kFailed;
  if (size == 0) return 0;
  if (peer_closed_ && SSL_pending(ssl_) == 0 && BIO_ctrl_pending(in_) == 0) return kClosed;
  size_t done = 0;
  if (SSL_peek_ex(ssl_, buf, size, &done) == 1) return static_cast<long>(done);
  return Fail(0, "read");
}

size_t TlsConnection::ReadableBytes() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (!Readable() || failed_) return 0;
  return static_cast<size_t>(SSL_pending(ssl_));
}

size_t TlsConnection::BufferedInput() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  return BIO_ctrl_pending(in_);
}

bool TlsConnection::Readable() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (failed_ || peer_closed_) return true;
  if (SSL_pending(ssl_) > 0) return true;
  if (BIO_ctrl_pending(in_) == 0 && !end_of_stream_) return false;
  // Records waiting: decrypt one to see whether it holds data (a handshake message may not).
  char byte;
  size_t done = 0;
  if (SSL_peek_ex(ssl_, &byte, 1, &done) == 1) return true;
  return Fail(0, "read") != kWantInput;  // the end of the stream, or a failure: a read returns at once
}

long TlsConnection::Seal(const uint8_t* data, size_t size) {
  size_t done = 0;
  while (done < size) {  // the sink takes everything: partial writes end at a record boundary
    size_t n = 0;
    if (SSL_write_ex(ssl_, data + done, size - done, &n) != 1) {
      long f = Fail(0, "write");
      return f < 0 ? f : kFailed;
    }
    done += n;
  }
  return static_cast<long>(size);
}

long TlsConnection::Write(const void* buf, size_t size, bool more) {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (failed_) return kFailed;
  if (size == 0) return 0;
  if (!HandshakeDone()) {
    // Nothing is held back before the handshake's end: OpenSSL drives it and says what it needs.
    size_t done = 0;
    if (SSL_write_ex(ssl_, buf, size, &done) == 1) return static_cast<long>(done);
    return Fail(0, "write");
  }
  const auto* in = static_cast<const uint8_t*>(buf);
  size_t left = size;
  if (!held_.empty()) {
    // The held plaintext leads the next record: filled up to a whole record from `buf`.
    const size_t part = std::min(left, kMaxRecordPlaintext - held_.size());
    held_.insert(held_.end(), in, in + part);
    in += part;
    left -= part;
    if (more && held_.size() < kMaxRecordPlaintext) return static_cast<long>(size);
    if (long r = Push(); r < 0) return r;
  }
  // With `more`, whole records leave now and the tail is held (copied once, at most a record).
  const size_t tail = more ? left % kMaxRecordPlaintext : 0;
  if (left > tail) {
    if (long r = Seal(in, left - tail); r < 0) return r;
  }
  held_.insert(held_.end(), in + (left - tail), in + left);
  return static_cast<long>(size);
}

long TlsConnection::Push() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (held_.empty()) return 0;
  if (failed_) return kFailed;
  long r = Seal(held_.data(), held_.size());
  held_.clear();
  // A connection that corks each response keeps a small buffer; a burst's record-sized one goes.
  if (held_.capacity() > kKeptHeldCapacity) std::vector<uint8_t>().swap(held_);
  return r < 0 ? r : 0;
}

void TlsConnection::Shutdown() {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  if (shutdown_sent_ || failed_ || !HandshakeDone()) return;
  (void)Push();  // what the program wrote goes before the end it marks
  shutdown_sent_ = true;
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
}

std::string TlsConnection::PeerSubject() const {
  crypto::InsideOpenSsl inside;  // fork_gate.h
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (peer == nullptr) return "";
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(peer), buf, sizeof(buf));
  return buf;
}

}  // namespace scone::net
