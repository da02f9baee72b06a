// `scone cas serve`: runs CAS in the foreground until SIGINT or SIGTERM.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "cas/server.h"
#include "cli/command.h"
#include "cli/local_cas.h"

namespace scone::cli {
namespace {

struct CasArgs {
  std::string state_dir;
  std::string listen = "127.0.0.1:8081";
};

cas::Server* running = nullptr;

Status Serve(const CasArgs& a) {
  size_t colon = a.listen.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("--listen must be HOST:PORT");
  std::string host = a.listen.substr(0, colon);
  int port = std::atoi(a.listen.c_str() + colon + 1);
  SCONE_ASSIGN_OR_RETURN(auto server, cas::Server::Create(a.state_dir));
  SCONE_ASSIGN_OR_RETURN(int bound, server->Bind(host, port));
  running = server.get();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, [](int) { if (running) running->Stop(); });
  signal(SIGINT, [](int) { if (running) running->Stop(); });
  std::printf("scone cas: listening on https://%s:%d (state %s)\n", host.c_str(), bound,
              a.state_dir.c_str());
  std::fflush(stdout);
  server->Run();
  running = nullptr;
  return Status::Ok();
}

}  // namespace

void RegisterCasCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<CasArgs>();
  CLI::App* cas = app.add_subcommand("cas", "The configuration and attestation service");
  cas->require_subcommand(1);
  CLI::App* serve = cas->add_subcommand("serve", "Serve CAS's HTTPS API (mutual TLS)");
  serve->add_option("--state", args->state_dir, "State directory (database, keys)")->required();
  serve->add_option("--listen", args->listen, "HOST:PORT (port 0: any free port)");
  serve->callback([&action, args] { action = [args] { return Serve(*args); }; });
  CLI::App* start = cas->add_subcommand("start", "Start this user's local CAS (if not running)");
  start->callback([&action] {
    action = [] {
      SCONE_ASSIGN_OR_RETURN(std::string address, StartLocalCas());
      std::printf("local CAS at %s\n", address.c_str());
      return Status::Ok();
    };
  });
  CLI::App* stop = cas->add_subcommand("stop", "Stop this user's local CAS");
  stop->callback([&action] { action = [] { return StopLocalCas(); }; });
}

}  // namespace scone::cli
