// The session a sconified image needs on CAS, written for the operator to review and post
// (`scone session create FILE`): the service's measurement, command, environment and working
// directory, its encrypted volumes, the entry scripts as injected files (so their content comes
// from CAS, not from a layer the host can rewrite), and generated placeholders for every
// $$SCONE::name$$ the command or environment refers to. Holds no secret value: CAS generates
// them when the session is created. Checked with the session parser before it is returned.
#pragma once

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

struct SessionTemplate {
  std::string session_name;
  std::string service_name;
  crypto::Hash measurement{};
  std::vector<std::string> command;
  std::vector<std::pair<std::string, std::string>> environment;  // in order, later wins
  std::string pwd;
  std::vector<SessionVolume> volumes;
  std::vector<SessionFile> injected;
};

// The YAML text, validated by policy::Session::Parse.
Result<std::string> WriteSession(const SessionTemplate& t);

}  // namespace scone::image
