// The last entries of the files whose last name went recently, for processes that still have
// them open. A process learns that another unlinked a file it has open from the unlink's
// journal record, and catches up once to the file's last entry (what others committed before
// the unlink). After a checkpoint the journal is gone: a process that catches up by loading the
// new base state found no record and no entry, kept its table of before, and read the chunks
// others had written in place as damage (hostile finding: four processes opening, writing and
// unlinking one name). The checkpointer leaves this list beside the base state, bound to its
// sequence number: not durable (after a crash no process has a file open), authenticated.
//
// Thread-safety: none; the volume guards it with its lock.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "common/status.h"
#include "crypto/secret.h"
#include "fs/volume_state.h"

namespace scone::fs {

class RecentlyUnlinked {
 public:
  // The newest kept: a process that lags behind more unlinks than this reads stale chunks as
  // damage (EIO), never as data.
  static constexpr size_t kKept = 128;

  void Note(const FileEntry& entry);
  std::optional<FileEntry> Find(const FileId& id) const;
  bool empty() const { return entries_.empty(); }

  // Written by the checkpointer, in place and without a sync, under the volume's writer lock;
  // read under it. An entry list bound to another sequence (a later checkpoint's, or a copy
  // put back) or that fails authentication reads as empty.
  Status Write(const std::string& path, const SecretBytes& key, ByteSpan volume_id, uint64_t seq) const;
  void Load(const std::string& path, const SecretBytes& key, ByteSpan volume_id, uint64_t seq);

 private:
  std::deque<FileEntry> entries_;  // oldest first
};

}  // namespace scone::fs
