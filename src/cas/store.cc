#include "cas/store.h"

#include <sqlite3.h>

#include <chrono>
#include <cstring>
#include <functional>

#include <nlohmann/json.hpp>

#include "fs/volume.h"
#include "os/file.h"

namespace scone::cas {
namespace {

constexpr char kMasterLabel[] = "scone-cas-master-v1";
constexpr char kSealingLabel[] = "scone-cas-master-key";
constexpr size_t kInstanceSize = 16;

// Deletes a prepared statement on scope exit.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

Status SqlError(sqlite3* db, const std::string& what) {
  return Internal("CAS store: " + what + ": " + sqlite3_errmsg(db));
}

// The rows CAS trusts, table by table: key columns (text) and the other columns.
enum class Type { kText, kBlob, kInt };
struct Column {
  const char* name;
  Type type;
};
struct Table {
  const char* name;
  std::vector<const char*> keys;
  std::vector<Column> values;
};
const Table kSessions{"sessions", {"name"},
                      {{"hash", Type::kText}, {"creator", Type::kText}, {"readers", Type::kText},
                       {"nonce", Type::kBlob}, {"sealed", Type::kBlob}, {"tag", Type::kBlob}}};
const Table kSecrets{"secrets", {"session", "name"}, {{"spec", Type::kText}, {"sealed", Type::kBlob}}};
const Table kVolumes{"volumes", {"session", "name"},
                     {{"sealed_key", Type::kBlob}, {"tag", Type::kBlob}, {"generation", Type::kInt}}};
const Table kPlatforms{"platforms", {"key"}, {{"added_by", Type::kText}, {"time", Type::kInt}}};
const Table kConsoleKeys{"console_keys", {"session", "service"}, {{"sealed_key", Type::kBlob}}};
const Table* const kTables[] = {&kSessions, &kSecrets, &kVolumes, &kPlatforms, &kConsoleKeys};

std::string SecretAad(const std::string& session, const std::string& name) { return "secret/" + session + "/" + name; }
std::string VolumeAad(const std::string& session, const std::string& name) { return "volume/" + session + "/" + name; }
std::string ConsoleAad(const std::string& session, const std::string& service) {
  return "console/" + session + "/" + service;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Bytes Text(std::string_view s) { return Bytes(s.begin(), s.end()); }
std::string AsText(const std::optional<Bytes>& b) { return b ? std::string(b->begin(), b->end()) : ""; }

// The sealed master key file: label | instance | nonce | ciphertext | tag, under the platform's
// sealing key, bound to label and instance.
struct MasterFile {
  Bytes instance;
  SecretBytes key;
};

Result<MasterFile> UnsealMaster(ByteSpan file, const SecretBytes& sealing_key, const std::string& path) {
  ByteReader r(file);
  std::string label;
  Bytes instance(kInstanceSize), nonce(crypto::kNonceSize), sealed(crypto::kKeySize), tag(crypto::kTagSize);
  if (!r.Str(&label, 64) || label != kMasterLabel || !r.Raw(instance) || !r.Raw(nonce) || !r.Raw(sealed) ||
      !r.Raw(tag) || !r.done()) {
    return DataCorrupted(path + " is not a sealed CAS master key (from before sealing? run scone cas recover)");
  }
  crypto::Aes256Gcm aead(sealing_key.Clone());
  MasterFile m{instance, SecretBytes(crypto::kKeySize)};
  if (!aead.Open(nonce, {AsBytes(label), instance}, sealed, m.key.data(), tag.data()).ok()) {
    return PermissionDenied(path + " cannot be unsealed on this platform by this user (another LAS, "
                            "another user, or a replaced file)");
  }
  return m;
}

Status SealMaster(const std::string& path, const MasterFile& m, const SecretBytes& sealing_key) {
  crypto::Aes256Gcm aead(sealing_key.Clone());
  uint8_t nonce[crypto::kNonceSize], tag[crypto::kTagSize];
  crypto::FreshNonce(nonce);
  Bytes sealed(crypto::kKeySize);
  SCONE_RETURN_IF_ERROR(aead.Seal(ByteSpan(nonce, sizeof(nonce)), {AsBytes(kMasterLabel), m.instance},
                                  m.key.span(), sealed.data(), tag));
  ByteWriter w;
  w.Str(kMasterLabel);
  w.Raw(m.instance);
  w.Raw(ByteSpan(nonce, sizeof(nonce)));
  w.Raw(sealed);
  w.Raw(ByteSpan(tag, sizeof(tag)));
  return os::WriteFileAtomically(path, w.bytes(), 0600);
}

}  // namespace

struct Store::Row {
  const Table* table = nullptr;
  std::vector<std::string> key;
  std::vector<std::optional<Bytes>> values;
  std::optional<Bytes> mac;

  std::string Id() const {
    std::string id = table->name;
    for (const std::string& k : key) id += '\x1f' + k;
    return id;
  }
  std::string What() const {
    std::string what = std::string(table->name) + " row";
    for (const std::string& k : key) what += " '" + k + "'";
    return what;
  }
};

// One write transaction: rows put or deleted, their MACs collected for the state row.
class Store::Txn {
 public:
  Txn(Store* store) : store_(store) {}

  Status Put(Row row) {
    const Table& t = *row.table;
    std::string sql = std::string("INSERT OR REPLACE INTO ") + t.name + "(";
    std::string marks;
    for (const char* k : t.keys) sql += std::string(k) + ",", marks += "?,";
    for (const Column& c : t.values) sql += std::string(c.name) + ",", marks += "?,";
    sql += "mac) VALUES(" + marks + "?)";
    Statement st;
    if (sqlite3_prepare_v2(store_->db_, sql.c_str(), -1, &st.stmt, nullptr) != SQLITE_OK) {
      return SqlError(store_->db_, "prepare");
    }
    int i = 1;
    for (const std::string& k : row.key) sqlite3_bind_text(st.stmt, i++, k.c_str(), -1, SQLITE_TRANSIENT);
    for (size_t v = 0; v < t.values.size(); ++v, ++i) {
      const std::optional<Bytes>& value = row.values[v];
      if (!value) {
        sqlite3_bind_null(st.stmt, i);
      } else if (t.values[v].type == Type::kInt) {
        sqlite3_bind_int64(st.stmt, i, std::stoll(AsText(value)));
      } else if (t.values[v].type == Type::kText) {
        sqlite3_bind_text(st.stmt, i, reinterpret_cast<const char*>(value->data()), static_cast<int>(value->size()),
                          SQLITE_TRANSIENT);
      } else {
        sqlite3_bind_blob(st.stmt, i, value->data(), static_cast<int>(value->size()), SQLITE_TRANSIENT);
      }
    }
    crypto::Hash mac = store_->RowMac(row);
    sqlite3_bind_blob(st.stmt, i, mac.data(), static_cast<int>(mac.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(st.stmt) != SQLITE_DONE) return SqlError(store_->db_, std::string("write ") + t.name);
    macs_[row.Id()] = mac;
    return Status::Ok();
  }

  // Deletes the rows of `t` whose first key column is `first`.
  Status DeleteAll(const Table& t, const std::string& first) {
    std::string sql = std::string("DELETE FROM ") + t.name + " WHERE " + t.keys[0] + "=?";
    Statement st;
    if (sqlite3_prepare_v2(store_->db_, sql.c_str(), -1, &st.stmt, nullptr) != SQLITE_OK) {
      return SqlError(store_->db_, "prepare");
    }
    sqlite3_bind_text(st.stmt, 1, first.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st.stmt) != SQLITE_DONE) return SqlError(store_->db_, std::string("delete from ") + t.name);
    std::string prefix = std::string(t.name) + '\x1f' + first + '\x1f';
    std::string exact = std::string(t.name) + '\x1f' + first;
    for (auto it = macs_.begin(); it != macs_.end();) {
      it = it->first == exact || it->first.rfind(prefix, 0) == 0 ? macs_.erase(it) : std::next(it);
    }
    return Status::Ok();
  }

  Store* store_;
  std::map<std::string, crypto::Hash> macs_;  // the MACs after this transaction
};

Store::Store(sqlite3* db, SecretBytes master_key, std::string counter_name, std::shared_ptr<Anchor> anchor)
    : db_(db),
      sealer_(master_key.Clone()),
      mac_key_(crypto::Hkdf(master_key, {}, "scone-cas-row-mac-v1")),
      counter_name_(std::move(counter_name)),
      anchor_(std::move(anchor)) {}

Store::~Store() {
  audit_.reset();  // writes what is pending
  sqlite3_close(db_);
}

Status Store::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err ? err : "unknown error";
    sqlite3_free(err);
    return Internal("CAS store: " + message);
  }
  return Status::Ok();
}

Result<sqlite3*> Store::OpenDatabase(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Status s = SqlError(db, "open " + db_path);
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 10000);  // the audit log writes on a connection of its own
  const char* schema =
      "PRAGMA journal_mode=WAL;"
      "PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS sessions(name TEXT PRIMARY KEY, hash TEXT NOT NULL,"
      "  creator TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, tag BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER,"
      "  actor TEXT, action TEXT, object TEXT, result TEXT);"
      "CREATE TABLE IF NOT EXISTS secrets(session TEXT NOT NULL, name TEXT NOT NULL,"
      "  sealed BLOB NOT NULL, PRIMARY KEY(session, name));"
      "CREATE TABLE IF NOT EXISTS volumes(session TEXT NOT NULL, name TEXT NOT NULL,"
      "  sealed_key BLOB NOT NULL, tag BLOB, generation INTEGER, PRIMARY KEY(session, name));"
      "CREATE TABLE IF NOT EXISTS platforms(key TEXT PRIMARY KEY, added_by TEXT, time INTEGER);"
      "CREATE TABLE IF NOT EXISTS console_keys(session TEXT NOT NULL, service TEXT NOT NULL,"
      "  sealed_key BLOB NOT NULL, mac BLOB, PRIMARY KEY(session, service));"
      "CREATE TABLE IF NOT EXISTS state(id INTEGER PRIMARY KEY CHECK(id = 1), counter INTEGER NOT NULL,"
      "  digest BLOB NOT NULL, mac BLOB NOT NULL);"
      "CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit"
      "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
      "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
      "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";
  char* err = nullptr;
  if (sqlite3_exec(db, schema, nullptr, nullptr, &err) != SQLITE_OK) {
    Status s = Internal(std::string("CAS store: ") + (err ? err : "schema"));
    sqlite3_free(err);
    sqlite3_close(db);
    return s;
  }
  // Columns added since the first schema (a database from before them gains them empty).
  const char* added[] = {"ALTER TABLE sessions ADD COLUMN readers TEXT", "ALTER TABLE sessions ADD COLUMN mac BLOB",
                         "ALTER TABLE secrets ADD COLUMN spec TEXT", "ALTER TABLE secrets ADD COLUMN mac BLOB",
                         "ALTER TABLE volumes ADD COLUMN mac BLOB", "ALTER TABLE platforms ADD COLUMN mac BLOB"};
  for (const char* sql : added) sqlite3_exec(db, sql, nullptr, nullptr, nullptr);  // "duplicate column": fine
  return db;
}

crypto::Hash Store::RowMac(const Row& row) const {
  ByteWriter w;
  w.Str(row.table->name);
  for (const std::string& k : row.key) w.Str(k);
  for (const std::optional<Bytes>& v : row.values) {
    w.U8(v ? 1 : 0);
    if (v) w.Blob(*v);
  }
  return crypto::HmacSha256(mac_key_, {AsBytes("row"), w.bytes()});
}

crypto::Hash Store::Digest(const std::map<std::string, crypto::Hash>& macs) const {
  ByteWriter w;
  for (const auto& [id, mac] : macs) {
    w.Str(id);
    w.Raw(mac);
  }
  return crypto::Sha256({w.bytes()});
}

crypto::Hash Store::MetaMac(uint64_t counter, const crypto::Hash& digest) const {
  ByteWriter w;
  w.U64(counter);
  w.Raw(digest);
  return crypto::HmacSha256(mac_key_, {AsBytes("state"), w.bytes()});
}

Result<std::vector<Store::Row>> Store::ReadRows(const char* table_name, const std::string& where,
                                                const std::vector<std::string>& args) {
  const Table* t = nullptr;
  for (const Table* candidate : kTables) {
    if (std::strcmp(candidate->name, table_name) == 0) t = candidate;
  }
  std::string sql = "SELECT ";
  for (const char* k : t->keys) sql += std::string(k) + ",";
  for (const Column& c : t->values) sql += std::string(c.name) + ",";
  sql += std::string("mac FROM ") + t->name + (where.empty() ? "" : " WHERE " + where);
  Statement st;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.stmt, nullptr) != SQLITE_OK) return SqlError(db_, "prepare");
  for (size_t i = 0; i < args.size(); ++i) {
    sqlite3_bind_text(st.stmt, static_cast<int>(i + 1), args[i].c_str(), -1, SQLITE_TRANSIENT);
  }
  auto column = [&](int i) -> std::optional<Bytes> {
    if (sqlite3_column_type(st.stmt, i) == SQLITE_NULL) return std::nullopt;
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, i));
    return Bytes(p, p + sqlite3_column_bytes(st.stmt, i));
  };
  std::vector<Row> rows;
  int rc;
  while ((rc = sqlite3_step(st.stmt)) == SQLITE_ROW) {
    Row row;
    row.table = t;
    int i = 0;
    for (size_t k = 0; k < t->keys.size(); ++k) row.key.push_back(AsText(column(i++)));
    for (size_t v = 0; v < t->values.size(); ++v) row.values.push_back(column(i++));
    row.mac = column(i);
    rows.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, std::string("read ") + t->name);
  return rows;
}

Status Store::CheckRow(const Row& row) const {
  auto it = macs_.find(row.Id());
  if (it == macs_.end()) return DataCorrupted("CAS store: " + row.What() + " was added outside CAS; refused");
  crypto::Hash mac = RowMac(row);
  if (!row.mac || !crypto::ConstantTimeEquals(*row.mac, it->second) || !crypto::ConstantTimeEquals(mac, it->second)) {
    return DataCorrupted("CAS store: " + row.What() + " was changed outside CAS; refused");
  }
  return Status::Ok();
}

std::vector<std::string> Store::Verify(uint64_t anchor_counter) {
  std::vector<std::string> problems;
  macs_.clear();
  for (const Table* t : kTables) {
    auto rows = ReadRows(t->name, "", {});
    if (!rows.ok()) {
      problems.push_back(rows.status().message());
      continue;
    }
    for (const Row& row : *rows) {
      crypto::Hash mac = RowMac(row);
      if (!row.mac || !crypto::ConstantTimeEquals(*row.mac, mac)) {
        problems.push_back(row.What() + (row.mac ? " fails authentication (changed or added outside CAS)"
                                                 : " has no MAC (added outside CAS, or from before authentication)"));
        continue;
      }
      macs_[row.Id()] = mac;
    }
  }
  Statement st;
  bool has_state = false;
  crypto::Hash digest{};
  if (sqlite3_prepare_v2(db_, "SELECT counter, digest, mac FROM state WHERE id=1", -1, &st.stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(st.stmt) == SQLITE_ROW) {
    has_state = true;
    counter_ = static_cast<uint64_t>(sqlite3_column_int64(st.stmt, 0));
    ByteSpan stored_digest(static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 1)),
                           static_cast<size_t>(sqlite3_column_bytes(st.stmt, 1)));
    ByteSpan stored_mac(static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 2)),
                        static_cast<size_t>(sqlite3_column_bytes(st.stmt, 2)));
    if (stored_digest.size() == digest.size()) std::memcpy(digest.data(), stored_digest.data(), digest.size());
    crypto::Hash expected = MetaMac(counter_, digest);
    if (stored_digest.size() != digest.size() || !crypto::ConstantTimeEquals(stored_mac, expected)) {
      problems.push_back("the state record fails authentication (changed outside CAS)");
      return problems;
    }
  }
  if (!has_state) {
    counter_ = 0;
    if (!macs_.empty() || !problems.empty()) {
      problems.push_back("the database has rows but no state record (from before authentication, or replaced)");
    }
  } else if (!crypto::ConstantTimeEquals(digest, Digest(macs_))) {
    problems.push_back("rows were deleted, added or replaced by older copies outside CAS (the database's "
                       "digest does not match its rows)");
  }
  if (counter_ < anchor_counter) {
    problems.push_back("the database is older than it should be: state " + std::to_string(counter_) +
                       ", but the platform's counter is at " + std::to_string(anchor_counter) +
                       " (an older copy was put back?)");
  }
  return problems;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& state_dir, std::shared_ptr<Anchor> anchor) {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(state_dir, 0700));
  std::string key_path = state_dir + "/master.key";
  std::string db_path = state_dir + "/cas.db";
  SCONE_ASSIGN_OR_RETURN(SecretBytes sealing_key, anchor->SealingKey(kSealingLabel));
  SCONE_ASSIGN_OR_RETURN(bool has_key, os::Exists(key_path));
  SCONE_ASSIGN_OR_RETURN(bool has_db, os::Exists(db_path));
  MasterFile master;
  if (has_key) {
    SCONE_ASSIGN_OR_RETURN(Bytes file, os::ReadWholeFile(key_path, 4096));
    SCONE_ASSIGN_OR_RETURN(master, UnsealMaster(file, sealing_key, key_path));
  } else {
    if (has_db) {
      return DataCorrupted("CAS store: " + db_path + " exists but its master key " + key_path +
                           " does not: refusing to start a new store over it");
    }
    master.instance.resize(kInstanceSize);
    crypto::RandomBytes(master.instance);
    master.key = crypto::RandomKey();
    SCONE_RETURN_IF_ERROR(SealMaster(key_path, master, sealing_key));
  }
  std::string counter_name = "scone-cas/" + ToHex(master.instance);
  SCONE_ASSIGN_OR_RETURN(uint64_t anchored, anchor->AdvanceCounter(counter_name, 0));
  SCONE_ASSIGN_OR_RETURN(sqlite3 * db, OpenDatabase(db_path));
  std::unique_ptr<Store> store(new Store(db, std::move(master.key), counter_name, anchor));
  std::vector<std::string> problems = store->Verify(anchored);
  if (!problems.empty()) {
    std::string message = "CAS store " + db_path + " cannot be trusted:";
    for (const std::string& p : problems) message += "\n  " + p;
    bool older = problems.back().find("older than it should be") != std::string::npos;
    return Status(older ? Code::kRolledBack : Code::kDataCorrupted, message);
  }
  if (store->counter_ == 0 || store->counter_ > anchored) {
    // A new store writes its first state; one a crash left ahead of the platform catches it up.
    std::lock_guard lock(store->mu_);
    SCONE_RETURN_IF_ERROR(store->counter_ == 0 ? store->Commit([](Txn&) { return Status::Ok(); })
                                               : anchor->AdvanceCounter(counter_name, store->counter_).status());
  }
  SCONE_ASSIGN_OR_RETURN(store->audit_, AuditLog::Open(db_path));
  return store;
}

Result<std::vector<std::string>> Store::Recover(const std::string& state_dir, std::shared_ptr<Anchor> anchor,
                                                const std::string& operator_id, const std::string& reason) {
  std::string key_path = state_dir + "/master.key";
  std::string db_path = state_dir + "/cas.db";
  std::vector<std::string> findings;
  SCONE_ASSIGN_OR_RETURN(SecretBytes sealing_key, anchor->SealingKey(kSealingLabel));
  SCONE_ASSIGN_OR_RETURN(Bytes file, os::ReadWholeFile(key_path, 4096));
  MasterFile master;
  auto unsealed = UnsealMaster(file, sealing_key, key_path);
  if (unsealed.ok()) {
    master = std::move(unsealed).value();
  } else if (unsealed.status().code() == Code::kDataCorrupted) {
    // A master key in the clear (before sealing): adopted, and from now on sealed.
    SCONE_ASSIGN_OR_RETURN(master.key, fs::ReadKeyFile(key_path));
    master.instance.resize(kInstanceSize);
    crypto::RandomBytes(master.instance);
    SCONE_RETURN_IF_ERROR(SealMaster(key_path, master, sealing_key));
    findings.push_back("sealed the master key, which lay in the clear beside the database");
  } else {
    return unsealed.status();
  }
  std::string counter_name = "scone-cas/" + ToHex(master.instance);
  SCONE_ASSIGN_OR_RETURN(uint64_t anchored, anchor->AdvanceCounter(counter_name, 0));
  SCONE_ASSIGN_OR_RETURN(sqlite3 * db, OpenDatabase(db_path));
  std::unique_ptr<Store> store(new Store(db, std::move(master.key), counter_name, anchor));
  std::lock_guard lock(store->mu_);
  std::vector<std::string> problems = store->Verify(anchored);
  findings.insert(findings.end(), problems.begin(), problems.end());
  bool has_state = false;
  {
    Statement st;
    has_state = sqlite3_prepare_v2(db, "SELECT 1 FROM state", -1, &st.stmt, nullptr) == SQLITE_OK &&
                sqlite3_step(st.stmt) == SQLITE_ROW;
  }
  Status committed = store->Commit([&](Txn& txn) -> Status {
    for (const Table* t : kTables) {
      SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, store->ReadRows(t->name, "", {}));
      for (Row& row : rows) {
        crypto::Hash mac = store->RowMac(row);
        if (row.mac && crypto::ConstantTimeEquals(*row.mac, mac)) continue;  // written by CAS: kept
        if (!row.mac && !has_state) {  // a database from before authentication: adopted
          findings.push_back("adopted " + row.What() + " (written before rows were authenticated)");
          SCONE_RETURN_IF_ERROR(txn.Put(std::move(row)));
          continue;
        }
        findings.push_back("dropped " + row.What() + " (not written by CAS)");
        std::string sql = std::string("DELETE FROM ") + t->name + " WHERE " + t->keys[0] + "=?1" +
                          (t->keys.size() > 1 ? std::string(" AND ") + t->keys[1] + "=?2" : "");
        Statement st;
        if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st.stmt, nullptr) != SQLITE_OK) return SqlError(db, "prepare");
        for (size_t k = 0; k < row.key.size(); ++k) {
          sqlite3_bind_text(st.stmt, static_cast<int>(k + 1), row.key[k].c_str(), -1, SQLITE_TRANSIENT);
        }
        if (sqlite3_step(st.stmt) != SQLITE_DONE) return SqlError(db, "drop a row");
        txn.macs_.erase(row.Id());
      }
    }
    // The state moves past the platform's counter: what is kept now is current.
    store->counter_ = std::max(store->counter_, anchored);
    return Status::Ok();
  });
  SCONE_RETURN_IF_ERROR(committed);
  findings.push_back("the database is now at state " + std::to_string(store->counter_) + " (platform counter was " +
                     std::to_string(anchored) + ")");
  SCONE_ASSIGN_OR_RETURN(store->audit_, AuditLog::Open(db_path));
  std::string summary;
  for (const std::string& f : findings) summary += (summary.empty() ? "" : "; ") + f;
  store->audit_->Record(operator_id, "recover", db_path, "reason: " + reason + "; " + summary);
  store->audit_->Flush();
  SCONE_RETURN_IF_ERROR(store->audit_->Health().Annotate("the audit record of the recovery"));
  return findings;
}

Status Store::Commit(const std::function<Status(Txn&)>& body) {
  Txn txn(this);
  txn.macs_ = macs_;
  SCONE_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  uint64_t before = counter_;
  Status s = body(txn);
  uint64_t next = counter_ + 1;  // `body` may move the counter (recovery)
  crypto::Hash digest = Digest(txn.macs_);
  crypto::Hash mac = MetaMac(next, digest);
  if (s.ok()) {
    Statement st;
    if (sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO state(id, counter, digest, mac) VALUES(1, ?, ?, ?)", -1,
                           &st.stmt, nullptr) != SQLITE_OK) {
      s = SqlError(db_, "prepare");
    } else {
      sqlite3_bind_int64(st.stmt, 1, static_cast<sqlite3_int64>(next));
      sqlite3_bind_blob(st.stmt, 2, digest.data(), static_cast<int>(digest.size()), SQLITE_TRANSIENT);
      sqlite3_bind_blob(st.stmt, 3, mac.data(), static_cast<int>(mac.size()), SQLITE_TRANSIENT);
      if (sqlite3_step(st.stmt) != SQLITE_DONE) s = SqlError(db_, "write the state record");
    }
  }
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) {
    (void)Exec("ROLLBACK");
    counter_ = before;
    return s;
  }
  macs_ = std::move(txn.macs_);
  counter_ = next;
  // After the commit: a crash before this leaves the database one ahead, which Open accepts.
  auto advanced = anchor_->AdvanceCounter(counter_name_, counter_);
  if (!advanced.ok() && !anchor_behind_) {
    std::fprintf(stderr, "scone cas: cannot advance the platform counter at %s: %s (retried at the next change)\n",
                 anchor_->Where().c_str(), advanced.status().message().c_str());
  }
  anchor_behind_ = !advanced.ok();
  return Status::Ok();
}

uint64_t Store::counter() {
  std::lock_guard lock(mu_);
  return counter_;
}

// A session row without its text: name, hash, creator, readers.
StoredSession Store::SessionSummary(const Row& row) {
  StoredSession s;
  s.name = row.key[0];
  s.hash = AsText(row.values[0]);
  s.creator = AsText(row.values[1]);
  auto readers = nlohmann::json::parse(AsText(row.values[2]), nullptr, false);
  if (readers.is_array()) {
    for (const auto& r : readers) {
      if (r.is_string()) s.readers.push_back(r.get<std::string>());
    }
  }
  return s;
}

Result<std::optional<StoredSession>> Store::Get(const std::string& name) {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("sessions", "name=?", {name}));
  if (rows.empty()) {
    if (macs_.count(std::string("sessions\x1f") + name)) {
      return DataCorrupted("CAS store: session " + name + " was deleted outside CAS");
    }
    return std::optional<StoredSession>();
  }
  const Row& row = rows.front();
  SCONE_RETURN_IF_ERROR(CheckRow(row));
  StoredSession s = SessionSummary(row);
  const Bytes& nonce = *row.values[3];
  const Bytes& sealed = *row.values[4];
  const Bytes& tag = *row.values[5];
  if (nonce.size() != crypto::kNonceSize || tag.size() != crypto::kTagSize) {
    return DataCorrupted("CAS store: session " + name + " is damaged");
  }
  s.text.resize(sealed.size());
  if (!sealer_.Open(nonce, {AsBytes(name)}, sealed, reinterpret_cast<uint8_t*>(s.text.data()), tag.data()).ok()) {
    return DataCorrupted("CAS store: session " + name + " fails authentication");
  }
  return std::optional<StoredSession>(std::move(s));
}

Status Store::Put(const StoredSession& s, const std::optional<std::string>& replaces, const SecretSet& secrets) {
  uint8_t nonce[crypto::kNonceSize], tag[crypto::kTagSize];
  crypto::FreshNonce(nonce);
  Bytes sealed(s.text.size());
  SCONE_RETURN_IF_ERROR(sealer_.Seal(ByteSpan(nonce, sizeof(nonce)), {AsBytes(s.name)}, AsBytes(s.text),
                                     sealed.data(), tag));
  std::vector<Row> secret_rows;
  for (const auto& [entry, secret] : secrets) {
    Row row;
    row.table = &kSecrets;
    row.key = {s.name, entry};
    row.values = {Text(secret.spec), Seal(SecretAad(s.name, entry), secret.value.span())};
    secret_rows.push_back(std::move(row));
  }
  std::lock_guard lock(mu_);
  return Commit([&](Txn& txn) -> Status {
    // Compare-and-set on the current hash (or on the name being free).
    SCONE_ASSIGN_OR_RETURN(std::vector<Row> current, ReadRows("sessions", "name=?", {s.name}));
    if (!current.empty()) SCONE_RETURN_IF_ERROR(CheckRow(current.front()));
    std::string current_hash = current.empty() ? "" : AsText(current.front().values[0]);
    if (replaces ? current_hash != *replaces : !current.empty()) {
      return RolledBack("session " + s.name + " changed concurrently");
    }
    Row row;
    row.table = &kSessions;
    row.key = {s.name};
    row.values = {Text(s.hash), Text(s.creator), Text(nlohmann::json(s.readers).dump()),
                  Bytes(nonce, nonce + sizeof(nonce)), sealed, Bytes(tag, tag + sizeof(tag))};
    SCONE_RETURN_IF_ERROR(txn.Put(std::move(row)));
    // Exactly these secrets: anything a failed or older request left for this name goes.
    SCONE_RETURN_IF_ERROR(txn.DeleteAll(kSecrets, s.name));
    for (Row& r : secret_rows) SCONE_RETURN_IF_ERROR(txn.Put(std::move(r)));
    return Status::Ok();
  });
}

Status Store::Delete(const std::string& name, const std::string& hash) {
  std::lock_guard lock(mu_);
  return Commit([&](Txn& txn) -> Status {
    SCONE_ASSIGN_OR_RETURN(std::vector<Row> current, ReadRows("sessions", "name=?", {name}));
    if (current.empty()) return NotFound("no session " + name);
    SCONE_RETURN_IF_ERROR(CheckRow(current.front()));
    if (AsText(current.front().values[0]) != hash) return RolledBack("session " + name + " changed concurrently");
    for (const Table* t : {&kSessions, &kSecrets, &kVolumes, &kConsoleKeys}) SCONE_RETURN_IF_ERROR(txn.DeleteAll(*t, name));
    return Status::Ok();
  });
}

Result<std::vector<StoredSession>> Store::List() {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("sessions", "1 ORDER BY name", {}));
  std::vector<StoredSession> out;
  for (const Row& row : rows) {
    if (!CheckRow(row).ok()) continue;  // refused wherever it is read by name
    out.push_back(SessionSummary(row));
  }
  return out;
}

void Store::Audit(const std::string& actor, const std::string& action, const std::string& object,
                  const std::string& result) {
  audit_->Record(actor, action, object, result);
}

void Store::FlushAudit() { audit_->Flush(); }

Status Store::AuditHealth() { return audit_->Health(); }

void Store::SetAuditPageLimit(int pages) { audit_->SetPageLimit(pages); }

Bytes Store::Seal(std::string_view aad, ByteSpan plaintext) const {
  Bytes out(crypto::kNonceSize + plaintext.size() + crypto::kTagSize);
  crypto::FreshNonce(out.data());
  Status s = sealer_.Seal(ByteSpan(out.data(), crypto::kNonceSize), {AsBytes(aad)}, plaintext,
                          out.data() + crypto::kNonceSize, out.data() + crypto::kNonceSize + plaintext.size());
  if (!s.ok()) return {};
  return out;
}

Result<SecretBytes> Store::Unseal(std::string_view aad, ByteSpan sealed) const {
  if (sealed.size() < crypto::kNonceSize + crypto::kTagSize) {
    return DataCorrupted("CAS store: sealed value for " + std::string(aad) + " is truncated");
  }
  SecretBytes out(sealed.size() - crypto::kNonceSize - crypto::kTagSize);
  if (!sealer_.Open(sealed.first(crypto::kNonceSize), {AsBytes(aad)}, sealed.subspan(crypto::kNonceSize, out.size()),
                    out.data(), sealed.data() + crypto::kNonceSize + out.size())
           .ok()) {
    return DataCorrupted("CAS store: sealed value for " + std::string(aad) + " fails authentication");
  }
  return out;
}

Result<std::optional<StoredSecret>> Store::GetSecret(const std::string& session, const std::string& name) {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("secrets", "session=? AND name=?", {session, name}));
  if (rows.empty()) return std::optional<StoredSecret>();
  SCONE_RETURN_IF_ERROR(CheckRow(rows.front()));
  StoredSecret out;
  out.spec = AsText(rows.front().values[0]);
  SCONE_ASSIGN_OR_RETURN(out.value, Unseal(SecretAad(session, name), rows.front().values[1].value_or(Bytes{})));
  return std::optional<StoredSecret>(std::move(out));
}

Result<SecretBytes> Store::VolumeKey(const std::string& session, const std::string& volume) {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("volumes", "session=? AND name=?", {session, volume}));
  if (!rows.empty()) {
    SCONE_RETURN_IF_ERROR(CheckRow(rows.front()));
    return Unseal(VolumeAad(session, volume), rows.front().values[0].value_or(Bytes{}));
  }
  if (macs_.count("volumes\x1f" + session + '\x1f' + volume)) {
    return DataCorrupted("CAS store: the key of volume " + volume + " was deleted outside CAS");
  }
  SecretBytes key = crypto::RandomKey();
  Row row;
  row.table = &kVolumes;
  row.key = {session, volume};
  row.values = {Seal(VolumeAad(session, volume), key.span()), std::nullopt, std::nullopt};
  SCONE_RETURN_IF_ERROR(Commit([&](Txn& txn) { return txn.Put(std::move(row)); }));
  return key;
}

Result<std::optional<SecretBytes>> Store::ConsoleKey(const std::string& session, const std::string& service,
                                                     bool create) {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows,
                         ReadRows("console_keys", "session=? AND service=?", {session, service}));
  if (!rows.empty()) {
    SCONE_RETURN_IF_ERROR(CheckRow(rows.front()));
    SCONE_ASSIGN_OR_RETURN(SecretBytes key, Unseal(ConsoleAad(session, service), rows.front().values[0].value_or(Bytes{})));
    return std::optional<SecretBytes>(std::move(key));
  }
  if (macs_.count("console_keys\x1f" + session + '\x1f' + service)) {
    return DataCorrupted("CAS store: the console key of service " + service + " was deleted outside CAS");
  }
  if (!create) return std::optional<SecretBytes>();
  SecretBytes key = crypto::RandomKey();
  Row row;
  row.table = &kConsoleKeys;
  row.key = {session, service};
  row.values = {Seal(ConsoleAad(session, service), key.span())};
  SCONE_RETURN_IF_ERROR(Commit([&](Txn& txn) { return txn.Put(std::move(row)); }));
  return std::optional<SecretBytes>(std::move(key));
}

Result<std::optional<VolumeMark>> Store::GetVolumeMark(const std::string& session, const std::string& volume) {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("volumes", "session=? AND name=?", {session, volume}));
  if (rows.empty()) return std::optional<VolumeMark>();
  SCONE_RETURN_IF_ERROR(CheckRow(rows.front()));
  const Row& row = rows.front();
  if (!row.values[1]) return std::optional<VolumeMark>();
  VolumeMark m;
  if (row.values[1]->size() != m.tag.size()) {
    return DataCorrupted("CAS store: the tag of volume " + volume + " is damaged");
  }
  std::memcpy(m.tag.data(), row.values[1]->data(), m.tag.size());
  m.generation = std::stoull(AsText(row.values[2]));
  return std::optional<VolumeMark>(m);
}

Status Store::PutVolumeMark(const std::string& session, const std::string& volume, const VolumeMark& mark) {
  std::lock_guard lock(mu_);
  return Commit([&](Txn& txn) -> Status {
    SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("volumes", "session=? AND name=?", {session, volume}));
    if (rows.empty()) return NotFound("volume " + volume + " of session " + session + " has no key yet");
    Row& row = rows.front();
    SCONE_RETURN_IF_ERROR(CheckRow(row));
    if (row.values[1]) {
      uint64_t generation = std::stoull(AsText(row.values[2]));
      bool same_tag = row.values[1]->size() == mark.tag.size() &&
                      std::memcmp(row.values[1]->data(), mark.tag.data(), mark.tag.size()) == 0;
      if (mark.generation < generation || (mark.generation == generation && !same_tag)) {
        return RolledBack("volume " + volume + ": reported state is older than the one CAS knows");
      }
    }
    row.values[1] = Bytes(mark.tag.begin(), mark.tag.end());
    row.values[2] = Text(std::to_string(mark.generation));
    return txn.Put(std::move(row));
  });
}

Status Store::TrustPlatform(const crypto::PublicKey& key, const std::string& by) {
  std::lock_guard lock(mu_);
  std::string hex = ToHex(key);
  if (macs_.count("platforms\x1f" + hex)) return Status::Ok();
  Row row;
  row.table = &kPlatforms;
  row.key = {hex};
  row.values = {Text(by), Text(std::to_string(Now()))};
  return Commit([&](Txn& txn) { return txn.Put(std::move(row)); });
}

Result<std::vector<crypto::PublicKey>> Store::TrustedPlatforms() {
  std::lock_guard lock(mu_);
  SCONE_ASSIGN_OR_RETURN(std::vector<Row> rows, ReadRows("platforms", "", {}));
  std::vector<crypto::PublicKey> out;
  for (const Row& row : rows) {
    if (!CheckRow(row).ok()) continue;  // a row CAS did not write names no platform it trusts
    auto key = FromHexArray<crypto::PublicKey{}.size()>(row.key[0]);
    if (key.ok()) out.push_back(*key);
  }
  return out;
}

}  // namespace scone::cas
