// The plaintext of a small file's chunks as last opened from disk, each kept under the chunk
// table entry (nonce and tag) it authenticated against. A server that serves the same small
// files over and over (nginx without `open_file_cache`, a web app's templates) read and decrypted
// each one per request; now a read of a chunk whose entry is still the kept one copies the
// plaintext.
//
// Why it is never stale: an entry pins one ciphertext (a fresh nonce at every seal, AES-GCM's
// tag over it under the file's key and the chunk's identity), so the same entry opens to the same
// plaintext. Whatever changes the chunk (a write of this process, another process's record the
// file caught up with, a truncation) changes or clears its entry first, and the kept plaintext
// no longer matches. What it does not notice is the host changing the ciphertext on disk under
// an unchanged entry: the read then returns the authentic plaintext, not EIO (the next open from
// disk, or `volume verify`, finds the damage), as for the file's chunk table, which is read once.
//
// Only files of at most kMaxChunks chunks are kept (each a fixed slot, no eviction): that is
// where serving is dominated by the per-request read, and larger files are read in runs that a
// copy would only slow down. Memory: 4 KiB for each chunk the process read of such a file it
// holds (open, or kept by runtime/recent_files.h); the plaintext is wiped when let go of.
//
// Thread-safety: all methods may be called concurrently (readers hold their file's lock shared).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>

#include "fs/format.h"

namespace scone::fs {

class CleanChunks {
 public:
  static constexpr uint64_t kMaxChunks = 4;

  CleanChunks() = default;
  ~CleanChunks();
  CleanChunks(const CleanChunks&) = delete;
  CleanChunks& operator=(const CleanChunks&) = delete;

  // Whether a file of `size` bytes is kept.
  static bool Keeps(uint64_t size) { return size <= kMaxChunks * kChunkSize; }

  // Copies `length` bytes at `from` in `chunk`'s plaintext to `out` if it is kept under `entry`.
  bool CopyOut(uint64_t chunk, const ChunkEntry& entry, size_t from, size_t length, uint8_t* out) const;
  // Keeps `plain` (kChunkSize bytes), which `entry` authenticated, as `chunk`'s (below kMaxChunks).
  void Keep(uint64_t chunk, const ChunkEntry& entry, const uint8_t* plain);

 private:
  struct Slot {
    ChunkEntry entry;
    std::array<uint8_t, kChunkSize> plain;
  };
  mutable std::mutex mu_;
  std::array<std::unique_ptr<Slot>, kMaxChunks> slots_;  // taken at a chunk's first read
};

}  // namespace scone::fs
