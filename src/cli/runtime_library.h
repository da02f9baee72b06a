// Where things are: libscone-runtime.so ($SCONE_RUNTIME_LIBRARY, else next to the scone
// executable, else in ../lib/scone/ relative to it), and programs named on the command line.
#pragma once

#include <string>

#include "common/status.h"

namespace scone::cli {

Result<std::string> RuntimeLibrary();
// The program as execvp will find it: a name with a '/' as it is, else the first executable
// match on $PATH.
Result<std::string> FindProgram(const std::string& name);

}  // namespace scone::cli
