// A protected volume: a directory tree whose files are protected in place, plus its metadata in
// `DIR/.scone/` (the FSPF): the sealed volume state (`volume`), the journal (`journal`), the
// chunk tables of authenticated files (`meta/`) and a lock file.
//
// The volume state lists every protected file with its identity, size and root; the volume tag
// is an HMAC over it. Opening with a trusted tag refuses a volume whose state differs: a volume
// (or any file in it) rolled back to an older copy, or replaced, is detected. Without a tag,
// every file is still checked against the state, so a single file rolled back or swapped is
// detected on open.
//
// One process opens a volume at a time (an exclusive lock on `.scone/lock`).
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/secret.h"
#include "fs/journal.h"
#include "fs/protected_file.h"
#include "fs/region_rules.h"
#include "fs/volume_state.h"
#include "os/file.h"

namespace scone::fs {

struct OpenFileOptions {
  bool create = false;     // create the file if it does not exist
  bool exclusive = false;  // with create: fail if it exists
  bool truncate = false;   // truncate to zero length
};

struct VolumeProblem {
  std::string path;  // volume-relative, or "" for the volume itself
  std::string what;
};

class Volume : public std::enable_shared_from_this<Volume> {
 public:
  struct OpenOptions {
    std::optional<VolumeTag> expected_tag;  // refuse any other state
  };

  // Makes `dir` (created if absent; must hold no `.scone`) a new, empty volume.
  static Result<std::shared_ptr<Volume>> Create(const std::string& dir, const SecretBytes& key,
                                                RegionRules rules);
  // Opens an existing volume, recovering from a crash if it was not closed.
  static Result<std::shared_ptr<Volume>> Open(const std::string& dir, const SecretBytes& key,
                                              const OpenOptions& options);
  static Result<std::shared_ptr<Volume>> Open(const std::string& dir, const SecretBytes& key) {
    return Open(dir, key, OpenOptions{});
  }
  ~Volume();

  const std::string& dir() const { return dir_; }

  // Region of a volume-relative path (normalized or not; invalid paths are kNotProtected).
  Region RegionOf(std::string_view path) const;

  // Opens a protected file. REQUIRES: the path's region is protected.
  Result<std::shared_ptr<ProtectedFile>> OpenFile(std::string_view path,
                                                  const OpenFileOptions& options);
  // Renames a file or a directory (and every file under it) inside the volume.
  Status Rename(std::string_view from, std::string_view to);
  Status Unlink(std::string_view path);
  // The entry of a protected file, kNotFound if the volume has none at `path`.
  Result<FileEntry> Lookup(std::string_view path) const;
  // The plaintext size of a protected file, whether or not it is open with unsynced writes.
  Result<uint64_t> FileSize(std::string_view path);
  // Protected files in path order.
  std::vector<std::pair<std::string, FileEntry>> Files() const;
  const RegionRules& rules() const { return state_.rules; }

  VolumeTag Tag() const;

  // Checks every protected file (header, size, chunk table, every chunk) and looks for files
  // the volume does not know or misses. Returns one problem per damaged file.
  std::vector<VolumeProblem> Verify();

  // Commits every open file, checkpoints the journal and marks the volume closed.
  Status Close();

 private:
  friend class ProtectedFile;

  Volume(std::string dir, SecretBytes key);

  // Derived keys, bound to the volume's identity.
  SecretBytes DeriveKey(std::string_view purpose) const;
  FileKeys DeriveFileKeys(const FileId& id) const;

  Status LoadBase(bool* was_clean);
  Status WriteBase(bool clean);
  Status Recover(std::vector<JournalRecord> records);
  Status ReplayDataForFile(const FileId& id, const std::string& path,
                           const std::vector<const JournalRecord*>& commits);
  Status Checkpoint(bool clean);
  Status AppendLocked(JournalRecord& record);
  void ApplyToState(const JournalRecord& record);

  // Called by ProtectedFile::Sync with the file's lock held: appends the record, applies it with
  // `apply`, and updates the state, all under the volume's lock.
  Status CommitFile(const FileId& id, JournalRecord& record, const std::function<Status()>& apply);

  std::string MetaPath(std::string_view name) const;

  const std::string dir_;
  const SecretBytes key_;
  SecretBytes state_key_;
  SecretBytes tag_key_;

  mutable std::mutex mu_;
  VolumeState state_;
  std::map<FileId, std::string> path_by_id_;
  std::unique_ptr<Journal> journal_;
  uint64_t next_seq_ = 1;
  uint64_t applied_seq_ = 0;  // last record folded into the base state file
  std::set<FileId> touched_;  // files with in-place writes not yet fsync'ed by a checkpoint
  std::map<FileId, std::weak_ptr<ProtectedFile>> open_files_;
  os::File lock_file_;
  bool closed_ = true;  // until Create or Open succeeds; then until Close
};

// Volume key files: 64 hex digits and a newline, mode 0600.
Result<SecretBytes> ReadKeyFile(const std::string& path);
// Creates a new random key file (fails if it exists).
Result<SecretBytes> CreateKeyFile(const std::string& path);

}  // namespace scone::fs
