// The on-disk format of protected files: constants and layout arithmetic, nothing else.
//
// A protected file is a sequence of 4 KiB plaintext chunks. Each chunk is sealed on its own with
// AES-256-GCM under the file's key, with a fresh random nonce per write; the AAD binds the file's
// identity and the chunk's index, so a chunk moved to another position or another file fails
// to decrypt. The (nonce, tag) pairs of 144 consecutive chunks form one 4 KiB metadata page; the
// hashes of all pages form a sparse Merkle tree (merkle_tree.h) whose root, with the plaintext
// size, is the file's root (kept in the volume state, never only in the file).
//
// encrypted file:      [page 0][144 slots][page 1][144 slots]...   (one file)
// authenticated file:  the plaintext itself, byte for byte (the kernel can map it), and its
//                      pages in a side file `.scone/meta/<file id>`.
//
// A page starts with 64 reserved bytes, then its entries. Page 0 of an encrypted file holds the
// file's header there (an empty file is only its header); every other page holds zeros. Slots
// and pages are thus aligned to 4 KiB: a chunk is one page of the kernel's page cache, not two.
//
// A page entry of all zeros is a hole: the chunk reads as zeros and has no slot content. A page
// of all zeros (on disk: also a page inside a hole of the file) is a hole page; its Merkle leaf
// is a constant, so files are sparse on disk and in memory.
//
// Format 3 (this one) defines hole pages and the sparse tree; format 2 hashed every page with its
// index under a tree of a different shape, so its roots do not verify here and it is refused.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "crypto/primitives.h"

namespace scone::fs {

inline constexpr uint32_t kFormatVersion = 3;
// Largest plaintext size of a protected file: ext4's file size limit. The data file of an
// encrypted file is larger (one page per 144 chunks), so on ext4 the real ceiling is a little
// lower (the host refuses the data file first; that is EFBIG too).
inline constexpr uint64_t kMaxFileSize = uint64_t{16} << 40;
inline constexpr size_t kChunkSize = 4096;
inline constexpr size_t kPageSize = 4096;
inline constexpr size_t kEntrySize = crypto::kNonceSize + crypto::kTagSize;  // 28
inline constexpr size_t kPageReserved = 64;  // the file header in page 0, zeros elsewhere
inline constexpr size_t kEntriesPerPage = (kPageSize - kPageReserved) / kEntrySize;  // 144
inline constexpr size_t kFileIdSize = 16;
inline constexpr size_t kHeaderSize = kPageReserved;
inline constexpr char kFileMagic[8] = {'S', 'C', 'O', 'N', 'E', 'P', 'F', '1'};
// Name of the volume's own directory; hidden from programs and never a protected path.
inline constexpr char kMetaDirName[] = ".scone";

enum class Region : uint8_t { kEncrypted = 1, kAuthenticated = 2, kNotProtected = 3 };
const char* RegionName(Region r);

using FileId = std::array<uint8_t, kFileIdSize>;
// File ids are random (and come only from authenticated records): their first bytes are a
// hash. The volume's tables by id are hash tables: a tree of 8,000 ids cost a tar -x a dozen
// cache misses a lookup, several lookups a file.
struct FileIdHash {
  size_t operator()(const FileId& id) const noexcept {
    size_t h;
    std::memcpy(&h, id.data(), sizeof(h));
    return h;
  }
};
using FileIdSet = std::unordered_set<FileId, FileIdHash>;
template <typename Value>
using FileIdMap = std::unordered_map<FileId, Value, FileIdHash>;
using Root = std::array<uint8_t, crypto::kHashSize>;

struct ChunkEntry {
  std::array<uint8_t, crypto::kNonceSize> nonce{};
  std::array<uint8_t, crypto::kTagSize> tag{};
  bool IsHole() const;
  bool operator==(const ChunkEntry&) const = default;
};

// Where chunk `chunk`'s entry lies in its page.
inline size_t EntryOffsetInPage(uint64_t chunk) {
  return kPageReserved + (chunk % kEntriesPerPage) * kEntrySize;
}

inline uint64_t ChunkCount(uint64_t size) { return (size + kChunkSize - 1) / kChunkSize; }
inline uint64_t PageCount(uint64_t chunks) {
  return (chunks + kEntriesPerPage - 1) / kEntriesPerPage;
}

// Where chunks and pages live for one region kind.
class Layout {
 public:
  explicit Layout(Region region) : interleaved_(region == Region::kEncrypted) {}

  // Offset of chunk i's slot in the data file.
  uint64_t SlotOffset(uint64_t chunk) const {
    if (!interleaved_) return chunk * kChunkSize;
    uint64_t group = chunk / kEntriesPerPage;
    uint64_t slot = chunk % kEntriesPerPage;
    return group * kGroupSize + kPageSize + slot * kChunkSize;
  }
  // Offset of page p in the file that holds pages (the data file if interleaved, else the side
  // file).
  uint64_t PageOffset(uint64_t page) const {
    return interleaved_ ? page * kGroupSize : page * kPageSize;
  }
  // The first page that ends after `offset` in the file that holds pages.
  uint64_t PageAtOrAfter(uint64_t offset) const {
    if (!interleaved_) return offset / kPageSize;
    return offset / kGroupSize + (offset % kGroupSize < kPageSize ? 0 : 1);
  }
  // Length of the data file for a plaintext of `size` bytes.
  uint64_t DataFileSize(uint64_t size) const {
    if (!interleaved_) return size;
    uint64_t chunks = ChunkCount(size);
    return chunks == 0 ? kHeaderSize : SlotOffset(chunks - 1) + kChunkSize;
  }
  // Length of the side file (0 when pages are interleaved).
  uint64_t SideFileSize(uint64_t size) const {
    return interleaved_ ? 0 : PageCount(ChunkCount(size)) * kPageSize;
  }
  bool interleaved() const { return interleaved_; }

 private:
  static constexpr uint64_t kGroupSize = kPageSize + kEntriesPerPage * kChunkSize;
  bool interleaved_;
};

}  // namespace scone::fs
