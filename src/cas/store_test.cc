// CAS's store against a hostile host: rows edited, inserted or deleted in the database file, an
// older copy put back, the master key moved elsewhere. Each is found when the store opens (and
// while it runs), and only the operator's audited recovery makes it serve again.
#include "cas/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

#include "attest/sim/sim_platform.h"
#include "os/file.h"
#include "testing/temp_dir.h"

namespace scone::cas {
namespace {

constexpr char kSession[] = "name: shop\nversion: \"0.3\"\n";

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(os::MakeDirectories(dir_ / "las").ok());
    platform_ = std::make_unique<attest::sim::SimPlatform>(
        attest::sim::SimPlatform::OpenOrCreate(dir_ / "las/platform.key").value());
    anchor_ = PlatformAnchor(platform_.get());
  }

  Result<std::unique_ptr<Store>> Open() { return Store::Open(dir_ / "cas", anchor_); }

  // Runs `sql` on the database file as the host's root would, with CAS stopped.
  void Tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "cas/cas.db").c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  // Copies the database (with its write-ahead log) aside, or back.
  void CopyDatabase(const std::string& from, const std::string& to) {
    namespace fs = std::filesystem;
    fs::create_directories(to);
    for (const char* f : {"cas.db", "cas.db-wal", "cas.db-shm"}) {
      std::error_code ec;
      fs::remove(fs::path(to) / f, ec);
      if (fs::exists(fs::path(from) / f)) fs::copy_file(fs::path(from) / f, fs::path(to) / f);
    }
  }

  void ExpectRefused(Code code, const std::string& reason) {
    auto store = Open();
    ASSERT_FALSE(store.ok()) << "a tampered store opened; expected: " << reason;
    EXPECT_EQ(store.status().code(), code) << store.status().message();
    EXPECT_NE(store.status().message().find(reason), std::string::npos) << store.status().message();
  }

  testing::TempDir dir_;
  std::unique_ptr<attest::sim::SimPlatform> platform_;
  std::shared_ptr<Anchor> anchor_;
  const crypto::PublicKey kPlatform = crypto::SigningKey::Generate().public_key();
};

TEST_F(StoreTest, KeepsEverythingAcrossRestarts) {
  {
    auto store = Open().value();
    ASSERT_TRUE(store->Put({"shop", "h1", "alice", kSession, {"CREATOR"}}, std::nullopt, {}).ok());
    ASSERT_TRUE(store->TrustPlatform(kPlatform, "admin").ok());
    ASSERT_TRUE(store->VolumeKey("shop", "data").ok());
    ASSERT_TRUE(store->PutVolumeMark("shop", "data", {{}, 3}).ok());
  }
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().message();
  EXPECT_EQ((*store)->Get("shop").value()->text, kSession);
  EXPECT_EQ((*store)->TrustedPlatforms().value().size(), 1u);
  EXPECT_EQ((*store)->GetVolumeMark("shop", "data").value()->generation, 3u);
  // Listing reads names, creators and readers: nothing is unsealed (or parsed) for it.
  auto listed = (*store)->List().value();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed.front().readers, std::vector<std::string>{"CREATOR"});
  EXPECT_TRUE(listed.front().text.empty());
}

TEST_F(StoreTest, AnInsertedPlatformRowIsRefusedAndRecoveryDropsIt) {
  { ASSERT_TRUE(Open().value()->TrustPlatform(kPlatform, "admin").ok()); }
  std::string rogue = ToHex(crypto::SigningKey::Generate().public_key());
  Tamper("INSERT INTO platforms(key, added_by, time) VALUES('" + rogue + "', 'root', 0)");
  ExpectRefused(Code::kDataCorrupted, "platforms row '" + rogue + "' has no MAC");
  // Copying a genuine row's MAC onto it does not help: the MAC covers the key.
  Tamper("UPDATE platforms SET mac=(SELECT mac FROM platforms WHERE key='" + ToHex(kPlatform) + "') WHERE key='" +
         rogue + "'");
  ExpectRefused(Code::kDataCorrupted, "fails authentication");
  auto findings = Store::Recover(dir_ / "cas", anchor_, "test operator", "a rogue row was found");
  ASSERT_TRUE(findings.ok()) << findings.status().message();
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().message();
  auto trusted = (*store)->TrustedPlatforms().value();
  ASSERT_EQ(trusted.size(), 1u);
  EXPECT_EQ(trusted.front(), kPlatform);
  (*store)->FlushAudit();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "cas/cas.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT actor, result FROM audit WHERE action='recover'", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), "test operator");
  std::string result = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
  EXPECT_NE(result.find("a rogue row was found"), std::string::npos) << result;
  EXPECT_NE(result.find("dropped platforms row '" + rogue + "'"), std::string::npos) << result;
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(StoreTest, AnOlderCopyOfTheDatabaseIsRefusedUntilRecovered) {
  {
    auto store = Open().value();
    ASSERT_TRUE(store->VolumeKey("shop", "data").ok());
    ASSERT_TRUE(store->PutVolumeMark("shop", "data", {{}, 1}).ok());
  }
  CopyDatabase(dir_ / "cas", dir_ / "old");
  { ASSERT_TRUE(Open().value()->PutVolumeMark("shop", "data", {{}, 7}).ok()); }
  CopyDatabase(dir_ / "old", dir_ / "cas");
  ExpectRefused(Code::kRolledBack, "older than it should be");
  ASSERT_TRUE(Store::Recover(dir_ / "cas", anchor_, "op", "restored from backup on purpose").ok());
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().message();
  EXPECT_EQ((*store)->GetVolumeMark("shop", "data").value()->generation, 1u);  // what the operator accepted
}

TEST_F(StoreTest, EditedAndDeletedRowsAreRefused) {
  {
    auto store = Open().value();
    ASSERT_TRUE(store->Put({"shop", "h1", "alice", kSession, {"CREATOR"}}, std::nullopt, {}).ok());
    ASSERT_TRUE(store->Put({"mall", "h2", "bob", kSession, {"CREATOR"}}, std::nullopt, {}).ok());
  }
  CopyDatabase(dir_ / "cas", dir_ / "good");
  Tamper("UPDATE sessions SET creator='mallory' WHERE name='shop'");  // steal a session
  ExpectRefused(Code::kDataCorrupted, "sessions row 'shop' fails authentication");
  CopyDatabase(dir_ / "good", dir_ / "cas");
  Tamper("DELETE FROM sessions WHERE name='mall'");  // free the name for anyone to create
  ExpectRefused(Code::kDataCorrupted, "rows were deleted");
  CopyDatabase(dir_ / "good", dir_ / "cas");
  ASSERT_TRUE(Open().ok());
}

TEST_F(StoreTest, ChangesWhileRunningAreRefusedWhereRead) {
  auto store = Open().value();
  ASSERT_TRUE(store->Put({"shop", "h1", "alice", kSession, {"CREATOR"}}, std::nullopt, {}).ok());
  Tamper("UPDATE sessions SET creator='mallory' WHERE name='shop'");
  auto got = store->Get("shop");
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("changed outside CAS"), std::string::npos) << got.status().message();
  std::string rogue = ToHex(crypto::SigningKey::Generate().public_key());
  Tamper("INSERT INTO platforms(key, added_by, time) VALUES('" + rogue + "', 'root', 0)");
  EXPECT_TRUE(store->TrustedPlatforms().value().empty());
}

// A service's console key: none until asked to create it, then the same across restarts;
// another key copied over it in the database is refused.
TEST_F(StoreTest, ConsoleKeysAreMadeOnceAndAuthenticated) {
  SecretBytes first;
  {
    auto store = Open().value();
    EXPECT_FALSE(store->ConsoleKey("shop", "app", /*create=*/false).value().has_value());
    first = std::move(*store->ConsoleKey("shop", "app", /*create=*/true).value());
    ASSERT_EQ(first.size(), crypto::kKeySize);
    auto other = store->ConsoleKey("shop", "web", /*create=*/true).value();
    EXPECT_FALSE(crypto::ConstantTimeEquals(first.span(), other->span()));
  }
  {
    auto store = Open().value();
    auto again = store->ConsoleKey("shop", "app", /*create=*/false).value();
    ASSERT_TRUE(again.has_value());
    EXPECT_TRUE(crypto::ConstantTimeEquals(first.span(), again->span()));
  }
  Tamper("UPDATE console_keys SET sealed_key=(SELECT sealed_key FROM console_keys WHERE service='web') "
         "WHERE service='app'");
  ExpectRefused(Code::kDataCorrupted, "console_keys");
}

TEST_F(StoreTest, TheMasterKeyIsSealedToThePlatform) {
  { ASSERT_TRUE(Open().ok()); }
  auto file = os::ReadWholeFile(dir_ / "cas/master.key", 4096).value();
  EXPECT_EQ(std::string(file.begin(), file.begin() + 4), std::string("\x13\0\0\0", 4));  // a sealed record
  // Another platform (another LAS, another host) cannot unseal it.
  ASSERT_TRUE(os::MakeDirectories(dir_ / "other").ok());
  auto other = attest::sim::SimPlatform::OpenOrCreate(dir_ / "other/platform.key").value();
  auto store = Store::Open(dir_ / "cas", PlatformAnchor(&other));
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("cannot be unsealed on this platform"), std::string::npos)
      << store.status().message();
}

TEST_F(StoreTest, AFailedPutLeavesNothing) {
  auto store = Open().value();
  SecretSet secrets;
  secrets["token"] = StoredSecret{"ascii size=4", SecretBytes(AsBytes(std::string("abcd")))};
  ASSERT_TRUE(store->Put({"shop", "h1", "alice", kSession, {}}, std::nullopt, secrets).ok());
  // A create of a name that exists, and an update with a stale hash, change nothing.
  secrets["token"] = StoredSecret{"ascii size=4", SecretBytes(AsBytes(std::string("zzzz")))};
  EXPECT_EQ(store->Put({"shop", "h2", "bob", kSession, {}}, std::nullopt, secrets).code(), Code::kRolledBack);
  EXPECT_EQ(store->Put({"shop", "h2", "bob", kSession, {}}, std::string("stale"), secrets).code(), Code::kRolledBack);
  auto token = store->GetSecret("shop", "token").value();
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(std::string(token->value.span().begin(), token->value.span().end()), "abcd");
  EXPECT_EQ(store->Get("shop").value()->creator, "alice");
}

TEST_F(StoreTest, DeleteTakesEverythingOfTheSessionAndOnlyThat) {
  SecretBytes old_key, other_key;
  {
    auto store = Open().value();
    SecretSet secrets;
    secrets["token"] = StoredSecret{"ascii size=4", SecretBytes(AsBytes(std::string("abcd")))};
    ASSERT_TRUE(store->Put({"shop", "h1", "alice", kSession, {}}, std::nullopt, secrets).ok());
    ASSERT_TRUE(store->Put({"other", "o1", "alice", kSession, {}}, std::nullopt, secrets).ok());
    old_key = store->VolumeKey("shop", "data").value();
    ASSERT_TRUE(store->PutVolumeMark("shop", "data", {{}, 3}).ok());
    ASSERT_TRUE(store->ConsoleKey("shop", "app", /*create=*/true).ok());
    other_key = store->VolumeKey("other", "data").value();
    // Compare-and-set: a stale hash deletes nothing; a missing session is not found.
    EXPECT_EQ(store->Delete("shop", "stale").code(), Code::kRolledBack);
    EXPECT_TRUE(store->Get("shop").value().has_value());
    EXPECT_EQ(store->Delete("nothere", "h").code(), Code::kNotFound);
    ASSERT_TRUE(store->Delete("shop", "h1").ok());
    EXPECT_FALSE(store->Get("shop").value().has_value());
    EXPECT_FALSE(store->GetSecret("shop", "token").value().has_value());
    EXPECT_FALSE(store->GetVolumeMark("shop", "data").value().has_value());
    EXPECT_FALSE(store->ConsoleKey("shop", "app", /*create=*/false).value().has_value());
  }
  // The deletion is a commit like any other: the store still verifies at the next start, and
  // the other session is untouched.
  auto store = Open();
  ASSERT_TRUE(store.ok()) << store.status().message();
  EXPECT_TRUE((*store)->GetSecret("other", "token").value().has_value());
  EXPECT_TRUE(crypto::ConstantTimeEquals(other_key.span(), (*store)->VolumeKey("other", "data").value().span()));
  // The name is free again, and a new session of that name gets new volume keys, never the old.
  ASSERT_TRUE((*store)->Put({"shop", "h2", "bob", kSession, {}}, std::nullopt, {}).ok());
  auto new_key = (*store)->VolumeKey("shop", "data").value();
  EXPECT_FALSE(crypto::ConstantTimeEquals(old_key.span(), new_key.span()));
}

// A full disk: audit records are kept and retried, never dropped, and CAS refuses requests
// (Health) until they are written.
TEST_F(StoreTest, AuditRecordsSurviveAFullDisk) {
  auto store = Open().value();
  store->Audit("test", "before", "", "ok");
  store->FlushAudit();
  ASSERT_TRUE(store->AuditHealth().ok());
  store->SetAuditPageLimit(1);  // no page more than the database has now
  for (int i = 0; i < 20; ++i) store->Audit("test", "while-full", std::to_string(i), std::string(4000, 'x'));
  store->FlushAudit();
  Status health = store->AuditHealth();
  ASSERT_FALSE(health.ok()) << "20 records of 4 KB fit in a full database";
  EXPECT_NE(health.message().find("the audit log cannot be written"), std::string::npos) << health.message();
  // How many wait depends on how the writer batched them when the first write failed; that
  // none is lost is what the count below shows.
  EXPECT_NE(health.message().find(" records waiting, 0 lost"), std::string::npos) << health.message();
  store->SetAuditPageLimit(0);  // space again
  store->FlushAudit();
  EXPECT_TRUE(store->AuditHealth().ok()) << store->AuditHealth().message();
  store.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "cas/cas.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM audit WHERE action='while-full'", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 20);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

}  // namespace
}  // namespace scone::cas
