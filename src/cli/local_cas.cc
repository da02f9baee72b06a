#include "cli/local_cas.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "attest/sim/sim_platform.h"
#include "crypto/tls_identity.h"
#include "os/file.h"

namespace scone::cli {
namespace {

std::string CasDir() { return StateDir() + "/cas"; }
std::string LasDir() { return StateDir() + "/las"; }
std::string ClientCert() { return StateDir() + "/client.crt"; }
std::string ClientKey() { return StateDir() + "/client.key"; }

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// Alive and not a zombie (an exited daemon whose reparenting init has not reaped it yet).
bool Alive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'Z';
}

// The pid of a running local service whose pid file is `dir`/pid, or 0.
pid_t RunningPid(const std::string& dir) {
  std::string text = ReadSmallFile(dir + "/pid");
  pid_t pid = static_cast<pid_t>(std::atoi(text.c_str()));
  if (pid <= 0 || !Alive(pid)) return 0;
  std::string cmdline = ReadSmallFile("/proc/" + std::to_string(pid) + "/cmdline");
  return cmdline.find("scone") != std::string::npos || cmdline.empty() ? pid : 0;
}

// Starts `scone ARGS...` in the background (its own session, log in `dir`/log) and returns the
// first line it prints once it serves (bounded wait).
Result<std::string> StartDaemon(const std::string& dir, const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return IoError("pipe", errno);
  pid_t pid = fork();
  if (pid < 0) return IoError("fork", errno);
  if (pid == 0) {
    setsid();
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::string log = dir + "/log";
    int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (err >= 0) dup2(err, 2);
    std::vector<char*> argv = {const_cast<char*>("scone")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    struct pollfd p = {fds[0], POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  if (line.find('\n') == std::string::npos) {
    kill(pid, SIGTERM);
    return Internal("scone " + args[0] + " did not start; see " + dir + "/log");
  }
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(dir + "/pid", AsBytes(std::to_string(pid) + "\n"), 0600));
  return line;
}

Status StopDaemon(const std::string& dir) {
  pid_t pid = RunningPid(dir);
  unlink((dir + "/pid").c_str());
  if (pid == 0) return Status::Ok();
  kill(pid, SIGTERM);
  for (int i = 0; i < 400 && Alive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded wait for the exit
  }
  return Alive(pid) ? Internal("local service (pid " + std::to_string(pid) + ") did not stop")
                           : Status::Ok();
}

// The word after `key` in `line` ("... listening on https://H:P ..." -> "https://H:P").
std::string WordAfter(const std::string& line, const std::string& key) {
  size_t at = line.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  size_t end = line.find_first_of(" \n,", at);
  return line.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

Status EnsureClientIdentity() {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(StateDir(), 0700));
  return crypto::EnsureTlsIdentity({ClientKey(), ClientCert()}, "scone-client");
}

std::string LasSocket() { return LasDir() + "/las.sock"; }

// The port of "HOST:PORT".
std::string PortOf(const std::string& address) { return address.substr(address.rfind(':') + 1); }

// Starts the local CAS unless it runs (listening for containers at `container_host` too); true if
// this call started it.
Result<bool> StartLocalCas(LocalServices* out, const std::string& container_host) {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(CasDir(), 0700));
  out->cas_cert = CasDir() + "/cas.crt";
  const std::string also_file = CasDir() + "/attestation-also";
  if (RunningPid(CasDir()) != 0) {
    out->cas_address = ReadSmallFile(CasDir() + "/address");
    out->attestation_address = ReadSmallFile(CasDir() + "/attestation");
    bool reachable = container_host.empty() || ReadSmallFile(also_file) == container_host;
    if (!out->cas_address.empty() && !out->attestation_address.empty() && reachable) {
      if (!container_host.empty()) out->container_attestation_address = container_host + ":" + PortOf(out->attestation_address);
      return false;
    }
    SCONE_RETURN_IF_ERROR(StopDaemon(CasDir()));
  }
  unlink(also_file.c_str());
  SCONE_ASSIGN_OR_RETURN(std::string admin, crypto::PublicKeyFingerprintOfFile(ClientCert()));
  std::vector<std::string> args = {"cas", "serve", "--state", CasDir(), "--listen", "127.0.0.1:0",
                                   "--attestation-listen", "127.0.0.1:0", "--admin", admin, "--las", out->las_socket};
  if (!container_host.empty()) args.insert(args.end(), {"--attestation-also", container_host});
  SCONE_ASSIGN_OR_RETURN(std::string line, StartDaemon(CasDir(), args));
  out->cas_address = WordAfter(line, "listening on ");
  out->attestation_address = WordAfter(line, "attestation on ");
  if (out->cas_address.empty() || out->attestation_address.empty()) {
    return Internal("the local CAS printed no addresses; see " + CasDir() + "/log");
  }
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(CasDir() + "/address", AsBytes(out->cas_address + "\n"), 0600));
  SCONE_RETURN_IF_ERROR(
      os::WriteFileAtomically(CasDir() + "/attestation", AsBytes(out->attestation_address + "\n"), 0600));
  if (!container_host.empty()) {
    SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(also_file, AsBytes(container_host + "\n"), 0600));
    out->container_attestation_address = container_host + ":" + PortOf(out->attestation_address);
  }
  return true;
}

// The local CAS trusts the local LAS's platform: both are this user's, on this host.
Status TrustLocalPlatform(const LocalServices& s) {
  SCONE_ASSIGN_OR_RETURN(auto platform, attest::sim::SimPlatform::OpenOrCreate(LasDir() + "/platform.key"));
  cas::CasEndpoint e;
  e.cas_cert = s.cas_cert;
  e.client_cert = ClientCert();
  e.client_key = ClientKey();
  SCONE_RETURN_IF_ERROR(cas::ParseCasUrl(s.cas_address, &e));
  cas::Client client(e);
  nlohmann::json body = {{"key", ToHex(platform.platform_key())}};
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Post("/platform", body.dump(), "application/json"));
  return r.status == 200 ? Status::Ok() : cas::ErrorFromReply(r);
}

}  // namespace

std::string StateDir() {
  if (const char* xdg = getenv("XDG_STATE_HOME"); xdg && *xdg) return std::string(xdg) + "/scone";
  const char* home = getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.local/state/scone";
}

Result<LocalServices> StartLocalServices(const std::string& container_host) {
  SCONE_RETURN_IF_ERROR(EnsureClientIdentity());
  LocalServices s;
  // LAS first: it creates the platform key the CAS is told to trust, and seals CAS's state.
  SCONE_ASSIGN_OR_RETURN(s.las_socket, StartLocalLas());
  SCONE_ASSIGN_OR_RETURN(bool started, StartLocalCas(&s, container_host));
  if (started) SCONE_RETURN_IF_ERROR(TrustLocalPlatform(s));
  return s;
}

Result<std::string> StartLocalLas() {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(LasDir(), 0700));
  if (RunningPid(LasDir()) == 0) {
    SCONE_RETURN_IF_ERROR(StartDaemon(LasDir(), {"las", "serve", "--state", LasDir(), "--socket", LasSocket()}).status());
  }
  return LasSocket();
}

Status StopLocalServices() {
  Status cas = StopDaemon(CasDir());
  Status las = StopDaemon(LasDir());
  unlink((CasDir() + "/address").c_str());
  unlink((CasDir() + "/attestation").c_str());
  unlink((CasDir() + "/attestation-also").c_str());
  return cas.ok() ? las : cas;
}

Result<cas::CasEndpoint> ResolveCas(const std::string& url, const std::string& cas_cert) {
  SCONE_RETURN_IF_ERROR(EnsureClientIdentity());
  cas::CasEndpoint e;
  e.client_cert = ClientCert();
  e.client_key = ClientKey();
  std::string address = url;
  e.cas_cert = cas_cert;
  if (address.empty()) {
    SCONE_ASSIGN_OR_RETURN(LocalServices s, StartLocalServices());
    address = s.cas_address;
    e.cas_cert = s.cas_cert;
  } else if (cas_cert.empty()) {
    return InvalidArgument("--cas needs --cas-cert (the certificate CAS must present)");
  }
  SCONE_RETURN_IF_ERROR(cas::ParseCasUrl(address, &e));
  return e;
}

}  // namespace scone::cli
