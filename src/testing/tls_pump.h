// For tests: two net::TlsConnection endpoints talking through memory, with no socket.
#pragma once

#include <cstdint>
#include <vector>

#include "net/tls_connection.h"

namespace scone::testing {

// Moves ciphertext between the two until neither has anything to send.
inline void PumpTls(net::TlsConnection& a, net::TlsConnection& b) {
  for (int i = 0; i < 20; ++i) {
    (void)a.Handshake();
    (void)b.Handshake();
    std::vector<uint8_t> ab, ba;
    a.TakeCiphertext(&ab);
    b.TakeCiphertext(&ba);
    if (ab.empty() && ba.empty()) return;
    b.PutCiphertext(ab.data(), ab.size());
    a.PutCiphertext(ba.data(), ba.size());
  }
}

}  // namespace scone::testing
