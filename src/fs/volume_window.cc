// The volume's window (see volume.h): records published to every process but not yet durable,
// how they become durable, and how a process learns that others share the volume.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>

#include "common/clock.h"
#include "fs/volume.h"
#include "os/syscalls.h"

namespace scone::fs {
namespace {

// How often a process alone with its volume looks whether another one joined.
constexpr int64_t kSharePollNs = 2'000'000;
// Past this many files, one syncfs is cheaper than an fsync each.
constexpr size_t kSyncEachFileLimit = 16;

size_t RecordBytes(const JournalRecord& r) {
  return r.slot_data.size() + r.entries.size() * kEntrySize + 128;
}

}  // namespace

bool Volume::Shared() {
  if (shared_.load(std::memory_order_relaxed)) return true;
  int64_t now = MonotonicNs(CLOCK_MONOTONIC_COARSE);
  int64_t next = next_share_poll_.load(std::memory_order_relaxed);
  if (now < next || !next_share_poll_.compare_exchange_strong(next, now + kSharePollNs)) {
    return shared_.load(std::memory_order_relaxed);
  }
  NoticeJoiners();
  return shared_.load(std::memory_order_relaxed);
}

void Volume::NoticeJoiners() {
  auto users = lock_->ReadUsersHint();
  // Unreadable: assume company (slower, never wrong).
  if (!users.ok() || *users != users_seen_) shared_ = true;
}

FileWindow Volume::WindowOfLocked(const FileId& id, const FileEntry& current) const {
  FileWindow window;
  auto base = window_base_.find(id);
  window.base = base == window_base_.end() ? current : base->second;
  if (base == window_base_.end()) return window;
  for (const auto& r : window_) {
    if (r->entry.file_id == id) window.records.push_back(r);
  }
  return window;
}

void Volume::AddToWindowLocked(const std::shared_ptr<const JournalRecord>& record) {
  const FileId& id = record->entry.file_id;
  if (window_base_.count(id) == 0) {
    auto path = path_by_id_.find(id);
    if (path != path_by_id_.end()) window_base_[id] = state_.files.at(path->second);
  }
  if (!record->inplace_chunks.empty()) window_data_.insert(id);
  window_bytes_ += RecordBytes(*record);
  window_.push_back(record);
}

void Volume::WindowDurableLocked(uint64_t seq) {
  window_.clear();
  window_bytes_ = 0;
  window_base_.clear();
  window_data_.clear();
  durable_seq_.store(seq, std::memory_order_release);
}

void Volume::WindowDurableUpToLocked(uint64_t seq) {
  // (Records up to a durable point may wait in the window, not in place: see apply_unconfirmed_.)
  if (window_.empty() || window_.front()->seq > seq) {
    if (seq > durable_seq_.load(std::memory_order_relaxed)) durable_seq_.store(seq, std::memory_order_release);
    return;
  }
  std::vector<std::shared_ptr<const JournalRecord>> later;
  for (auto& r : window_) {
    if (r->seq > seq) {
      later.push_back(std::move(r));
    } else {
      window_base_[r->entry.file_id] = r->entry;  // in place now: the base of its later records
    }
  }
  window_.clear();
  window_bytes_ = 0;
  window_data_.clear();
  std::map<FileId, FileEntry> bases;
  for (auto& r : later) {
    const FileId& id = r->entry.file_id;
    if (bases.count(id) == 0) {
      auto base = window_base_.find(id);
      if (base != window_base_.end()) bases[id] = base->second;
    }
    if (!r->inplace_chunks.empty()) window_data_.insert(id);
    window_bytes_ += RecordBytes(*r);
    window_.push_back(std::move(r));
  }
  window_base_ = std::move(bases);
  if (seq > durable_seq_.load(std::memory_order_relaxed)) durable_seq_.store(seq, std::memory_order_release);
}

Status Volume::SyncFilesLocked(const std::set<FileId>& ids) {
  if (ids.size() > kSyncEachFileLimit) {
    auto dir = os::File::Open(dir_, O_RDONLY | O_DIRECTORY);
    if (!dir.ok()) return dir.status();
    if (syncfs(dir->fd()) != 0) return IoError("syncfs " + dir_, errno);
    return Status::Ok();
  }
  for (const FileId& id : ids) {
    auto it = path_by_id_.find(id);
    if (it == path_by_id_.end()) continue;
    // The data file through this process's own descriptor where it has the file open: closing
    // any other descriptor of it would drop every POSIX (fcntl) lock the program holds on the
    // file, which the kernel ties to the process and the file, not to a descriptor (SQLite's
    // locks: two writers of one WAL database then wrote at once and lost a transaction).
    std::shared_ptr<ProtectedFile> open;
    if (auto o = open_files_.find(id); o != open_files_.end()) open = o->second.lock();
    if (open != nullptr && open->data_.valid()) {
      SCONE_RETURN_IF_ERROR(open->data_.Sync());
    } else if (auto f = os::File::Open(dir_ + "/" + it->second, O_RDONLY | O_NOFOLLOW); f.ok()) {
      SCONE_RETURN_IF_ERROR(f->Sync());
    }
    // The side file is the runtime's alone: the program never locks it.
    if (auto side = os::File::Open(ProtectedFile::SideFilePath(dir_, id), O_RDONLY | O_NOFOLLOW); side.ok()) {
      SCONE_RETURN_IF_ERROR(side->Sync());
    }
  }
  return Status::Ok();
}

Status Volume::SyncWindowDataLocked() { return SyncFilesLocked(window_data_); }

bool Volume::MayApplyWindowLocked(uint64_t upto) const {
  std::set<FileId> checked;
  for (const auto& r : window_) {
    if (r->seq > upto) break;  // in sequence order
    const FileId& id = r->entry.file_id;
    if (!checked.insert(id).second) continue;
    auto it = path_by_id_.find(id);
    if (it == path_by_id_.end()) continue;  // unlinked since: not applied
    // Its own writable descriptor where it has the file open (a worker that changed its user
    // writes through what it inherited); else the file by name, as the apply would open it.
    if (auto open = open_files_.find(id); open != open_files_.end()) {
      if (auto f = open->second.lock(); f != nullptr && f->data_.valid() && !f->read_only()) continue;
    }
    if (!MayWriteByName(it->second)) return false;
  }
  return true;
}

Status Volume::ApplyWindowLocked(uint64_t upto) {
  if (window_.empty()) return Status::Ok();
  std::map<FileId, std::vector<const JournalRecord*>> by_file;
  for (const auto& r : window_) {
    if (r->seq <= upto) by_file[r->entry.file_id].push_back(r.get());
  }
  for (const auto& [id, records] : by_file) {
    auto it = path_by_id_.find(id);
    if (it == path_by_id_.end()) continue;  // unlinked since
    SCONE_RETURN_IF_ERROR(ReplayDataForFile(id, it->second, records, /*trim=*/false));
    touched_.insert(id);
  }
  return Status::Ok();
}

Status Volume::MakeWindowDurableLocked() {
  if (next_seq_ - 1 <= durable_seq_.load(std::memory_order_relaxed)) return Status::Ok();
  JournalRecord sync;
  sync.kind = JournalRecord::Kind::kSync;
  return AppendLocked(sync, /*durable=*/true);
}

// All or none per file: a prefix would need each chunk checked against the version of that
// prefix, which a later write may have overwritten in place (a transaction of a process that
// shares the volume overwrites what only lazy records put in place, and it may die midway).
// Only encrypted files publish lazily.
std::set<FileId> Volume::LazyCommitsNotOnDisk(const std::vector<JournalRecord>& records, size_t first) const {
  struct Newest {
    ChunkEntry entry;
    bool in_place = false;
  };
  struct File {
    std::string path;
    Region region = Region::kEncrypted;
    std::map<uint64_t, Newest> chunks;
    bool unlinked = false;  // since its last commit: in the trash if that was its last name
  };
  std::map<FileId, File> files;
  for (size_t i = first; i < records.size(); ++i) {
    const JournalRecord& r = records[i];
    if (r.kind == JournalRecord::Kind::kUnlink) {
      for (auto& [id, f] : files) f.unlinked = f.unlinked || f.path == r.path;
    }
    if (r.kind != JournalRecord::Kind::kCommit) continue;
    File& f = files[r.entry.file_id];
    f.path = r.path;
    f.region = r.entry.region;
    f.unlinked = false;
    const uint64_t end = ChunkCount(r.entry.size);
    f.chunks.erase(f.chunks.lower_bound(end), f.chunks.end());
    const std::set<uint64_t> in_place(r.inplace_chunks.begin(), r.inplace_chunks.end());
    for (const auto& [chunk, entry] : r.entries) {
      if (chunk < end) f.chunks[chunk] = {entry, in_place.count(chunk) != 0};
    }
  }
  std::set<FileId> lost;
  uint8_t image[kChunkSize];
  for (const auto& [id, f] : files) {
    auto on_disk = [&]() -> bool {
      if (f.region != Region::kEncrypted) return false;
      auto data = os::File::Open(f.unlinked ? TrashPath(id) : dir_ + "/" + f.path, O_RDONLY | O_NOFOLLOW);
      if (!data.ok()) return false;
      const FileKeys keys = DeriveFileKeys(id);
      const Layout layout(f.region);
      for (const auto& [chunk, newest] : f.chunks) {
        if (!newest.in_place || newest.entry.IsHole()) continue;
        auto n = data->ReadAt(layout.SlotOffset(chunk), MutableByteSpan(image, kChunkSize));
        if (!n.ok() || *n != kChunkSize || !ProtectedFile::SlotAuthentic(keys, id, chunk, newest.entry, image)) {
          return false;
        }
      }
      return true;
    };
    if (!on_disk()) lost.insert(id);
  }
  return lost;
}

std::vector<std::shared_ptr<const JournalRecord>> Volume::TakePublishedLocked(const FileId& id) {
  auto it = published_.find(id);
  if (it == published_.end()) return {};
  std::vector<std::shared_ptr<const JournalRecord>> records = std::move(it->second);
  published_.erase(it);
  return records;
}

}  // namespace scone::fs
