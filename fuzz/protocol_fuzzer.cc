// libFuzzer target (clang, -DSCONE_FUZZ=ON): build/fuzz/protocol_fuzzer CORPUS_DIR
// The attestation protocol's messages, evidence and the runtime's configuration blob.
#include "fuzz/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  scone::fuzz::CasRequestParser(data, size);
  scone::fuzz::ServiceConfigParser(data, size);
  scone::fuzz::EvidenceParser(data, size);
  scone::fuzz::RuntimeConfigParser(data, size);
  return 0;
}
