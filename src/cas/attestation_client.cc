#include "cas/attestation_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto/certificates.h"

namespace scone::cas {
namespace {

constexpr int kTimeoutSeconds = 30;

// The certificate is checked by its key after the handshake: CAS is pinned, not CA-issued.
int AcceptForPinning(int, X509_STORE_CTX*) { return 1; }

Result<int> ConnectTcp(const std::string& host, int port) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) return NotFound("CAS host " + host + ": " + gai_strerror(rc));
  int last_errno = ECONNREFUSED;
  for (addrinfo* a = found; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    struct timeval tv = {kTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      freeaddrinfo(found);
      return fd;
    }
    last_errno = errno;
    close(fd);
  }
  freeaddrinfo(found);
  return IoError("connect to CAS at " + host + ":" + std::to_string(port), last_errno);
}

// One context for every exchange (making one is costly in OpenSSL 3); each connection sets its
// own certificate and key.
SSL_CTX* ClientContext() {
  static SSL_CTX* ctx = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_client_method());
    if (c != nullptr) {
      SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
      SSL_CTX_set_verify(c, SSL_VERIFY_PEER, AcceptForPinning);
    }
    return c;
  }();
  return ctx;
}

std::string TlsError() {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown TLS error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

}  // namespace

Result<attest::Nonce> FetchNonce(const AttestationEndpoint& cas) {
  SCONE_ASSIGN_OR_RETURN(int fd, ConnectTcp(cas.host, cas.port));
  attest::Nonce nonce;
  size_t got = 0;
  Status status = Status::Ok();
  if (send(fd, kNonceRequest, kNonceRequestSize, MSG_NOSIGNAL) != static_cast<ssize_t>(kNonceRequestSize)) {
    status = IoError("nonce request to CAS at " + cas.host, errno);
  }
  while (status.ok() && got < nonce.size()) {
    ssize_t n = recv(fd, nonce.data() + got, nonce.size() - got, 0);
    if (n <= 0) status = IoError("nonce from CAS at " + cas.host + " (truncated)", n < 0 ? errno : ECONNRESET);
    else got += static_cast<size_t>(n);
  }
  close(fd);
  if (!status.ok()) return status;
  return nonce;
}

Result<Bytes> Exchange(const AttestationEndpoint& s, const attest::TlsCredential& credential, const Request& request) {
  SSL_CTX* ctx = ClientContext();
  if (ctx == nullptr) return Internal("SSL_CTX_new failed");
  Result<Bytes> result = Internal("unreachable");
  auto fd = ConnectTcp(s.host, s.port);
  SSL* ssl = nullptr;
  if (!fd.ok()) {
    result = fd.status();
  } else if ((ssl = SSL_new(ctx)) == nullptr || SSL_use_certificate(ssl, credential.certificate()) != 1 ||
             SSL_use_PrivateKey(ssl, credential.key()) != 1 || SSL_set_fd(ssl, *fd) != 1) {
    result = Internal("TLS set-up failed: " + TlsError());
  } else if (SSL_connect(ssl) != 1) {
    result = PermissionDenied("TLS handshake with CAS at " + s.host + " failed: " + TlsError());
  } else {
    X509* peer = SSL_get0_peer_certificate(ssl);
    if (peer == nullptr || crypto::PublicKeyHash(peer) != s.cas_key_hash) {
      result = PermissionDenied("the server at " + s.host + ":" + std::to_string(s.port) +
                                " is not the CAS whose key the client pins");
    } else if (Status sent = SendFrame(ssl, request.Encode()); !sent.ok()) {
      result = sent;
    } else if (auto reply = ReceiveFrame(ssl, kMaxFrame); !reply.ok()) {
      result = reply.status().Annotate("CAS at " + s.host);
    } else {
      result = ParseReply(*reply);
      Wipe(*reply);
    }
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  if (fd.ok()) close(*fd);
  return result;
}

}  // namespace scone::cas
