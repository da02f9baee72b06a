// `scone cas serve|start|stop|recover|platform`: CAS in the foreground (until SIGINT or SIGTERM),
// this user's local CAS (with its LAS), the operator's recovery of a refused database, and the
// platforms a CAS trusts.
#include <unistd.h>

#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>

#include "cas/attestation_server.h"
#include "cas/server.h"
#include "cli/command.h"
#include "cli/local_cas.h"

namespace scone::cli {
namespace {

struct CasArgs {
  std::string state_dir;
  std::string listen = "127.0.0.1:8081";
  std::string attestation_listen = "127.0.0.1:18765";
  std::vector<std::string> attestation_also;
  std::vector<std::string> admins;
  int workers = 16;
  std::string platform_key;
  std::string cas;
  std::string cas_cert;
  std::string las;
  std::string reason;
  int per_address = 128;
};

// The LAS whose platform seals CAS's master key and keeps its state counter: --las, else this
// user's local LAS (started if needed).
Result<std::shared_ptr<cas::Anchor>> AnchorFor(const std::string& las) {
  if (!las.empty()) return cas::LasAnchor(las);
  SCONE_ASSIGN_OR_RETURN(std::string socket, StartLocalLas());
  return cas::LasAnchor(socket);
}

cas::Server* running = nullptr;

Status SplitHostPort(const std::string& text, const char* option, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return InvalidArgument(std::string(option) + " must be HOST:PORT");
  *host = text.substr(0, colon);
  *port = std::atoi(text.c_str() + colon + 1);
  if (*port < 0 || *port > 65535) return InvalidArgument(std::string(option) + ": bad port");
  return Status::Ok();
}

Status Serve(const CasArgs& a) {
  // Up to two thousand connection threads, each with its random generators in the secure heap.
  ReserveSecureHeap(4 << 20);
  std::string host, attestation_host;
  int port, attestation_port;
  SCONE_RETURN_IF_ERROR(SplitHostPort(a.listen, "--listen", &host, &port));
  SCONE_RETURN_IF_ERROR(SplitHostPort(a.attestation_listen, "--attestation-listen", &attestation_host,
                                      &attestation_port));
  SCONE_ASSIGN_OR_RETURN(auto anchor, AnchorFor(a.las));
  cas::ConnectionGuard::Limits limits;
  limits.per_address = a.per_address;
  auto created = cas::Server::Create(a.state_dir, a.admins, anchor, limits);
  if (!created.ok()) {
    if (created.status().code() != Code::kRolledBack && created.status().code() != Code::kDataCorrupted) {
      return created.status();
    }
    return Status(created.status().code(),
                  created.status().message() + "\nCAS will not serve from it. Once you know why, run: scone cas recover "
                  "--state " + a.state_dir + (a.las.empty() ? "" : " --las " + a.las) + " --reason TEXT");
  }
  auto server = std::move(created).value();
  SCONE_ASSIGN_OR_RETURN(auto attestation, cas::AttestationServer::Create(server->store(), server->cert_path(),
                                                                          server->key_path(), limits));
  SCONE_ASSIGN_OR_RETURN(int bound, server->Bind(host, port));
  SCONE_ASSIGN_OR_RETURN(int attestation_bound, attestation->Bind(attestation_host, attestation_port));
  for (const std::string& also : a.attestation_also) {
    SCONE_RETURN_IF_ERROR(attestation->Bind(also, attestation_bound).status());
  }
  running = server.get();
  OnTerminationSignals([](int) { if (running) running->Stop(); });
  attestation->Start(a.workers);
  std::printf("scone cas: listening on https://%s:%d, attestation on %s:%d (state %s)\n", host.c_str(),
              bound, attestation_host.c_str(), attestation_bound, a.state_dir.c_str());
  std::fflush(stdout);
  server->Run();
  attestation->Stop();
  running = nullptr;
  return Status::Ok();
}

Status Recover(const CasArgs& a) {
  if (a.reason.empty()) return InvalidArgument("--reason: say why the database is to be trusted as it is");
  SCONE_ASSIGN_OR_RETURN(auto anchor, AnchorFor(a.las));
  const char* user = getenv("USER");
  std::string operator_id = "operator uid " + std::to_string(getuid()) + (user ? " (" + std::string(user) + ")" : "");
  SCONE_ASSIGN_OR_RETURN(std::vector<std::string> findings, cas::Store::Recover(a.state_dir, anchor, operator_id, a.reason));
  for (const std::string& f : findings) std::printf("%s\n", f.c_str());
  std::printf("recovered %s (recorded in its audit log)\n", a.state_dir.c_str());
  return Status::Ok();
}

Status TrustPlatform(const CasArgs& a) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  nlohmann::json body = {{"key", a.platform_key}};
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Post("/platform", body.dump(), "application/json"));
  if (r.status != 200) return cas::ErrorFromReply(r);
  std::printf("CAS trusts platform %s\n", a.platform_key.c_str());
  return Status::Ok();
}

Status ListPlatforms(const CasArgs& a) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Get("/platform"));
  if (r.status != 200) return cas::ErrorFromReply(r);
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("platforms")) return Internal("CAS sent an unreadable list");
  for (const auto& k : j["platforms"]) std::printf("%s\n", k.get<std::string>().c_str());
  return Status::Ok();
}

}  // namespace

void RegisterCasCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<CasArgs>();
  CLI::App* cas = app.add_subcommand("cas", "The configuration and attestation service");
  cas->require_subcommand(1);
  CLI::App* serve = cas->add_subcommand("serve", "Serve CAS: the HTTPS API (mutual TLS) and the attestation port");
  serve->add_option("--state", args->state_dir, "State directory (database, keys)")->required();
  serve->add_option("--listen", args->listen, "HOST:PORT of the HTTPS API (port 0: any free port)");
  serve->add_option("--attestation-listen", args->attestation_listen,
                    "IPv4:PORT of the port services attest on (port 0: any free port)");
  serve->add_option("--attestation-also", args->attestation_also,
                    "Another IPv4 address for the attestation port, same port (e.g. where containers reach the host)");
  serve->add_option("--admin", args->admins,
                    "Client identity (public key fingerprint, hex) that may change the trusted platforms");
  serve->add_option("--workers", args->workers, "Attestation workers kept ready")->check(CLI::Range(1, 256));
  serve->add_option("--las", args->las, "LAS socket whose platform seals the state (default: this user's local LAS)");
  serve->add_option("--max-connections-per-address", args->per_address,
                    "Connections one client address may hold on each port")->check(CLI::Range(1, 1024));
  serve->callback([&action, args] { action = [args] { return Serve(*args); }; });
  CLI::App* start = cas->add_subcommand("start", "Start this user's local CAS and LAS (if not running)");
  start->callback([&action] {
    action = [] {
      SCONE_ASSIGN_OR_RETURN(LocalServices s, StartLocalServices());
      std::printf("local CAS at %s (attestation %s), LAS at %s\n", s.cas_address.c_str(),
                  s.attestation_address.c_str(), s.las_socket.c_str());
      return Status::Ok();
    };
  });
  CLI::App* recover = cas->add_subcommand(
      "recover", "Accept a CAS database that CAS refused (rolled back or edited), after you found why (audited)");
  recover->add_option("--state", args->state_dir, "State directory (database, keys)")->required();
  recover->add_option("--las", args->las, "LAS socket whose platform seals the state (default: this user's local LAS)");
  recover->add_option("--reason", args->reason, "Why the database may be trusted (goes to the audit log)")->required();
  recover->callback([&action, args] { action = [args] { return Recover(*args); }; });
  CLI::App* stop = cas->add_subcommand("stop", "Stop this user's local CAS and LAS");
  stop->callback([&action] { action = [] { return StopLocalServices(); }; });

  CLI::App* platform = cas->add_subcommand("platform", "Platforms whose evidence CAS accepts");
  platform->require_subcommand(1);
  auto cas_options = [args](CLI::App* cmd) { AddCasOptions(cmd, &args->cas, &args->cas_cert); };
  CLI::App* trust = platform->add_subcommand("trust", "Trust a platform key (printed by scone las platform-key)");
  trust->add_option("KEY", args->platform_key, "Platform public key (64 hex digits)")->required();
  cas_options(trust);
  trust->callback([&action, args] { action = [args] { return TrustPlatform(*args); }; });
  CLI::App* list = platform->add_subcommand("list", "The trusted platform keys");
  cas_options(list);
  list->callback([&action, args] { action = [args] { return ListPlatforms(*args); }; });
}

}  // namespace scone::cli
