// Measurement: the MRENCLAVE analogue. SHA-256 over a canonical, versioned description of
// everything that decides a program's behaviour under the runtime: the runtime (its version,
// its library, its settings), the executable, the dynamic loader, and every shared library the
// loader maps at start-up (named by file name, so the value is the same on every host that has
// the same files). `scone measure` computes it from the loader's trace without running the
// program; the runtime computes it from what is mapped (dl_iterate_phdr). Both must agree.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/primitives.h"

namespace scone::attest {

inline constexpr char kMeasurementFormat[] = "scone-measurement-v1";

struct MeasuredFile {
  enum class Kind { kRuntime, kExecutable, kInterpreter, kLibrary };
  Kind kind;
  std::string name;  // file name (libraries), or a fixed label
  crypto::Hash hash;
};

struct ImageDescription {
  std::string runtime_version;
  std::vector<std::string> settings;  // "key=value", part of the measurement
  std::vector<MeasuredFile> files;

  // The canonical text: one line per item, libraries sorted by name.
  std::string Canonical() const;
  crypto::Hash Measurement() const;
};

Result<crypto::Hash> HashFile(const std::string& path);
// Whether HashFile may keep a file's hash for its next measurement (keyed on the file's identity,
// size and times): not for a file changed in the last two seconds (its times are coarse), nor
// for one that anyone but root may write (a store through a shared mapping changes its bytes
// and none of its times).
bool MayKeepHash(const struct stat& st, const struct timespec& now);

// The files the dynamic loader's trace of `program` (`ld.so --list` output) names, in its order,
// the vDSO (no file) left out; kNotFound for a library the loader did not find ("PROGRAM:
// library NAME not found" followed by `where`).
Result<std::vector<std::string>> FilesInLoaderTrace(const std::string& trace, const std::string& program,
                                                    const std::string& where = "");
// From the dynamic loader's trace of `program` with `runtime_library` preloaded (`ld.so --list`;
// the program does not run).
Result<ImageDescription> DescribeFromLoader(const std::string& program,
                                            const std::string& runtime_library);
// From the objects mapped in this process (the runtime at start-up).
Result<ImageDescription> DescribeThisProcess(const std::string& runtime_library);
// From outside: another process's executable and the files it maps executable
// (/proc/PID/maps). What the sim platform (LAS) measures, independently of what the process says.
// A process in another mount namespace (a container) is measured through its own view of the
// files: /proc/PID/exe and /proc/PID/map_files (which needs CAP_SYS_ADMIN), its loader resolved
// in its root; its runtime is the mapped file named libscone-runtime.so.
Result<ImageDescription> DescribeProcess(pid_t pid, const std::string& runtime_library);

// A mapped object, named as every measurement names it: kRuntime and kInterpreter by role,
// kLibrary by its SONAME (else the file name of `shown_path`). Its bytes are read from
// `read_path` (which may differ from the path the process knows it by: an image's unpacked
// files, /proc/PID/map_files).
Result<MeasuredFile> MeasureMappedFile(MeasuredFile::Kind kind, const std::string& read_path,
                                       const std::string& shown_path);

// PT_INTERP of an ELF program (its dynamic loader), or "" for a statically linked program, a
// script or an unreadable file.
std::string ProgramInterpreter(const std::string& program);

// Settings of the runtime that are part of every measurement.
std::vector<std::string> RuntimeSettings();

}  // namespace scone::attest
