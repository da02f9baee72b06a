// `scone run`: runs an unmodified, dynamically linked program with the SCONE runtime loaded,
// shielding the volumes given on the command line.
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>

extern "C" char** environ;

#include "cas/protocol.h"
#include "cli/command.h"
#include "cli/local_cas.h"
#include "cli/runtime_library.h"
#include "common/setting.h"
#include "crypto/tls_identity.h"
#include "fs/volume.h"
#include "net/network_rules.h"
#include "os/file.h"
#include "runtime/config.h"
#include "runtime/process/program_inspection.h"

namespace scone::cli {
namespace {

struct RunArgs {
  std::vector<std::string> volumes;  // DIR:KEY_FILE[:TAG]
  std::vector<std::string> command;
  bool print_measurement = false;
  std::string las_socket;
  bool print_evidence = false;
  std::string config_id;
  // --config-id, or SCONE_CONFIG_ID in the environment even if empty (WithSconeEnvironment):
  // attestation is asked for, and an empty or malformed id is an error, never a run without it.
  bool config_id_given = false;
  std::string cas_addr;
  std::string cas_cert;
  std::string sigstruct;
  std::string console_key_file;
  bool sealed_stdin = false;
};

Result<runtime::VolumeConfig> ParseVolume(const std::string& spec) {
  size_t first = spec.find(':');
  if (first == std::string::npos) {
    return InvalidArgument("--volume " + spec + ": expected DIR:KEY_FILE[:TAG]");
  }
  size_t second = spec.find(':', first + 1);
  std::string dir = spec.substr(0, first);
  std::string key_file = spec.substr(first + 1, second == std::string::npos ? std::string::npos
                                                                             : second - first - 1);
  runtime::VolumeConfig v;
  char real[PATH_MAX];
  if (realpath(dir.c_str(), real) == nullptr) {
    return NotFound("--volume " + spec + ": " + dir + " does not exist");
  }
  v.dir = real;
  v.open_at_start = true;  // a wrong key or a damaged volume stops the program before it runs
  SCONE_ASSIGN_OR_RETURN(bool is_volume, os::Exists(v.dir + "/" + fs::kMetaDirName + "/volume"));
  if (!is_volume) return NotFound("--volume " + spec + ": " + dir + " is not a SCONE volume");
  SCONE_ASSIGN_OR_RETURN(v.key, fs::ReadKeyFile(key_file));
  if (second != std::string::npos) {
    auto tag = FromHexArray<crypto::kHashSize>(spec.substr(second + 1));
    if (!tag.ok()) return InvalidArgument("--volume " + spec + ": TAG must be 64 hex digits");
    v.expected_tag = *tag;
  }
  return v;
}

// The network shield's variables (SCONE_NETWORK_SHIELD*) in the environment, checked here (a
// malformed rule stops the program before it starts, naming the variable) and removed from it:
// an _IDENTITY holds a private key, and the environment a program starts with is what the host
// reads in /proc/PID/environ. The runtime gets them through its configuration descriptor.
Result<std::vector<runtime::NetworkVariable>> TakeNetworkVariables() {
  std::vector<std::pair<std::string, std::string>> found;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq == nullptr) continue;
    std::string name(*e, static_cast<size_t>(eq - *e));
    if (net::IsShieldVariable(name)) found.emplace_back(std::move(name), std::string(eq + 1));
  }
  auto rules = net::NetworkRules::Parse(found);
  std::vector<runtime::NetworkVariable> out;
  for (auto& [name, value] : found) {
    unsetenv(name.c_str());
    out.push_back({name, SecretBytes(AsBytes(value))});
    Wipe(value);
  }
  if (!rules.ok()) return rules.status();
  return out;
}

// CAS mode: the runtime attests before main and takes its configuration from CAS. Only
// addresses and CAS's key hash go into the environment; nothing secret.
Status SetCasEnvironment(const RunArgs& a) {
  std::string cas_addr = a.cas_addr, las = a.las_socket, cas_cert = a.cas_cert;
  std::string key_hash;
  if (cas_addr.empty()) {
    SCONE_ASSIGN_OR_RETURN(LocalServices local, StartLocalServices());
    cas_addr = local.attestation_address;
    cas_cert = local.cas_cert;
    if (las.empty()) las = local.las_socket;
  } else if (cas_cert.empty()) {
    // SCONE's variables: a CAS named by SCONE_CAS_ADDR is recognized by SCONE_CAS_KEY_HASH.
    const char* pinned = getenv("SCONE_CAS_KEY_HASH");
    if (pinned == nullptr || *pinned == '\0') {
      return InvalidArgument("CAS at " + cas_addr +
                             ": give the certificate it must present (--cas-cert) or SCONE_CAS_KEY_HASH");
    }
    key_hash = pinned;
  }
  if (las.empty()) {
    return InvalidArgument("CAS at " + cas_addr + ": give the local attestation service's socket (--las or SCONE_LAS_ADDR)");
  }
  if (key_hash.empty()) {
    SCONE_ASSIGN_OR_RETURN(key_hash, crypto::PublicKeyFingerprintOfFile(cas_cert));
  }
  // With CAS the network and console shields' variables come from the session's environment only.
  for (char** e = environ; e != nullptr && *e != nullptr;) {
    const char* eq = std::strchr(*e, '=');
    std::string name = eq != nullptr ? std::string(*e, static_cast<size_t>(eq - *e)) : std::string(*e);
    if (net::IsShieldVariable(name) || name == kConsoleShieldVariable) {
      unsetenv(name.c_str());  // environ shifts down: look at the same slot again
    } else {
      ++e;
    }
  }
  setenv("SCONE_CONFIG_ID", a.config_id.c_str(), 1);
  setenv("SCONE_CAS_ADDR", cas_addr.c_str(), 1);
  setenv("SCONE_LAS_ADDR", las.c_str(), 1);
  setenv("SCONE_CAS_KEY_HASH", key_hash.c_str(), 1);
  if (!a.sigstruct.empty()) setenv("SCONE_SIGSTRUCT", a.sigstruct.c_str(), 1);
  unsetenv(runtime::kConfigFdEnv);
  setenv(runtime::kVolumeRootsEnv, "", 1);  // none known before attestation
  return Status::Ok();
}

// Checks PROGRAM, lets `prepare` set the runtime's environment, and runs PROGRAM with the
// runtime preloaded (the program's own preloads after it).
Status Launch(const std::vector<std::string>& command, const std::function<Status()>& prepare) {
  SCONE_ASSIGN_OR_RETURN(std::string program, FindProgram(command[0]));
  // Inspected as the runtime inspects what a shielded program executes, and executed through
  // the same descriptor.
  runtime::process::Launch launch = runtime::process::InspectProgram(AT_FDCWD, program.c_str(), 0);
  if (launch.error != 0) {
    if (!launch.reason.empty()) return Unsupported(launch.reason);
    return IoError("exec " + program, static_cast<int>(-launch.error));
  }
  SCONE_ASSIGN_OR_RETURN(std::string library, RuntimeLibrary());
  SCONE_RETURN_IF_ERROR(prepare());
  const char* preload = getenv("LD_PRELOAD");
  std::string value = library + (preload && *preload ? ":" + std::string(preload) : "");
  setenv("LD_PRELOAD", value.c_str(), 1);
  std::vector<char*> argv;
  for (const std::string& s : command) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> launch_argv = runtime::process::LaunchArguments(launch, argv.data());
  std::fflush(stdout);
  syscall(SYS_execveat, static_cast<int>(launch.fd), "", launch_argv.data(), environ, AT_EMPTY_PATH);
  return IoError("exec " + program, errno);
}

// SCONE's own variables work as the matching options, so that compose files and entrypoints
// written for SCONE work unchanged: SCONE_CONFIG_ID means attestation, never a silent run
// without it.
RunArgs WithSconeEnvironment(RunArgs a) {
  auto from_env = [](std::string* option, const char* name) {
    const char* v = getenv(name);
    if (option->empty() && v != nullptr) *option = v;
  };
  a.config_id_given = !a.config_id.empty();
  if (a.print_measurement || a.print_evidence) return a;  // the program does not run
  a.config_id_given = a.config_id_given || getenv("SCONE_CONFIG_ID") != nullptr;
  from_env(&a.config_id, "SCONE_CONFIG_ID");
  if (!a.config_id_given) return a;
  from_env(&a.cas_addr, "SCONE_CAS_ADDR");
  from_env(&a.las_socket, "SCONE_LAS_ADDR");
  if (a.las_socket.rfind("unix:", 0) == 0) a.las_socket = a.las_socket.substr(5);
  return a;
}

// Descriptors the caller opened on files inside a volume (a shell's `< vol/f`, `>> vol/log`):
// the runtime serves them through the shield, as it does those a shielded parent hands over;
// left alone, the program would read ciphertext as data and write plaintext into the volume.
void HandOverInheritedVolumeFds(runtime::RuntimeConfig& config) {
  std::error_code ec;
  std::vector<int> fds;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string name = e.path().filename().string();
    char* end = nullptr;
    long fd = std::strtol(name.c_str(), &end, 10);
    if (end != name.c_str() && *end == '\0') fds.push_back(static_cast<int>(fd));
  }
  for (int fd : fds) {
    int flags = fcntl(fd, F_GETFL);
    struct stat st;
    if (flags < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0) continue;
    std::string path(target, static_cast<size_t>(n));
    for (const runtime::VolumeConfig& v : config.volumes) {
      if (path.size() <= v.dir.size() + 1 || path.compare(0, v.dir.size(), v.dir) != 0 || path[v.dir.size()] != '/') {
        continue;
      }
      runtime::InheritedFd f;
      f.fd = fd;
      f.volume_dir = v.dir;
      f.path = path.substr(v.dir.size() + 1);
      f.flags = flags;
      config.fds.push_back(std::move(f));
      break;
    }
  }
}

Status Run(const RunArgs& given) {
  const RunArgs a = WithSconeEnvironment(given);
  if (a.command.empty()) return InvalidArgument("no program given (scone run [OPTIONS] -- PROGRAM ARGS...)");
  if (a.config_id_given) {
    // Checked before anything starts: an empty one (a template's unset variable) never runs
    // the program without attestation, a malformed one never reaches CAS.
    std::string session, service;
    SCONE_RETURN_IF_ERROR(cas::SplitConfigId(a.config_id, &session, &service)
                              .Annotate(given.config_id.empty() ? "SCONE_CONFIG_ID" : "--config-id"));
    if (!a.volumes.empty()) {
      return InvalidArgument("--volume and " + std::string(given.config_id.empty() ? "SCONE_CONFIG_ID" : "--config-id") +
                             ": with CAS, volumes come from the session");
    }
    if (!a.console_key_file.empty()) {
      return InvalidArgument("--console-key-file with CAS: the console shield is the session's "
                             "(SCONE_CONSOLE_SHIELD=protected in the service's environment; CAS holds the key)");
    }
    return Launch(a.command, [&] { return SetCasEnvironment(a); });
  }
  unsetenv("SCONE_CONFIG_ID");  // --print-measurement and --print-evidence: no attestation
  runtime::RuntimeConfig config;
  config.print_measurement = a.print_measurement;
  config.las_socket = a.las_socket;
  config.print_evidence = a.print_evidence;
  config.program_name = std::filesystem::path(a.command[0]).filename();
  if (a.print_evidence && a.las_socket.empty()) return InvalidArgument("--print-evidence needs --las");
  for (const std::string& spec : a.volumes) {
    SCONE_ASSIGN_OR_RETURN(runtime::VolumeConfig v, ParseVolume(spec));
    config.volumes.push_back(std::move(v));
  }
  HandOverInheritedVolumeFds(config);
  SCONE_ASSIGN_OR_RETURN(config.network, TakeNetworkVariables());
  if (const char* console_switch = getenv(kConsoleShieldVariable)) {
    // A misspelled switch is refused, never read as "off".
    SCONE_ASSIGN_OR_RETURN(bool wanted, ParseConsoleShield(console_switch));
    if (wanted && a.console_key_file.empty()) {
      return InvalidArgument("SCONE_CONSOLE_SHIELD=protected without CAS: give the key (--console-key-file K; "
                             "scone console keygen K)");
    }
  }
  if (a.sealed_stdin && a.console_key_file.empty()) {
    return InvalidArgument("-i (sealed stdin) needs the console's key: --console-key-file K");
  }
  if (!a.console_key_file.empty()) {
    runtime::ConsoleConfig console;
    auto key = fs::ReadKeyFile(a.console_key_file);
    if (!key.ok() && key.status().code() == Code::kNotFound) {
      return NotFound("--console-key-file " + a.console_key_file + " does not exist (create one: scone console keygen " +
                      a.console_key_file + ")");
    }
    SCONE_ASSIGN_OR_RETURN(console.key, std::move(key));
    console.first = true;
    console.input = a.sealed_stdin;
    config.console = std::move(console);
  }
  return Launch(a.command, [&]() -> Status {
    SCONE_ASSIGN_OR_RETURN(int fd, runtime::WriteConfigFd(config));
    setenv(runtime::kConfigFdEnv, std::to_string(fd).c_str(), 1);
    // Only paths, no keys: lets the runtime tell early calls outside every volume apart without
    // starting up (see runtime/files/early_start.cc).
    std::string roots;
    for (const auto& v : config.volumes) roots += (roots.empty() ? "" : ":") + v.dir;
    setenv(runtime::kVolumeRootsEnv, roots.c_str(), 1);
    return Status::Ok();
  });
}

}  // namespace

void RegisterRunCommand(CLI::App& app, Action& action) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand(
      "run", "Run an unmodified program with the SCONE runtime: files under each --volume are "
             "encrypted and verified transparently");
  run->add_option("--volume,-v", args->volumes,
                  "DIR:KEY_FILE[:TAG] a volume to shield (repeatable); with TAG the program "
                  "starts only if the volume's state is the one TAG names");
  run->add_flag("--print-measurement", args->print_measurement,
                "Print PROGRAM's measurement as the runtime computes it at start-up, and exit");
  run->add_option("--las", args->las_socket, "Local attestation service (unix socket; default: $SCONE_LAS_ADDR)");
  run->add_flag("--print-evidence", args->print_evidence,
                "Get evidence about PROGRAM from LAS at start-up, print it (hex), and exit");
  run->add_option("--config-id", args->config_id,
                  "SESSION/SERVICE: attest to CAS at start-up and run with the command line, "
                  "environment, volumes and files the session gives (default CAS: the local one; "
                  "default: $SCONE_CONFIG_ID)");
  run->add_option("--cas-addr", args->cas_addr,
                  "CAS attestation address HOST[:PORT] (with --config-id; default: $SCONE_CAS_ADDR)");
  run->add_option("--cas-cert", args->cas_cert, "Certificate CAS must present (with --cas-addr)");
  run->add_option("--console-key-file", args->console_key_file,
                  "Write the program's stdout and stderr as authenticated, encrypted records under the key in "
                  "this file (scone console keygen; read with scone console decrypt)");
  run->add_flag("-i,--sealed-stdin", args->sealed_stdin,
                "With --console-key-file: the program's stdin is sealed input (scone console encrypt "
                "--key-file K), authenticated before the program reads it");
  run->add_option("--sigstruct", args->sigstruct, "Signature from scone sign (default: PROGRAM.sig if present)");
  // Everything from the program's name on belongs to the program, options included.
  run->prefix_command();
  run->footer("PROGRAM [ARGS...] follow the options (after an optional --).");
  run->callback([&action, args, run] {
    args->command = run->remaining();
    if (!args->command.empty() && args->command.front() == "--") args->command.erase(args->command.begin());
    for (const std::string& a : TrailingArguments()) args->command.push_back(a);
    action = [args] { return Run(*args); };
  });
}

}  // namespace scone::cli
