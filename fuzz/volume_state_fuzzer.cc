// libFuzzer target (clang, -DSCONE_FUZZ=ON): build/fuzz/volume_state_fuzzer CORPUS_DIR
#include "fuzz/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  scone::fuzz::VolumeStateParser(data, size);
  scone::fuzz::PathAndRuleParser(data, size);
  scone::fuzz::SessionParser(data, size);
  return 0;
}
