// A session's secrets as CAS holds them. Generated secrets (`size`, keys, certificates) are
// made when the session is created, or when an update adds them or changes what they are made
// from (kind, size, names, key, issuer: a certificate whose key or CA is made anew is made
// anew too), and stored in the same transaction as the session, sealed, so every attested
// instance of a service sees the same values, a CAS restart keeps them, and a request that
// fails leaves none.
// The network shield's session CA and service identities are generated secrets too, under
// entry names no reference can name (cas/network_identity.h).
// Given secrets (`value`) live in the sealed session text. Imported secrets are read from the
// exporting session at release time, only if that session still exports them to this one.
#pragma once

#include <string>

#include "cas/store.h"
#include "policy/session.h"

namespace scone::cas {

// The generated values `session` declares: with `keep_current`, those the store holds for it
// with unchanged parameters, and the others made anew. Writes nothing (Store::Put does).
Result<SecretSet> PlanSecrets(Store& store, const policy::Session& session, bool keep_current);

// The text $$SCONE::ref$$ stands for: ascii values as they are, binary values in hex, keys and
// certificates as PEM ("NAME.crt", "NAME.key", "NAME.chain" pick a part of an x509 secret).
Result<SecretBytes> SecretText(Store& store, const policy::Session& session, std::string_view ref);

}  // namespace scone::cas
