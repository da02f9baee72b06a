#include "cas/audit_log.h"

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <iterator>

namespace scone::cas {

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
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
    if (pending_.size() >= kMaxPending) {
      pending_.erase(pending_.begin());
      ++lost_;
      ++durable_;  // never will be: Flush must not wait for it
    }
    pending_.push_back({now, actor, action, object, result});
    ++queued_;
  }
  wake_.notify_one();
}

void AuditLog::Flush() {
  std::unique_lock lock(mu_);
  uint64_t target = queued_, attempts = attempts_;
  written_.wait(lock, [&] { return durable_ >= target || stop_ || (!failure_.ok() && attempts_ > attempts); });
}

Status AuditLog::Health() {
  std::lock_guard lock(mu_);
  if (failure_.ok() && lost_ == 0) return Status::Ok();
  std::string why = failure_.ok() ? "" : failure_.message() + "; ";
  return Status(Code::kIoError, "the audit log cannot be written (" + why + std::to_string(pending_.size()) +
                                    " records waiting, " + std::to_string(lost_) + " lost)",
                EIO);
}

void AuditLog::SetPageLimit(int pages) {
  std::lock_guard lock(mu_);
  std::string sql = "PRAGMA max_page_count=" + std::to_string(pages > 0 ? pages : 1073741823);
  sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  wake_.notify_one();
}

void AuditLog::Write() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty() && stop_) return;
    std::vector<Row> batch;
    batch.swap(pending_);
    bool reports_loss = lost_ > 0;
    if (reports_loss) {
      batch.push_back({batch.front().time, "scone-cas", "audit-lost", "",
                       std::to_string(lost_) + " records were lost while the log could not be written"});
    }
    lock.unlock();
    Status written = WriteBatch(batch);
    lock.lock();
    ++attempts_;
    if (reports_loss) batch.pop_back();
    if (written.ok()) {
      if (!failure_.ok()) std::fprintf(stderr, "scone cas: the audit log is written again\n");
      durable_ += batch.size();
      if (reports_loss) lost_ = 0;
      failure_ = Status::Ok();
      written_.notify_all();
      continue;
    }
    if (failure_.ok()) {
      std::fprintf(stderr, "scone cas: cannot write the audit log: %s (requests are refused until it can)\n",
                   written.message().c_str());
    }
    failure_ = written;
    written_.notify_all();
    // Kept, in order, ahead of what arrived meanwhile; retried once a second or at a change.
    batch.insert(batch.end(), std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
    pending_ = std::move(batch);
    if (stop_) {
      std::fprintf(stderr, "scone cas: %zu audit records could not be written\n", pending_.size());
      return;
    }
    wake_.wait_for(lock, std::chrono::seconds(1));
  }
}

Status AuditLog::WriteBatch(const std::vector<Row>& rows) {
  if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return IoError(std::string("begin: ") + sqlite3_errmsg(db_), EIO);
  }
  sqlite3_stmt* st = nullptr;
  Status status = Status::Ok();
  if (sqlite3_prepare_v2(db_, "INSERT INTO audit(time, actor, action, object, result) VALUES(?,?,?,?,?)", -1, &st,
                         nullptr) != SQLITE_OK) {
    status = IoError(std::string("prepare: ") + sqlite3_errmsg(db_), EIO);
  }
  for (const Row& r : rows) {
    if (!status.ok()) break;
    sqlite3_bind_int64(st, 1, r.time);
    sqlite3_bind_text(st, 2, r.actor.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r.action.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, r.object.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, r.result.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) status = IoError(sqlite3_errmsg(db_), EIO);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (status.ok() && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    status = IoError(std::string("commit: ") + sqlite3_errmsg(db_), EIO);
  }
  if (!status.ok()) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return status;
}

}  // namespace scone::cas
