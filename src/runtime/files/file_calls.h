// The file system shield at the system-call layer: the kernel's calls on paths and descriptors,
// with the kernel's arguments and results (a value >= 0, or -errno).
//
// Each function serves what lies in a volume (or CAS injected) and returns kNotMine for the
// rest, so that the dispatcher makes the program's call unchanged. Descriptor calls are only
// called for shielded descriptors; the dispatcher checks the table first (one atomic load).
#pragma once

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <climits>

namespace scone::runtime {

class Runtime;

// Not the shield's: the kernel serves it as the program asked.
inline constexpr long kNotMine = LONG_MIN;

namespace files {

// Paths.
// `for_runtime`: an open the runtime makes for itself (truncate by path): the kernel's descriptor
// of a protected file is an O_PATH one, whose close leaves the program's POSIX locks on the file
// alone (closing any other descriptor of it drops them all).
long OpenAt(Runtime& rt, int dirfd, const char* path, int flags, mode_t mode, bool for_runtime = false);
long OpenAt2(Runtime& rt, int dirfd, const char* path, const struct open_how* how, size_t size);
// stat, lstat and newfstatat (AT_EMPTY_PATH on a shielded descriptor included).
long StatAt(Runtime& rt, int dirfd, const char* path, struct stat* st, int at_flags);
long Statx(Runtime& rt, int dirfd, const char* path, int at_flags, unsigned mask, struct statx* stx);
long Access(Runtime& rt, int dirfd, const char* path, int mode, int at_flags);
long Truncate(Runtime& rt, const char* path, long length);
// mknod of a regular file (S_IFREG, or no type): in a volume an empty protected file, as
// open(O_CREAT | O_EXCL) and close make one (the kernel's would be a plain file the volume does
// not know: "unknown file" at every later open, and a volume that no longer verifies).
long MakeRegularNode(Runtime& rt, int dirfd, const char* path, mode_t mode);
long RenameAt(Runtime& rt, int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned flags);
// After a successful rename: a directory moved, so recorded directory paths may be stale.
void AfterRename(Runtime& rt, int newdirfd, const char* newpath);
long UnlinkAt(Runtime& rt, int dirfd, const char* path, int flags);
// After the kernel's readlink(at) wrote `n` bytes of `buf`: a descriptor's link whose protected
// file has no name left says "<path> (deleted)", as natively, not the volume's trash.
long AfterReadlink(Runtime& rt, int dirfd, const char* path, char* buf, size_t size, long n);
// After a successful chown (fchown: a null path): where it was a volume's root directory, the
// volume's metadata follows its new owner (fs::Volume::ChownMetadata).
void AfterChown(Runtime& rt, int dirfd, const char* path, uid_t uid, gid_t gid, int at_flags);
long LinkAt(Runtime& rt, int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags);
// utimensat (futimens: a null path): the kernel's call, then a protected file with writes still
// to commit keeps the times.
long SetTimes(Runtime& rt, int dirfd, const char* path, const struct timespec* times, int at_flags);
// utime (`given`: a struct utimbuf, `whole_seconds`), utimes and futimesat (two struct timevals),
// as the utimensat they stand for: glibc's wrappers of them make that call already, and a
// program's own system call gets the same handling (times kept across a commit).
long SetTimesOldStyle(Runtime& rt, int dirfd, const char* path, const void* given, bool whole_seconds);
// chdir and fchdir: the call, then the runtime's copy of the working directory.
long ChangeDirectory(Runtime& rt, long nr, long arg);
// getdents64: a volume's root lists no `.scone`.
long GetDents64(Runtime& rt, int fd, void* buf, size_t size);

// Shielded descriptors.
long Close(Runtime& rt, int fd);
long Read(Runtime& rt, int fd, void* buf, size_t count);
long Write(Runtime& rt, int fd, const void* buf, size_t count);
long ReadAt(Runtime& rt, int fd, void* buf, size_t count, long offset);
long WriteAt(Runtime& rt, int fd, const void* buf, size_t count, long offset);
// readv, writev, preadv(2), pwritev(2); offset -1: the descriptor's own.
long ReadVector(Runtime& rt, int fd, const struct iovec* iov, int count, long offset);
long WriteVector(Runtime& rt, int fd, const struct iovec* iov, int count, long offset);
// pwritev2's flags on a shielded descriptor: RWF_DSYNC and RWF_SYNC sync after the write, and an
// RWF_APPEND or RWF_NOAPPEND that would change where the write lands fails with EOPNOTSUPP
// rather than land elsewhere; otherwise as WriteVector.
long WriteVectorFlags(Runtime& rt, int fd, const struct iovec* iov, int count, long offset, int flags);
long Seek(Runtime& rt, int fd, long offset, int whence);
long FileStat(Runtime& rt, int fd, struct stat* st);
long FileTruncate(Runtime& rt, int fd, long length);
long Allocate(Runtime& rt, int fd, int mode, long offset, long length);
long Sync(Runtime& rt, int fd);
long Map(Runtime& rt, void* addr, size_t length, int prot, int flags, int fd, long offset);
// munmap, msync, mremap, mprotect (`a`: the call's arguments) where the process maps a protected
// file shared (runtime/files/mapped_files.h).
long MemoryCall(Runtime& rt, long nr, const long* a);
// dup, dup2, dup3 and fcntl's F_DUPFD: the kernel's call, then the tables follow.
long Dup(Runtime& rt, long nr, int oldfd, int newfd, int flags);
long Fcntl(Runtime& rt, int fd, int cmd, long arg);
// sendfile, copy_file_range and splice with a shielded end: copied through the shield.
long Copy(Runtime& rt, int in_fd, long* in_offset, int out_fd, long* out_offset, size_t count);

}  // namespace files
}  // namespace scone::runtime
