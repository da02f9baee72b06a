#include "attest/sim/sim_platform.h"

#include "common/bytes.h"
#include "fs/volume.h"
#include "os/file.h"

namespace scone::attest::sim {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Owner and name framed with their lengths, so that no two (owner, name) pairs meet.
Bytes Scope(uid_t owner, std::string_view name) {
  ByteWriter w;
  w.U32(static_cast<uint32_t>(owner));
  w.Str(name);
  return w.bytes();
}

}  // namespace

Result<SimPlatform> SimPlatform::OpenOrCreate(const std::string& key_path) {
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(key_path));
  crypto::SigningKey key = crypto::SigningKey::Generate();
  if (!exists) {
    SCONE_RETURN_IF_ERROR(key.Save(key_path));
  } else {
    SCONE_ASSIGN_OR_RETURN(key, crypto::SigningKey::Load(key_path));
  }
  SimPlatform platform(std::move(key));
  platform.state_dir_ = DirOf(key_path);
  std::string seal_path = platform.state_dir_ + "/seal.key";
  SCONE_ASSIGN_OR_RETURN(bool has_seal, os::Exists(seal_path));
  SCONE_ASSIGN_OR_RETURN(SecretBytes seal, has_seal ? fs::ReadKeyFile(seal_path) : fs::CreateKeyFile(seal_path));
  platform.seal_secret_ = std::make_shared<const SecretBytes>(std::move(seal));
  return platform;
}

Result<Evidence> SimPlatform::Attest(Report report) const {
  report.mode = "sim";  // never anything else: this backend protects no memory
  Evidence e;
  e.report = report;
  e.platform = key_.public_key();
  e.signature = key_.Sign(report.Encode());
  return e;
}

Result<SecretBytes> SimPlatform::SealingKey(uid_t owner, std::string_view label) const {
  if (!seal_secret_) return Unsupported("this sim platform keeps no sealing secret");
  Bytes scope = Scope(owner, label);
  return crypto::Hkdf(*seal_secret_, scope, "scone-sim-sealing-key-v1", crypto::kKeySize);
}

Result<uint64_t> SimPlatform::AdvanceCounter(uid_t owner, std::string_view name, uint64_t at_least) const {
  if (state_dir_.empty()) return Unsupported("this sim platform keeps no counters");
  std::string dir = state_dir_ + "/counters";
  std::string path = dir + "/" + ToHex(crypto::Sha256({Scope(owner, name)})).substr(0, 32);
  std::lock_guard lock(*counters_mu_);
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(dir, 0700));
  uint64_t value = 0;
  SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(path));
  if (exists) {
    SCONE_ASSIGN_OR_RETURN(Bytes stored, os::ReadWholeFile(path, 64));
    ByteReader r(stored);
    if (!r.U64(&value) || !r.done()) return DataCorrupted("sim platform counter " + path + " is damaged");
  }
  if (at_least <= value) return value;
  ByteWriter w;
  w.U64(at_least);
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(path, w.bytes(), 0600));
  return at_least;
}

}  // namespace scone::attest::sim
