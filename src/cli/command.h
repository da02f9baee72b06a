// The `scone` command line: each subcommand family registers itself on the CLI11 app and
// leaves the action to run in `action`; only main() turns the action's Status into a message
// and an exit code.
#pragma once

#include <signal.h>

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace scone::cli {

using Action = std::function<Status()>;

void RegisterVolumeCommands(CLI::App& app, Action& action);
void RegisterRunCommand(CLI::App& app, Action& action);
void RegisterMeasureCommand(CLI::App& app, Action& action);
void RegisterSignCommand(CLI::App& app, Action& action);
void RegisterCasCommands(CLI::App& app, Action& action);
void RegisterSessionCommands(CLI::App& app, Action& action);
void RegisterAttestCommands(CLI::App& app, Action& action);
void RegisterConsoleCommands(CLI::App& app, Action& action);
void RegisterImageCommands(CLI::App& app, Action& action);
// After RegisterCasCommands: adds `scone cas split`.
void RegisterStackCommands(CLI::App& app, Action& action);

// Prints the certificate (PEM) of the CA that certifies session `session`'s services: what a
// client outside the session verifies them with (`scone session ca`, `scone stack ca`).
Status PrintSessionCa(const std::string& cas, const std::string& cas_cert, const std::string& session);

// --cas and --cas-cert, for commands that talk to CAS (default: the local CAS).
inline void AddCasOptions(CLI::App* cmd, std::string* cas, std::string* cas_cert) {
  cmd->add_option("--cas", *cas, "CAS address https://HOST:PORT (default: the local CAS)");
  cmd->add_option("--cas-cert", *cas_cert, "Certificate CAS must present (with --cas)");
}

// For servers in the foreground: SIGPIPE ignored, `handler` on SIGTERM and SIGINT (without
// SA_RESTART, so a blocking accept() returns and the serving loop can end).
inline void OnTerminationSignals(void (*handler)(int)) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error (CLI11's), 3 a check
// found damage (verify).
inline constexpr int kExitFailure = 1;
inline constexpr int kExitDamaged = 3;

// Arguments after a `--` that follows `scone run`: the program's command line, kept away from
// the option parser (CLI11 would try to match them).
std::vector<std::string>& TrailingArguments();

// A failure whose report was already printed (verify's damage lines): main() only sets the exit code.
Status ReportedDamage(std::string summary);
bool IsReportedDamage(const Status& status);

}  // namespace scone::cli
