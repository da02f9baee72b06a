// The session secure images need on CAS, written for the operator to review and post
// (`scone session create FILE`) or posted by `scone stack deploy`: per service its measurement,
// command, environment and working directory, its encrypted volumes, the entry scripts as
// injected files (so their content comes from CAS, not from a layer the host can rewrite); the
// declared secrets, and a generated placeholder for every other $$SCONE::name$$ a command or
// environment refers to. A secret's value is in it only where the author gave one. Checked with
// the session parser before it is returned.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"

namespace scone::image {

struct SessionVolume {
  std::string name;
  std::string path;  // in the container
};

struct SessionFile {
  std::string path;
  std::string content;
};

struct ServiceTemplate {
  std::string service_name;
  crypto::Hash measurement{};
  std::vector<std::string> command;
  std::vector<std::pair<std::string, std::string>> environment;  // in order, later wins
  std::string pwd;
  std::vector<SessionVolume> volumes;
  std::vector<SessionFile> injected;
};

struct SessionSecret {
  std::string name;
  std::string kind;  // ascii, binary, private-key, x509, x509-ca
  std::optional<size_t> size;
  std::optional<std::string> value;
  std::string private_key;
  std::string issuer;
  std::vector<std::string> dns;
};

struct SessionTemplate {
  std::string session_name;
  std::vector<ServiceTemplate> services;
  std::vector<SessionSecret> secrets;       // declared; undeclared references get placeholders
  std::optional<crypto::Hash> predecessor;  // an update names the session it replaces
  std::string written_by = "scone image sconify";
};

// The YAML text, validated by policy::Session::Parse.
Result<std::string> WriteSession(const SessionTemplate& t);

}  // namespace scone::image
