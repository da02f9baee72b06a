// Attestation benchmark, measured in one run (never a test):
//   1. attestation + configuration round trips against a real CAS attestation port (its own
//      process) and a real LAS (unix socket), as the runtime does them: nonce, fresh key,
//      evidence, RA-TLS config request; with 1 and 64 concurrent clients: p50, p99,
//      attestations per second, and CAS's CPU time per attestation (its capacity when the
//      clients and LAS do not share its cores, as in a deployment);
//   2. the same with 64 clients while 80 slow connections (each from its own loopback address,
//      dribbling a nonce request one byte every half second) are open on the attestation port:
//      attestations per second, and the ratio to the run without them;
//   3. start-up time of /bin/true natively, under the runtime without CAS, and under the
//      runtime attesting to CAS (the whole path a service takes before main).
// usage: scone_attest_bench RUNTIME_LIBRARY
#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "attest/las.h"
#include "attest/measurement.h"
#include "attest/sim/sim_platform.h"
#include "cas/attestation_client.h"
#include "cas/attestation_server.h"
#include "crypto/tls_identity.h"
#include "os/file.h"
#include "testing/temp_dir.h"

extern char** environ;

namespace scone {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, r.status().message().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

struct Bench {
  cas::AttestationEndpoint cas;
  std::string las_socket;
  pid_t cas_pid = 0;
};

// CPU seconds (user + system) a process has used so far.
double CpuSeconds(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  unsigned long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  if (p == nullptr || std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) {
    return 0;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One attestation as the runtime does it (runtime/attestation.cc).
Status AttestOnce(const Bench& b) {
  SCONE_ASSIGN_OR_RETURN(attest::Nonce nonce, cas::FetchNonce(b.cas));
  SCONE_ASSIGN_OR_RETURN(attest::TlsCredential c, attest::TlsCredential::Generate("bench"));
  SCONE_ASSIGN_OR_RETURN(attest::Evidence e, attest::RequestEvidence(b.las_socket,
                                                                     attest::BindReportData(c.key_hash(), nonce),
                                                                     std::nullopt));
  SCONE_RETURN_IF_ERROR(c.AttachEvidence(e));
  cas::Request config_request;
  config_request.kind = cas::RequestKind::kConfig;
  config_request.config_id = "bench/self";
  SCONE_ASSIGN_OR_RETURN(Bytes config, cas::Exchange(b.cas, c, config_request));
  return cas::ServiceConfig::Decode(config).status();
}

// Returns attestations per second.
double RunClients(const Bench& b, int clients, int per_client) {
  std::vector<std::vector<double>> latencies(clients);
  std::atomic<int> failures{0};
  std::string first_error;
  std::mutex error_mu;
  auto start = Clock::now();
  double cas_cpu_before = CpuSeconds(b.cas_pid);
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_client; ++i) {
        auto t0 = Clock::now();
        Status s = AttestOnce(b);
        latencies[t].push_back(Ms(Clock::now() - t0));
        if (!s.ok()) {
          ++failures;
          std::lock_guard lock(error_mu);
          if (first_error.empty()) first_error = s.message();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  double seconds = Ms(Clock::now() - start) / 1000;
  double cas_cpu = CpuSeconds(b.cas_pid) - cas_cpu_before;
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
  double cas_ms = 1000 * cas_cpu / static_cast<double>(all.size());
  unsigned cores = std::thread::hardware_concurrency();
  std::printf("attestation, %2d concurrent client(s): %5zu round trips, p50 %.2f ms, p99 %.2f ms, "
              "%.0f attestations/s; CAS CPU %.2f ms per attestation (capacity %.0f/s on %u cores)%s\n",
              clients, all.size(), pct(0.50), pct(0.99), all.size() / seconds, cas_ms,
              cas_ms > 0 ? 1000.0 * cores / cas_ms : 0.0, cores,
              failures ? (" (" + std::to_string(failures.load()) + " failed: " + first_error + ")").c_str() : "");
  return all.size() / seconds;
}

// Connections that never finish their nonce request: each from its own loopback address, one
// more byte every half second until `stop`.
class SlowConnections {
 public:
  SlowConnections(int port, int count) {
    for (int i = 0; i < count; ++i) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in from = {}, to = {};
      from.sin_family = to.sin_family = AF_INET;
      from.sin_addr.s_addr = htonl(0x7f000002 + i);  // 127.0.0.2, 127.0.0.3, ...
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      to.sin_port = htons(static_cast<uint16_t>(port));
      if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
          connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
        if (fd >= 0) close(fd);
        continue;
      }
      fds_.push_back(fd);
    }
    dribbler_ = std::thread([this] {
      for (size_t sent = 0; !stop_.load(); ++sent) {
        for (int fd : fds_) {
          if (sent + 1 < cas::kNonceRequestSize) (void)!send(fd, cas::kNonceRequest + sent, 1, MSG_NOSIGNAL);
        }
        std::unique_lock lock(mu_);
        wake_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stop_.load(); });
      }
    });
  }
  ~SlowConnections() {
    stop_ = true;
    wake_.notify_all();
    dribbler_.join();
    for (int fd : fds_) close(fd);
  }
  size_t open() const { return fds_.size(); }

 private:
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::thread dribbler_;
};

// Median wall time of running `argv` with `env` (n runs).
double StartupMs(const std::vector<std::string>& argv, const std::vector<std::string>& env, int n) {
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    for (char** p = environ; *p; ++p) e.push_back(*p);
    for (auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
    e.push_back(nullptr);
    auto t0 = Clock::now();
    pid_t pid;
    if (posix_spawn(&pid, a[0], nullptr, nullptr, a.data(), e.data()) != 0) return -1;
    int status = 0;
    waitpid(pid, &status, 0);
    times.push_back(Ms(Clock::now() - t0));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s RUNTIME_LIBRARY\n", argv[0]);
    return 2;
  }
  std::string runtime = argv[1];
  ReserveSecureHeap(4 << 20);  // as scone cas serve does: many threads, each with its generators
  testing::TempDir dir;
  crypto::TlsIdentityFiles tls{dir / "cas.key", dir / "cas.crt"};
  if (!crypto::EnsureTlsIdentity(tls, "scone-cas").ok()) return 1;
  if (!os::MakeDirectories(dir / "las").ok()) return 1;
  attest::sim::SimPlatform platform = Must(attest::sim::SimPlatform::OpenOrCreate(dir / "las/platform.key"), "platform");
  // The session names this process (as LAS measures it) and /bin/true under the runtime.
  attest::ImageDescription self = Must(attest::DescribeProcess(getpid(), runtime), "measure self");
  attest::ImageDescription true_image = Must(attest::DescribeFromLoader("/bin/true", runtime), "measure /bin/true");
  std::string session = "name: bench\nversion: \"0.3\"\nsecurity:\n  attestation:\n    tolerate: [sim]\n"
                        "services:\n  - name: self\n    mrenclaves: [" + ToHex(self.Measurement()) + "]\n"
                        "    command: bench --flag value\n"
                        "  - name: true\n    mrenclaves: [" + ToHex(true_image.Measurement()) + "]\n"
                        "    command: /bin/true\n";
  {
    auto store = Must(cas::Store::Open(dir.path(), cas::PlatformAnchor(&platform)), "store");
    if (!store->TrustPlatform(platform.platform_key(), "bench").ok()) return 1;
    if (!store->Put({"bench", "h", "bench", session}, std::nullopt, {}).ok()) return 1;
  }
  // CAS in a process of its own, so that its CPU time can be told apart from the clients' and
  // LAS's (which run on the service's host in a deployment).
  int ready[2];
  if (pipe(ready) != 0) return 1;
  pid_t cas_pid = fork();
  if (cas_pid == 0) {
    auto store = Must(cas::Store::Open(dir.path(), cas::PlatformAnchor(&platform)), "store");
    auto server = Must(cas::AttestationServer::Create(store.get(), tls.cert_path, tls.key_path), "server");
    int bound = Must(server->Bind("127.0.0.1", 0), "bind");
    server->Start(16);
    (void)!write(ready[1], &bound, sizeof(bound));
    pause();  // until the parent kills it
    _exit(0);
  }
  int port = 0;
  if (read(ready[0], &port, sizeof(port)) != sizeof(port)) return 1;

  Bench b;
  b.cas.host = "127.0.0.1";
  b.cas.port = port;
  b.cas_pid = cas_pid;
  b.cas.cas_key_hash =
      Must(FromHexArray<crypto::kHashSize>(Must(crypto::PublicKeyFingerprintOfFile(tls.cert_path), "pin")), "pin");
  b.las_socket = dir / "las.sock";
  volatile bool stop = false;
  std::thread las([&] { (void)attest::ServeLas(b.las_socket, platform, runtime, &stop); });
  for (int i = 0; i < 200 && access(b.las_socket.c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // until LAS listens (bounded)
  }

  std::printf("CAS attestation port and LAS on this machine (%u cores), sim platform:\n",
              std::thread::hardware_concurrency());
  (void)AttestOnce(b);  // warm the measurement cache
  RunClients(b, 1, 300);
  double plain = RunClients(b, 64, 20);
  {
    SlowConnections slow(port, 80);
    std::printf("with %zu slow connections open on the attestation port:\n", slow.open());
    double with_slow = RunClients(b, 64, 20);
    std::printf("attestations/s with slow connections / without: %.2f\n", with_slow / plain);
  }

  std::vector<std::string> cas_env = {
      "SCONE_CONFIG_ID=bench/true", "SCONE_CAS_ADDR=127.0.0.1:" + std::to_string(port),
      "SCONE_LAS_ADDR=" + b.las_socket, "SCONE_CAS_KEY_HASH=" + ToHex(b.cas.cas_key_hash),
      "LD_PRELOAD=" + runtime};
  double native = StartupMs({"/bin/true"}, {}, 51);
  double preloaded = StartupMs({"/bin/true"}, {"LD_PRELOAD=" + runtime}, 51);
  double attested = StartupMs({"/bin/true"}, cas_env, 51);
  std::printf("start-up of /bin/true (median of 51): native %.2f ms, runtime without CAS %.2f ms, "
              "runtime attesting to CAS %.2f ms\n", native, preloaded, attested);
  std::printf("start-up overhead of attestation: %.2f ms (shielded/native %.1fx)\n", attested - native,
              attested / native);
  stop = true;
  kill(cas_pid, SIGKILL);
  waitpid(cas_pid, nullptr, 0);
  // LAS's accept loop ends at the next connection.
  (void)attest::RequestEvidence(b.las_socket, attest::ReportData{}, std::nullopt);
  las.join();
  return 0;
}

}  // namespace
}  // namespace scone

int main(int argc, char** argv) { return scone::Main(argc, argv); }
