#include "cas/secrets.h"

#include "crypto/certificates.h"

namespace scone::cas {
namespace {

using policy::Secret;

std::string KeyEntry(const std::string& name) { return name + ".key"; }

Result<SecretBytes> Stored(Store& store, const std::string& session, const std::string& entry) {
  SCONE_ASSIGN_OR_RETURN(auto value, store.GetSecret(session, entry));
  if (!value) return NotFound("secret " + entry + " of session " + session + " has no value yet");
  return std::move(*value);
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

// The private key a certificate secret certifies: the named private-key secret, or its own.
Result<SecretBytes> SubjectKey(Store& store, const std::string& session, const Secret& s) {
  if (!s.private_key.empty()) return Stored(store, session, s.private_key);
  SCONE_ASSIGN_OR_RETURN(auto own, store.GetSecret(session, KeyEntry(s.name)));
  if (own) return std::move(*own);
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, crypto::GeneratePrivateKeyPem());
  SCONE_RETURN_IF_ERROR(store.PutSecret(session, KeyEntry(s.name), key));
  return key;
}

Status Generate(Store& store, const policy::Session& session, const Secret& s) {
  const std::string& name = session.name;
  SCONE_ASSIGN_OR_RETURN(auto existing, store.GetSecret(name, s.name));
  if (existing) return Status::Ok();  // generated before: updates keep secrets stable
  switch (s.kind) {
    case Secret::Kind::kAscii:
      return store.PutSecret(name, s.name, RandomAscii(s.size.value_or(32)));
    case Secret::Kind::kBinary: {
      SecretBytes value(s.size.value_or(32));
      crypto::RandomBytes(value.mutable_span());
      return store.PutSecret(name, s.name, value);
    }
    case Secret::Kind::kPrivateKey: {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, crypto::GeneratePrivateKeyPem());
      return store.PutSecret(name, s.name, key);
    }
    case Secret::Kind::kX509Ca:
    case Secret::Kind::kX509: {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, SubjectKey(store, name, s));
      crypto::CertificateRequest request;
      request.common_name = s.dns.empty() ? s.name : s.dns.front();
      request.dns = s.dns;
      request.is_ca = s.kind == Secret::Kind::kX509Ca;
      std::optional<crypto::Issuer> issuer;
      SecretBytes issuer_key;
      if (!s.issuer.empty()) {
        SCONE_ASSIGN_OR_RETURN(SecretBytes ca_cert, Stored(store, name, s.issuer));
        const Secret* ca = session.FindSecret(s.issuer);
        SCONE_ASSIGN_OR_RETURN(issuer_key, Stored(store, name, ca->private_key.empty() ? KeyEntry(ca->name)
                                                                                         : ca->private_key));
        issuer = crypto::Issuer{std::string(ca_cert.span().begin(), ca_cert.span().end()), &issuer_key};
      }
      SCONE_ASSIGN_OR_RETURN(std::string cert, crypto::IssueCertificate(key, request, issuer));
      return store.PutSecret(name, s.name, SecretBytes(AsBytes(cert)));
    }
  }
  return Internal("unknown secret kind");
}

int GenerationOrder(Secret::Kind k) {
  switch (k) {
    case Secret::Kind::kPrivateKey: return 0;  // before the certificates that certify them
    case Secret::Kind::kX509Ca: return 1;      // before the certificates they issue
    case Secret::Kind::kX509: return 2;
    default: return 0;
  }
}

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

Status GenerateSecrets(Store& store, const policy::Session& session) {
  for (int order = 0; order <= 2; ++order) {
    for (const Secret& s : session.secrets) {
      if (s.value || s.import_session || GenerationOrder(s.kind) != order) continue;
      SCONE_RETURN_IF_ERROR(Generate(store, session, s).Annotate("secret " + s.name));
    }
  }
  return Status::Ok();
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
