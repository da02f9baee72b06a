// CAS's audit log: who created, read, updated, trusted and attested what, and why a request
// was refused (never a secret). Append-only (triggers refuse update and delete).
//
// Records are written by a thread of their own, on a connection of their own, in batches: one
// durable transaction carries every record that arrived while the previous one was being
// synced, so an attestation does not wait for a sync of its record. A record is durable a few
// milliseconds after the action; a crash in that window loses it (the action itself, if it
// changed state, is durable in its own transaction).
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
  // Returns once every record made before the call is durable.
  void Flush();

 private:
  struct Row {
    int64_t time;
    std::string actor, action, object, result;
  };
  explicit AuditLog(sqlite3* db);
  void Write();
  void WriteBatch(const std::vector<Row>& rows);

  sqlite3* db_;
  std::mutex mu_;
  std::condition_variable wake_, written_;
  std::vector<Row> pending_;
  uint64_t queued_ = 0, durable_ = 0;
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace scone::cas
