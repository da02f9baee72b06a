#include "fs/protected_file.h"

#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <utility>
#include <cstdio>
#include <cstring>

#include "common/parallel.h"
#include "common/thread_exit_hook.h"
#include "fs/data_ranges.h"
#include "fs/space_reserve.h"
#include "fs/volume.h"
#include "os/syscalls.h"

namespace scone::fs {
namespace {

constexpr char kRootLabel[] = "scone-file-root-v1";
constexpr uint8_t kLeafPrefix = 0x00;
// Dirty chunks kept in memory before sealing is forced: 4 MiB per file.
constexpr size_t kMaxCachedChunks = 1024;
constexpr size_t kRecentChunks = 4;  // see recent_
// Chunks read or written with one system call for large requests.
constexpr size_t kReadBatchChunks = 256;
// Commits of at most this many buffered chunks journal them all (see BuildRecord).
constexpr size_t kSmallCommitChunks = 16;
// Requests of at least this many chunks have their crypto split over two cores.
constexpr size_t kParallelChunks = 32;
// Chunks sealed per block when sealing and writing overlap (see ParallelPipeline).
constexpr size_t kPipelineChunks = 32;
// Chunks read per block when reading overlaps opening (see ParallelAfterInOrder).
constexpr size_t kReadPipelineChunks = 16;
// Chunks sealed between commits before one is forced: keeps a commit's record (36 bytes per
// entry) far below the journal's record limit however much is written without an fsync.
constexpr size_t kMaxChangedEntries = size_t{1} << 20;
// Data files up to this length are not probed for room (see EnsureRoomFor).
constexpr uint64_t kUnprobedSize = uint64_t{1} << 20;

const ChunkEntry kHoleEntry{};

struct ChunkAad {
  uint8_t bytes[kFileIdSize + 8];
  ChunkAad(const FileId& id, uint64_t chunk) {
    std::memcpy(bytes, id.data(), kFileIdSize);
    for (int i = 0; i < 8; ++i) bytes[kFileIdSize + i] = static_cast<uint8_t>(chunk >> (8 * i));
  }
  ByteSpan span() const { return {bytes, sizeof(bytes)}; }
};

crypto::Hash LeafHash(uint64_t page, ByteSpan image) {
  uint8_t prefix[9] = {kLeafPrefix};
  for (int i = 0; i < 8; ++i) prefix[1 + i] = static_cast<uint8_t>(page >> (8 * i));
  return crypto::Sha256({ByteSpan(prefix, sizeof(prefix)), image});
}

bool IsAllZero(ByteSpan bytes) {
  return bytes.empty() ||
         (bytes[0] == 0 && std::memcmp(bytes.data(), bytes.data() + 1, bytes.size() - 1) == 0);
}

// Per-thread buffer for batched reads and writes, reached through a trivially destructible
// pointer: exit() destroys thread-local objects before the code that closes volumes runs, and
// a buffer made again after that is simply freed with the process.
__attribute__((tls_model("initial-exec"))) thread_local Bytes* thread_scratch = nullptr;

void FreeThreadScratch() {
  delete thread_scratch;
  thread_scratch = nullptr;
}

Bytes& ThreadScratch(size_t size) {
  if (thread_scratch == nullptr) {
    static ThreadExitHook free_at_exit(FreeThreadScratch);
    free_at_exit.Arm();
    thread_scratch = new Bytes();
  }
  if (thread_scratch->size() < size) thread_scratch->resize(size);
  return *thread_scratch;
}

}  // namespace

// Entry lookups for walks over consecutive chunks: one lookup per page, not per chunk.
class ProtectedFile::TableCursor {
 public:
  explicit TableCursor(const ChunkTable& table) : table_(table) {}
  const ChunkEntry& operator()(uint64_t chunk) {
    uint64_t page = chunk / kEntriesPerPage;
    if (page != page_) {
      page_ = page;
      entries_ = table_.Find(page);
    }
    return entries_ == nullptr ? kHoleEntry : entries_->entries[chunk % kEntriesPerPage];
  }

 private:
  const ChunkTable& table_;
  uint64_t page_ = UINT64_MAX;
  const ChunkTable::Page* entries_ = nullptr;
};

ProtectedFile::ProtectedFile(std::shared_ptr<Volume> volume, std::string path,
                             const FileEntry& entry, FileKeys keys)
    : volume_(std::move(volume)),
      id_(entry.file_id),
      region_(entry.region),
      layout_(entry.region),
      keys_(std::move(keys)),
      header_(region_ == Region::kEncrypted ? EncodeHeader(id_, region_, keys_.root) : Bytes()),
      path_(std::move(path)),
      size_(entry.size) {}

ProtectedFile::~ProtectedFile() {
  Status s = Close();
  if (!s.ok()) fprintf(stderr, "scone: closing %s: %s\n", path().c_str(), s.message().c_str());
  std::unique_lock lock(mu_);
  ReleasePromisedLocked();  // what failed to commit is lost with the object
}

Status ProtectedFile::Close() {
  std::unique_lock lock(mu_);
  if (spent_) return Status::Ok();
  return CommitLocked(/*durable=*/false);
}

Result<bool> ProtectedFile::BuildRepair(const FileWindow& window, bool undo_last, JournalRecord* out) {
  std::unique_lock lock(mu_);
  spent_ = true;
  if (region_ != Region::kEncrypted) return false;  // only encrypted files commit lazily
  // Each chunk's versions in the window, oldest first (a cut below a chunk ends its older ones).
  struct Version {
    ChunkEntry entry;
    const uint8_t* image;  // nullptr: written in place
  };
  std::map<uint64_t, std::vector<Version>> versions;
  for (const auto& r : window.records) {
    const uint64_t end = ChunkCount(r->entry.size);
    versions.erase(versions.lower_bound(end), versions.end());
    std::map<uint64_t, const uint8_t*> images;
    for (size_t i = 0; i < r->slot_chunks.size(); ++i) images[r->slot_chunks[i]] = r->SlotImage(i).data();
    const std::set<uint64_t> in_place(r->inplace_chunks.begin(), r->inplace_chunks.end());
    for (const auto& [chunk, e] : r->entries) {
      auto image = images.find(chunk);
      if (chunk >= end || e.IsHole() || (image == images.end() && in_place.count(chunk) == 0)) continue;
      versions[chunk].push_back({e, image == images.end() ? nullptr : image->second});
    }
  }
  // The size before the dead writer's record, and the chunks that record put in place.
  uint64_t size_before = size_;
  std::set<uint64_t> last_in_place;
  if (undo_last && !window.records.empty()) {
    const JournalRecord& last = *window.records.back();
    size_before = window.records.size() > 1 ? window.records[window.records.size() - 2]->entry.size : window.base.size;
    last_in_place.insert(last.inplace_chunks.begin(), last.inplace_chunks.end());
  }
  bool undo_size = false;
  const uint64_t chunks = ChunkCount(size_);
  uint8_t disk[kChunkSize];
  uint8_t plain[kChunkSize];
  for (const auto& [chunk, list] : versions) {
    if (chunk >= chunks) break;
    const ChunkEntry current = table_.Entry(chunk);
    // Only a version written in place can be missing.
    if (current.IsHole() || list.back().image != nullptr) continue;
    auto n = data_.ReadAt(layout_.SlotOffset(chunk), MutableByteSpan(disk, kChunkSize));
    const bool read = n.ok() && *n == kChunkSize;
    if (read && OpenChunk(chunk, current, disk, kChunkSize, plain).ok()) continue;
    undo_size = undo_size || last_in_place.count(chunk) != 0;
    // Past the size to go back to: nothing to keep.
    if (last_in_place.count(chunk) != 0 && size_before < size_ && chunk >= ChunkCount(size_before)) continue;
    bool found = false;
    for (auto v = std::next(list.rbegin()); v != list.rend() && !found; ++v) {
      const uint8_t* image = v->image != nullptr ? v->image : read ? disk : nullptr;
      found = image != nullptr && OpenChunk(chunk, v->entry, image, kChunkSize, plain).ok();
    }
    if (!found) {
      if (chunk + 1 != chunks) {
        return ChunkError(chunk, "was being written by a process that died, and no earlier version of it is at hand");
      }
      SCONE_RETURN_IF_ERROR(TruncateLocked(chunk * kChunkSize));
      break;
    }
    // Sealed anew by the commit below: into the journal, as the chunk is referenced.
    Bytes buffer = TakeBuffer();
    std::memcpy(buffer.data(), plain, kChunkSize);
    if (auto cached = cache_.find(chunk); cached != cache_.end()) DropCached(cached, std::next(cached));
    cache_.emplace(chunk, std::move(buffer));
    changed_ = true;
  }
  // Undoing the dead writer's last record undoes all of it: a chunk it put in place that was a
  // hole before (no earlier version in the window, and in-place chunks are never the durable
  // state's) is a hole again, though its new version reached the disk. Kept, the file mixed the
  // undone record with the state before it, a state that never was (a 28-byte write into a
  // hole stayed while the growth before it in the same record went: VolumeCrashTest).
  if (undo_size) {
    const uint64_t kept_chunks = ChunkCount(size_before);
    for (uint64_t chunk : last_in_place) {
      if (chunk >= kept_chunks || cache_.count(chunk) != 0) continue;
      auto v = versions.find(chunk);
      if (v == versions.end() || v->second.size() != 1) continue;  // an earlier version: written over
      Bytes buffer = TakeBuffer();
      std::memset(buffer.data(), 0, kChunkSize);
      cache_.emplace(chunk, std::move(buffer));
      changed_ = true;
    }
  }
  // Bytes past the restored end read as zeros (TruncateLocked seals the tail chunk anew).
  if (undo_size && size_before < size_) SCONE_RETURN_IF_ERROR(TruncateLocked(size_before));
  if (!changed_) return false;
  out->kind = JournalRecord::Kind::kCommit;
  SCONE_RETURN_IF_ERROR(BuildRecord(out, /*durable=*/false));
  if (!out->inplace_chunks.empty()) return Internal(path() + ": a repair would write in place");
  return true;
}

FileEntry ProtectedFile::CommittedEntry() const {
  std::shared_lock lock(mu_);
  return FileEntry{id_, region_, committed_size_, committed_root_};
}

std::string ProtectedFile::path() const {
  std::lock_guard lock(path_mu_);
  return path_;
}

void ProtectedFile::SetPath(std::string path) {
  std::lock_guard lock(path_mu_);
  path_ = std::move(path);
}

void ProtectedFile::LetGoAfterFork(bool in_child) {
  path_mu_.unlock();
  if (in_child) {
    std::construct_at(&mu_);
  } else {
    mu_.unlock();
  }
}

void ProtectedFile::LeaveToParent() {
  std::unique_lock lock(mu_);
  spent_ = true;
}

Status ProtectedFile::PutPendingInPlaceLocked() {
  std::vector<std::pair<uint64_t, const uint8_t*>> slots;
  for (const auto& [chunk, image] : pending_) slots.emplace_back(chunk, image.data());
  SCONE_RETURN_IF_ERROR(WriteSlots(slots));
  pending_.clear();
  return Status::Ok();
}

void ProtectedFile::NoteDataInode() {
  struct stat st;
  if (os::Sys().fstat(data_.fd(), &st) != 0) return;
  data_device_ = st.st_dev;
  data_inode_ = st.st_ino;
}

bool ProtectedFile::IsDataFile(int fd, struct stat* st) const {
  return data_inode_ != 0 && os::Sys().fstat(fd, st) == 0 && st->st_dev == data_device_ && st->st_ino == data_inode_;
}

void ProtectedFile::MarkUnlinked(bool by_this_process) {
  if (unlinked_.exchange(true)) return;
  // No record names an unlinked file: each process keeps its own state of it. The process that
  // unlinked it goes on writing the orphaned inode in place (a tmpfile: created, unlinked, then
  // written at length); one that learned of it from another's record keeps its changes in
  // memory, since the unlinker may still use the inode (its chunk tags would no longer match
  // what it reads there). Which other processes still have a file open is not known: a lock
  // that marked opens conflicted with programs' whole-file locks (MariaDB's).
  in_memory_only_ = !by_this_process;
}

Status ProtectedFile::PutStateInPlace() {
  if (!unlinked_) return Internal(path() + ": put in place while it has a name");
  SCONE_RETURN_IF_ERROR(volume_->MakeDurable());
  std::unique_lock lock(mu_);
  // In place even where another process has it open: the program it is handed to reads it
  // from there (the other, which keeps its own state, may then find its chunks changed: EIO).
  force_in_place_ = true;
  Status committed = CommitLocked(/*durable=*/true);
  force_in_place_ = false;
  SCONE_RETURN_IF_ERROR(committed);
  SCONE_RETURN_IF_ERROR(PutPendingInPlaceLocked());
  std::vector<uint64_t> held;
  for (auto page = table_.begin(); page != table_.end(); ++page) held.push_back(page->first);
  return WriteTablePages(held);
}

uint64_t ProtectedFile::size() const {
  std::shared_lock lock(mu_);
  return size_;
}

std::string ProtectedFile::SideFilePath(const std::string& dir, const FileId& id) {
  return dir + "/" + kMetaDirName + "/meta/" + ToHex(id);
}

Root ProtectedFile::ComputeRoot(const SecretBytes& root_key, uint64_t size,
                                const crypto::Hash& tree_root) {
  ByteWriter w;
  w.U64(size);
  return crypto::HmacSha256(root_key, {AsBytes(kRootLabel), w.bytes(), tree_root});
}

// Header: magic(8) | u32 version | u8 region | 3 zero | file id(16) | HMAC(root key, first 32).
Bytes ProtectedFile::EncodeHeader(const FileId& id, Region region, const SecretBytes& root_key) {
  ByteWriter w;
  w.Raw(ByteSpan(reinterpret_cast<const uint8_t*>(kFileMagic), sizeof(kFileMagic)));
  w.U32(kFormatVersion);
  w.U8(static_cast<uint8_t>(region));
  w.Raw(std::array<uint8_t, 3>{});
  w.Raw(id);
  crypto::Hash mac = crypto::HmacSha256(root_key, {w.bytes()});
  w.Raw(mac);
  return w.Take();
}

Result<FileEntry> ProtectedFile::CreateOnDisk(const std::string& dir, const std::string& path,
                                              Region region, const FileId& id,
                                              const FileKeys& keys, mode_t mode) {
  os::File data, side;
  return CreateOnDisk(dir, path, region, id, keys, mode, &data, &side);
}

Result<FileEntry> ProtectedFile::CreateOnDisk(const std::string& dir, const std::string& path,
                                              Region region, const FileId& id,
                                              const FileKeys& keys, mode_t mode, os::File* data,
                                              os::File* side) {
  std::string full = dir + "/" + path;
  // O_NOFOLLOW: a link planted at the name must not lead the new file elsewhere.
  SCONE_ASSIGN_OR_RETURN(*data, os::File::Open(full, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW, mode & 07777));
  Status made;
  if (region == Region::kEncrypted) {
    made = data->WriteAt(0, EncodeHeader(id, region, keys.root));
  } else if (auto opened = os::File::Open(SideFilePath(dir, id), O_RDWR | O_CREAT | O_TRUNC, 0600); opened.ok()) {
    *side = std::move(opened).value();
  } else {
    made = opened.status();
  }
  if (!made.ok()) {
    // The name goes again (the volume takes its record back): left, an empty file no metadata
    // lists made the name unusable, and a full disk left SQLite's -journal there, the database
    // unwritable for good (hostile finding).
    *data = os::File();
    os::Sys().unlink(full.c_str());
    return made;
  }
  FileEntry entry;
  entry.file_id = id;
  entry.region = region;
  entry.size = 0;
  entry.root = ComputeRoot(keys.root, 0, crypto::Hash{});
  return entry;
}

Result<std::shared_ptr<ProtectedFile>> ProtectedFile::Create(std::shared_ptr<Volume> volume,
                                                             const std::string& dir,
                                                             const std::string& path, Region region,
                                                             const FileId& id, FileKeys keys,
                                                             mode_t mode) {
  os::File data, side;
  SCONE_ASSIGN_OR_RETURN(FileEntry entry, CreateOnDisk(dir, path, region, id, keys, mode, &data, &side));
  std::shared_ptr<ProtectedFile> file(new ProtectedFile(std::move(volume), path, entry, std::move(keys)));
  // As Open would find it, without reading back what was just written: an empty file.
  file->data_ = std::move(data);
  file->NoteDataInode();
  file->side_ = std::move(side);
  file->physical_size_ = file->room_ = file->layout_.DataFileSize(0);
  file->tree_.Resize(0);
  file->committed_root_ = entry.root;
  return file;
}

Result<std::shared_ptr<ProtectedFile>> ProtectedFile::Open(std::shared_ptr<Volume> volume,
                                                           const std::string& dir,
                                                           const std::string& path,
                                                           const FileEntry& latest, FileKeys keys,
                                                           const FileWindow& window, os::File* opened) {
  // The disk holds the file as of its window's base; the window's records go on top.
  const FileEntry& entry = window.base;
  std::shared_ptr<ProtectedFile> file(
      new ProtectedFile(std::move(volume), path, entry, std::move(keys)));
  std::string full = dir + "/" + path;
  // O_NOFOLLOW: a protected file replaced by a symbolic link is damage, not a redirection.
  auto data = opened != nullptr ? Result<os::File>(std::move(*opened)) : os::File::Open(full, O_RDWR | O_NOFOLLOW);
  if (!data.ok() && opened == nullptr && data.status().sys_errno() == EACCES) {
    // A file this user may only read (its mode): the shield reads it too (it opened every data
    // file for writing, and a program of a user that is not root could not read its own files
    // of mode 0444: git's objects, `sqlite3 -readonly`; hostile finding).
    data = os::File::Open(full, O_RDONLY | O_NOFOLLOW);
    if (data.ok()) file->read_only_ = true;
  }
  if (!data.ok()) {
    if (data.status().code() == Code::kNotFound) {
      return DataCorrupted(full + ": missing (the volume's metadata lists it)");
    }
    if (data.status().sys_errno() == ELOOP) {
      return DataCorrupted(full + ": replaced by a symbolic link");
    }
    return data.status();
  }
  file->data_ = std::move(data).value();
  file->NoteDataInode();
  SCONE_ASSIGN_OR_RETURN(file->physical_size_, file->data_.Size());
  file->room_ = file->physical_size_;

  if (entry.region == Region::kEncrypted) {
    uint8_t header[kHeaderSize];
    SCONE_ASSIGN_OR_RETURN(size_t n, file->data_.ReadAt(0, header));
    if (n < kHeaderSize || std::memcmp(header, kFileMagic, sizeof(kFileMagic)) != 0) {
      return DataCorrupted(full + ": not a protected file (header missing or damaged)");
    }
    if (std::memcmp(header + 16, entry.file_id.data(), kFileIdSize) != 0) {
      return DataCorrupted(full + ": holds a different protected file (swapped or replaced)");
    }
    if (!crypto::ConstantTimeEquals(ByteSpan(header, kHeaderSize), file->header_)) {
      return DataCorrupted(full + ": header fails authentication (damaged or modified)");
    }
  } else {
    auto side = os::File::Open(SideFilePath(dir, entry.file_id), O_RDWR);
    if (!side.ok()) {
      return DataCorrupted(full + ": its chunk table " + SideFilePath(dir, entry.file_id) +
                           " is missing or unreadable");
    }
    file->side_ = std::move(side).value();
  }

  uint64_t expected_size = file->layout_.DataFileSize(entry.size);
  if (file->physical_size_ < expected_size) {
    return DataCorrupted(full + ": truncated (" + std::to_string(file->physical_size_) +
                         " bytes on disk, " + std::to_string(expected_size) + " expected)");
  }
  // Longer than the state needs: chunks a writer sealed in place and has not committed (it
  // still writes, in another process, or it was killed). The state references none of them;
  // the next commit of the file cuts them off, as recovery does.
  SCONE_RETURN_IF_ERROR(file->LoadPages());
  Root root = ComputeRoot(file->keys_.root, entry.size, file->tree_.Root());
  if (!crypto::ConstantTimeEquals(root, entry.root)) {
    return DataCorrupted(full +
                         ": chunk table does not match the volume's metadata (file rolled back, "
                         "replaced, or its tags modified)");
  }
  file->min_chunks_since_commit_ = ChunkCount(entry.size);
  file->committed_root_ = entry.root;
  file->committed_size_ = entry.size;
  for (const auto& record : window.records) SCONE_RETURN_IF_ERROR(file->ApplyPublished(*record));
  if (!crypto::ConstantTimeEquals(file->committed_root_, latest.root)) {
    return DataCorrupted(full + ": the records other processes published do not lead to the "
                         "volume's metadata");
  }
  return file;
}

// Reads the pages that hold data (a file grown by truncation, or written far apart, is mostly
// holes): the cost grows with the data, not with the size.
Status ProtectedFile::LoadPages() {
  const uint64_t chunks = ChunkCount(size_);
  const uint64_t pages = PageCount(chunks);
  table_.Clear();
  tree_ = MerkleTree();
  tree_.Resize(pages);
  const os::File& page_file = layout_.interleaved() ? data_ : side_;
  uint64_t page_file_size = physical_size_;
  if (!layout_.interleaved()) {
    SCONE_ASSIGN_OR_RETURN(page_file_size, side_.Size());
    if (page_file_size != layout_.SideFileSize(size_)) {
      return DataCorrupted(page_file.path() + ": chunk table has " + std::to_string(page_file_size) +
                           " bytes, " + std::to_string(layout_.SideFileSize(size_)) + " expected");
    }
  }
  uint8_t image[kPageSize];
  uint64_t next = 0;  // pages below were read
  return ForEachDataRange(page_file, page_file_size, [&](uint64_t begin, uint64_t end) -> Status {
    for (uint64_t p = std::max(next, layout_.PageAtOrAfter(begin));
         p < pages && layout_.PageOffset(p) < end; ++p) {
      next = p + 1;
      SCONE_ASSIGN_OR_RETURN(size_t n, page_file.ReadAt(layout_.PageOffset(p), image));
      if (n != kPageSize) {
        return DataCorrupted(page_file.path() + ": chunk table page " + std::to_string(p) +
                             " truncated");
      }
      crypto::Hash leaf = PageLeaf(p, ByteSpan(image, kPageSize));
      if (leaf == MerkleTree::HoleLeaf()) continue;
      tree_.SetLeaf(p, leaf);
      // Every chunk the table on disk gives a slot is referenced by the durable state.
      auto page = std::make_unique<ChunkTable::Page>();
      for (uint64_t c = p * kEntriesPerPage; c < std::min(chunks, (p + 1) * kEntriesPerPage); ++c) {
        ChunkEntry& e = page->entries[c % kEntriesPerPage];
        const uint8_t* at = image + EntryOffsetInPage(c);
        std::memcpy(e.nonce.data(), at, crypto::kNonceSize);
        std::memcpy(e.tag.data(), at + crypto::kNonceSize, crypto::kTagSize);
        page->durable[c % kEntriesPerPage] = !e.IsHole();
      }
      if (page->durable.any()) table_.Add(p, std::move(page));  // not page 0's header alone
    }
    return Status::Ok();
  });
}

crypto::Hash ProtectedFile::PageLeaf(uint64_t page, ByteSpan image) {
  return IsAllZero(image) ? MerkleTree::HoleLeaf() : LeafHash(page, image);
}

Bytes ProtectedFile::PageImage(uint64_t page) const {
  Bytes image(kPageSize, 0);
  if (page == 0 && layout_.interleaved()) std::memcpy(image.data(), header_.data(), kHeaderSize);
  const ChunkTable::Page* entries = table_.Find(page);
  if (entries == nullptr) return image;
  for (size_t i = 0; i < kEntriesPerPage; ++i) {
    uint8_t* e = image.data() + kPageReserved + i * kEntrySize;
    std::memcpy(e, entries->entries[i].nonce.data(), crypto::kNonceSize);
    std::memcpy(e + crypto::kNonceSize, entries->entries[i].tag.data(), crypto::kTagSize);
  }
  return image;
}

Status ProtectedFile::ChunkError(uint64_t chunk, const char* what) const {
  return DataCorrupted(volume_->dir() + "/" + path() + ": chunk " + std::to_string(chunk) + " " +
                       what);
}

void ProtectedFile::NoteSealed(uint64_t chunk) {
  dirty_pages_.insert(chunk / kEntriesPerPage);
  changed_entries_.push_back(chunk);
}

Status ProtectedFile::SealMany(const std::vector<uint64_t>& chunks,
                               const std::vector<const uint8_t*>& plains,
                               const std::vector<uint8_t*>& images) {
  std::vector<Status> results(chunks.size());
  std::vector<ChunkEntry*> entries(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) entries[i] = &table_.MutableEntry(chunks[i]);
  ParallelFor(chunks.size(), kParallelChunks, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      results[i] = SealInto(chunks[i], *entries[i], plains[i], images[i]);
    }
  });
  for (size_t i = 0; i < chunks.size(); ++i) {
    SCONE_RETURN_IF_ERROR(results[i]);
    NoteSealed(chunks[i]);
  }
  return Status::Ok();
}

// Seals `plain` (kChunkSize bytes) as chunk `chunk`: updates its entry and fills the slot image.
Status ProtectedFile::SealInto(uint64_t chunk, ChunkEntry& entry, const uint8_t* plain,
                               uint8_t* slot_image) {
  crypto::FreshNonce(entry.nonce.data());
  ChunkAad aad(id_, chunk);
  if (region_ == Region::kEncrypted) {
    SCONE_RETURN_IF_ERROR(keys_.chunk->Seal(entry.nonce, {aad.span()}, ByteSpan(plain, kChunkSize),
                                            slot_image, entry.tag.data()));
  } else {
    SCONE_RETURN_IF_ERROR(keys_.chunk->Seal(entry.nonce, {aad.span(), ByteSpan(plain, kChunkSize)},
                                            {}, nullptr, entry.tag.data()));
    if (slot_image != plain) std::memcpy(slot_image, plain, kChunkSize);
  }
  return Status::Ok();
}

bool ProtectedFile::SlotAuthentic(const FileKeys& keys, const FileId& id, uint64_t chunk,
                                  const ChunkEntry& entry, const uint8_t* image) {
  ChunkAad aad(id, chunk);
  uint8_t plain[kChunkSize];
  const bool ok =
      keys.chunk->Open(entry.nonce, {aad.span()}, ByteSpan(image, kChunkSize), plain, entry.tag.data()).ok();
  std::memset(plain, 0, sizeof(plain));
  return ok;
}

// Authenticates a slot image (image_size bytes from disk, zero-padded here) into plain.
Status ProtectedFile::OpenChunk(uint64_t chunk, const ChunkEntry& entry, const uint8_t* slot_image,
                                size_t image_size, uint8_t* plain) {
  ChunkAad aad(id_, chunk);
  Status opened;
  if (region_ == Region::kEncrypted) {
    if (image_size != kChunkSize) return ChunkError(chunk, "is truncated on disk");
    opened = keys_.chunk->Open(entry.nonce, {aad.span()}, ByteSpan(slot_image, kChunkSize), plain, entry.tag.data());
  } else {
    if (plain != slot_image) std::memcpy(plain, slot_image, image_size);
    std::memset(plain + image_size, 0, kChunkSize - image_size);
    opened = keys_.chunk->Open(entry.nonce, {aad.span(), ByteSpan(plain, kChunkSize)}, {}, nullptr, entry.tag.data());
    if (!opened.ok()) std::memset(plain, 0, kChunkSize);
  }
  SCONE_ASSIGN_OR_RETURN(bool authentic, crypto::Authentic(opened));
  if (!authentic) return ChunkError(chunk, "fails authentication (modified, swapped or damaged)");
  return Status::Ok();
}

// Reads and authenticates one chunk from disk. Returns false for a hole (out is zeroed).
Result<bool> ProtectedFile::ChunkFromDisk(uint64_t chunk, uint8_t* out) {
  const ChunkEntry& entry = table_.Entry(chunk);
  if (entry.IsHole()) {
    std::memset(out, 0, kChunkSize);
    return false;
  }
  if (!pending_.empty()) {
    if (auto p = pending_.find(chunk); p != pending_.end()) {
      SCONE_RETURN_IF_ERROR(OpenChunk(chunk, entry, p->second.data(), kChunkSize, out));
      return true;
    }
  }
  uint8_t image[kChunkSize];
  SCONE_ASSIGN_OR_RETURN(size_t n, data_.ReadAt(layout_.SlotOffset(chunk), image));
  SCONE_RETURN_IF_ERROR(OpenChunk(chunk, entry, image, n, out));
  return true;
}

Status ProtectedFile::ReadChunkPlain(uint64_t chunk, uint8_t* out) {
  auto cached = cache_.find(chunk);
  if (cached != cache_.end()) {
    std::memcpy(out, cached->second.data(), kChunkSize);
    return Status::Ok();
  }
  return ChunkFromDisk(chunk, out).status();
}

bool ProtectedFile::Gone() const {
  if (unlinked_.load()) return true;
  struct stat st;
  return os::Sys().fstat(data_.fd(), &st) == 0 && st.st_nlink == 0;
}

Result<size_t> ProtectedFile::Read(uint64_t offset, MutableByteSpan out) {
  // Shared: what other processes wrote is visible at once (POSIX), not only after an open.
  if (volume_->Shared()) SCONE_RETURN_IF_ERROR(Refresh());
  auto result = ReadOnce(offset, out);
  if (result.ok() || result.status().code() != Code::kDataCorrupted) return result;
  // Another process may have overwritten a chunk in place (one that only lazy records put
  // there) between our catch-up and our read: catch up and read again under the volume's
  // writer lock, which every such overwrite holds. A retry without it raced the next append
  // (a reader of a log being appended to got EIO).
  std::unique_lock lock(mu_);
  Result<size_t> again = result;
  Status caught_up = CatchUpUnderVolumeLocks([&] { again = ReadLocked(offset, out); });
  return caught_up.ok() ? again : result;
}

namespace {

// A write that met a full disk, once more with halves of it down to a chunk: the longest prefix
// that fits is written, as natively (a 1 MiB write returned ENOSPC with room for 800 KiB of it:
// dd and a Python flush kept nothing of what they had left).
// First, once more after each way the volume gives back room of its own (its journal's zeros
// ahead, then its records' room: Volume::CheckpointForRoom).
Result<size_t> WriteWhatFits(ByteSpan data, const std::function<Result<size_t>(ByteSpan)>& write,
                             const std::function<bool(bool records)>& make_room) {
  Result<size_t> whole = write(data);
  for (bool records : {false, true}) {
    if (whole.ok() || !OutOfSpace(whole.status())) return whole;
    if (make_room(records)) whole = write(data);
  }
  if (whole.ok() || !OutOfSpace(whole.status())) return whole;
  for (size_t part = data.size() / 2; part >= kChunkSize; part /= 2) {
    Result<size_t> written = write(data.first(part));
    if (written.ok() || !OutOfSpace(written.status())) return written;
  }
  return whole;
}

}  // namespace

bool ProtectedFile::MakeRoom(bool records) {
  return volume_->CheckpointForRoom(records ? Volume::RoomFrom::kRecords : Volume::RoomFrom::kZerosAhead);
}

Result<size_t> ProtectedFile::Write(uint64_t offset, ByteSpan data, uint64_t* appended_at) {
  return WriteWhatFits(
      data, [&](ByteSpan part) { return WriteWhole(offset, part, appended_at); },
      [&](bool records) { return MakeRoom(records); });
}

Status ProtectedFile::WriteAll(uint64_t offset, ByteSpan data) {
  while (!data.empty()) {
    SCONE_ASSIGN_OR_RETURN(size_t n, Write(offset, data));
    if (n == 0) return IoError(path() + ": a write stored nothing", EIO);
    offset += n;
    data = data.subspan(n);
  }
  return Status::Ok();
}

Result<size_t> ProtectedFile::WriteAtSharedPosition(ByteSpan data, const SharedPosition& position) {
  return WriteWhatFits(
      data, [&](ByteSpan part) { return WriteWholeAtSharedPosition(part, position); },
      [&](bool records) { return MakeRoom(records); });
}

Result<size_t> ProtectedFile::WriteWhole(uint64_t offset, ByteSpan data, uint64_t* appended_at) {
  if (!volume_->MayBuffer()) return WritePublished(offset, data, appended_at);
  SCONE_RETURN_IF_ERROR(volume_->PublishBuffered(this));  // program order (fs/buffered_files.h)
  auto result = WriteOnce(offset, data, appended_at);
  if (result.ok() || result.status().code() != Code::kDataCorrupted) return result;
  return RefreshIfChangedByOthers() ? WriteOnce(offset, data, appended_at) : result;
}

Result<size_t> ProtectedFile::WriteWholeAtSharedPosition(ByteSpan data, const SharedPosition& position) {
  if (data.empty()) return size_t{0};
  // The position moves once the write's record is built: a write that meets a full disk (its
  // room reserved with the record) leaves it where it was, and its retry after room was made
  // writes there (hostile finding: the retry wrote past a hole as long as the write, a file
  // whose descriptor a shell had passed on got a run of zeros and every byte after it moved,
  // and the write reported success).
  uint64_t staged_at = 0;
  auto write_at_position = [&]() -> Status {
    SCONE_ASSIGN_OR_RETURN(staged_at, position.get());
    return StageWrite(staged_at, data);
  };
  auto move_position = [&]() -> Status { return position.set(staged_at + data.size()); };
  SCONE_RETURN_IF_ERROR(volume_->PublishBuffered(this));  // program order (fs/buffered_files.h)
  std::unique_lock lock(mu_);
  if (volume_->MayBuffer()) {
    SCONE_ASSIGN_OR_RETURN(uint64_t offset, position.get());
    if (PromiseRoomLocked(offset, data.size())) {
      SCONE_RETURN_IF_ERROR(StageWriteAlone(offset, data));
      SCONE_RETURN_IF_ERROR(position.set(offset + data.size()));
      SCONE_RETURN_IF_ERROR(AfterWriteAlone());
      return data.size();
    }
    SCONE_RETURN_IF_ERROR(CommitLocked(/*durable=*/false));  // near a full disk (see WriteOnce)
  }
  SCONE_RETURN_IF_ERROR(CommitWriteLocked(write_at_position, data.size(), kUnknownOffset, move_position));
  return data.size();
}

// One transaction under the volume's writer lock: catch up with the others, write, publish. So
// a write is visible to every process once it returns, an append lands at the end every
// process sees, and writes of different bytes of one chunk by two processes both stay.
Result<size_t> ProtectedFile::WritePublished(uint64_t offset, ByteSpan data, uint64_t* appended_at) {
  if (data.empty()) return size_t{0};
  std::unique_lock lock(mu_);
  SCONE_RETURN_IF_ERROR(CommitWriteLocked(
      [&]() -> Status {
        if (appended_at != nullptr) offset = *appended_at = size_;
        return StageWrite(offset, data);
      },
      data.size(), appended_at != nullptr ? size_ : offset));
  return data.size();
}

Status ProtectedFile::CommitWriteLocked(const std::function<Status()>& stage, uint64_t bytes, uint64_t offset,
                                        const std::function<Status()>& staged) {
  const bool had_local_changes = changed_ || !cache_.empty() || !changed_entries_.empty();
  Status committed = CommitLocked(/*durable=*/false, stage, bytes, /*cuts_short=*/false, offset, staged);
  // A write that failed (a full disk) leaves no trace in what this process reads: its staged
  // bytes had stayed in the cache, and the process read (and stat'ed) appends that had returned
  // ENOSPC, while the others and the disk had not them (hostile finding). Back to what the
  // volume holds; local changes from before (writes buffered while alone) stay.
  if (!committed.ok() && !had_local_changes) (void)DiscardUncommittedLocked();
  return committed;
}

bool ProtectedFile::PromiseRoomLocked(uint64_t offset, uint64_t size) {
  uint64_t chunks = 0;
  for (uint64_t chunk = offset / kChunkSize; chunk * kChunkSize < offset + size; ++chunk) {
    chunks += cache_.count(chunk) == 0 ? 1 : 0;
  }
  const uint64_t bytes = chunks * 2 * kChunkSize + (promised_ == 0 ? kChunkSize : 0);
  if (!volume_->PromiseBufferedRoom(bytes)) return false;
  promised_ += bytes;
  return true;
}

void ProtectedFile::ReleasePromisedLocked() {
  if (promised_ == 0) return;
  volume_->ReleaseBufferedRoom(promised_);
  promised_ = 0;
}

Status ProtectedFile::DiscardUncommittedLocked() {
  ReleasePromisedLocked();
  DropCached(cache_.begin(), cache_.end());
  changed_entries_.clear();
  dirty_pages_.clear();
  changed_ = false;
  size_ = committed_size_;
  // The table as the volume has it (BuildRecord may have changed entries before the failure).
  return volume_->WithLatestEntry(id_, [&](const FileEntry* current) -> Status {
    if (current == nullptr) return Status::Ok();
    return ReloadChangedByOthers(*current, volume_->WindowOfLocked(id_, *current));
  });
}

Status ProtectedFile::Refresh() {
  auto current = unlinked_ ? Result<FileEntry>(NotFound("unlinked")) : volume_->LatestEntry(id_);
  if (!current.ok()) {
    if (current.status().code() != Code::kNotFound) return current.status();
    // Unlinked by another process: caught up once more, to its last entry (the volume keeps it
    // until then); from there on this process's state of the file is its own.
    if (!volume_->HasLastEntry(id_)) return Status::Ok();
    std::unique_lock lock(mu_);
    return CatchUpUnderVolumeLocks();
  }
  {
    std::shared_lock lock(mu_);
    if (current->root == committed_root_) return Status::Ok();
  }
  std::unique_lock lock(mu_);
  return CatchUpUnderVolumeLocks();
}

bool ProtectedFile::RefreshIfChangedByOthers() {
  std::unique_lock lock(mu_);
  const Root before = committed_root_;
  return CatchUpUnderVolumeLocks().ok() && committed_root_ != before;
}

// Asked under the volume's locks: a commit of another thread of this process may have come in
// since the caller looked, and the disk must not change while a reload reads it.
Status ProtectedFile::CatchUpUnderVolumeLocks(const std::function<void()>& then) {
  return volume_->WithLatestEntry(id_, [&](const FileEntry* current) -> Status {
    if (current != nullptr) SCONE_RETURN_IF_ERROR(CatchUpLocked(*current));
    if (then) then();
    return Status::Ok();
  });
}

Result<size_t> ProtectedFile::ReadOnce(uint64_t offset, MutableByteSpan out) {
  std::shared_lock lock(mu_);
  return ReadLocked(offset, out);
}

Result<size_t> ProtectedFile::ReadLocked(uint64_t offset, MutableByteSpan out) {
  if (offset >= size_ || out.empty()) return size_t{0};
  size_t total = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
  uint64_t end = offset + total;
  uint64_t chunk = offset / kChunkSize;
  uint8_t bounce[kChunkSize];
  TableCursor entry(table_);
  const bool keeps_clean = CleanChunks::Keeps(size_);
  while (chunk * kChunkSize < end) {
    uint64_t chunk_start = chunk * kChunkSize;
    uint64_t from = std::max(offset, chunk_start);
    uint64_t to = std::min(end, chunk_start + kChunkSize);
    uint8_t* dest = out.data() + (from - offset);
    // Cached or hole chunks: no I/O.
    if ((!cache_.empty() && cache_.count(chunk) != 0) || entry(chunk).IsHole() ||
        (!pending_.empty() && pending_.count(chunk) != 0)) {
      SCONE_RETURN_IF_ERROR(ReadChunkPlain(chunk, bounce));
      std::memcpy(dest, bounce + (from - chunk_start), to - from);
      ++chunk;
      continue;
    }
    if (keeps_clean && clean_.CopyOut(chunk, entry(chunk), from - chunk_start, to - from, dest)) {
      ++chunk;
      continue;
    }
    // A run of on-disk chunks: preads of their physical range (with any chunk table page between
    // them), then authenticate each; a long run is read block by block while the blocks already
    // read are authenticated, on two cores.
    uint64_t run = 1;
    while (run < kReadBatchChunks && (chunk + run) * kChunkSize < end &&
           (cache_.empty() || cache_.count(chunk + run) == 0) && !entry(chunk + run).IsHole() &&
           (pending_.empty() || pending_.count(chunk + run) == 0)) {
      ++run;
    }
    const uint64_t first = chunk;
    const uint64_t base = layout_.SlotOffset(first);
    const uint64_t span = layout_.SlotOffset(first + run - 1) + kChunkSize - base;
    Bytes& scratch = ThreadScratch(span);
    uint8_t* images = scratch.data();
    // Bytes read of each slot: on the stack for the short runs of random access.
    size_t short_sizes[kParallelChunks];
    std::vector<size_t> long_sizes(run >= kParallelChunks ? run : 0);
    size_t* image_sizes = run < kParallelChunks ? short_sizes : long_sizes.data();
    // Reads slots [begin, stop) of the run with one pread (with any chunk table page between).
    auto read_slots = [&](size_t begin, size_t stop) -> Status {
      const size_t from = layout_.SlotOffset(first + begin) - base;
      const size_t to = layout_.SlotOffset(first + stop - 1) + kChunkSize - base;
      SCONE_ASSIGN_OR_RETURN(size_t got, data_.ReadAt(base + from, MutableByteSpan(images + from, to - from)));
      for (size_t i = begin; i < stop; ++i) {
        size_t at = layout_.SlotOffset(first + i) - base;
        image_sizes[i] = from + got > at ? std::min<size_t>(from + got - at, kChunkSize) : 0;
      }
      return Status::Ok();
    };
    // `slot_entry`: a cursor of the calling thread (they are not shared between threads).
    auto open_slots = [&](size_t begin, size_t stop, TableCursor& slot_entry) -> Status {
      uint8_t part[kChunkSize];
      for (size_t i = begin; i < stop; ++i) {
        uint64_t c = first + i;
        uint64_t c_start = c * kChunkSize;
        uint64_t c_from = std::max(offset, c_start);
        uint64_t c_to = std::min(end, c_start + kChunkSize);
        uint8_t* c_dest = out.data() + (c_from - offset);
        const bool whole = c_from == c_start && c_to == c_start + kChunkSize;
        const uint8_t* image = images + (layout_.SlotOffset(c) - base);
        uint8_t* plain = whole && !keeps_clean ? c_dest : part;
        SCONE_RETURN_IF_ERROR(OpenChunk(c, slot_entry(c), image, image_sizes[i], plain));
        if (keeps_clean) clean_.Keep(c, slot_entry(c), plain);
        if (plain == part) std::memcpy(c_dest, part + (c_from - c_start), c_to - c_from);
      }
      return Status::Ok();
    };
    if (run < kParallelChunks) {
      SCONE_RETURN_IF_ERROR(read_slots(0, run));
      SCONE_RETURN_IF_ERROR(open_slots(0, run, entry));
    } else {
      // Blocks are opened (on two cores) while the next ones are read.
      std::vector<Status> read_results(run), open_results(run);
      ParallelAfterInOrder(
          run, kReadPipelineChunks,
          [&](size_t begin, size_t stop) { read_results[begin] = read_slots(begin, stop); },
          [&](size_t begin, size_t stop) {
            TableCursor slot_entry(table_);
            if (read_results[begin].ok()) open_results[begin] = open_slots(begin, stop, slot_entry);
          });
      for (size_t i = 0; i < run; ++i) {
        SCONE_RETURN_IF_ERROR(read_results[i]);
        SCONE_RETURN_IF_ERROR(open_results[i]);
      }
    }
    chunk += run;
  }
  return total;
}

Status ProtectedFile::WriteSlot(uint64_t chunk, const uint8_t* image) {
  size_t len = kChunkSize;
  if (region_ == Region::kAuthenticated) {
    // The data file of an authenticated file is the plaintext, exactly size_ bytes long.
    uint64_t start = chunk * kChunkSize;
    len = static_cast<size_t>(std::min<uint64_t>(kChunkSize, size_ - std::min(size_, start)));
  }
  if (len == 0) return Status::Ok();
  SCONE_RETURN_IF_ERROR(data_.WriteAt(layout_.SlotOffset(chunk), ByteSpan(image, len)));
  physical_size_ = std::max<uint64_t>(physical_size_, layout_.SlotOffset(chunk) + len);
  return Status::Ok();
}

// Returns the cached plaintext of `chunk`, loading it first if needed.
Status ProtectedFile::CachedChunkForUpdate(uint64_t chunk, uint8_t** plain) {
  auto it = cache_.find(chunk);
  if (it == cache_.end()) {
    for (auto r = recent_.begin(); r != recent_.end(); ++r) {
      if (r->first != chunk) continue;
      it = cache_.emplace(chunk, std::move(r->second)).first;
      recent_.erase(r);
      *plain = it->second.data();
      return Status::Ok();
    }
    Bytes buffer = TakeBuffer();
    Status loaded = ChunkFromDisk(chunk, buffer.data()).status();
    if (!loaded.ok()) {
      RecycleBuffer(std::move(buffer));
      return loaded;
    }
    it = cache_.emplace(chunk, std::move(buffer)).first;
  }
  *plain = it->second.data();
  return Status::Ok();
}

void ProtectedFile::ForgetRecentIfChanged() {
  if (recent_.empty()) return;
  const bool unchanged = !changed_ && cache_.empty() && changed_entries_.empty();
  if (!(recent_valid_ && unchanged && committed_root_ == recent_root_)) DropRecent();
}

void ProtectedFile::DropRecent() {
  for (auto& [chunk, buffer] : recent_) RecycleBuffer(std::move(buffer));
  recent_.clear();
  recent_valid_ = false;
}

Bytes ProtectedFile::TakeBuffer() {
  if (spare_buffers_.empty()) return Bytes(kChunkSize);
  Bytes buffer = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return buffer;
}

void ProtectedFile::RecycleBuffer(Bytes buffer) {
  if (spare_buffers_.size() < kMaxCachedChunks) spare_buffers_.push_back(std::move(buffer));
}

void ProtectedFile::DropCached(std::map<uint64_t, Bytes>::iterator first,
                               std::map<uint64_t, Bytes>::iterator last) {
  for (auto it = first; it != last; ++it) RecycleBuffer(std::move(it->second));
  cache_.erase(first, last);
}

// Seals chunks[i] from plains[i] and writes them in place, writing each block of slots while the
// next is sealed. REQUIRES: mu_ held exclusively; none of the chunks is durable.
Status ProtectedFile::SealAndWriteInPlace(const std::vector<uint64_t>& chunks,
                                          const std::vector<const uint8_t*>& plains) {
  // Outside a commit, these chunks precede their record: the volume must not cut them off
  // (see Volume::NoteWritingAhead). Inside one, the volume's lock is held until the record.
  if (!in_transaction_ && inplace_.empty()) volume_->NoteWritingAhead(id_);
  Bytes& scratch = ThreadScratch(chunks.size() * kChunkSize);
  std::vector<std::pair<uint64_t, const uint8_t*>> slots(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) slots[i] = {chunks[i], scratch.data() + i * kChunkSize};
  std::vector<Status> sealed(chunks.size());
  std::vector<ChunkEntry*> entries(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) entries[i] = &table_.MutableEntry(chunks[i]);
  Status written;
  ParallelPipeline(
      chunks.size(), kPipelineChunks,
      [&](size_t begin, size_t stop) {
        for (size_t i = begin; i < stop; ++i) {
          sealed[i] = SealInto(chunks[i], *entries[i], plains[i], scratch.data() + i * kChunkSize);
        }
      },
      [&](size_t begin, size_t stop) {
        for (size_t i = begin; i < stop && written.ok(); ++i) written = sealed[i];
        if (written.ok()) written = WriteSlots({slots.data() + begin, stop - begin});
      });
  for (uint64_t c : chunks) {
    NoteSealed(c);
    inplace_.push_back(c);
  }
  data_unsynced_ = true;
  return written;
}

// Keeps the cache bounded: seals chunks the durable state does not reference and writes them in
// place; if overwrites of durable chunks still fill it, commits.
Status ProtectedFile::EvictCache() {
  if (cache_.size() <= kMaxCachedChunks) return Status::Ok();
  std::vector<std::map<uint64_t, Bytes>::iterator> evicted;
  std::vector<uint64_t> chunks;
  std::vector<const uint8_t*> plains;
  for (auto it = cache_.begin(); it != cache_.end(); ++it) {
    if (IsDurable(it->first)) continue;
    evicted.push_back(it);
    chunks.push_back(it->first);
    plains.push_back(it->second.data());
  }
  if (!chunks.empty()) {
    SCONE_RETURN_IF_ERROR(AllocateSlots(chunks));  // on a full disk: ENOSPC, nothing changed
    SCONE_RETURN_IF_ERROR(SealAndWriteInPlace(chunks, plains));
    for (auto it : evicted) DropCached(it, std::next(it));
  }
  if (cache_.size() > kMaxCachedChunks / 2) return CommitLocked(/*durable=*/false);
  return Status::Ok();
}

Result<size_t> ProtectedFile::WriteOnce(uint64_t offset, ByteSpan data, uint64_t* appended_at) {
  std::unique_lock lock(mu_);
  if (data.empty()) return size_t{0};
  // A hand-over (Volume::HandOverIfJoined) that began after MayBuffer publishes what it finds
  // under this lock: a write buffered after that was left in this process's memory while the
  // joiner wrote at the same offset, and the commit that finally published it put back the
  // chunk as this process had it (a worker appending per open lost 50 lines of the others,
  // 1 run in 30 under load).
  if (volume_->shared_.load(std::memory_order_acquire)) {
    lock.unlock();
    return WritePublished(offset, data, appended_at);
  }
  if (appended_at != nullptr) offset = *appended_at = size_;
  if (!PromiseRoomLocked(offset, data.size())) {
    // Near a full disk: what is buffered commits, then this write as a commit of its own, which
    // meets ENOSPC itself, as natively (fs/buffered_room.h).
    SCONE_RETURN_IF_ERROR(CommitLocked(/*durable=*/false));
    lock.unlock();
    return WritePublished(offset, data, appended_at);
  }
  SCONE_RETURN_IF_ERROR(StageWriteAlone(offset, data));
  SCONE_RETURN_IF_ERROR(AfterWriteAlone());
  return data.size();
}

// Keeps the buffer bounded; chunks sealed in place are published at once (lazily: no sync): a
// process that joins the volume later must find them referenced, or it would take their slots
// for its own data. REQUIRES: mu_ held exclusively.
Status ProtectedFile::AfterWriteAlone() {
  SCONE_RETURN_IF_ERROR(EvictCache());
  if (!inplace_.empty() || changed_entries_.size() >= kMaxChangedEntries) {
    return CommitLocked(/*durable=*/false);
  }
  if (changed_ || !cache_.empty()) volume_->NoteBuffered(id_);
  return Status::Ok();
}

Status ProtectedFile::StageWriteAlone(uint64_t offset, ByteSpan data) {
  Status staged = StageWrite(offset, data);
  // Staging again is harmless: the same bytes at the same offset.
  if (OutOfSpace(staged) && volume_->CheckpointForRoom()) staged = StageWrite(offset, data);
  return staged;
}

Status ProtectedFile::StageWrite(uint64_t offset, ByteSpan data) {
  uint64_t end = offset + data.size();
  if (end < offset || end > kMaxFileSize) {
    return TooBig("a write of " + std::to_string(data.size()) + " bytes at offset " +
                  std::to_string(offset));
  }
  ForgetRecentIfChanged();
  if (end > size_) {
    SCONE_RETURN_IF_ERROR(EnsureRoomFor(end));
    SCONE_RETURN_IF_ERROR(ReserveGrowth(offset, end));
  }
  if (data.size() > kSmallCommitChunks * kChunkSize) {
    // Runs of it go in place before any record: their room first, while nothing has changed
    // (a full disk failed them halfway, and the file was left short of its own table). One
    // range, table pages between the slots included.
    const uint64_t first_page = offset / kChunkSize / kEntriesPerPage;
    uint64_t first = layout_.SlotOffset(offset / kChunkSize);
    if (layout_.interleaved() && layout_.PageOffset(first_page) >= physical_size_) first = layout_.PageOffset(first_page);
    SCONE_RETURN_IF_ERROR(AllocateRange(first, layout_.SlotOffset((end - 1) / kChunkSize) + kChunkSize));
  }
  if (end > size_) size_ = end;
  changed_ = true;
  times_kept_ = false;  // a write moves the mtime
  clock_gettime(CLOCK_REALTIME_COARSE, &changed_at_);  // the kernel's clock for file times
  uint64_t chunk = offset / kChunkSize;
  while (chunk * kChunkSize < end) {
    uint64_t chunk_start = chunk * kChunkSize;
    uint64_t from = std::max(offset, chunk_start);
    uint64_t to = std::min(end, chunk_start + kChunkSize);
    const uint8_t* src = data.data() + (from - offset);
    bool whole = from == chunk_start && (to == chunk_start + kChunkSize || to == size_);
    bool durable = IsDurable(chunk);
    uint64_t run = 0;
    if (whole && !durable && cache_.count(chunk) == 0) {
      run = 1;
      while (run < kReadBatchChunks && (chunk + run + 1) * kChunkSize <= end &&
             !IsDurable(chunk + run) &&
             (cache_.empty() || cache_.count(chunk + run) == 0)) {
        ++run;
      }
    }
    // New data in long runs: seal (on two cores) and write adjacent slots with one system call.
    // Short runs are buffered like other writes, so that a small commit needs one fdatasync.
    if (run > kSmallCommitChunks) {
      uint8_t padded[kChunkSize];
      std::vector<uint64_t> chunks(run);
      std::vector<const uint8_t*> plains(run);
      for (uint64_t i = 0; i < run; ++i) {
        chunks[i] = chunk + i;
        plains[i] = data.data() + ((chunk + i) * kChunkSize - offset);
        uint64_t avail = end - (chunk + i) * kChunkSize;
        if (avail < kChunkSize) {  // the file's last chunk, written to the end of the file
          std::memcpy(padded, plains[i], avail);
          std::memset(padded + avail, 0, kChunkSize - avail);
          plains[i] = padded;
        }
      }
      SCONE_RETURN_IF_ERROR(SealAndWriteInPlace(chunks, plains));
      chunk += run;
      continue;
    }
    uint8_t* plain;
    if (whole && cache_.count(chunk) == 0) {
      Bytes buffer = TakeBuffer();
      // A whole chunk ending at the end of the file: what lies past the end reads as zeros.
      if (to - from < kChunkSize) std::memset(buffer.data() + (to - from), 0, kChunkSize - (to - from));
      plain = cache_.emplace(chunk, std::move(buffer)).first->second.data();
    } else {
      SCONE_RETURN_IF_ERROR(CachedChunkForUpdate(chunk, &plain));
    }
    std::memcpy(plain + (from - chunk_start), src, to - from);
    ++chunk;
  }
  return Status::Ok();
}

Status ProtectedFile::Reserve(uint64_t size) {
  if (size > kMaxFileSize) return TooBig("a reservation of " + std::to_string(size) + " bytes");
  std::shared_lock lock(mu_);
  uint64_t data_size = layout_.DataFileSize(size);
  uint64_t side_size = layout_.SideFileSize(size);
  for (auto [file, want] : {std::pair{&data_, data_size}, std::pair{&side_, side_size}}) {
    if (!file->valid() || want == 0) continue;
    // Through the seam, as every call of the shield's own (the C library's reached the
    // program's dispatch, where the shield's own descriptor is not the program's: nothing was
    // allocated, and fallocate(1) reported success).
    SCONE_RETURN_IF_ERROR(file->Allocate(0, want));
  }
  return Status::Ok();
}

Status ProtectedFile::Truncate(uint64_t new_size) {
  if (new_size > kMaxFileSize) return TooBig("a size of " + std::to_string(new_size) + " bytes");
  SCONE_RETURN_IF_ERROR(volume_->PublishBuffered(this));  // program order
  std::unique_lock lock(mu_);
  if (!volume_->MayBuffer()) {
    return CommitLocked(/*durable=*/false, [&] { return TruncateLocked(new_size); }, kChunkSize,
                        /*cuts_short=*/new_size < size_);
  }
  SCONE_RETURN_IF_ERROR(TruncateLocked(new_size));
  if (changed_) volume_->NoteBuffered(id_);
  return Status::Ok();
}

Status ProtectedFile::TruncateLocked(uint64_t new_size) {
  if (new_size == size_) return Status::Ok();
  ForgetRecentIfChanged();
  // Growing costs nothing but the size: the new chunks are holes, their pages hole pages.
  if (new_size > size_) SCONE_RETURN_IF_ERROR(EnsureRoomFor(new_size));
  changed_ = true;
  times_kept_ = false;
  clock_gettime(CLOCK_REALTIME_COARSE, &changed_at_);
  uint64_t chunks = ChunkCount(new_size);
  if (new_size < size_) {
    pages_in_place_ = false;  // the apply drops its pages past the end
    ForgetAllocated();  // the commit cuts the data file
    DropCached(cache_.lower_bound(chunks), cache_.end());
    uint64_t tail = new_size % kChunkSize;
    if (tail != 0 && !(table_.Entry(chunks - 1).IsHole() && cache_.count(chunks - 1) == 0)) {
      // Bytes past the end of the last chunk must read as zeros if the file grows again.
      uint8_t* plain;
      SCONE_RETURN_IF_ERROR(CachedChunkForUpdate(chunks - 1, &plain));
      std::memset(plain + tail, 0, kChunkSize - tail);
    }
    table_.ClearEntriesFrom(chunks);
  }
  size_ = new_size;
  // The commit rewrites the committed pages at or past this point (see BuildRecord).
  min_chunks_since_commit_ = std::min(min_chunks_since_commit_, chunks);
  return Status::Ok();
}

Status ProtectedFile::TooBig(const std::string& what) const {
  return TooLarge(volume_->dir() + "/" + path() + ": " + what +
                  " goes past the largest size of a protected file (16 TiB)");
}

Status ProtectedFile::EnsureRoomFor(uint64_t size) {
  const uint64_t need = layout_.DataFileSize(size);
  room_ = std::max(room_, physical_size_);
  if (need <= room_) return Status::Ok();
  // Probe past the need, so that a file growing by appends asks once per doubling; never past
  // RLIMIT_FSIZE, where the kernel would signal SIGXFSZ for a size the program did not ask for.
  uint64_t probe = std::max(need, std::min(2 * room_, layout_.DataFileSize(kMaxFileSize)));
  const std::optional<uint64_t> limit = os::FileSizeLimit();
  // Every file system takes a small file: only the program's own limit can refuse it (two
  // ftruncates per new file were most of what `tar -x` paid for this check).
  if (need <= kUnprobedSize && (!limit || need <= *limit)) {
    room_ = need;
    return Status::Ok();
  }
  if (limit) probe = std::max(need, std::min(probe, *limit));
  // The length to go back to is the disk's, not physical_size_: another process may have
  // committed a longer file since this object last looked, and cutting it off destroys it.
  SCONE_ASSIGN_OR_RETURN(uint64_t length, data_.Size());
  ForgetAllocated();  // cut back to `length` below
  Status grown = data_.Truncate(probe);
  if (!grown.ok() && grown.sys_errno() == EFBIG && probe > need) {
    probe = need;
    grown = data_.Truncate(probe);
  }
  if (!grown.ok()) {
    if (grown.sys_errno() != EFBIG) return grown;
    return TooLarge(volume_->dir() + "/" + path() + ": the host file system refuses a data file of " +
                    std::to_string(need) + " bytes (for " + std::to_string(size) +
                    " bytes of plaintext)");
  }
  room_ = probe;
  // Back to its length: data and commits lengthen the file, and a crash leaves nothing behind.
  return data_.Truncate(length);
}

Status ProtectedFile::ReserveGrowth(uint64_t offset, uint64_t end) {
  const uint64_t need_end = layout_.DataFileSize(end);
  if (need_end <= kUnprobedSize) return Status::Ok();
  // A write that continues the file allocates from the data file's end (chunks buffered since it
  // last grew have no room yet either) and ahead; one past a hole allocates its own chunks only.
  constexpr uint64_t kAheadMax = uint64_t{1} << 20;
  const uint64_t from = std::max(offset, size_);
  const uint64_t first_slot = layout_.SlotOffset(from / kChunkSize);
  // Continues: starts at or before the end, right after data (not a hole a truncate made).
  const bool continues = offset <= size_ && (from == 0 || cache_.count((from - 1) / kChunkSize) != 0 ||
                                             !table_.Entry((from - 1) / kChunkSize).IsHole());
  const uint64_t begin = continues ? std::min(first_slot, physical_size_) : first_slot;
  if (begin >= allocated_from_ && need_end <= allocated_to_) return Status::Ok();
  uint64_t ahead_end = need_end;
  if (continues) {
    ahead_end = layout_.DataFileSize(std::min(end + std::min(end / 8, kAheadMax), kMaxFileSize));
    // Never past RLIMIT_FSIZE, as EnsureRoomFor.
    if (const std::optional<uint64_t> limit = os::FileSizeLimit()) ahead_end = std::max(need_end, std::min(ahead_end, *limit));
  }
  Status reserved = AllocateRange(begin, ahead_end);
  if (!reserved.ok() && OutOfSpace(reserved) && ahead_end > need_end) reserved = AllocateRange(begin, need_end);
  return reserved;
}

Status ProtectedFile::Sync() {
  // What the program wrote to other files before comes first (fs/buffered_files.h).
  SCONE_RETURN_IF_ERROR(volume_->PublishBuffered(this));
  std::unique_lock lock(mu_);
  return CommitLocked(/*durable=*/true);
}

bool ProtectedFile::JournalsAllChunks(bool durable) const {
  // An authenticated file's commits are durable (see BuildRecord).
  durable = durable || region_ == Region::kAuthenticated;
  return durable && !data_unsynced_ && cache_.size() <= kSmallCommitChunks;
}

bool ProtectedFile::OnlyOverwritesLocked(uint64_t stage_bytes, uint64_t stage_offset) const {
  // Natively an overwrite of allocated bytes takes no new room (PostgreSQL rewriting pages of
  // its WAL segments and tables on a full disk keeps running; here its WAL write met ENOSPC and
  // the server panicked: hostile finding). Holes and bytes past the end are new room.
  if (size_ > committed_size_ || (cache_.empty() && stage_bytes == 0)) return false;
  const uint64_t chunks = ChunkCount(committed_size_);
  const auto allocated = [&](uint64_t chunk) { return chunk < chunks && !table_.Entry(chunk).IsHole(); };
  for (const auto& [chunk, plain] : cache_) {
    if (!allocated(chunk)) return false;
  }
  if (stage_bytes == 0) return true;
  if (stage_offset == kUnknownOffset || stage_offset + stage_bytes > committed_size_) return false;
  for (uint64_t chunk = stage_offset / kChunkSize; chunk * kChunkSize < stage_offset + stage_bytes; ++chunk) {
    if (!allocated(chunk)) return false;
  }
  return true;
}

uint64_t ProtectedFile::RecordBoundLocked(uint64_t stage_bytes, uint64_t stage_offset) const {
  // Images of the chunks that go to the journal, an entry for every chunk, the pages' and the
  // header's bytes. Before the catch-up and the stage: counted as if any small commit went to
  // the journal whole.
  const bool all = cache_.size() <= kSmallCommitChunks;
  uint64_t images = 0;
  for (const auto& [chunk, plain] : cache_) images += GoesToJournal(chunk, all) ? 1 : 0;
  const uint64_t staged = stage_bytes == 0 ? 0 : stage_bytes / kChunkSize + 2;
  uint64_t staged_images = staged;
  // A process alone knows its file: a large write's chunks that are not durable (past the end,
  // holes: a file fallocate made long) go in place (StageWrite), not to the journal. Counted
  // twice, dd's last megabyte on a nearly full disk failed whole with room for most of it.
  if (stage_offset != kUnknownOffset && stage_bytes > kSmallCommitChunks * kChunkSize &&
      !volume_->shared_.load(std::memory_order_acquire)) {
    staged_images = 2;
    const uint64_t last = std::min(stage_offset + stage_bytes, size_);
    for (uint64_t chunk = stage_offset / kChunkSize; chunk * kChunkSize < last; ++chunk) {
      staged_images += IsDurable(chunk) ? 1 : 0;
    }
  }
  const uint64_t entries = cache_.size() + changed_entries_.size() + staged;
  return (images + staged_images) * kChunkSize + entries * (kEntrySize + 8) + 4096;
}

Status ProtectedFile::AllocateInPlaceLocked(uint64_t new_room_from) {
  // Every buffered chunk's slot, those whose images go to the journal too: they go in place
  // after it (at once for a durable record, with the window for a lazy one), and a slot a
  // truncate freed meanwhile is new room. Else that apply met the full disk after the record,
  // and the next open's recovery needed the room all the same (from the volume's reserve; the
  // second time there was none, and the volume was shut: hostile finding, `dd bs=4k` twice).
  //
  // A lazy commit's new chunks past the data file's end are the exception (NewRoomFromLocked):
  // BuildRecord writes them before the record, where a full disk fails the commit with nothing
  // recorded. No fallocate for them: one per file was a tenth of the time of a `tar -x` into a
  // volume.
  std::vector<uint64_t> chunks;
  chunks.reserve(cache_.size());
  for (const auto& [chunk, plain] : cache_) chunks.push_back(chunk);
  return AllocateSlots(chunks, new_room_from);
}

uint64_t ProtectedFile::NewRoomFromLocked(bool durable) {
  if (durable || region_ == Region::kAuthenticated) return kNoNewRoom;
  CatchUpWithDataCutLocked();
  const Result<uint64_t> length = data_.Size();
  return length.ok() ? std::max(*length, physical_size_) : kNoNewRoom;
}

bool ProtectedFile::WrittenBeforeRecord(uint64_t chunk, uint64_t new_room_from) const {
  return !IsDurable(chunk) && layout_.SlotOffset(chunk) >= new_room_from;
}

void ProtectedFile::CatchUpWithDataCutLocked() {
  if (!data_cut_.exchange(false, std::memory_order_acq_rel)) return;
  ForgetAllocated();
  if (auto length = data_.Size(); length.ok()) physical_size_ = std::min(physical_size_, *length);
}

Status ProtectedFile::AllocateSlots(const std::vector<uint64_t>& chunks, uint64_t new_room_from) {
  CatchUpWithDataCutLocked();
  uint64_t begin = 0, end = 0;  // the run of adjacent ranges so far, allocated with one call
  const auto add = [&](uint64_t at, uint64_t length) -> Status {
    if (at != end) {
      if (end > begin) SCONE_RETURN_IF_ERROR(AllocateRange(begin, end));
      begin = at;
    }
    end = at + length;
    return Status::Ok();
  };
  uint64_t last_page = UINT64_MAX;
  for (uint64_t chunk : chunks) {
    // A table page past the data file's end is new too, and written in place with the slots
    // (interleaved, it lies right before its group's first slot).
    const uint64_t page = chunk / kEntriesPerPage;
    if (layout_.interleaved() && page != last_page && layout_.PageOffset(page) >= physical_size_) {
      SCONE_RETURN_IF_ERROR(add(layout_.PageOffset(page), kPageSize));
    }
    last_page = page;
    if (WrittenBeforeRecord(chunk, new_room_from)) continue;  // its page is allocated all the same
    SCONE_RETURN_IF_ERROR(add(layout_.SlotOffset(chunk), kChunkSize));
  }
  if (end > begin) SCONE_RETURN_IF_ERROR(AllocateRange(begin, end));
  return Status::Ok();
}

Status ProtectedFile::AllocateRange(uint64_t begin, uint64_t end) {
  CatchUpWithDataCutLocked();
  if (begin >= allocated_from_ && end <= allocated_to_) return Status::Ok();
  // Room the data file holds already (a database rewriting its pages and its log's last page)
  // is not allocated again: a fallocate changes the inode even where it allocates nothing, and
  // the file system then wrote its metadata at every fdatasync of the journal that followed (a
  // fast commit on ext4: pgbench's commits waited for two writes instead of one).
  if (!(end <= physical_size_ && data_.HasNoHoleIn(begin, end))) SCONE_RETURN_IF_ERROR(data_.Allocate(begin, end - begin));
  // Kept as one range: where it touches the one known, their union.
  if (allocated_to_ > allocated_from_ && begin <= allocated_to_ && end >= allocated_from_) {
    allocated_from_ = std::min(allocated_from_, begin);
    allocated_to_ = std::max(allocated_to_, end);
  } else {
    allocated_from_ = begin;
    allocated_to_ = end;
  }
  return Status::Ok();
}

Status ProtectedFile::CommitLocked(bool durable, const std::function<Status()>& stage, uint64_t stage_bytes,
                                   bool cuts_short, uint64_t stage_offset, const std::function<Status()>& staged) {
  if (!stage && !changed_ && cache_.empty()) {
    if (!durable || unlinked_) return Status::Ok();
    // fsync with every change published already: what this process or another published
    // becomes durable (nothing to do for a process alone whose records are durable).
    if (volume_->DurableSeq() >= last_seq_ && !volume_->Shared()) return Status::Ok();
    return volume_->MakeDurable();
  }
  JournalRecord record;
  record.kind = JournalRecord::Kind::kCommit;
  if (unlinked_) {
    const bool in_memory = in_memory_only_ && !force_in_place_;
    if (in_memory && !stage) return Status::Ok();  // a close, an fsync: nothing goes to disk
    // What others committed before the unlink first (they may have written chunks in place).
    if (volume_->HasLastEntry(id_)) SCONE_RETURN_IF_ERROR(CatchUpUnderVolumeLocks());
    if (stage) SCONE_RETURN_IF_ERROR(stage());
    if (staged) SCONE_RETURN_IF_ERROR(staged());
    if (in_memory) return Status::Ok();  // the changes stay in cache_
    // Overwrites that waited in the journal go in place first: no record will bring them (the
    // journal no longer names the file), and the in-place commit below forgets them.
    SCONE_RETURN_IF_ERROR(PutPendingInPlaceLocked());
    SCONE_RETURN_IF_ERROR(BuildRecord(&record, /*durable=*/true));
    SCONE_RETURN_IF_ERROR(ApplyInPlace(record));  // the orphaned inode only; nothing to commit
  } else {
    // Built under the volume's locks: another process may have published this file since we
    // loaded it, and then we catch up first.
    // Unlinked meanwhile (learned in this transaction) while another process still has it
    // open: the changes stay in memory (see MarkUnlinked).
    bool kept_in_memory = false;
    // Buffered changes that shorten the file (the program's `: > log` on a full disk), at most
    // the new last chunk's image with them.
    if (!stage) cuts_short = size_ < committed_size_ && cache_.size() <= 1;
    // Either, or one that only overwrites what the file holds, takes no room natively: it may
    // take the journal's room from the volume's reserve on a full disk.
    // So does a file grown by ftruncate alone (buffered; its apply writes no block for the holes).
    const bool grown_only = !stage && cache_.empty() && size_ > committed_size_;
    const char* reserve_for = cuts_short                                           ? "a file cut short"
                              : OnlyOverwritesLocked(stage ? stage_bytes : 0, stage_offset) ? "an overwrite"
                              : grown_only                                                  ? "a file grown"
                                                                                            : nullptr;
    SCONE_RETURN_IF_ERROR(volume_->CommitFile(
        id_, record, RecordBoundLocked(stage_bytes, stage_offset), reserve_for,
        [&](const FileEntry* current) -> Status {
          if (current != nullptr) SCONE_RETURN_IF_ERROR(CatchUpLocked(*current));
          ForgetDurableLazyChunks();
          in_transaction_ = stage != nullptr;
          Status built = stage ? stage() : Status::Ok();
          kept_in_memory = unlinked_ && in_memory_only_;
          if (built.ok() && !kept_in_memory) {
            const uint64_t new_room_from = NewRoomFromLocked(durable);
            built = AllocateInPlaceLocked(new_room_from);
            if (built.ok()) built = BuildRecord(&record, durable, /*defer_in_place=*/true, new_room_from);
          }
          if (built.ok() && staged) built = staged();
          in_transaction_ = false;
          return built;
        },
        [&]() -> Status {
          // After the record: a lazy one's new chunks, a durable one's images and pages (an
          // orphaned inode's, with no record, both).
          const bool lazy = !kept_in_memory && record.lazy && record.seq != 0;
          SCONE_RETURN_IF_ERROR(WriteDeferredInPlace(lazy ? &record : nullptr));
          if (kept_in_memory || lazy) return Status::Ok();
          return ApplyInPlace(record);
        }));
    if (kept_in_memory) {
      ReleasePromisedLocked();  // it stays in memory: no disk room to keep
      return Status::Ok();
    }
  }
  if (record.lazy) {
    NoteLazyInPlace(record);
    // Overwrites of published chunks wait in the journal until a durable record: reads take
    // them from here meanwhile.
    for (size_t i = 0; i < record.slot_chunks.size(); ++i) {
      ByteSpan image = record.SlotImage(i);
      pending_[record.slot_chunks[i]] = Bytes(image.begin(), image.end());
    }
    if (!record.slot_chunks.empty()) {
      pending_seq_ = record.seq;
      // Nothing reached the data file, yet its content changed: its mtime moves, as a write's
      // (best effort: a process that may write the file through its descriptor may still not
      // own it, and the write has happened).
      if (!times_kept_) (void)data_.SetTimes({{{0, UTIME_OMIT}, {0, UTIME_NOW}}});
    }
  } else {
    pending_.clear();  // the window, ours included, is in place now
    lazy_in_place_.clear();
  }
  if (record.seq != 0) last_seq_ = record.seq;
  // The committed state is now the table in memory: its non-hole entries are the durable ones.
  // Every entry that changed below the end is in changed_entries_ (see BuildRecord); past the
  // end, none is durable.
  // After a lazy commit, a chunk the durable state still references stays marked too: it must
  // not be overwritten in place before the record that drops it is durable.
  const uint64_t chunks = ChunkCount(size_);
  for (uint64_t c : changed_entries_) {
    if (c >= chunks) break;  // sorted
    const bool referenced = !table_.Entry(c).IsHole();
    if (referenced || !record.lazy) table_.SetDurable(c, referenced);
  }
  if (!record.lazy) table_.ClearDurableFrom(chunks);
  // A lazy commit's last chunk, partial, is the one the next append rewrites: through the
  // journal, not in place, so that a crash before the next record finds the version this one
  // names (else recovery cuts the chunk off, in the middle of a line: `yes > log` killed). A
  // process sharing the volume still rewrites it in place inside its transaction (IsDurable);
  // after its crash the next writer repairs (Volume::RepairAfterDeadWriterLocked).
  if (record.lazy && size_ % kChunkSize != 0 && !table_.Entry(chunks - 1).IsHole()) table_.SetDurable(chunks - 1, true);
  dirty_pages_.clear();
  changed_entries_.clear();
  ReleasePromisedLocked();
  min_chunks_since_commit_ = chunks;
  committed_root_ = record.entry.root;
  committed_size_ = record.entry.size;
  recent_root_ = committed_root_;
  recent_valid_ = !recent_.empty();
  changed_ = false;
  changed_at_ = {};  // the commit wrote the data file: its times say it
  if (times_kept_) {
    // The commit wrote the data file: the times the program set since its last write go back.
    times_kept_ = false;
    SCONE_RETURN_IF_ERROR(data_.SetTimes(kept_times_));
  }
  return Status::Ok();
}

Status ProtectedFile::KeepTimes(bool atime, bool mtime) {
  std::unique_lock lock(mu_);
  if (!changed_ && cache_.empty()) return Status::Ok();  // no commit pending: they stay as set
  // As the kernel set them (UTIME_NOW resolved), on top of times kept earlier.
  SCONE_ASSIGN_OR_RETURN(auto times, data_.Times());
  if (!times_kept_) kept_times_ = {{{0, UTIME_OMIT}, {0, UTIME_OMIT}}};
  if (atime) kept_times_[0] = times[0];
  if (mtime) kept_times_[1] = times[1];
  times_kept_ = atime || mtime || times_kept_;
  if (mtime) changed_at_ = {};  // set after the writes: the data file shows it
  return Status::Ok();
}

Status ProtectedFile::MakeWritable() {
  if (!read_only()) return Status::Ok();
  std::unique_lock lock(mu_);
  if (!read_only()) return Status::Ok();
  // The same inode, whatever its name is now; the kernel checks this process's permission.
  const std::string inode = "/proc/self/fd/" + std::to_string(data_.fd());
  SCONE_ASSIGN_OR_RETURN(os::File writable, os::File::Open(inode, O_RDWR));
  // The read-only descriptor stays open with the file: closing a descriptor of the data file
  // drops every POSIX lock the program holds on it.
  read_only_data_ = std::move(data_);
  data_ = std::move(writable);
  read_only_ = false;
  return Status::Ok();
}

std::optional<struct timespec> ProtectedFile::UnwrittenChangeTime() const {
  std::shared_lock lock(mu_);
  if (changed_at_.tv_sec == 0) return std::nullopt;
  return changed_at_;
}

Status ProtectedFile::CatchUpLocked(const FileEntry& current) {
  auto published = volume_->TakePublishedLocked(id_);
  if (!pending_.empty() && volume_->DurableSeq() >= pending_seq_) pending_.clear();
  if (current.root == committed_root_) return Status::Ok();
  if (current.size < committed_size_) ForgetAllocated();  // another cut it: its apply cuts the data file
  const bool local_changes = changed_ || !cache_.empty() || !changed_entries_.empty();
  if (!local_changes) {
    // The common case: apply what the others published, record by record.
    Status applied;
    for (const auto& record : published) {
      if (record->seq <= last_seq_) continue;
      applied = ApplyPublished(*record);
      if (!applied.ok()) break;
    }
    if (applied.ok() && current.root == committed_root_) return Status::Ok();
  }
  return ReloadChangedByOthers(current, volume_->WindowOfLocked(id_, current));
}

void ProtectedFile::ForgetDurableLazyChunks() {
  if (!lazy_in_place_.empty() && volume_->LastSyncSeq() != lazy_in_place_since_) lazy_in_place_.clear();
}

void ProtectedFile::NoteLazyInPlace(const JournalRecord& record) {
  ForgetDurableLazyChunks();
  // (A record a sync followed may be durable: see Volume::LastSyncSeq.)
  if (record.inplace_chunks.empty() || record.seq <= volume_->LastSyncSeq()) return;
  if (lazy_in_place_.empty()) lazy_in_place_since_ = volume_->LastSyncSeq();
  lazy_in_place_.insert(record.inplace_chunks.begin(), record.inplace_chunks.end());
}

// Applies a commit record another process (or this one, before this object existed) published:
// its entries, its size, its images still waiting in the journal; the root must come out as
// the record says. REQUIRES: mu_ held exclusively, no local changes.
Status ProtectedFile::ApplyPublished(const JournalRecord& record) {
  // A lazy record that a durable one followed before we applied it is durable itself: its
  // chunks are referenced by the durable state (never to be overwritten in place again), its
  // images are in place.
  const bool lazy = record.lazy && record.seq > volume_->DurableSeq();
  const uint64_t chunks = ChunkCount(record.entry.size);
  std::set<uint64_t> pages;
  if (chunks < ChunkCount(size_)) {
    for (auto it = table_.lower_bound(chunks / kEntriesPerPage); it != table_.end(); ++it) {
      pages.insert(it->first);
    }
    table_.ClearEntriesFrom(chunks);
    pending_.erase(pending_.lower_bound(chunks), pending_.end());
  }
  for (const auto& [chunk, e] : record.entries) {
    if (chunk >= chunks) continue;
    if (e.IsHole()) {
      table_.ClearEntry(chunk);
    } else {
      table_.MutableEntry(chunk) = e;
    }
    if (!e.IsHole() || !lazy) table_.SetDurable(chunk, !e.IsHole());
    pages.insert(chunk / kEntriesPerPage);
    pending_.erase(chunk);
  }
  if (!lazy) lazy_in_place_.clear();
  if (lazy) {
    NoteLazyInPlace(record);
    for (size_t i = 0; i < record.slot_chunks.size(); ++i) {
      if (record.slot_chunks[i] >= chunks) continue;
      ByteSpan image = record.SlotImage(i);
      pending_[record.slot_chunks[i]] = Bytes(image.begin(), image.end());
      pending_seq_ = record.seq;
    }
  }
  if (!lazy) table_.ClearDurableFrom(chunks);
  const uint64_t page_count = PageCount(chunks);
  if (tree_.leaf_count() == 0 && page_count > 0) pages.insert(0);
  tree_.Resize(page_count);
  for (uint64_t page : pages) {
    if (page < page_count) tree_.SetLeaf(page, PageLeaf(page, PageImage(page)));
  }
  Root root = ComputeRoot(keys_.root, record.entry.size, tree_.Root());
  if (!crypto::ConstantTimeEquals(root, record.entry.root)) {
    return DataCorrupted(volume_->dir() + "/" + path() + ": a commit another process published (" +
                         std::to_string(record.seq) + ") does not match this file's chunk table");
  }
  size_ = committed_size_ = record.entry.size;
  committed_root_ = record.entry.root;
  min_chunks_since_commit_ = chunks;
  if (record.seq != 0) last_seq_ = record.seq;
  return Status::Ok();
}

// Another process published this file: load its chunk table from disk and the window, then lay
// our own unpublished changes (cached chunks, chunks sealed in place, our size) over it. Last
// writer wins per chunk.
Status ProtectedFile::ReloadChangedByOthers(const FileEntry& current, const FileWindow& window) {
  ChunkTable ours = std::move(table_);
  // Our size only wins where we changed it since our last commit; else the other's is newer.
  uint64_t our_size = size_ != committed_size_ ? size_ : current.size;
  const bool had_local_changes = !cache_.empty() || !changed_entries_.empty() || our_size != current.size;
  size_ = window.base.size;
  SCONE_ASSIGN_OR_RETURN(physical_size_, data_.Size());
  room_ = std::max(room_, physical_size_);
  SCONE_RETURN_IF_ERROR(LoadPages());
  Root root = ComputeRoot(keys_.root, window.base.size, tree_.Root());
  if (!crypto::ConstantTimeEquals(root, window.base.root)) {
    return DataCorrupted(volume_->dir() + "/" + path() +
                         ": chunk table does not match the volume's metadata after another "
                         "process's commit");
  }
  committed_size_ = size_;
  committed_root_ = window.base.root;
  pending_.clear();
  for (const auto& record : window.records) SCONE_RETURN_IF_ERROR(ApplyPublished(*record));
  if (!crypto::ConstantTimeEquals(committed_root_, current.root)) {
    return DataCorrupted(volume_->dir() + "/" + path() +
                         ": the records other processes published do not lead to the volume's metadata");
  }
  size_ = our_size;
  const uint64_t chunks = ChunkCount(our_size);
  table_.ClearEntriesFrom(chunks);
  for (uint64_t c : changed_entries_) {
    if (c >= chunks) continue;
    const ChunkEntry& e = ours.Entry(c);
    if (!e.IsHole()) {
      table_.MutableEntry(c) = e;
    } else {
      table_.ClearEntry(c);
    }
  }
  committed_root_ = current.root;
  committed_size_ = current.size;
  if (had_local_changes) {
    // dirty_pages_ holds the pages of our sealed chunks; with 0 here, the commit rewrites and
    // journals every page the other's table fills too (the table on disk is the other's).
    min_chunks_since_commit_ = 0;
    changed_ = true;
  } else {
    dirty_pages_.clear();
    min_chunks_since_commit_ = chunks;
    changed_ = false;
  }
  return Status::Ok();
}

Status ProtectedFile::BuildRecord(JournalRecord* out, bool durable, bool defer_in_place, uint64_t new_room_from) {
  JournalRecord& record = *out;
  // An authenticated file's data file is its plaintext, exactly as long as the file: only an
  // in-place apply keeps it so, and that waits for a durable record.
  if (region_ == Region::kAuthenticated) durable = true;
  // A lazy record is published, not synced: its overwrites wait in the journal (see
  // Volume's window), its new chunks go in place now and are synced before a durable record.
  record.lazy = !durable;
  // 0. Before anything is consumed: the host must take the data file's length (normally
  //    checked by the write or truncate already), or the record could never be applied.
  SCONE_RETURN_IF_ERROR(EnsureRoomFor(size_));
  // 1. Seal buffered chunks: new ones go in place now, overwrites of durable ones into the
  //    journal record.
  std::vector<std::pair<uint64_t, const uint8_t*>> inplace_now;
  // A small commit with no data written in place yet goes to the journal whole: one
  // fdatasync (the journal's) instead of two (data, then journal).
  const bool journal_all = JournalsAllChunks(durable);
  auto journaled_chunk = [&](uint64_t chunk) { return GoesToJournal(chunk, journal_all); };
  size_t journaled = 0;
  for (const auto& [chunk, plain] : cache_) {
    if (journaled_chunk(chunk)) ++journaled;
  }
  record.slot_data.resize(journaled * kChunkSize);
  Bytes inplace_images(kChunkSize * (cache_.size() - journaled));
  size_t next_inplace = 0;
  const size_t inplace_before = inplace_.size();
  std::vector<uint64_t> sealed;
  std::vector<const uint8_t*> plains;
  std::vector<uint8_t*> images;
  for (const auto& [chunk, plain] : cache_) {
    uint8_t* image;
    if (journaled_chunk(chunk)) {
      image = record.slot_data.data() + record.slot_chunks.size() * kChunkSize;
      record.slot_chunks.push_back(chunk);
    } else {
      image = inplace_images.data() + next_inplace++ * kChunkSize;
      inplace_now.emplace_back(chunk, image);
      inplace_.push_back(chunk);
    }
    sealed.push_back(chunk);
    plains.push_back(plain.data());
    images.push_back(image);
  }
  SCONE_RETURN_IF_ERROR(SealMany(sealed, plains, images));
  if (defer_in_place && record.lazy) {
    // New chunks past the data file's end hold no version a record names: in place now, in
    // the room AllocateInPlaceLocked did not reserve, while the plaintext is still buffered. A
    // full disk fails the commit here, and the next one seals them again.
    std::vector<std::pair<uint64_t, const uint8_t*>> before_record;
    std::erase_if(inplace_now, [&](const std::pair<uint64_t, const uint8_t*>& slot) {
      if (!WrittenBeforeRecord(slot.first, new_room_from)) return false;
      before_record.push_back(slot);
      return true;
    });
    if (Status written = WriteSlots(before_record); !written.ok()) {
      inplace_.resize(inplace_before);
      return written;
    }
  }
  // A small commit's plaintext stays for the next write into its chunks (recent_), valid once
  // the commit is (CommitLocked).
  DropRecent();
  if (cache_.size() <= kRecentChunks) {
    for (auto& [chunk, plain] : cache_) recent_.emplace_back(chunk, std::move(plain));
    cache_.clear();
  } else {
    DropCached(cache_.begin(), cache_.end());
  }
  if (!inplace_now.empty()) {
    data_unsynced_ = true;
    if (defer_in_place && record.lazy) {
      // Written after the record (WriteDeferredInPlace): a crash between leaves on disk the
      // versions earlier records name, which a repair goes back to (a chunk written first and
      // then not recorded is lost). Those past the data file's end went in place above.
      deferred_images_ = std::move(inplace_images);
      deferred_slots_ = std::move(inplace_now);
    } else {
      SCONE_RETURN_IF_ERROR(WriteSlots(inplace_now));
    }
  }
  // 2. Changed chunk table entries: sealed chunks, and committed entries at or past the point
  //    truncation cut (cleared, or sealed anew): with a file that shrank and grew again, their
  //    pages on disk still hold the old entries. Entries past the end need nothing (replay and
  //    the file's length drop them), nor do the hole chunks a file grows into.
  const uint64_t chunks = ChunkCount(size_);
  for (auto it = table_.lower_bound(min_chunks_since_commit_ / kEntriesPerPage);
       it != table_.end() && it->first * kEntriesPerPage < chunks; ++it) {
    for (size_t i = 0; i < kEntriesPerPage; ++i) {
      uint64_t c = it->first * kEntriesPerPage + i;
      if (!it->second->durable.test(i) || c < min_chunks_since_commit_) continue;
      changed_entries_.push_back(c);
      dirty_pages_.insert(it->first);
    }
  }
  std::sort(changed_entries_.begin(), changed_entries_.end());
  changed_entries_.erase(std::unique(changed_entries_.begin(), changed_entries_.end()),
                         changed_entries_.end());
  TableCursor entry(table_);
  for (uint64_t c : changed_entries_) {
    if (c < chunks) record.entries.emplace_back(c, entry(c));
  }
  // 3. New Merkle leaves and root: the pages whose entries changed. Pages the file grew into
  //    are hole pages, which the tree holds without being told; but an encrypted file's page 0
  //    holds its header, so a file growing from empty gets that page.
  const uint64_t pages = PageCount(chunks);
  if (tree_.leaf_count() == 0 && pages > 0) dirty_pages_.insert(0);
  tree_.Resize(pages);
  for (auto it = dirty_pages_.begin(); it != dirty_pages_.end();) {
    if (*it >= pages) {
      ++it;
      continue;
    }
    crypto::Hash leaf = PageLeaf(*it, PageImage(*it));
    if (leaf == MerkleTree::HoleLeaf() && tree_.IsHoleLeaf(*it)) {
      it = dirty_pages_.erase(it);  // a hole page before and after: nothing to write
      continue;
    }
    tree_.SetLeaf(*it, leaf);
    ++it;
  }
  record.entry.file_id = id_;
  record.entry.region = region_;
  record.entry.size = size_;
  record.entry.root = ComputeRoot(keys_.root, size_, tree_.Root());
  record.inplace_chunks = std::move(inplace_);
  inplace_.clear();
  // 4. In-place data must be durable before the record that refers to it (for a lazy one, before
  //    the durable record that follows it: the volume syncs it then).
  if (durable && data_unsynced_) {
    SCONE_RETURN_IF_ERROR(data_.DataSync());
    data_unsynced_ = false;
  }
  return Status::Ok();
}

bool ProtectedFile::PagesGoInPlace(const JournalRecord& record) {
  // No durable state references such a file's pages: a process that loads it meanwhile (a
  // joiner, a recovery) loads it as of its create, an empty file, and lays the window on top,
  // as it does for the new chunks written in place. A tar -x of 8,140 files then no longer
  // reopens each at the exit to write its page (13 system calls a file). Every commit since
  // the create must have written its pages, and none cut the file (pages past its end would
  // stay for the apply to drop); nothing waits in the journal as an image.
  pages_in_place_ = pages_in_place_ && created_seq_ != 0 && volume_->DurableSeq() < created_seq_ &&
                    !volume_->Shared() && layout_.interleaved() && record.slot_chunks.empty();
  return pages_in_place_;
}

Status ProtectedFile::WriteDeferredInPlace(const JournalRecord* lazy_record) {
  const bool pages = lazy_record != nullptr && PagesGoInPlace(*lazy_record);
  std::vector<Bytes> images;
  std::vector<std::pair<uint64_t, const uint8_t*>> page_list;
  if (pages) {
    const uint64_t end = PageCount(ChunkCount(size_));
    images.reserve(dirty_pages_.size());
    for (uint64_t page : dirty_pages_) {
      if (page >= end) continue;
      images.push_back(PageImage(page));
      page_list.emplace_back(page, images.back().data());
    }
  }
  Status written = Status::Ok();
  if (!deferred_slots_.empty() || !page_list.empty()) written = WriteSlots(deferred_slots_, page_list);
  deferred_slots_.clear();
  deferred_images_.clear();
  if (pages) {
    // A failed write leaves the pages to the window's apply, as for any other file (it
    // rewrites each page whole).
    if (written.ok() && physical_size_ == layout_.DataFileSize(size_)) {
      volume_->NotePagesInPlaceLocked(id_, lazy_record->seq);
    } else {
      pages_in_place_ = false;
    }
  }
  return written;
}

Status ProtectedFile::WriteSlots(std::span<const std::pair<uint64_t, const uint8_t*>> slots,
                                 std::span<const std::pair<uint64_t, const uint8_t*>> pages) {
  if (region_ == Region::kAuthenticated) {
    // Its pages live in the side file (WriteTablePages); none may be dropped here unwritten.
    if (!pages.empty()) return Internal(path() + ": table pages given with an authenticated file's slots");
    for (const auto& [chunk, image] : slots) SCONE_RETURN_IF_ERROR(WriteSlot(chunk, image));
    return Status::Ok();
  }
  // Encrypted slots and table pages are 4 KiB each: runs of adjacent ones become one pwritev
  // (a small file's page 0 and its first chunk, one call).
  static_assert(kChunkSize == kPageSize);
  std::vector<std::pair<uint64_t, const uint8_t*>> sorted;  // (offset, image)
  sorted.reserve(slots.size() + pages.size());
  for (const auto& [chunk, image] : slots) sorted.emplace_back(layout_.SlotOffset(chunk), image);
  for (const auto& [page, image] : pages) sorted.emplace_back(layout_.PageOffset(page), image);
  std::sort(sorted.begin(), sorted.end());
  std::vector<ByteSpan> run;
  uint64_t run_start = 0, expected_next = 0;
  auto flush = [&]() -> Status {
    if (run.empty()) return Status::Ok();
    SCONE_RETURN_IF_ERROR(data_.WriteVectorAt(run_start, run));
    physical_size_ = std::max<uint64_t>(physical_size_, run_start + run.size() * kChunkSize);
    run.clear();
    return Status::Ok();
  };
  for (const auto& [offset, image] : sorted) {
    if (!run.empty() && offset != expected_next) SCONE_RETURN_IF_ERROR(flush());
    if (run.empty()) run_start = offset;
    run.emplace_back(image, kChunkSize);
    expected_next = offset + kChunkSize;
  }
  SCONE_RETURN_IF_ERROR(flush());
  // The slot now holds the chunk's newest image: an older one a lazy record of ours carried
  // must no longer be read in its place (a chunk overwritten through the journal outside a
  // transaction, then in place inside one).
  if (!pending_.empty()) {
    for (const auto& [chunk, image] : slots) pending_.erase(chunk);
  }
  return Status::Ok();
}

// The chunk table's pages as this process holds them, in place; those past the end go.
template <typename Pages>
Status ProtectedFile::WriteTablePages(const Pages& pages) {
  const os::File& page_file = layout_.interleaved() ? data_ : side_;
  const uint64_t end = PageCount(ChunkCount(size_));
  for (uint64_t page : pages) {
    if (page < end) SCONE_RETURN_IF_ERROR(page_file.WriteAt(layout_.PageOffset(page), PageImage(page)));
  }
  return Status::Ok();
}

Status ProtectedFile::ApplyInPlace(const JournalRecord& record) {
  std::vector<std::pair<uint64_t, const uint8_t*>> slots;
  for (size_t i = 0; i < record.slot_chunks.size(); ++i) {
    slots.emplace_back(record.slot_chunks[i], record.SlotImage(i).data());
  }
  SCONE_RETURN_IF_ERROR(WriteSlots(slots));
  // Chunk table pages come from memory, which holds exactly the committed entries.
  SCONE_RETURN_IF_ERROR(WriteTablePages(dirty_pages_));
  uint64_t data_size = layout_.DataFileSize(record.entry.size);
  if (physical_size_ != data_size) {
    ForgetAllocated();
    SCONE_RETURN_IF_ERROR(data_.Truncate(data_size));
    physical_size_ = data_size;
  }
  if (!layout_.interleaved()) {
    SCONE_RETURN_IF_ERROR(side_.Truncate(layout_.SideFileSize(record.entry.size)));
  }
  return Status::Ok();
}

std::vector<std::string> ProtectedFile::VerifyAllChunks(size_t limit) {
  using Failures = std::vector<std::pair<uint64_t, Status>>;
  uint8_t plain[kChunkSize];
  // Opens `chunk` from disk if it holds data; a failure goes to `into`. REQUIRES: mu_.
  auto check = [&](uint64_t chunk, Failures& into) {
    if (chunk >= ChunkCount(size_) || table_.Entry(chunk).IsHole() || cache_.count(chunk) != 0) return;
    if (auto opened = ChunkFromDisk(chunk, plain); !opened.ok()) into.emplace_back(chunk, opened.status());
  };
  Failures failed;
  {
    std::shared_lock lock(mu_);
    for (auto page = table_.begin(); page != table_.end() && failed.size() < limit; ++page) {
      for (size_t i = 0; i < kEntriesPerPage && failed.size() < limit; ++i) check(page->first * kEntriesPerPage + i, failed);
    }
  }
  if (!failed.empty()) {
    // Another process sharing the volume may have rewritten a chunk in place since this one
    // loaded the file (an appender rewrites its last chunk inside its commit): as a read does,
    // the failing chunks are opened again after catching up, under the volume's writer lock,
    // which every such rewrite holds. Before, `volume verify` beside a service writing its log
    // reported the log's last chunk damaged, 9 runs in 10 (hostile finding).
    Failures again;
    std::unique_lock lock(mu_);
    if (CatchUpUnderVolumeLocks([&] { for (const auto& f : failed) check(f.first, again); }).ok()) failed = std::move(again);
  }
  std::vector<std::string> problems;
  for (const auto& [chunk, status] : failed) {
    problems.push_back("chunk " + std::to_string(chunk) + " " +
                       (status.code() == Code::kDataCorrupted ? std::string("modified, swapped or damaged")
                                                              : status.message()));
  }
  return problems;
}

uint64_t ProtectedFile::SeekData(uint64_t offset) const {
  std::shared_lock lock(mu_);
  if (offset >= size_) return size_;
  const uint64_t first = offset / kChunkSize;
  uint64_t found = UINT64_MAX;
  if (auto cached = cache_.lower_bound(first); cached != cache_.end()) found = cached->first;
  for (auto page = table_.lower_bound(first / kEntriesPerPage);
       page != table_.end() && page->first * kEntriesPerPage < found; ++page) {
    for (size_t i = 0; i < kEntriesPerPage; ++i) {
      uint64_t chunk = page->first * kEntriesPerPage + i;
      if (chunk >= found) break;
      if (chunk >= first && !page->second->entries[i].IsHole()) found = chunk;
    }
  }
  if (found == UINT64_MAX) return size_;
  return std::min(size_, std::max(offset, found * kChunkSize));
}

uint64_t ProtectedFile::SeekHole(uint64_t offset) const {
  std::shared_lock lock(mu_);
  TableCursor entry(table_);
  for (uint64_t chunk = offset / kChunkSize; chunk * kChunkSize < size_; ++chunk) {
    if (entry(chunk).IsHole() && cache_.count(chunk) == 0) return std::max(offset, chunk * kChunkSize);
  }
  return size_;
}

}  // namespace scone::fs
