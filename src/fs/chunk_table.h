// The chunk table of one open protected file, in memory: the (nonce, tag) entry of every chunk
// and which chunks the durable state references. Sparse: only pages (144 chunks, as on disk)
// that hold an entry or a durable chunk are stored; every other chunk is a hole, not durable.
//
// Cost: lookups O(1) (hashed: they are on every read and write); ordered walks from a page on
// O(log pages + pages walked); adding or dropping a page O(log pages). Memory: about 4.1 KiB per
// stored page, nothing for hole pages. Not thread-safe: the owning file's lock protects it
// (const calls may run concurrently).
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>

#include "fs/format.h"

namespace scone::fs {

class ChunkTable {
 public:
  struct Page {
    std::array<ChunkEntry, kEntriesPerPage> entries{};
    std::bitset<kEntriesPerPage> durable;  // the durable state references these chunks' slots
    bool HasEntries() const;
  };
  using Pages = std::map<uint64_t, std::unique_ptr<Page>>;

  const ChunkEntry& Entry(uint64_t chunk) const;
  bool IsDurable(uint64_t chunk) const;
  const Page* Find(uint64_t page) const;

  // The entry to seal into; its page is made present. Entries stay where they are until their
  // page is dropped, so distinct entries may be sealed concurrently once taken.
  ChunkEntry& MutableEntry(uint64_t chunk);
  // Sets entry `chunk` to a hole (its page is not made present for that).
  void ClearEntry(uint64_t chunk);
  void SetDurable(uint64_t chunk, bool durable);
  // Truncation: clears the entries at or past `chunks`; durable bits stay (they change when the
  // truncation is committed, see ClearDurableFrom).
  void ClearEntriesFrom(uint64_t chunks);
  // Clears the durable bits at or past `chunks`.
  void ClearDurableFrom(uint64_t chunks);
  // Adds a page read from disk. REQUIRES: the page is absent.
  void Add(uint64_t page, std::unique_ptr<Page> content);
  void Clear();

  // Stored pages in order.
  Pages::const_iterator begin() const { return pages_.begin(); }
  Pages::const_iterator end() const { return pages_.end(); }
  Pages::const_iterator lower_bound(uint64_t page) const { return pages_.lower_bound(page); }

 private:
  // Drops the page at `it` if it holds nothing; returns the next position.
  Pages::iterator DropIfEmpty(Pages::iterator it);

  Pages pages_;
  std::unordered_map<uint64_t, Page*> index_;  // the same pages, for lookups
};

}  // namespace scone::fs
