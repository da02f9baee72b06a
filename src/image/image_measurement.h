// The measurement of an image's entry program with the runtime, computed from the image's
// unpacked files exactly as LAS computes it for the running container (attest/measurement.h):
// the dynamic loader's trace inside the image's root (chroot; the program does not run), every
// file hashed from the image, named by role or SONAME.
#pragma once

#include <string>

#include "attest/measurement.h"
#include "common/status.h"

namespace scone::image {

// REQUIRES: root is an unpacked image holding `program`, its loader `interpreter` and the
// runtime at `runtime` (all paths as the image names them); we run as root (chroot).
Result<attest::ImageDescription> DescribeImageProgram(const std::string& root, const std::string& program,
                                                      const std::string& interpreter, const std::string& runtime);

}  // namespace scone::image
