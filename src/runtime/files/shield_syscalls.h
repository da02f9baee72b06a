// The file-system shield's way to the kernel (os::Syscalls): the runtime's own system calls,
// which never pass through the entry, whichever code path (a destructor, an exit handler) makes
// them.
//
// The runtime's own descriptors: the files the file-system shield opens for itself (a volume's
// lock and journal, the ciphertext files behind protected descriptors). A program must neither
// see them nor reach them: natively its first open returns 3, `exec 3>f` and dup2 may replace
// any number it has not opened, and close_range(3, ~0) closes everything it has.
//
// So they live above the program's descriptor limit (RLIMIT_NOFILE), where its own descriptors
// never are and dup2 cannot reach (the runtime widens its limit for the moment of the move).
// Where the limit cannot be widened, they go to the top of the first thousand, out of the way
// of the low numbers programs pick. Either way close, close_range and dup2 leave them alone
// (entry/dispatch.cc), as if they were not there.
#pragma once

namespace scone::runtime {

class FdTable;

namespace files {

// Installs these calls, recording the runtime's descriptors in `table`. At start-up, before
// the shield opens anything.
void InstallShieldSyscalls(FdTable& table);

// A descriptor the runtime made itself outside the seam (a shared image's memory, a socket):
// moved out of the program's reach and marked as the runtime's. Returns its number.
int KeepOwn(int fd);
// Closes a descriptor KeepOwn kept.
void CloseOwn(int fd);
// Whether a descriptor of the runtime's sits among the program's numbers (no room above its
// descriptor limit when it was opened): it then costs the program one of its own.
bool InProgramsReach(int fd);
// The program set a resource limit (setrlimit, prlimit64): the runtime's copies of its
// descriptor and file-size limits are read again. Another process's prlimit on this one goes
// unnoticed until then: a descriptor then stays among the program's numbers, or a data file
// meets SIGXFSZ, as the program's own writes would.
void LimitsChanged();

}  // namespace files
}  // namespace scone::runtime
