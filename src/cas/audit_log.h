// CAS's audit log: who created, read, updated, trusted and attested what, and why a request
// was refused (never a secret). Append-only (triggers refuse update and delete).
//
// Records are written by a thread of their own, on a connection of their own, in batches: one
// durable transaction carries every record that arrived while the previous one was being
// synced, so an attestation does not wait for a sync of its record. A record is durable a few
// milliseconds after the action; a crash in that window loses it (the action itself, if it
// changed state, is durable in its own transaction).
//
// A batch that cannot be written (disk full, I/O error) is kept and retried; meanwhile Health()
// reports the failure, and CAS refuses requests rather than act without a record. Records are
// never dropped silently: past kMaxPending the oldest go, and the loss is itself recorded (and
// printed) once the log can be written again.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

struct sqlite3;

namespace scone::cas {

class AuditLog {
 public:
  // Opens its own connection to the database at `db_path` (which has the audit table).
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& db_path);
  // Writes what is pending, then stops.
  ~AuditLog();

  void Record(const std::string& actor, const std::string& action, const std::string& object,
              const std::string& result);
  // Returns once every record made before the call is durable, or a write tried after the
  // call failed.
  void Flush();
  // OK while records are written; else why not (and how many wait or were lost).
  Status Health();
  // Caps the database at `pages` pages for this log's writes (0: no cap): a full disk, for tests.
  void SetPageLimit(int pages);

 private:
  struct Row {
    int64_t time;
    std::string actor, action, object, result;
  };
  static constexpr size_t kMaxPending = 1 << 20;
  explicit AuditLog(sqlite3* db);
  void Write();
  Status WriteBatch(const std::vector<Row>& rows);

  sqlite3* db_;
  std::mutex mu_;
  std::condition_variable wake_, written_;
  std::vector<Row> pending_;
  uint64_t queued_ = 0, durable_ = 0, lost_ = 0, attempts_ = 0;
  Status failure_;  // of the last write
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace scone::cas
