// One TLS 1.3 connection of the network shield: an OpenSSL SSL object between a memory BIO
// (input) and a sink (output).
// The caller moves ciphertext between the BIOs and the kernel socket (PutCiphertext, then
// TakeCiphertext after every call), so the engine never makes a system call and never blocks:
// a blocking program's wait is the caller's, outside any lock, interruptible by its signals.
//
// A TlsContext holds what one rule configures (identity, the CA that peers must chain to) and is
// shared by every connection of that rule. TLS 1.3 only. A server acknowledges no ALPN protocol
// (the program behind it speaks what it speaks; curl falls back to HTTP/1.1) and sends no
// session tickets.
//
// Cost per call: OpenSSL's record processing (AES-GCM), one copy of the input into the read BIO,
// one of the output into a vector that TakeCiphertext hands over by swapping.
// Thread-safety: a TlsContext may be shared across threads; a TlsConnection must be used by one
// thread at a time (the caller's lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "net/network_rules.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace scone::net {

class TlsContext {
 public:
  // A server's context for `rule` (REQUIRES: rule.identity).
  static Result<std::shared_ptr<TlsContext>> ForServer(const ServerRule& rule);
  // A client's context for `rule` (its identity is optional).
  static Result<std::shared_ptr<TlsContext>> ForClient(const ClientRule& rule);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool server() const { return server_; }
  // What failures name: "server rule WEB" / "client rule DB".
  const std::string& description() const { return description_; }

 private:
  friend class TlsConnection;
  TlsContext(SSL_CTX* ctx, bool server, std::string description)
      : ctx_(ctx), server_(server), description_(std::move(description)) {}
  SSL_CTX* ctx_;
  bool server_;
  std::string description_;
};

class TlsConnection {
 public:
  // A new connection. For a client: `server_name` is checked against the server's certificate
  // (a DNS name, sent as SNI too; or an IP literal); "" checks no name.
  static Result<std::unique_ptr<TlsConnection>> Create(std::shared_ptr<TlsContext> context,
                                                       const std::string& server_name = "");
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  // The results of Handshake, Read and Write beside a count.
  static constexpr long kWantInput = -1;  // more ciphertext from the peer is needed
  static constexpr long kFailed = -2;     // the connection failed; failure() says why
  static constexpr long kClosed = 0;      // (Read) the peer closed: close_notify, or EOF after data

  // Ciphertext from the peer (what the kernel's recv returned).
  void PutCiphertext(const uint8_t* data, size_t size);
  // The peer's end of the stream (the kernel's recv returned 0).
  void PutEndOfStream();
  // Ciphertext to send to the peer, in order; call after every Handshake, Read, Write, Shutdown.
  size_t PendingCiphertext() const;
  size_t TakeCiphertext(std::vector<uint8_t>* out);

  // Advances the handshake: 1 when complete, kWantInput, or kFailed.
  long Handshake();
  bool HandshakeDone() const;
  // Plaintext into `buf` (> 0), kClosed, kWantInput, or kFailed. Drives the handshake first.
  long Read(void* buf, size_t size);
  // The same, leaving the plaintext to be read again (MSG_PEEK).
  long Peek(void* buf, size_t size);
  // Whether a Read would return data or kClosed without more input: decrypted data buffered, or
  // complete records waiting in the input. Processes waiting records to find out.
  bool Readable();
  // Plaintext a Read would return now without more input: the decrypted record's rest (at least
  // 1 while Readable with data; records behind it are not counted).
  size_t ReadableBytes();
  // Ciphertext from the peer not yet processed (records behind the current one).
  size_t BufferedInput();
  // Encrypts `size` bytes (all of them, > 0), or kWantInput (handshake not done), or kFailed.
  // With `more` (the program corked the socket, or passed MSG_MORE), what does not fill a whole
  // record is held back, counted as written, so that the next writes join it in one record: full
  // records are sealed, the rest (less than kMaxRecordPlaintext) waits for a write without
  // `more`, for Push, or for Shutdown. Without `more`, what was held and `buf` are sealed
  // together, the held plaintext leading the first record.
  long Write(const void* buf, size_t size, bool more = false);
  // Seals the plaintext held back by writes with `more` as one record: 0, or kFailed.
  long Push();
  // Plaintext held back (at most kMaxRecordPlaintext - 1 bytes between calls).
  size_t HeldPlaintext() const { return held_.size(); }
  // The most plaintext one TLS record carries (RFC 8446 5.1).
  static constexpr size_t kMaxRecordPlaintext = 16384;
  // Seals what is held back (Push), then queues close_notify (once).
  void Shutdown();
  // Whether the peer sent nothing at all before its end of stream (a port probe, a health check).
  bool PeerSentNothing() const { return received_ == 0 && end_of_stream_; }
  // Whether the peer's close_notify (or end of stream) was seen.
  bool PeerClosed() const { return peer_closed_; }
  bool Failed() const { return failed_; }
  // Why the connection failed (OpenSSL's reason, the peer's alert), for a `scone:` line.
  const std::string& failure() const { return failure_; }
  // The peer certificate's subject, once the handshake is done ("" for none).
  std::string PeerSubject() const;

 private:
  TlsConnection(std::shared_ptr<TlsContext> context, SSL* ssl) : context_(std::move(context)), ssl_(ssl) {}
  // Classifies a failed SSL call.
  long Fail(int ret, const char* during);
  // Encrypts all of `size` bytes (whole records, the last one short): size, or kFailed.
  long Seal(const uint8_t* data, size_t size);

  std::shared_ptr<TlsContext> context_;
  SSL* ssl_;
  BIO* in_ = nullptr;  // owned by ssl_
  // What OpenSSL wrote and the caller has not taken (the write BIO is a sink into it:
  // net/ciphertext_sink.h).
  std::vector<uint8_t> ciphertext_;
  // Plaintext held back by writes with `more`, to be sealed as one record with what follows.
  std::vector<uint8_t> held_;
  bool peer_closed_ = false;
  bool end_of_stream_ = false;
  uint64_t received_ = 0;
  bool failed_ = false;
  // Set by OpenSSL's info callback when the handshake completes: a later failure is named by the
  // call that failed ("read", "write"), not "handshake" (OpenSSL is "in init" again after any
  // fatal error, so its state cannot tell).
  bool handshake_completed_ = false;
  bool shutdown_sent_ = false;
  std::string failure_;
};

}  // namespace scone::net
