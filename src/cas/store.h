// CAS's store: sessions in SQLite (WAL), each session's text sealed with AES-256-GCM under the
// CAS master key (a session holds given secret values), generated secrets, volume keys and
// states, trusted platforms, plus an append-only audit log of who created, read, updated and
// attested what (no secret in it; cas/audit_log.h).
//
// Thread-safety: all methods may be called concurrently (one connection, serialized).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cas/audit_log.h"
#include "cas/protocol.h"
#include "common/status.h"
#include "crypto/primitives.h"
#include "crypto/signing.h"

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
  // Records an action in the audit log (durable a few milliseconds later; cas/audit_log.h).
  void Audit(const std::string& actor, const std::string& action, const std::string& object,
             const std::string& result);
  // Returns once every audit record made so far is durable.
  void FlushAudit();

  // Secret values CAS generated for a session, each sealed and bound to (session, name).
  Result<std::optional<SecretBytes>> GetSecret(const std::string& session, const std::string& name);
  Status PutSecret(const std::string& session, const std::string& name, const SecretBytes& value);

  // A volume's key, created on first use; and the mark its service last reported.
  Result<SecretBytes> VolumeKey(const std::string& session, const std::string& volume);
  Result<std::optional<VolumeMark>> GetVolumeMark(const std::string& session, const std::string& volume);
  // Records a newer mark; an older generation (or the same with another tag) is kRolledBack.
  Status PutVolumeMark(const std::string& session, const std::string& volume, const VolumeMark& mark);

  // Platform keys whose evidence CAS accepts.
  Status TrustPlatform(const crypto::PublicKey& key, const std::string& by);
  Result<std::vector<crypto::PublicKey>> TrustedPlatforms();

 private:
  Store(sqlite3* db, SecretBytes master_key);
  Status Exec(const char* sql);
  // nonce | ciphertext | tag under the master key, bound to `aad`.
  Bytes Seal(std::string_view aad, ByteSpan plaintext) const;
  Result<SecretBytes> Unseal(std::string_view aad, ByteSpan sealed) const;
  Result<std::optional<Bytes>> GetBlob(const char* sql, const std::string& a, const std::string& b);

  std::mutex mu_;
  sqlite3* db_;
  std::unique_ptr<AuditLog> audit_;
  crypto::Aes256Gcm sealer_;
};

}  // namespace scone::cas
