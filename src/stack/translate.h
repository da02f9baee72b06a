// A parsed stack file, turned into (a) the stack's session for CAS and (b) the Compose file for
// `docker stack deploy`. Pure: the images' facts (measurement, command, environment) and the
// configs' contents come in; the texts go out.
//
// The session holds everything a secure service is given: its measurement, command,
// environment (the image's, then the stack's, then SCONE's shield settings), encrypted volumes,
// injected files and the stack's secrets. The Compose file holds for a secure service only what
// is not secret: the sconified image, SCONE_CONFIG_ID, where CAS and LAS are, CAS's key hash,
// LAS's socket mounted; never its command or environment (CAS gives them; they may hold secrets).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"
#include "image/session_template.h"
#include "stack/stack_file.h"

namespace scone::stack {

// What sconify learned of a secure service's image.
struct ServiceImage {
  std::string image;  // the sconified image Docker runs
  crypto::Hash measurement{};
  std::vector<std::string> command;  // the image's, as sconify resolved it
  std::vector<std::pair<std::string, std::string>> environment;  // the image's ENV
  std::string pwd;
  std::vector<image::SessionFile> injected;  // entry scripts
};

struct Deployment {
  std::string stack;                                   // the stack's (and session's) name
  std::map<std::string, ServiceImage> images;          // by secure service
  std::map<std::string, std::string> config_contents;  // configs that secure services use
  std::string stack_dir;     // absolute: relative config files of standard services are from here
  std::string cas_addr;      // HOST:PORT of CAS's attestation port, as containers reach it
  std::string cas_key_hash;  // SHA-256 of CAS's public key (hex)
  std::string las_socket;    // LAS's socket on the host
  bool no_ipvs = false;      // the engine has no IPVS: dnsrr and host-mode ports unless said
  std::optional<crypto::Hash> predecessor;  // the session's current hash, when it exists
};

struct Translation {
  std::string session_yaml;
  std::string compose_yaml;
};

inline constexpr char kServiceLasPath[] = "/var/run/scone/las.sock";

Result<Translation> Translate(const StackFile& stack, const Deployment& d);

// True when the kernel offers IPVS (Swarm's virtual IPs and ingress need it).
bool HostHasIpvs();

}  // namespace scone::stack
