// `$name` and `${name}` in a stack file: Compose's interpolation syntax, given SCONE's meaning.
// In a secure service's command and environment a reference names a secret the stack declares
// and becomes `$$SCONE::name$$` in the session (CAS puts the value in, in the attested service
// only); `$$` is a literal `$`, as in Compose. Anything else is an error: a stack file never takes
// a value from the deploying shell's environment into a secure service.
//
// Pure: no I/O.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace scone::stack {

// `text` with each reference to a secret of `declared` as $$SCONE::name$$ and each `$$` as `$`.
// An undeclared name or a lone `$` is an error naming it (the caller adds file and line).
Result<std::string> ToSessionValue(std::string_view text, const std::set<std::string>& declared);

// The names of `declared` that `text` refers to (`$$` skipped): a standard service must refer to
// none, since Docker would carry the value in plaintext in its spec.
std::vector<std::string> SecretsReferenced(std::string_view text,
                                           const std::set<std::string>& declared);

// `text` with every `$` doubled: Docker's stack deploy interpolates `$X`, so a value written by
// SCONE for Docker is escaped.
std::string EscapeForCompose(std::string_view text);

}  // namespace scone::stack
