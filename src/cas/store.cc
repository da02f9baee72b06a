#include "cas/store.h"

#include <sqlite3.h>

#include <chrono>
#include <cstring>

#include "fs/volume.h"
#include "os/file.h"

namespace scone::cas {
namespace {

// Deletes a prepared statement on scope exit.
struct Statement {
  sqlite3_stmt* stmt = nullptr;
  ~Statement() { sqlite3_finalize(stmt); }
};

Status SqlError(sqlite3* db, const std::string& what) {
  return Internal("CAS store: " + what + ": " + sqlite3_errmsg(db));
}

}  // namespace

Store::Store(sqlite3* db, SecretBytes master_key) : db_(db), sealer_(std::move(master_key)) {}

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

Result<std::unique_ptr<Store>> Store::Open(const std::string& state_dir) {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(state_dir, 0700));
  std::string key_path = state_dir + "/master.key";
  SCONE_ASSIGN_OR_RETURN(bool has_key, os::Exists(key_path));
  SecretBytes key;
  if (has_key) {
    SCONE_ASSIGN_OR_RETURN(key, fs::ReadKeyFile(key_path));
  } else {
    SCONE_ASSIGN_OR_RETURN(key, fs::CreateKeyFile(key_path));
  }
  sqlite3* db = nullptr;
  std::string db_path = state_dir + "/cas.db";
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Status s = SqlError(db, "open " + db_path);
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<Store> store(new Store(db, std::move(key)));
  SCONE_RETURN_IF_ERROR(store->Exec(
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
      "CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit"
      "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
      "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
      "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"));
  sqlite3_busy_timeout(db, 10000);  // the audit log writes on a connection of its own
  SCONE_ASSIGN_OR_RETURN(store->audit_, AuditLog::Open(db_path));
  return store;
}

Result<std::optional<StoredSession>> Store::Get(const std::string& name) {
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT hash, creator, nonce, sealed, tag FROM sessions WHERE name=?",
                         -1, &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  sqlite3_bind_text(st.stmt, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st.stmt);
  if (rc == SQLITE_DONE) return std::optional<StoredSession>();
  if (rc != SQLITE_ROW) return SqlError(db_, "read session");
  StoredSession s;
  s.name = name;
  s.hash = reinterpret_cast<const char*>(sqlite3_column_text(st.stmt, 0));
  s.creator = reinterpret_cast<const char*>(sqlite3_column_text(st.stmt, 1));
  ByteSpan nonce(static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 2)),
                 static_cast<size_t>(sqlite3_column_bytes(st.stmt, 2)));
  ByteSpan sealed(static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 3)),
                  static_cast<size_t>(sqlite3_column_bytes(st.stmt, 3)));
  ByteSpan tag(static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 4)),
               static_cast<size_t>(sqlite3_column_bytes(st.stmt, 4)));
  if (nonce.size() != crypto::kNonceSize || tag.size() != crypto::kTagSize) {
    return DataCorrupted("CAS store: session " + name + " is damaged");
  }
  s.text.resize(sealed.size());
  if (!sealer_.Open(nonce, {AsBytes(name)}, sealed, reinterpret_cast<uint8_t*>(s.text.data()), tag.data())
           .ok()) {
    return DataCorrupted("CAS store: session " + name + " fails authentication");
  }
  return std::optional<StoredSession>(std::move(s));
}

Status Store::Put(const StoredSession& s, const std::optional<std::string>& replaces) {
  std::lock_guard lock(mu_);
  uint8_t nonce[crypto::kNonceSize], tag[crypto::kTagSize];
  crypto::FreshNonce(nonce);
  Bytes sealed(s.text.size());
  SCONE_RETURN_IF_ERROR(sealer_.Seal(ByteSpan(nonce, sizeof(nonce)), {AsBytes(s.name)}, AsBytes(s.text),
                                     sealed.data(), tag));
  SCONE_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Statement st;
  const char* sql = replaces
                        ? "UPDATE sessions SET hash=?2, creator=?3, nonce=?4, sealed=?5, tag=?6 "
                          "WHERE name=?1 AND hash=?7"
                        : "INSERT OR IGNORE INTO sessions(name, hash, creator, nonce, sealed, tag) "
                          "VALUES(?1, ?2, ?3, ?4, ?5, ?6)";
  if (sqlite3_prepare_v2(db_, sql, -1, &st.stmt, nullptr) != SQLITE_OK) {
    (void)Exec("ROLLBACK");
    return SqlError(db_, "prepare");
  }
  sqlite3_bind_text(st.stmt, 1, s.name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, s.hash.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 3, s.creator.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(st.stmt, 4, nonce, sizeof(nonce), SQLITE_TRANSIENT);
  sqlite3_bind_blob(st.stmt, 5, sealed.data(), static_cast<int>(sealed.size()), SQLITE_TRANSIENT);
  sqlite3_bind_blob(st.stmt, 6, tag, sizeof(tag), SQLITE_TRANSIENT);
  if (replaces) sqlite3_bind_text(st.stmt, 7, replaces->c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.stmt) != SQLITE_DONE) {
    Status e = SqlError(db_, "write session");
    (void)Exec("ROLLBACK");
    return e;
  }
  if (sqlite3_changes(db_) != 1) {
    (void)Exec("ROLLBACK");
    return RolledBack("session " + s.name + " changed concurrently");
  }
  return Exec("COMMIT");
}

Result<std::vector<StoredSession>> Store::List() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    Statement st;
    if (sqlite3_prepare_v2(db_, "SELECT name FROM sessions ORDER BY name", -1, &st.stmt, nullptr) !=
        SQLITE_OK) {
      return SqlError(db_, "prepare");
    }
    while (sqlite3_step(st.stmt) == SQLITE_ROW) {
      names.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st.stmt, 0)));
    }
  }
  std::vector<StoredSession> out;
  for (const std::string& n : names) {
    SCONE_ASSIGN_OR_RETURN(auto s, Get(n));
    if (s) out.push_back(std::move(*s));
  }
  return out;
}

void Store::Audit(const std::string& actor, const std::string& action, const std::string& object,
                  const std::string& result) {
  audit_->Record(actor, action, object, result);
}

void Store::FlushAudit() { audit_->Flush(); }

Bytes Store::Seal(std::string_view aad, ByteSpan plaintext) const {
  Bytes out(crypto::kNonceSize + plaintext.size() + crypto::kTagSize);
  crypto::FreshNonce(out.data());
  Status s = sealer_.Seal(ByteSpan(out.data(), crypto::kNonceSize), {AsBytes(aad)}, plaintext,
                          out.data() + crypto::kNonceSize,
                          out.data() + crypto::kNonceSize + plaintext.size());
  if (!s.ok()) return {};
  return out;
}

Result<SecretBytes> Store::Unseal(std::string_view aad, ByteSpan sealed) const {
  if (sealed.size() < crypto::kNonceSize + crypto::kTagSize) {
    return DataCorrupted("CAS store: sealed value for " + std::string(aad) + " is truncated");
  }
  SecretBytes out(sealed.size() - crypto::kNonceSize - crypto::kTagSize);
  if (!sealer_.Open(sealed.first(crypto::kNonceSize), {AsBytes(aad)},
                    sealed.subspan(crypto::kNonceSize, out.size()), out.data(),
                    sealed.data() + crypto::kNonceSize + out.size())
           .ok()) {
    return DataCorrupted("CAS store: sealed value for " + std::string(aad) + " fails authentication");
  }
  return out;
}

Result<std::optional<Bytes>> Store::GetBlob(const char* sql, const std::string& a, const std::string& b) {
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, sql, -1, &st.stmt, nullptr) != SQLITE_OK) return SqlError(db_, "prepare");
  sqlite3_bind_text(st.stmt, 1, a.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, b.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st.stmt);
  if (rc == SQLITE_DONE) return std::optional<Bytes>();
  if (rc != SQLITE_ROW) return SqlError(db_, "read");
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(st.stmt, 0));
  return std::optional<Bytes>(Bytes(p, p + sqlite3_column_bytes(st.stmt, 0)));
}

static std::string SecretAad(const std::string& session, const std::string& name) {
  return "secret/" + session + "/" + name;
}
static std::string VolumeAad(const std::string& session, const std::string& name) {
  return "volume/" + session + "/" + name;
}

Result<std::optional<SecretBytes>> Store::GetSecret(const std::string& session, const std::string& name) {
  SCONE_ASSIGN_OR_RETURN(auto blob, GetBlob("SELECT sealed FROM secrets WHERE session=?1 AND name=?2",
                                            session, name));
  if (!blob) return std::optional<SecretBytes>();
  SCONE_ASSIGN_OR_RETURN(SecretBytes value, Unseal(SecretAad(session, name), *blob));
  return std::optional<SecretBytes>(std::move(value));
}

Status Store::PutSecret(const std::string& session, const std::string& name, const SecretBytes& value) {
  Bytes sealed = Seal(SecretAad(session, name), value.span());
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO secrets(session, name, sealed) VALUES(?,?,?)", -1,
                         &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  sqlite3_bind_text(st.stmt, 1, session.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(st.stmt, 3, sealed.data(), static_cast<int>(sealed.size()), SQLITE_TRANSIENT);
  return sqlite3_step(st.stmt) == SQLITE_DONE ? Status::Ok() : SqlError(db_, "write secret");
}

Result<SecretBytes> Store::VolumeKey(const std::string& session, const std::string& volume) {
  SCONE_ASSIGN_OR_RETURN(auto blob, GetBlob("SELECT sealed_key FROM volumes WHERE session=?1 AND name=?2",
                                            session, volume));
  if (blob) return Unseal(VolumeAad(session, volume), *blob);
  SecretBytes key = crypto::RandomKey();
  Bytes sealed = Seal(VolumeAad(session, volume), key.span());
  {
    std::lock_guard lock(mu_);
    Statement st;
    if (sqlite3_prepare_v2(db_, "INSERT OR IGNORE INTO volumes(session, name, sealed_key) VALUES(?,?,?)",
                           -1, &st.stmt, nullptr) != SQLITE_OK) {
      return SqlError(db_, "prepare");
    }
    sqlite3_bind_text(st.stmt, 1, session.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st.stmt, 2, volume.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st.stmt, 3, sealed.data(), static_cast<int>(sealed.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(st.stmt) != SQLITE_DONE) return SqlError(db_, "write volume key");
  }
  // Two first uses at once: both read back the one that was inserted.
  SCONE_ASSIGN_OR_RETURN(blob, GetBlob("SELECT sealed_key FROM volumes WHERE session=?1 AND name=?2",
                                       session, volume));
  if (!blob) return Internal("CAS store: volume key vanished");
  return Unseal(VolumeAad(session, volume), *blob);
}

Result<std::optional<VolumeMark>> Store::GetVolumeMark(const std::string& session, const std::string& volume) {
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT tag, generation FROM volumes WHERE session=? AND name=?", -1,
                         &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  sqlite3_bind_text(st.stmt, 1, session.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, volume.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.stmt) != SQLITE_ROW || sqlite3_column_type(st.stmt, 0) == SQLITE_NULL) {
    return std::optional<VolumeMark>();
  }
  VolumeMark m;
  if (sqlite3_column_bytes(st.stmt, 0) != static_cast<int>(m.tag.size())) {
    return DataCorrupted("CAS store: the tag of volume " + volume + " is damaged");
  }
  std::memcpy(m.tag.data(), sqlite3_column_blob(st.stmt, 0), m.tag.size());
  m.generation = static_cast<uint64_t>(sqlite3_column_int64(st.stmt, 1));
  return std::optional<VolumeMark>(m);
}

Status Store::PutVolumeMark(const std::string& session, const std::string& volume, const VolumeMark& mark) {
  SCONE_ASSIGN_OR_RETURN(auto current, GetVolumeMark(session, volume));
  if (current && (mark.generation < current->generation ||
                  (mark.generation == current->generation && mark.tag != current->tag))) {
    return RolledBack("volume " + volume + ": reported state is older than the one CAS knows");
  }
  std::lock_guard lock(mu_);
  Statement st;
  // Compare-and-set on the generation: concurrent reports keep the newest.
  if (sqlite3_prepare_v2(db_, "UPDATE volumes SET tag=?3, generation=?4 WHERE session=?1 AND name=?2 "
                              "AND (generation IS NULL OR generation <= ?4)",
                         -1, &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  sqlite3_bind_text(st.stmt, 1, session.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, volume.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(st.stmt, 3, mark.tag.data(), static_cast<int>(mark.tag.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.stmt, 4, static_cast<sqlite3_int64>(mark.generation));
  if (sqlite3_step(st.stmt) != SQLITE_DONE) return SqlError(db_, "write volume tag");
  return Status::Ok();
}

Status Store::TrustPlatform(const crypto::PublicKey& key, const std::string& by) {
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "INSERT OR IGNORE INTO platforms(key, added_by, time) VALUES(?,?,?)", -1,
                         &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  std::string hex = ToHex(key);
  sqlite3_bind_text(st.stmt, 1, hex.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.stmt, 2, by.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.stmt, 3, std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch()).count());
  return sqlite3_step(st.stmt) == SQLITE_DONE ? Status::Ok() : SqlError(db_, "write platform");
}

Result<std::vector<crypto::PublicKey>> Store::TrustedPlatforms() {
  std::lock_guard lock(mu_);
  Statement st;
  if (sqlite3_prepare_v2(db_, "SELECT key FROM platforms", -1, &st.stmt, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  std::vector<crypto::PublicKey> out;
  while (sqlite3_step(st.stmt) == SQLITE_ROW) {
    auto key = FromHexArray<crypto::PublicKey{}.size()>(reinterpret_cast<const char*>(sqlite3_column_text(st.stmt, 0)));
    if (key.ok()) out.push_back(*key);
  }
  return out;
}

}  // namespace scone::cas
