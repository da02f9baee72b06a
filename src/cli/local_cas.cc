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

#include "crypto/tls_identity.h"
#include "os/file.h"

namespace scone::cli {
namespace {

std::string CasDir() { return StateDir() + "/cas"; }

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// The pid of the running local CAS, or 0.
pid_t RunningPid() {
  std::string text = ReadSmallFile(CasDir() + "/cas.pid");
  pid_t pid = static_cast<pid_t>(std::atoi(text.c_str()));
  if (pid <= 0 || kill(pid, 0) != 0) return 0;
  std::string cmdline = ReadSmallFile("/proc/" + std::to_string(pid) + "/cmdline");
  return cmdline.find("scone") != std::string::npos || cmdline.empty() ? pid : 0;
}

}  // namespace

std::string StateDir() {
  if (const char* xdg = getenv("XDG_STATE_HOME"); xdg && *xdg) return std::string(xdg) + "/scone";
  const char* home = getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.local/state/scone";
}

Result<std::string> StartLocalCas() {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(CasDir(), 0700));
  if (RunningPid() != 0) {
    std::string address = ReadSmallFile(CasDir() + "/address");
    if (!address.empty()) return address;
  }
  int fds[2];
  if (pipe(fds) != 0) return IoError("pipe", errno);
  pid_t pid = fork();
  if (pid < 0) return IoError("fork", errno);
  if (pid == 0) {
    setsid();
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::string log = CasDir() + "/cas.log";
    int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (err >= 0) dup2(err, 2);
    std::string dir = CasDir();
    execl("/proc/self/exe", "scone", "cas", "serve", "--state", dir.c_str(), "--listen",
          "127.0.0.1:0", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  // The server prints one line once it listens; wait for it (bounded).
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    struct pollfd p = {fds[0], POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    char buf[256];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  size_t at = line.find("https://");
  if (at == std::string::npos) {
    kill(pid, SIGTERM);
    return Internal("the local CAS did not start; see " + CasDir() + "/cas.log");
  }
  std::string address = line.substr(at, line.find(' ', at) - at);
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(CasDir() + "/address", AsBytes(address + "\n"), 0600));
  SCONE_RETURN_IF_ERROR(
      os::WriteFileAtomically(CasDir() + "/cas.pid", AsBytes(std::to_string(pid) + "\n"), 0600));
  return address;
}

Status StopLocalCas() {
  pid_t pid = RunningPid();
  if (pid == 0) return Status::Ok();
  kill(pid, SIGTERM);
  for (int i = 0; i < 200 && kill(pid, 0) == 0; ++i) {
    waitpid(pid, nullptr, WNOHANG);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));  // bounded wait for the exit
  }
  unlink((CasDir() + "/address").c_str());
  unlink((CasDir() + "/cas.pid").c_str());
  return kill(pid, 0) == 0 ? Internal("the local CAS (pid " + std::to_string(pid) + ") did not stop")
                           : Status::Ok();
}

Result<cas::CasEndpoint> ResolveCas(const std::string& url, const std::string& cas_cert) {
  cas::CasEndpoint e;
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(StateDir(), 0700));
  e.client_cert = StateDir() + "/client.crt";
  e.client_key = StateDir() + "/client.key";
  SCONE_RETURN_IF_ERROR(crypto::EnsureTlsIdentity({e.client_key, e.client_cert}, "scone-client"));
  std::string address = url;
  e.cas_cert = cas_cert;
  if (address.empty()) {
    SCONE_ASSIGN_OR_RETURN(address, StartLocalCas());
    e.cas_cert = CasDir() + "/cas.crt";
  } else if (cas_cert.empty()) {
    return InvalidArgument("--cas needs --cas-cert (the certificate CAS must present)");
  }
  SCONE_RETURN_IF_ERROR(cas::ParseCasUrl(address, &e));
  return e;
}

}  // namespace scone::cli
