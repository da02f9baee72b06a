// CAS's store: sessions in SQLite (WAL), each session's text sealed with AES-256-GCM under the
// CAS master key (a session holds given secret values), plus an append-only audit log of who
// created, read and updated what (no secret in it).
//
// Thread-safety: all methods may be called concurrently (one connection, serialized).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"

struct sqlite3;

namespace scone::cas {

struct StoredSession {
  std::string name;
  std::string hash;     // hex SHA-256 of the text
  std::string creator;  // fingerprint of the creating client's public key
  std::string text;
};

class Store {
 public:
  // Opens (creating) `state_dir/cas.db`; the master key is `state_dir/master.key` (0600).
  static Result<std::unique_ptr<Store>> Open(const std::string& state_dir);
  ~Store();

  Result<std::optional<StoredSession>> Get(const std::string& name);
  // Inserts, or replaces the session whose current hash is `replaces` (compare-and-set in one
  // transaction: a concurrent update makes this fail with kRolledBack).
  Status Put(const StoredSession& session, const std::optional<std::string>& replaces);
  Result<std::vector<StoredSession>> List();
  void Audit(const std::string& actor, const std::string& action, const std::string& object,
             const std::string& result);

 private:
  Store(sqlite3* db, SecretBytes master_key);
  Status Exec(const char* sql);

  std::mutex mu_;
  sqlite3* db_;
  crypto::Aes256Gcm sealer_;
};

}  // namespace scone::cas
