#include "cas/audit_log.h"

#include <sqlite3.h>

#include <chrono>

namespace scone::cas {

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Internal("CAS audit log: open " + db_path + ": " + message);
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_exec(db, "PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr);
  return std::unique_ptr<AuditLog>(new AuditLog(db));
}

AuditLog::AuditLog(sqlite3* db) : db_(db), writer_([this] { Write(); }) {}

AuditLog::~AuditLog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  writer_.join();
  sqlite3_close(db_);
}

void AuditLog::Record(const std::string& actor, const std::string& action, const std::string& object,
                      const std::string& result) {
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  {
    std::lock_guard lock(mu_);
    pending_.push_back({now, actor, action, object, result});
    ++queued_;
  }
  wake_.notify_one();
}

void AuditLog::Flush() {
  std::unique_lock lock(mu_);
  uint64_t target = queued_;
  written_.wait(lock, [&] { return durable_ >= target || stop_; });
}

void AuditLog::Write() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty() && stop_) return;
    std::vector<Row> batch;
    batch.swap(pending_);
    lock.unlock();
    WriteBatch(batch);
    lock.lock();
    durable_ += batch.size();
    written_.notify_all();
  }
}

void AuditLog::WriteBatch(const std::vector<Row>& rows) {
  sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "INSERT INTO audit(time, actor, action, object, result) VALUES(?,?,?,?,?)", -1,
                         &st, nullptr) == SQLITE_OK) {
    for (const Row& r : rows) {
      sqlite3_bind_int64(st, 1, r.time);
      sqlite3_bind_text(st, 2, r.actor.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 3, r.action.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 4, r.object.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 5, r.result.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_step(st);
      sqlite3_reset(st);
    }
  }
  sqlite3_finalize(st);
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
}

}  // namespace scone::cas
