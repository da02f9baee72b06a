// The embedded default: a CAS and a LAS of this user's own, under the user's state directory
// ($XDG_STATE_HOME/scone, else ~/.local/state/scone), started on first use and reused after;
// and this user's client identity (the certificate that makes them a session's CREATOR and the
// local CAS's administrator). The local CAS trusts the local LAS's (sim) platform key.
#pragma once

#include <string>

#include "cas/client.h"
#include "common/status.h"

namespace scone::cli {

std::string StateDir();

// The endpoint for `--cas URL --cas-cert FILE`, or, with an empty URL, for the local CAS
// (started if it is not running). Creates the client identity on first use.
Result<cas::CasEndpoint> ResolveCas(const std::string& url, const std::string& cas_cert);

struct LocalServices {
  std::string cas_address;          // https://127.0.0.1:PORT (REST API)
  std::string attestation_address;  // 127.0.0.1:PORT (the runtime's port)
  std::string cas_cert;             // CAS's certificate (PEM file)
  std::string las_socket;
  std::string container_attestation_address;  // HOST:PORT, with a container host given
};

// Starts the local CAS and LAS if needed (and makes the CAS trust the LAS); returns where they are.
// With `container_host` (an IPv4 address of this host that containers reach, e.g. the Docker
// gateway), CAS's attestation port listens there too (never its REST API); a local CAS running
// without it is restarted (its state stays).
Result<LocalServices> StartLocalServices(const std::string& container_host = "");
// Starts this user's local LAS if needed; returns its socket.
Result<std::string> StartLocalLas();
// Stops them; OK if none runs.
Status StopLocalServices();

}  // namespace scone::cli
