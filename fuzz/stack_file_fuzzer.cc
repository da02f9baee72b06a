// libFuzzer target (clang, -DSCONE_FUZZ=ON): build/fuzz/stack_file_fuzzer CORPUS_DIR
// SCONE's extended stack files and their translation.
#include "fuzz/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  scone::fuzz::StackFileParser(data, size);
  return 0;
}
