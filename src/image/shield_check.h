// Whether the runtime can shield what an image runs, decided from the image's files before
// anything is built. The runtime enters a program through glibc's dynamic loader
// (LD_PRELOAD): the first program the container starts (ENTRYPOINT, else CMD; scripts through
// their interpreters, which run shielded too) must be a 64-bit x86 ELF program that glibc's loader
// starts. A static program, another C library's loader (musl), another architecture, or a command
// CAS could not hand back intact is refused with the reason.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "image/image_config.h"

namespace scone::image {

struct EntryProgram {
  std::vector<std::string> command;  // the entry program's command line, as the kernel gives it
                                     // (a script's interpreter first): what CAS must hand back
  std::string program;               // the ELF program the kernel starts, as the image names it
  std::string interpreter;           // its PT_INTERP (glibc's loader)
  std::vector<std::string> scripts;  // scripts on the way to it, by the absolute path they are
                                     // opened by
};

inline constexpr char kGlibcLoader[] = "ld-linux-x86-64.so.2";

// REQUIRES: `root` is the image's unpacked file system.
Result<EntryProgram> CheckShieldable(const std::string& root, const ImageConfig& config,
                                     const std::vector<std::string>& command);

}  // namespace scone::image
