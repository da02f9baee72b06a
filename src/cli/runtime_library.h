// Where libscone-runtime.so is: $SCONE_RUNTIME_LIBRARY, else next to the scone executable, else
// in ../lib/scone/ relative to it.
#pragma once

#include <string>

#include "common/status.h"

namespace scone::cli {

Result<std::string> RuntimeLibrary();

}  // namespace scone::cli
