#include "runtime/entry/function_index.h"

#include <cstring>

namespace scone::runtime {
namespace {

// DWARF pointer encodings (LSB Core, "DWARF Extensions").
constexpr uint8_t kPcRelSdata4 = 0x1b;   // DW_EH_PE_pcrel | DW_EH_PE_sdata4
constexpr uint8_t kUdata4 = 0x03;        // DW_EH_PE_udata4
constexpr uint8_t kDataRelSdata4 = 0x3b;  // DW_EH_PE_datarel | DW_EH_PE_sdata4
constexpr uint8_t kSdata4 = 0x0b;         // DW_EH_PE_sdata4

int32_t Read32(uintptr_t at) {
  int32_t v;
  std::memcpy(&v, reinterpret_cast<const void*>(at), sizeof(v));
  return v;
}

uintptr_t SkipLeb128(uintptr_t at) {
  while (*reinterpret_cast<const uint8_t*>(at) & 0x80) ++at;
  return at + 1;
}

// The FDE pointer encoding its CIE names (augmentation 'R'), or 0xff if it names none we read.
uint8_t FdeEncoding(uintptr_t cie) {
  uintptr_t p = cie + 8;  // length, CIE id
  uint8_t version = *reinterpret_cast<const uint8_t*>(p++);
  const char* augmentation = reinterpret_cast<const char*>(p);
  p += std::strlen(augmentation) + 1;
  p = SkipLeb128(p);  // code alignment
  p = SkipLeb128(p);  // data alignment
  p = version == 1 ? p + 1 : SkipLeb128(p);  // return address register
  if (augmentation[0] != 'z') return 0xff;
  p = SkipLeb128(p);  // augmentation data length
  for (const char* a = augmentation + 1; *a; ++a) {
    switch (*a) {
      case 'R':
        return *reinterpret_cast<const uint8_t*>(p);
      case 'L':
        p += 1;  // LSDA encoding
        break;
      case 'P': {
        uint8_t encoding = *reinterpret_cast<const uint8_t*>(p++);
        if ((encoding & 0x0f) != 0x0b && (encoding & 0x0f) != 0x03) return 0xff;  // 4-byte only
        p += 4;
        break;
      }
      case 'S':
      case 'B':
        break;
      default:
        return 0xff;
    }
  }
  return 0xff;
}

}  // namespace

FunctionIndex::FunctionIndex(uintptr_t eh_frame_hdr) {
  const auto* h = reinterpret_cast<const uint8_t*>(eh_frame_hdr);
  if (h == nullptr || h[0] != 1 || h[1] != kPcRelSdata4 || h[2] != kUdata4 || h[3] != kDataRelSdata4) {
    return;
  }
  hdr_ = eh_frame_hdr;
  count_ = static_cast<uint32_t>(Read32(eh_frame_hdr + 8));
  table_ = reinterpret_cast<const int32_t*>(eh_frame_hdr + 12);
}

bool FunctionIndex::Find(uintptr_t address, FunctionRange* out) const {
  if (count_ == 0) return false;
  // The last entry whose initial location is <= address.
  uint32_t lo = 0, hi = count_;
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (hdr_ + static_cast<intptr_t>(table_[2 * mid]) <= address) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  uintptr_t begin = hdr_ + static_cast<intptr_t>(table_[2 * lo]);
  if (begin > address) return false;
  uintptr_t fde = hdr_ + static_cast<intptr_t>(table_[2 * lo + 1]);
  if (static_cast<uint32_t>(Read32(fde)) == 0xffffffffu) return false;  // 64-bit DWARF
  uintptr_t cie_pointer_at = fde + 4;
  uintptr_t cie = cie_pointer_at - static_cast<uint32_t>(Read32(cie_pointer_at));
  uint8_t encoding = FdeEncoding(cie);
  if ((encoding & 0x0f) != kSdata4 && (encoding & 0x0f) != kUdata4) return false;
  // pc_begin (checked against the table) and pc_range, 4 bytes each.
  uintptr_t pc_begin_at = fde + 8;
  uintptr_t pc_begin = (encoding & 0x70) == 0x10 ? pc_begin_at + static_cast<intptr_t>(Read32(pc_begin_at))
                                                 : static_cast<uintptr_t>(Read32(pc_begin_at));
  if (pc_begin != begin) return false;
  uintptr_t end = begin + static_cast<uint32_t>(Read32(fde + 12));
  if (address >= end) return false;
  out->begin = begin;
  out->end = end;
  return true;
}

}  // namespace scone::runtime
