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
  pages_in_place_.clear();
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
  std::erase_if(pages_in_place_, [seq](const auto& mark) { return mark.second <= seq; });
  FileIdMap<FileEntry> bases;
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

Status Volume::SyncFilesLocked(const FileIdSet& ids) {
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

FileIdSet Volume::InPlaceAlreadyLocked(uint64_t upto) const {
  FileIdSet in_place;
  if (pages_in_place_.empty()) return in_place;
  FileIdMap<uint64_t> last;  // each file's last record up to `upto`
  FileIdSet with_images;
  for (const auto& r : window_) {
    if (r->seq > upto) break;  // in sequence order
    last[r->entry.file_id] = r->seq;
    if (!r->slot_chunks.empty()) with_images.insert(r->entry.file_id);
  }
  for (const auto& [id, seq] : last) {
    auto mark = pages_in_place_.find(id);
    if (mark != pages_in_place_.end() && mark->second == seq && with_images.count(id) == 0) in_place.insert(id);
  }
  return in_place;
}

bool Volume::MayApplyWindowLocked(uint64_t upto) const {
  FileIdSet checked = InPlaceAlreadyLocked(upto);  // nothing to write for those
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
  // Applied up to a sync's record while others went on (the sync ran without the writer lock):
  // a chunk their records put in place since is newer on disk than any image before. Written
  // over with such an image, it failed authentication for every process from then on (five
  // shell subshells appending to one log, each syncing as it exited: 1 run in 40 under load).
  std::map<FileId, std::set<uint64_t>> newer_on_disk;
  for (const auto& r : window_) {
    if (r->seq <= upto) {
      by_file[r->entry.file_id].push_back(r.get());
    } else if (!r->inplace_chunks.empty()) {
      newer_on_disk[r->entry.file_id].insert(r->inplace_chunks.begin(), r->inplace_chunks.end());
    }
  }
  const FileIdSet in_place = InPlaceAlreadyLocked(upto);
  for (const auto& [id, records] : by_file) {
    auto it = path_by_id_.find(id);
    if (it == path_by_id_.end()) continue;  // unlinked since
    if (in_place.count(id) != 0) {
      touched_.insert(id);  // synced before a checkpoint drops the journal, as what is applied
      continue;
    }
    auto newer = newer_on_disk.find(id);
    auto base = window_base_.find(id);
    const bool from_empty = base != window_base_.end() && base->second.size == 0;
    Status replayed = ReplayDataForFile(id, it->second, records, /*trim=*/false,
                                        newer == newer_on_disk.end() ? nullptr : &newer->second, from_empty);
    if (!replayed.ok()) {
      apply_failed_ = true;  // the journal alone holds it now: no checkpoint may drop it
      return replayed;
    }
    touched_.insert(id);
  }
  return Status::Ok();
}

Status Volume::MakeWindowDurableLocked() {
  if (next_seq_ - 1 <= durable_seq_.load(std::memory_order_relaxed)) return Status::Ok();
  // Synced already, the window left out of place (MakeWindowDurableSharedLocked): it goes in
  // place without a second sync (a checkpoint, the close).
  if (next_seq_ - 1 <= synced_seq_ && apply_unconfirmed_ == 0) return ApplySyncedWindowLocked(synced_seq_);
  JournalRecord sync;
  sync.kind = JournalRecord::Kind::kSync;
  return AppendLocked(sync, /*durable=*/true);
}

std::map<FileId, Volume::LazyFile> Volume::LazyFilesOf(const std::vector<JournalRecord>& records,
                                                      size_t first) const {
  std::map<FileId, LazyFile> files;
  for (size_t i = first; i < records.size(); ++i) {
    const JournalRecord& r = records[i];
    for (auto& [id, f] : files) {
      if (r.kind == JournalRecord::Kind::kUnlink && f.path == r.path) f.unlinked = true;
      if (r.kind != JournalRecord::Kind::kRename) continue;
      if (f.path == r.to) {
        f.unlinked = true;  // renamed over
      } else if (f.path == r.path) {
        f.path = r.to;
      } else if (f.path.starts_with(r.path + "/")) {
        f.path = r.to + f.path.substr(r.path.size());
      }
    }
    if (r.kind != JournalRecord::Kind::kCommit) continue;
    LazyFile& f = files[r.entry.file_id];
    f.path = r.path;
    f.region = r.entry.region;
    f.unlinked = false;
    f.commits.push_back(i);
  }
  return files;
}

std::string Volume::DataPathOf(const FileId& id, const LazyFile& file) const {
  return file.unlinked ? TrashPath(id) : dir_ + "/" + file.path;
}

// Per file, the longest run of its lazy commits whose chunks are all on disk as the last of
// them says: the fallback where RepairsForRecovery cannot repair a file. A prefix is judged on
// its own, not as a run of good prefixes: a later commit may put in place again a chunk that an
// earlier one left torn. Chunks the records carry as images, holes, and chunks past a prefix's
// end need nothing on disk. Only encrypted files publish lazily.
std::set<size_t> Volume::LazyCommitsNotOnDisk(const std::vector<JournalRecord>& records,
                                              const std::map<FileId, LazyFile>& files) const {
  std::set<size_t> dropped;
  for (const auto& [id, f] : files) {
    std::vector<const JournalRecord*> commits;
    for (size_t i : f.commits) commits.push_back(&records[i]);
    const size_t kept = f.region != Region::kEncrypted ? 0 : CommitsOnDisk(id, DataPathOf(id, f), commits);
    dropped.insert(f.commits.begin() + static_cast<ptrdiff_t>(kept), f.commits.end());
  }
  return dropped;
}

// A process killed between writing a chunk in place and appending the record that names it
// leaves that chunk newer than every record. Each such chunk goes back to a version at hand, or
// the file's last chunk is cut off (ProtectedFile::BuildRepair): a log appended to loses at most
// its tail chunk's appends (hostile finding: all of a file's lazy commits went, thousands of
// appends other processes had read). The file is opened as of its last durable commit, which
// the disk holds in place, with its lazy commits as its window; where that fails, not listed.
std::map<FileId, std::optional<JournalRecord>> Volume::RepairsForRecovery(
    const std::vector<JournalRecord>& records, const std::map<FileId, LazyFile>& files) {
  std::map<FileId, std::optional<JournalRecord>> repairs;
  // The commit a process killed inside it left (it knows no power loss).
  const std::optional<VolumeLock::InFlight> in_flight = lock_->TakeInFlight();
  for (const auto& [id, f] : files) {
    if (f.region != Region::kEncrypted) continue;
    FileWindow window;
    bool found = false;
    for (size_t i = f.commits.front(); i-- > 0 && !found;) {
      const JournalRecord& r = records[i];
      const bool names = r.kind == JournalRecord::Kind::kCommit || r.kind == JournalRecord::Kind::kCreate;
      if (names && r.entry.file_id == id) window.base = r.entry, found = true;
    }
    if (!found) {
      auto base = path_by_id_.find(id);
      if (base == path_by_id_.end()) continue;
      window.base = state_.files.at(base->second);
    }
    for (size_t i : f.commits) window.records.push_back(std::make_shared<const JournalRecord>(records[i]));
    auto data = os::File::Open(DataPathOf(id, f), O_RDWR | O_NOFOLLOW);
    if (!data.ok()) continue;
    auto file = ProtectedFile::Open(shared_from_this(), dir_, f.path, window.records.back()->entry,
                                    DeriveFileKeys(id), window, &*data);
    if (!file.ok()) continue;
    JournalRecord repair;
    const bool undo_last = in_flight && in_flight->file == id && window.records.back()->seq == in_flight->seq;
    auto built = (*file)->BuildRepair(window, undo_last, &repair);
    if (!built.ok()) continue;
    if (*built) {
      repair.path = f.path;
      repair.lazy = true;
      std::fprintf(stderr, "scone: %s: the last writes before a crash did not all reach it; those chunks went "
                   "back to their last version at hand%s\n", DataPathOf(id, f).c_str(),
                   repair.entry.size < window.records.back()->entry.size ? ", the last one cut off" : "");
    }
    repairs[id] = *built ? std::optional<JournalRecord>(std::move(repair)) : std::nullopt;
  }
  return repairs;
}

size_t Volume::CommitsOnDisk(const FileId& id, const std::string& data_path,
                             const std::vector<const JournalRecord*>& commits) const {
  auto data = os::File::Open(data_path, O_RDONLY | O_NOFOLLOW);
  if (!data.ok()) return 0;
  const FileKeys keys = DeriveFileKeys(id);
  const Layout layout(Region::kEncrypted);
  uint8_t image[kChunkSize];
  auto on_disk = [&](uint64_t chunk, const ChunkEntry& entry) {
    auto n = data->ReadAt(layout.SlotOffset(chunk), MutableByteSpan(image, kChunkSize));
    return n.ok() && *n == kChunkSize && ProtectedFile::SlotAuthentic(keys, id, chunk, entry, image);
  };
  struct Newest {
    ChunkEntry entry;
    bool in_place = false;
  };
  std::map<uint64_t, Newest> newest;
  std::set<uint64_t> torn;  // below the end: newest entry in place, but not what the disk holds
  size_t kept = 0;
  for (size_t k = 0; k < commits.size(); ++k) {
    const JournalRecord& r = *commits[k];
    const uint64_t end = ChunkCount(r.entry.size);
    newest.erase(newest.lower_bound(end), newest.end());
    torn.erase(torn.lower_bound(end), torn.end());
    const std::set<uint64_t> in_place(r.inplace_chunks.begin(), r.inplace_chunks.end());
    const std::set<uint64_t> imaged(r.slot_chunks.begin(), r.slot_chunks.end());
    for (const auto& [chunk, entry] : r.entries) {
      if (chunk >= end) continue;
      Newest& n = newest[chunk];
      // An entry listed again unchanged (a commit after a truncation) keeps where it came from.
      n.in_place = in_place.count(chunk) != 0 || (imaged.count(chunk) == 0 && n.in_place && n.entry == entry);
      n.entry = entry;
      if (n.in_place && !entry.IsHole() && !on_disk(chunk, entry)) {
        torn.insert(chunk);
      } else {
        torn.erase(chunk);
      }
    }
    if (torn.empty()) kept = k + 1;
  }
  return kept;
}

Status Volume::RepairAfterDeadWriterLocked() {
  const std::optional<VolumeLock::InFlight> in_flight = lock_->TakeInFlight();
  // It died before its record (chunks it wrote in place first, a large write's, may be newer
  // than any record) or after it (the chunks that go in place after the record may be missing).
  // Any other number is not the last holder's.
  if (!in_flight || (in_flight->seq != next_seq_ && in_flight->seq + 1 != next_seq_)) return Status::Ok();
  const FileId& id = in_flight->file;
  auto path = path_by_id_.find(id);
  if (path == path_by_id_.end()) return Status::Ok();
  // Only chunks that lazy records of the window put in place are overwritten in place.
  const FileEntry& latest = state_.files.at(path->second);
  const FileWindow window = WindowOfLocked(id, latest);
  if (window.records.empty()) return Status::Ok();
  const std::string full = dir_ + "/" + path->second;
  JournalRecord repair;
  const bool appended = window.records.back()->seq == in_flight->seq;
  // Also while this volume is destroyed (its close catches up, then checkpoints: the repair
  // cannot wait): the file object, which lives only here, holds it without owning it.
  std::shared_ptr<Volume> self = weak_from_this().lock();
  if (self == nullptr) self = std::shared_ptr<Volume>(this, [](Volume*) {});
  auto file = ProtectedFile::Open(self, dir_, path->second, latest, DeriveFileKeys(id), window, nullptr);
  Result<bool> built = file.ok() ? (*file)->BuildRepair(window, appended, &repair) : Result<bool>(file.status());
  if (!built.ok()) {
    // Reported again where the file is read.
    std::fprintf(stderr, "scone: %s: a process died while writing it; not repaired: %s\n", full.c_str(),
                 built.status().message().c_str());
    return Status::Ok();
  }
  if (!*built) return Status::Ok();
  repair.path = path->second;
  SCONE_RETURN_IF_ERROR(AppendLocked(repair, /*durable=*/false));
  std::fprintf(stderr, "scone: %s: a process died while writing it; its unfinished write is undone\n", full.c_str());
  // Published as another process's record is: the open file catches up to it.
  auto shared = std::make_shared<const JournalRecord>(std::move(repair));
  PublishCommitLocked(shared);
  ApplyToState(*shared);
  return Status::Ok();
}

std::vector<std::shared_ptr<const JournalRecord>> Volume::TakePublishedLocked(const FileId& id) {
  auto it = published_.find(id);
  if (it == published_.end()) return {};
  std::vector<std::shared_ptr<const JournalRecord>> records = std::move(it->second);
  published_.erase(it);
  return records;
}

}  // namespace scone::fs
