// CAS's store: sessions in SQLite (WAL), each session's text sealed with AES-256-GCM under the
// CAS master key (a session holds given secret values), generated secrets, volume keys and
// states, trusted platforms, plus an append-only audit log of who created, read, updated and
// attested what (no secret in it; cas/audit_log.h).
//
// The database is untrusted: root on the host can edit it or put back an older copy. Every row
// CAS trusts (sessions, secrets, volumes, platforms) carries an HMAC under a key derived from
// the master key, over its table, its key and all its columns; a state row holds a counter and
// a digest over every row's MAC, also authenticated. The master key lies beside the database
// only sealed to the platform (cas/anchor.h: LAS's sealing key), and the platform keeps a
// monotonic counter that CAS advances after each commit. So at start-up an edited, inserted or
// deleted row, or a database older than the platform's counter, is found, and CAS refuses to
// serve until an operator runs Recover (`scone cas recover`, audited). While CAS runs, every
// row read is checked against the MAC CAS itself last wrote for it.
//
// Each change is one transaction (a session with all its generated secrets; a volume mark; a
// platform): a failed request leaves nothing. A crash between a commit and the counter's
// advance leaves the database one step ahead of the platform, which start-up accepts; put back
// in that window, the previous copy would be taken for current (docs/attestation-and-cas.md).
//
// Thread-safety: all methods may be called concurrently (one connection, serialized).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cas/anchor.h"
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
  std::string text;     // empty in List()
  std::vector<std::string> readers;  // access_policy.read, so that listing needs no parsing
};

// A generated secret value and the parameters it was made with ("ascii size=24", an x509's
// names and issuer...): when they change, the value is made anew.
struct StoredSecret {
  std::string spec;
  SecretBytes value;
};
// A session's generated secrets by entry name ("token", "cert", "cert.key").
using SecretSet = std::map<std::string, StoredSecret>;

class Store {
 public:
  // Opens (creating) `state_dir/cas.db` and the sealed master key `state_dir/master.key`,
  // checking the whole database against `anchor`. Fails with kRolledBack or kDataCorrupted,
  // naming every problem, if the database was changed outside CAS or is older than the anchor.
  static Result<std::unique_ptr<Store>> Open(const std::string& state_dir, std::shared_ptr<Anchor> anchor);
  // The operator's way out of a refusal: keeps every row whose MAC verifies (rows CAS wrote at
  // some time), drops the others, adopts a database from before authentication (rows without
  // MACs, a master key in the clear, sealing it), and moves the state past the anchor's
  // counter. Returns one line per finding; writes them and `reason` to the audit log.
  static Result<std::vector<std::string>> Recover(const std::string& state_dir, std::shared_ptr<Anchor> anchor,
                                                  const std::string& operator_id, const std::string& reason);
  ~Store();

  Result<std::optional<StoredSession>> Get(const std::string& name);
  // Inserts, or replaces the session whose current hash is `replaces` (compare-and-set), with
  // exactly `secrets` as its generated secrets, in one transaction: a concurrent update makes
  // this fail with kRolledBack and nothing is written.
  Status Put(const StoredSession& session, const std::optional<std::string>& replaces, const SecretSet& secrets);
  // Deletes the session whose current hash is `hash` (compare-and-set: kRolledBack if it
  // changed, kNotFound if there is none) with everything CAS keeps for it: its generated
  // secrets, its volumes' keys and states, its services' console keys; in one transaction. What
  // was encrypted under those keys can no longer be read by anyone.
  Status Delete(const std::string& name, const std::string& hash);
  // Every session without its text (name, hash, creator, readers).
  Result<std::vector<StoredSession>> List();
  // Records an action in the audit log (durable a few milliseconds later; cas/audit_log.h).
  void Audit(const std::string& actor, const std::string& action, const std::string& object,
             const std::string& result);
  // Returns once every audit record made so far is durable.
  void FlushAudit();
  // OK while audit records are being written; the reason otherwise (disk full...).
  Status AuditHealth();
  // Caps the audit log's writes at `pages` database pages (0: no cap): a full disk, for tests.
  void SetAuditPageLimit(int pages);

  Result<std::optional<StoredSecret>> GetSecret(const std::string& session, const std::string& name);

  // A volume's key, created on first use; and the mark its service last reported.
  Result<SecretBytes> VolumeKey(const std::string& session, const std::string& volume);
  Result<std::optional<VolumeMark>> GetVolumeMark(const std::string& session, const std::string& volume);
  // Records a newer mark; an older generation (or the same with another tag) is kRolledBack.
  Status PutVolumeMark(const std::string& session, const std::string& volume, const VolumeMark& mark);

  // A service's console key (docs/console-shield.md): made on first use when `create` (the
  // service attests with SCONE_CONSOLE_SHIELD=protected); nullopt if there is none yet.
  Result<std::optional<SecretBytes>> ConsoleKey(const std::string& session, const std::string& service, bool create);

  // Platform keys whose evidence CAS accepts.
  Status TrustPlatform(const crypto::PublicKey& key, const std::string& by);
  Result<std::vector<crypto::PublicKey>> TrustedPlatforms();

  // The state counter of the last commit (the platform's counter is at least this).
  uint64_t counter();

 private:
  class Txn;
  struct Row;
  Store(sqlite3* db, SecretBytes master_key, std::string counter_name, std::shared_ptr<Anchor> anchor);
  static Result<sqlite3*> OpenDatabase(const std::string& db_path);
  Status Exec(const char* sql);
  // nonce | ciphertext | tag under the master key, bound to `aad`.
  Bytes Seal(std::string_view aad, ByteSpan plaintext) const;
  Result<SecretBytes> Unseal(std::string_view aad, ByteSpan sealed) const;
  crypto::Hash RowMac(const Row& row) const;
  static StoredSession SessionSummary(const Row& row);
  crypto::Hash Digest(const std::map<std::string, crypto::Hash>& macs) const;
  crypto::Hash MetaMac(uint64_t counter, const crypto::Hash& digest) const;
  Result<std::vector<Row>> ReadRows(const char* table, const std::string& where, const std::vector<std::string>& args);
  // Checks a row read now against the MAC CAS last wrote for it (REQUIRES: mu_ held).
  Status CheckRow(const Row& row) const;
  // Runs `body` in one transaction that also advances the state (REQUIRES: mu_ held).
  Status Commit(const std::function<Status(Txn&)>& body);
  // Verifies every row and the state row; problems are returned one per line.
  std::vector<std::string> Verify(uint64_t anchor_counter);

  std::mutex mu_;
  sqlite3* db_;
  std::unique_ptr<AuditLog> audit_;
  crypto::Aes256Gcm sealer_;
  SecretBytes mac_key_;
  std::string counter_name_;
  std::shared_ptr<Anchor> anchor_;
  // What CAS last wrote: the MAC of every row (key: table, then its key columns), the counter.
  std::map<std::string, crypto::Hash> macs_;
  uint64_t counter_ = 0;
  bool anchor_behind_ = false;
};

}  // namespace scone::cas
