// The measurement of an image's entry program with the runtime, computed from the image's
// unpacked files exactly as LAS computes it for the running container (attest/measurement.h):
// the image's own dynamic loader lists what it would map (`ld.so --list`, run by the caller in a
// container of the image, never on the host: it is the image's code), and every file is hashed
// from the unpacked image, named by role or SONAME.
#pragma once

#include <string>

#include "attest/measurement.h"
#include "common/status.h"

namespace scone::image {

// REQUIRES: root is an unpacked image holding `program`, its loader `interpreter` and the
// runtime at `runtime` (all paths as the image names them); `trace` is what
// `INTERPRETER --list PROGRAM` printed in the image with LD_PRELOAD=RUNTIME. The trace is
// untrusted: every path in it is resolved inside `root`.
Result<attest::ImageDescription> DescribeImageProgram(const std::string& root, const std::string& program,
                                                      const std::string& interpreter, const std::string& runtime,
                                                      const std::string& trace);

}  // namespace scone::image
