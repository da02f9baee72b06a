// What `scone run` hands to the runtime in a program: the volumes to shield, with their keys and
// expected tags, the network shield's rules, and (across exec) the shielded descriptors the
// program keeps.
//
// The blob travels in a memfd_secret descriptor where the kernel offers it (its pages are
// removed from the kernel's direct map), else in a sealed anonymous memfd; never in the
// environment, the arguments or a file. Only the descriptor's number is in the environment
// (SCONE_RUNTIME_FD).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "crypto/secret.h"
#include "fs/volume_state.h"

namespace scone::runtime {

inline constexpr char kConfigFdEnv[] = "SCONE_RUNTIME_FD";
// The volumes' directories (no keys): lets the runtime tell early calls outside every volume
// apart without starting up (files/early_start.cc).
inline constexpr char kVolumeRootsEnv[] = "SCONE_VOLUME_ROOTS";

struct VolumeConfig {
  std::string dir;  // absolute, symbolic links resolved
  SecretBytes key;
  std::optional<fs::VolumeTag> expected_tag;
  std::string cas_name;  // the session's name for it, when CAS granted it
  // Open (and so check the key) before the program runs, as `scone run` asks; else the runtime
  // opens it when the program first touches it.
  bool open_at_start = false;
  // The root directory's identity where the process handing the volume over knew it (0: not
  // known): a program that finds another directory there, or none, refuses to start, because
  // under a new name the volume's files would no longer be judged protected.
  uint64_t root_device = 0;
  uint64_t root_inode = 0;
};

// The attested identity a CAS-configured program hands to the program it executes, so that the
// new program reports the volumes' states to CAS too.
struct CasHandover {
  std::string config_id;
  std::string host;
  int port = 0;
  crypto::Hash cas_key_hash{};
  SecretBytes key_pem;  // the attested TLS key
  Bytes cert_der;       // its certificate, with the evidence
};

// A shielded descriptor inherited across exec.
struct InheritedFd {
  int fd = -1;
  std::string volume_dir;
  std::string path;  // inside the volume
  int flags = 0;
  uint64_t offset = 0;
  // The file as the parent last committed it: the child finds it by its identity, not by a
  // name another process may have moved or given to another file since.
  std::optional<fs::FileEntry> entry;
};

// The console shield (docs/console-shield.md): a stream of records on one description of the
// console, carried on across exec by the program's descriptors `fds`.
struct ConsoleStreamConfig {
  std::array<uint8_t, 16> id{};
  std::array<uint8_t, 16> parent{};  // zeros: the run's first process
  uint8_t channel = 1;               // 1 stdout, 2 stderr
  std::array<uint8_t, 16> run{};     // the run's id, the same in every stream of it
  // A first stream's: the run's other first streams on the same file, pipe or terminal.
  std::vector<std::array<uint8_t, 16>> siblings;
  uint64_t next_sequence = 0;
  bool started = false;  // its start record is written
  bool ended = false;    // its final record is written: its descriptors fail (EIO)
  std::vector<int> fds;
};

struct ConsoleConfig {
  SecretBytes key;
  // From `scone run`: the program's descriptors 1 and 2 start the run's first streams.
  bool first = false;
  // `scone run -i`: descriptor 0 is sealed input (runtime/console/console_input.h).
  bool input = false;
  // Across exec: the shared reader state of sealed stdin, and the descriptors that read it.
  int input_memfd = -1;
  std::vector<int> input_fds;
  std::vector<ConsoleStreamConfig> streams;
};

// A file CAS injected: served from memory at `path`, never written to disk.
struct InjectedFileConfig {
  std::string path;  // absolute
  SecretBytes content;
};

// One of the network shield's variables (net/network_rules.h). They travel here, not in the
// environment: an _IDENTITY holds a private key, and the environment a process started with is
// what the host reads in /proc/PID/environ.
// The secure heap (crypto/secret.h) of a process the network shield serves TLS in: room for the
// ephemeral keys of a few thousand handshakes in progress.
inline constexpr size_t kNetworkSecureHeapSize = 4u << 20;

struct NetworkVariable {
  std::string name;
  SecretBytes value;
};

// CAS mode: the service's TLS identity (PEM key + certificate) and its session CA's
// certificate, which the network shield uses where a rule names none (cas/network_identity.h).
struct NetworkDefaults {
  SecretBytes identity;
  std::string session_ca;
};

struct RuntimeConfig {
  std::vector<VolumeConfig> volumes;
  std::vector<NetworkVariable> network;
  std::optional<NetworkDefaults> network_defaults;
  std::vector<InheritedFd> fds;
  std::vector<InjectedFileConfig> injected_files;
  std::optional<CasHandover> cas;
  // Stdout and stderr as sealed records (absent: the console is the program's, unchanged).
  std::optional<ConsoleConfig> console;
  // Print the program's measurement as the runtime computes it at start-up, then exit
  // (`scone run --print-measurement`): how `scone measure` is checked against the runtime.
  bool print_measurement = false;
  // LAS socket, and: get evidence about this process from it, print it (hex) and exit
  // (`scone run --las PATH --print-evidence`), until CAS consumes evidence at start-up.
  std::string las_socket;
  bool print_evidence = false;
  // The entry's patches of the program that executes this one (CodePatcher::Plan).
  Bytes entry_plan;
  // The name the program was executed by (the path's last component): the program is executed
  // through a descriptor, so the kernel may name it otherwise in /proc/PID/comm.
  std::string program_name;
  // What a CAS-configured program passes the program it executes, handed over here rather than
  // through the kernel, whose copy the host reads (/proc/PID/cmdline and environ): the values
  // CAS put secrets into were on view there in every child (hostile finding). `arguments`: the
  // values of argv[1...] (the kernel's argv ends with as many empty strings); `environment`: the
  // whole environment (the kernel's holds only what the loader reads, and the runtime's names).
  struct HandedCommandLine {
    std::vector<std::string> arguments;
    std::vector<std::string> environment;
  };
  std::optional<HandedCommandLine> command_line;

  SecretBytes Encode() const;
  static Result<RuntimeConfig> Decode(ByteSpan blob);
};

// Writes the config into a new secret descriptor (not close-on-exec) and returns it.
Result<int> WriteConfigFd(const RuntimeConfig& config);
// Reads the config from the descriptor.
Result<RuntimeConfig> ReadConfigFd(int fd);

}  // namespace scone::runtime
