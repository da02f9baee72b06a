// `scone image sconify`: turns an image into a secure one. The runtime is added and preloaded
// (LD_PRELOAD in the image's environment) so that the image's own ENTRYPOINT and CMD, entry
// scripts and every program they start run shielded and attest to CAS (SCONE_CONFIG_ID) before
// their main; each --fs-dir becomes a volume encrypted under a key that only CAS holds; the entry
// program's measurement (with every library the loader maps and the runtime) is computed from
// the image's files; the session the image needs is written for the operator. No key or secret
// value goes into any layer: the image gains the runtime and non-secret settings only.
//
// Refused before anything is built, with the reason: an image whose first program the runtime
// cannot enter (static, not glibc, not x86-64; shield_check.h), an --fs-dir that already holds
// files (they would have to be encrypted under CAS's key, which sconify never sees).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"
#include "image/docker_client.h"

namespace scone::image {

// SCONE's sconify_image options.
struct SconifyOptions {
  std::string from;
  std::string to;
  std::string binary;                 // the program that must run first ("" : the image's)
  std::vector<std::string> fs_dirs;   // encrypted volumes
  std::string service_name;           // "" : from --to's repository name
  std::string session_name;           // "" : the service name
  std::string cas_addr;               // HOST[:PORT] of CAS's attestation port, baked in ("" : at run)
  std::string las_addr;               // LAS's socket inside the container
  std::vector<std::string> env;       // K=V for the session's environment (may hold $$SCONE::s$$)
  std::string command;                // replaces ENTRYPOINT and CMD (split at white space)
  std::string runtime_library;        // the host's libscone-runtime.so
  std::vector<std::pair<std::string, std::string>> labels;  // more labels for --to (no secret)
  bool session_label = false;  // the session written, base64, as label kSessionLabel (it holds no secret)
};

struct SconifyResult {
  crypto::Hash measurement{};
  std::string session_yaml;
  std::string config_id;  // SESSION/SERVICE
};

inline constexpr char kImageRuntimePath[] = "/opt/scone/lib/libscone-runtime.so";
inline constexpr char kDefaultLasPath[] = "/var/run/scone/las.sock";
inline constexpr char kSessionLabel[] = "scone.session";

Result<SconifyResult> Sconify(const DockerClient& docker, const SconifyOptions& options, bool quiet);

// The repository's last component without tag: "scone-curated/python:3" -> "python".
std::string ServiceNameOf(const std::string& image);

// A volume's name in the session, from its path: "/var/lib/redis" -> "var_lib_redis".
std::string VolumeName(const std::string& path);

}  // namespace scone::image
