// The client side of CAS's attestation port (cas/protocol.h): one request per TLS 1.3
// connection, presenting `credential` as the client certificate, talking only to the server
// whose public key hashes to `cas_key_hash` (CAS is pinned, not CA-issued).
#pragma once

#include <string>

#include "attest/ra_tls.h"
#include "cas/protocol.h"

namespace scone::cas {

struct AttestationEndpoint {
  std::string host;
  int port = 0;
  crypto::Hash cas_key_hash{};
};

// A fresh nonce from CAS (asked for in the clear; see cas/protocol.h).
Result<attest::Nonce> FetchNonce(const AttestationEndpoint& cas);

// Sends `request`; returns the payload of CAS's ok reply, or its reason as an error.
Result<Bytes> Exchange(const AttestationEndpoint& cas, const attest::TlsCredential& credential,
                       const Request& request);

}  // namespace scone::cas
