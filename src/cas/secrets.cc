#include "cas/secrets.h"

#include <set>

#include "cas/network_identity.h"
#include "crypto/certificates.h"

namespace scone::cas {
namespace {

using policy::Secret;

std::string KeyEntry(const std::string& name) { return name + ".key"; }

Result<SecretBytes> Stored(Store& store, const std::string& session, const std::string& entry) {
  SCONE_ASSIGN_OR_RETURN(auto value, store.GetSecret(session, entry));
  if (!value) return NotFound("secret " + entry + " of session " + session + " has no value yet");
  return std::move(value->value);
}

// Random text from an alphabet that survives command lines, environments and config files.
SecretBytes RandomAscii(size_t size) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  constexpr size_t kLetters = sizeof(kAlphabet) - 1;  // 62
  SecretBytes out(size);
  size_t filled = 0;
  uint8_t pool[256];
  while (filled < size) {
    crypto::RandomBytes(pool);
    for (uint8_t b : pool) {
      if (filled == size) break;
      if (b >= 248) continue;  // 248 = 4 * 62: keeps the choice uniform
      out.data()[filled++] = static_cast<uint8_t>(kAlphabet[b % kLetters]);
    }
  }
  Wipe(pool, sizeof(pool));
  return out;
}

// Works out a session's generated secrets, dependencies first (a certificate's key and CA
// before it), keeping a stored value only if it was made from the same parameters and none
// of its dependencies is made anew.
class Planner {
 public:
  Planner(Store& store, const policy::Session& session, bool keep_current)
      : store_(store), session_(session), keep_(keep_current) {}

  Status Plan(const Secret& s) {
    if (planned_.count(s.name)) return Status::Ok();
    if (s.value || s.import_session) {
      return InvalidArgument("secret " + s.name + " is given or imported: it cannot key or issue a certificate");
    }
    if (!visiting_.insert(s.name).second) return InvalidArgument("secret " + s.name + ": its issuers form a cycle");
    Status planned = s.IsCertificate() ? PlanCertificate(s) : PlanSimple(s);
    visiting_.erase(s.name);
    return planned.Annotate("secret " + s.name);
  }

  // The session CA (unless the session's own x509-ca is it) and the identities of the services
  // that use the network shield (cas/network_identity.h). After the declared secrets.
  Status PlanNetworkIdentities() {
    SessionCa ca = SessionCaOf(session_);
    if (ca.declared == nullptr) {
      SCONE_RETURN_IF_ERROR(PlanIssued(ca.cert_entry, ca.key_entry, ImplicitCaRequest(session_), "", ""));
    }
    for (const policy::Service& service : session_.services) {
      if (!UsesNetworkShield(service)) continue;
      SCONE_RETURN_IF_ERROR(PlanIssued(ServiceCertEntry(service.name), ServiceKeyEntry(service.name),
                                       ServiceCertificateRequest(session_, service), ca.cert_entry, ca.key_entry)
                                .Annotate("service " + service.name + "'s network identity"));
    }
    return Status::Ok();
  }

  SecretSet Take() { return std::move(out_); }

 private:
  static std::string Size(const Secret& s) { return std::to_string(s.size.value_or(32)); }

  // The stored value of `entry` if it was made as `spec` (and its dependencies are kept).
  Result<bool> Keep(const std::string& entry, const std::string& spec, bool dependencies_kept) {
    if (!keep_ || !dependencies_kept) return false;
    SCONE_ASSIGN_OR_RETURN(auto current, store_.GetSecret(session_.name, entry));
    if (!current || current->spec != spec) return false;
    out_[entry] = std::move(*current);
    return true;
  }

  void Made(const std::string& entry, std::string spec, SecretBytes value) {
    out_[entry] = StoredSecret{std::move(spec), std::move(value)};
    fresh_.insert(entry);
  }

  Status PlanSimple(const Secret& s) {
    std::string spec;
    switch (s.kind) {
      case Secret::Kind::kAscii: spec = "ascii size=" + Size(s); break;
      case Secret::Kind::kBinary: spec = "binary size=" + Size(s); break;
      default: spec = "private-key P-256"; break;
    }
    planned_.insert(s.name);
    SCONE_ASSIGN_OR_RETURN(bool kept, Keep(s.name, spec, true));
    if (kept) return Status::Ok();
    if (s.kind == Secret::Kind::kAscii) {
      Made(s.name, spec, RandomAscii(s.size.value_or(32)));
    } else if (s.kind == Secret::Kind::kBinary) {
      SecretBytes value(s.size.value_or(32));
      crypto::RandomBytes(value.mutable_span());
      Made(s.name, spec, std::move(value));
    } else {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, crypto::GeneratePrivateKeyPem());
      Made(s.name, spec, std::move(key));
    }
    return Status::Ok();
  }

  // The entry holding the private key a certificate secret certifies, planned.
  Result<std::string> PlanKey(const Secret& s) {
    if (!s.private_key.empty()) {
      const Secret* key = session_.FindSecret(s.private_key);
      if (key == nullptr) return NotFound("private key " + s.private_key + " is not in the session");
      SCONE_RETURN_IF_ERROR(Plan(*key));
      return s.private_key;
    }
    std::string entry = KeyEntry(s.name);
    SCONE_ASSIGN_OR_RETURN(bool kept, Keep(entry, "private-key P-256", true));
    if (!kept) {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, crypto::GeneratePrivateKeyPem());
      Made(entry, "private-key P-256", std::move(key));
    }
    return entry;
  }

  Status PlanCertificate(const Secret& s) {
    SCONE_ASSIGN_OR_RETURN(std::string key_entry, PlanKey(s));
    std::string issuer_key_entry;
    if (!s.issuer.empty()) {
      const Secret* ca = session_.FindSecret(s.issuer);
      if (ca == nullptr) return NotFound("issuer " + s.issuer + " is not in the session");
      SCONE_RETURN_IF_ERROR(Plan(*ca));
      issuer_key_entry = ca->private_key.empty() ? KeyEntry(ca->name) : ca->private_key;
    }
    std::string spec = std::string(s.kind == Secret::Kind::kX509Ca ? "x509-ca" : "x509") + " cn=" + s.CommonName() +
                       " key=" + key_entry + " issuer=" + s.issuer + " dns=";
    for (const std::string& d : s.dns) spec += d + " ";
    bool dependencies_kept = !fresh_.count(key_entry) && (s.issuer.empty() || !fresh_.count(s.issuer));
    planned_.insert(s.name);
    SCONE_ASSIGN_OR_RETURN(bool kept, Keep(s.name, spec, dependencies_kept));
    if (kept) return Status::Ok();
    crypto::CertificateRequest request;
    request.common_name = s.CommonName();
    request.dns = s.dns;
    request.is_ca = s.kind == Secret::Kind::kX509Ca;
    std::optional<crypto::Issuer> issuer;
    if (!s.issuer.empty()) {
      const StoredSecret& ca_cert = out_.at(s.issuer);
      const StoredSecret& ca_key = out_.at(issuer_key_entry);
      issuer = crypto::Issuer{std::string(ca_cert.value.span().begin(), ca_cert.value.span().end()), &ca_key.value};
    }
    SCONE_ASSIGN_OR_RETURN(std::string cert, crypto::IssueCertificate(out_.at(key_entry).value, request, issuer));
    Made(s.name, spec, SecretBytes(AsBytes(cert)));
    return Status::Ok();
  }

  // A certificate with a key of its own, from `request`, signed by the issuer's entries (or
  // self-signed without them); both kept while their parameters and the issuer stay.
  Status PlanIssued(const std::string& cert_entry, const std::string& key_entry,
                    const crypto::CertificateRequest& request, const std::string& issuer_cert_entry,
                    const std::string& issuer_key_entry) {
    SCONE_ASSIGN_OR_RETURN(bool key_kept, Keep(key_entry, "private-key P-256", true));
    if (!key_kept) {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, crypto::GeneratePrivateKeyPem());
      Made(key_entry, "private-key P-256", std::move(key));
    }
    std::string spec = std::string(request.is_ca ? "x509-ca" : "x509") + " cn=" + request.common_name +
                       " key=" + key_entry + " issuer=" + issuer_cert_entry + " dns=";
    for (const std::string& d : request.dns) spec += d + " ";
    spec += "ip=";
    for (const std::string& ip : request.ips) spec += ip + " ";
    bool dependencies_kept = !fresh_.count(key_entry) && (issuer_cert_entry.empty() || !fresh_.count(issuer_cert_entry));
    SCONE_ASSIGN_OR_RETURN(bool kept, Keep(cert_entry, spec, dependencies_kept));
    if (kept) return Status::Ok();
    std::optional<crypto::Issuer> issuer;
    if (!issuer_cert_entry.empty()) {
      const StoredSecret& ca_cert = out_.at(issuer_cert_entry);
      issuer = crypto::Issuer{std::string(ca_cert.value.span().begin(), ca_cert.value.span().end()),
                              &out_.at(issuer_key_entry).value};
    }
    SCONE_ASSIGN_OR_RETURN(std::string cert, crypto::IssueCertificate(out_.at(key_entry).value, request, issuer));
    Made(cert_entry, spec, SecretBytes(AsBytes(cert)));
    return Status::Ok();
  }

  Store& store_;
  const policy::Session& session_;
  bool keep_;
  SecretSet out_;
  std::set<std::string> planned_, visiting_, fresh_;
};

Result<SecretBytes> ImportedValue(Store& store, const policy::Session& session, const Secret& s,
                                  const std::string& part) {
  SCONE_ASSIGN_OR_RETURN(auto stored, store.Get(*s.import_session));
  if (!stored) return NotFound("secret " + s.name + " is imported from session " + *s.import_session + ", which does not exist");
  SCONE_ASSIGN_OR_RETURN(policy::Session from, policy::Session::Parse(stored->text));
  const Secret* source = from.FindSecret(s.import_secret);
  if (source == nullptr || source->import_session ||
      std::find(source->export_to.begin(), source->export_to.end(), session.name) == source->export_to.end()) {
    return PermissionDenied("session " + from.name + " does not export secret " + s.import_secret +
                            " to session " + session.name);
  }
  return SecretText(store, from, part.empty() ? source->name : source->name + "." + part);
}

}  // namespace

Result<SecretSet> PlanSecrets(Store& store, const policy::Session& session, bool keep_current) {
  Planner planner(store, session, keep_current);
  for (const Secret& s : session.secrets) {
    if (s.value || s.import_session) continue;
    SCONE_RETURN_IF_ERROR(planner.Plan(s));
  }
  SCONE_RETURN_IF_ERROR(planner.PlanNetworkIdentities());
  return planner.Take();
}

Result<SecretBytes> SecretText(Store& store, const policy::Session& session, std::string_view ref) {
  auto resolved = session.ResolveReference(ref);
  if (!resolved) return NotFound("unknown secret '" + std::string(ref) + "'");
  const Secret& s = *resolved->secret;
  const std::string& part = resolved->part;
  if (s.import_session) return ImportedValue(store, session, s, part);
  if (s.value) {
    if (!part.empty()) return Unsupported("secret " + s.name + " is given as a value: it has no parts");
    return SecretBytes(AsBytes(*s.value));
  }
  bool x509 = s.kind == Secret::Kind::kX509 || s.kind == Secret::Kind::kX509Ca;
  if (part == "key") {
    if (!x509) return Stored(store, session.name, s.name);  // a private key's PEM
    return Stored(store, session.name, s.private_key.empty() ? KeyEntry(s.name) : s.private_key);
  }
  SCONE_ASSIGN_OR_RETURN(SecretBytes value, Stored(store, session.name, s.name));
  if (s.kind == Secret::Kind::kBinary) {
    std::string hex = ToHex(value.span());
    SecretBytes out(AsBytes(hex));
    Wipe(hex);
    return out;
  }
  if (part == "chain" && !s.issuer.empty()) {
    SCONE_ASSIGN_OR_RETURN(SecretBytes ca, Stored(store, session.name, s.issuer));
    SecretBytes chain(value.size() + ca.size());
    std::copy(value.span().begin(), value.span().end(), chain.data());
    std::copy(ca.span().begin(), ca.span().end(), chain.data() + value.size());
    return chain;
  }
  return value;
}

}  // namespace scone::cas
