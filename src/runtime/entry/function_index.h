// Where the functions of a loaded object begin and end, read from its unwind table
// (.eh_frame_hdr, which the C library and every object built with unwind tables carries).
//
// The code patcher decodes machine code from a function's first instruction: that is the one
// place where it is certain an instruction begins. Lookups are a binary search over the table
// the loader mapped; nothing is allocated, so they may run in a signal handler.
#pragma once

#include <cstdint>

namespace scone::runtime {

struct FunctionRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // one past the last byte
};

class FunctionIndex {
 public:
  FunctionIndex() = default;
  // `eh_frame_hdr`: the address of the object's PT_GNU_EH_FRAME segment. An encoding this
  // reader does not know leaves the index empty (every lookup fails).
  explicit FunctionIndex(uintptr_t eh_frame_hdr);

  bool empty() const { return count_ == 0; }
  // The function whose code contains `address`, if the table describes one.
  bool Find(uintptr_t address, FunctionRange* out) const;

 private:
  uintptr_t hdr_ = 0;
  const int32_t* table_ = nullptr;  // pairs (initial location, FDE), relative to hdr_
  uint32_t count_ = 0;
};

}  // namespace scone::runtime
