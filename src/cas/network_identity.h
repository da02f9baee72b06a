// What the network shield gets from CAS in CAS mode (docs/network-shield.md, "CAS defaults"):
// every session has a CA, and every service whose environment names a SCONE_NETWORK_SHIELD
// variable has a TLS identity that CA issued. The runtime uses them where a rule gives no
// _IDENTITY, _CLIENT_AUTH or _SERVER_AUTH, and for the connections no rule names under
// SCONE_NETWORK_SHIELD=protected: two services of one session talk mutual TLS with nothing
// configured.
//
// The session CA is the session's own x509-ca secret when it declares exactly one that CAS
// generates and signs itself (no value, no import, no issuer); otherwise CAS's implicit CA for
// the session. Its private key never leaves CAS; its certificate is public (`scone session ca`).
//
// A service's identity: a P-256 key generated for the service (shared by its instances), and a
// certificate with CN = the service's name (its first 64 characters) and as subject alternative
// names: the service's name (where it is a host name: how a stack's services reach each
// other), localhost, 127.0.0.1 and ::1, and every name and address a client rule of the
// session's services checks a server against (_SERVER_DNS_NAME, _DESTINATION's host). The
// services of a session are one trust domain (one policy, one owner): a name tells them apart
// from everyone outside, who can get no certificate from the session CA.
//
// Both are generated secrets (cas/secrets.h): made with the session in its transaction, sealed
// in the store under entry names no declared secret can have (they hold ':'), so no
// $$SCONE::...$$ reaches them; kept while what they are made from stays, made anew when it
// changes (a service's names: the certificate, not its key).
//
// Pure functions of the session, but for the Store reads of the release.
#pragma once

#include <optional>
#include <string>

#include "cas/store.h"
#include "crypto/certificates.h"
#include "policy/session.h"

namespace scone::cas {

// Where a session's CA lies in the store.
struct SessionCa {
  std::string cert_entry;
  std::string key_entry;
  const policy::Secret* declared = nullptr;  // the session's own x509-ca; nullptr: the implicit CA
};
SessionCa SessionCaOf(const policy::Session& session);

// The implicit CA's certificate request ("SCONE session NAME", self-signed).
crypto::CertificateRequest ImplicitCaRequest(const policy::Session& session);

// Whether the service's environment names one of the network shield's variables.
bool UsesNetworkShield(const policy::Service& service);

// The store entries of a service's identity.
std::string ServiceCertEntry(const std::string& service);
std::string ServiceKeyEntry(const std::string& service);

// The request a service's certificate is issued from (names sorted: the same session, the same
// request).
crypto::CertificateRequest ServiceCertificateRequest(const policy::Session& session, const policy::Service& service);

// What an attested service gets: its key and certificate (PEM, key first) and the session CA's
// certificate. nullopt for a service that does not use the network shield, or whose session was
// stored before CAS made identities (an update makes them).
struct NetworkIdentity {
  SecretBytes identity;
  std::string session_ca;
};
Result<std::optional<NetworkIdentity>> ReleaseNetworkIdentity(Store& store, const policy::Session& session,
                                                              const policy::Service& service);

// The session CA's certificate (PEM).
Result<std::string> SessionCaCertificate(Store& store, const policy::Session& session);

}  // namespace scone::cas
