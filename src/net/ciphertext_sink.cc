#include "net/ciphertext_sink.h"

#include <openssl/bio.h>

namespace scone::net {
namespace {

int SinkWrite(BIO* bio, const char* data, size_t size, size_t* written) {
  auto* into = static_cast<std::vector<uint8_t>*>(BIO_get_data(bio));
  const auto* bytes = reinterpret_cast<const uint8_t*>(data);
  into->insert(into->end(), bytes, bytes + size);
  *written = size;
  return 1;
}

long SinkControl(BIO* bio, int command, long, void*) {
  switch (command) {
    case BIO_CTRL_FLUSH:  // OpenSSL flushes after each handshake flight: nothing is held back
      return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<std::vector<uint8_t>*>(BIO_get_data(bio))->size());
    default:  // no kTLS, no datagrams, no reads
      return 0;
  }
}

const BIO_METHOD* SinkMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "scone ciphertext sink");
    if (m != nullptr && (BIO_meth_set_write_ex(m, SinkWrite) != 1 || BIO_meth_set_ctrl(m, SinkControl) != 1)) {
      BIO_meth_free(m);
      m = nullptr;
    }
    return m;
  }();
  return method;
}

}  // namespace

BIO* NewCiphertextSink(std::vector<uint8_t>* into) {
  const BIO_METHOD* method = SinkMethod();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) return nullptr;
  BIO_set_data(bio, into);
  BIO_set_init(bio, 1);
  return bio;
}

}  // namespace scone::net
