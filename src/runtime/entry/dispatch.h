// The one place every system call of a shielded process passes: from the patched code's
// trampolines and from the SIGSYS handler alike (entry.h).
//
// Calls no shield covers cost a switch and, for descriptor calls, one atomic load in the
// descriptor table before the call is made unchanged; calls on paths are first judged without
// the kernel (lexical_path.h). What follows is the shields' business (files/, process/).
#pragma once

#include "runtime/entry/entry.h"

namespace scone::runtime {

DispatchResult Dispatch(SyscallFrame& f);

}  // namespace scone::runtime
