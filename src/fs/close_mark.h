// What a volume's last process leaves when it closes without a checkpoint (Volume::Close with
// CloseMode::kKeepJournal): its journal, up to the record the mark names, describes the data
// files as this boot's page cache holds them. Nothing was synced: a power cut may have lost any
// of it, and only a recovery may judge what the disk kept. So the mark names the boot
// (/proc/sys/kernel/random/boot_id); an open in the same boot that finds the journal ending
// where the mark says catches up with it as a process that joins does, without a recovery's
// checks of the data files; after a reboot the open recovers, as after any crash.
//
// A process that takes the volume alone removes the mark before it changes anything (a process
// killed in the middle of a change leaves no mark: the next open recovers). The mark is
// authenticated with a key derived from the volume's; a host that forges the boot id can only
// skip a recovery, so that what a power cut tore reads as damage (EIO), never as data.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"
#include "crypto/secret.h"

namespace scone::fs {

using BootId = std::array<uint8_t, 16>;

// Its name in the volume's metadata directory.
inline constexpr char kCloseMarkName[] = "closed";

struct CloseMark {
  std::array<uint8_t, 16> volume_id{};
  uint64_t applied_seq = 0;  // the state file's (its last checkpoint)
  uint64_t last_seq = 0;     // the journal's last record (applied_seq if it holds none)
  uint64_t journal_end = 0;  // the byte after that record
  BootId boot = {};

  bool operator==(const CloseMark&) const = default;
};

// This boot's id; nullopt where /proc does not tell (no mark is then written or taken).
std::optional<BootId> CurrentBootId();

// Written without a sync (see above); a torn mark fails authentication and is no mark.
Status WriteCloseMark(const std::string& path, const SecretBytes& key, const CloseMark& mark);

// Reads the mark at `path` and removes it, so that no later open trusts it once this process
// may change the volume. nullopt: none, or one that fails authentication, or one that could
// not be removed (then it must not be trusted either: another open would trust it again).
// `key` is asked for only where there is a mark.
std::optional<CloseMark> TakeCloseMark(const std::string& path, const std::function<SecretBytes()>& key);

}  // namespace scone::fs
