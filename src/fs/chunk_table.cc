#include "fs/chunk_table.h"

#include <algorithm>

namespace scone::fs {
namespace {

const ChunkEntry kHoleEntry{};

}  // namespace

bool ChunkTable::Page::HasEntries() const {
  return std::any_of(entries.begin(), entries.end(), [](const ChunkEntry& e) { return !e.IsHole(); });
}

const ChunkTable::Page* ChunkTable::Find(uint64_t page) const {
  auto it = index_.find(page);
  return it == index_.end() ? nullptr : it->second;
}

const ChunkEntry& ChunkTable::Entry(uint64_t chunk) const {
  const Page* page = Find(chunk / kEntriesPerPage);
  return page == nullptr ? kHoleEntry : page->entries[chunk % kEntriesPerPage];
}

bool ChunkTable::IsDurable(uint64_t chunk) const {
  const Page* page = Find(chunk / kEntriesPerPage);
  return page != nullptr && page->durable.test(chunk % kEntriesPerPage);
}

ChunkEntry& ChunkTable::MutableEntry(uint64_t chunk) {
  auto [it, added] = index_.try_emplace(chunk / kEntriesPerPage, nullptr);
  if (added) {
    auto page = std::make_unique<Page>();
    it->second = page.get();
    pages_.emplace(chunk / kEntriesPerPage, std::move(page));
  }
  return it->second->entries[chunk % kEntriesPerPage];
}

void ChunkTable::ClearEntry(uint64_t chunk) {
  auto it = pages_.find(chunk / kEntriesPerPage);
  if (it == pages_.end()) return;
  it->second->entries[chunk % kEntriesPerPage] = ChunkEntry{};
  DropIfEmpty(it);
}

void ChunkTable::SetDurable(uint64_t chunk, bool durable) {
  if (durable) {
    MutableEntry(chunk);  // makes the page present
    index_.at(chunk / kEntriesPerPage)->durable.set(chunk % kEntriesPerPage);
    return;
  }
  auto it = pages_.find(chunk / kEntriesPerPage);
  if (it == pages_.end()) return;
  it->second->durable.reset(chunk % kEntriesPerPage);
  DropIfEmpty(it);
}

void ChunkTable::ClearEntriesFrom(uint64_t chunks) {
  auto it = pages_.lower_bound(chunks / kEntriesPerPage);
  if (it != pages_.end() && it->first == chunks / kEntriesPerPage) {
    auto& entries = it->second->entries;
    std::fill(entries.begin() + chunks % kEntriesPerPage, entries.end(), ChunkEntry{});
    it = DropIfEmpty(it);
  }
  while (it != pages_.end()) {
    it->second->entries.fill(ChunkEntry{});
    it = DropIfEmpty(it);
  }
}

void ChunkTable::ClearDurableFrom(uint64_t chunks) {
  auto it = pages_.lower_bound(chunks / kEntriesPerPage);
  if (it != pages_.end() && it->first == chunks / kEntriesPerPage) {
    for (size_t i = chunks % kEntriesPerPage; i < kEntriesPerPage; ++i) it->second->durable.reset(i);
    it = DropIfEmpty(it);
  }
  while (it != pages_.end()) {
    it->second->durable.reset();
    it = DropIfEmpty(it);
  }
}

void ChunkTable::Add(uint64_t page, std::unique_ptr<Page> content) {
  index_[page] = content.get();
  pages_[page] = std::move(content);
}

void ChunkTable::Clear() {
  pages_.clear();
  index_.clear();
}

ChunkTable::Pages::iterator ChunkTable::DropIfEmpty(Pages::iterator it) {
  if (it->second->durable.any() || it->second->HasEntries()) return std::next(it);
  index_.erase(it->first);
  return pages_.erase(it);
}

}  // namespace scone::fs
