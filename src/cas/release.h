// What CAS releases to a service that attested: its policy (what evidence it accepts) and its
// configuration (command line, environment, working directory, volume keys with the marks last
// reported, injected files), with every $$SCONE::name$$ replaced by the secret's value.
#pragma once

#include "attest/evidence.h"
#include "cas/protocol.h"
#include "cas/store.h"
#include "policy/session.h"

namespace scone::cas {

attest::AttestationPolicy PolicyFor(const policy::Session& session, const policy::Service& service);

Result<ServiceConfig> ReleaseConfig(Store& store, const policy::Session& session,
                                    const policy::Service& service);

// SCONE_CONSOLE_SHIELD in a service's environment: protected (CAS releases the service's
// console key with its configuration), disabled or absent (the console is the program's).
Result<bool> ConsoleShieldWanted(const policy::Service& service);

}  // namespace scone::cas
