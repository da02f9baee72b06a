// A session's secrets as CAS holds them. Generated secrets (`size`, keys, certificates) are
// made once, when the session is created or an update adds them, and kept sealed in the store,
// so every attested instance of a service sees the same values and a CAS restart keeps them.
// Given secrets (`value`) live in the sealed session text. Imported secrets are read from the
// exporting session at release time, only if that session still exports them to this one.
#pragma once

#include <string>

#include "cas/store.h"
#include "policy/session.h"

namespace scone::cas {

// Generates and stores the values this session declares and the store does not hold yet.
Status GenerateSecrets(Store& store, const policy::Session& session);

// The text $$SCONE::ref$$ stands for: ascii values as they are, binary values in hex, keys and
// certificates as PEM ("NAME.crt", "NAME.key", "NAME.chain" pick a part of an x509 secret).
Result<SecretBytes> SecretText(Store& store, const policy::Session& session, std::string_view ref);

}  // namespace scone::cas
