// The write side of a TlsConnection: an OpenSSL BIO whose writes append to a std::vector the
// connection owns, so that its ciphertext reaches the caller by a swap of vectors instead of
// through a memory BIO (which zero-fills as it grows, copies once more on BIO_read, and moves
// what is left to the front on the next write: three passes over every byte sent).
#pragma once

#include <cstdint>
#include <vector>

typedef struct bio_st BIO;

namespace scone::net {

// A new sink appending to `*into` (which must outlive it), or nullptr if OpenSSL fails.
BIO* NewCiphertextSink(std::vector<uint8_t>* into);

}  // namespace scone::net
