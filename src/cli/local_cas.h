// The embedded default: a CAS of this user's own, under the user's state directory
// ($XDG_STATE_HOME/scone, else ~/.local/state/scone), started on first use and reused after;
// and this user's client identity (the certificate that makes them a session's CREATOR).
#pragma once

#include <string>

#include "cas/client.h"
#include "common/status.h"

namespace scone::cli {

std::string StateDir();

// The endpoint for `--cas URL --cas-cert FILE`, or, with an empty URL, for the local CAS
// (started if it is not running). Creates the client identity on first use.
Result<cas::CasEndpoint> ResolveCas(const std::string& url, const std::string& cas_cert);

// Starts the local CAS if needed; returns its address.
Result<std::string> StartLocalCas();
// Stops the local CAS; OK if none runs.
Status StopLocalCas();

}  // namespace scone::cli
