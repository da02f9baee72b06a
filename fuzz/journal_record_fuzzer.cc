// libFuzzer target (clang, -DSCONE_FUZZ=ON): build/fuzz/journal_record_fuzzer CORPUS_DIR
#include "fuzz/parsers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  scone::fuzz::JournalRecordParser(data, size);
  scone::fuzz::JournalFileParser(data, size);
  return 0;
}
