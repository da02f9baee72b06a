// scone: build and run secure containers. Subcommands are registered per family (one file
// each); this file only parses, runs the chosen action and maps its Status to an exit code.
#include <openssl/crypto.h>

#include <cstdio>
#include <string>

#include "cli/command.h"
#include "common/parallel.h"

namespace scone::cli {

Status ReportedDamage(std::string summary) {
  return Status(Code::kDataCorrupted, "damage reported: " + std::move(summary), -1);
}

std::vector<std::string>& TrailingArguments() {
  static std::vector<std::string> args;
  return args;
}

bool IsReportedDamage(const Status& status) {
  return status.code() == Code::kDataCorrupted && status.sys_errno() == -1;
}

}  // namespace scone::cli

int main(int argc, char** argv) {
  CLI::App app{"scone: build and run secure containers whose files, traffic, console and "
               "secrets stay confidential even when root on the host is hostile"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("scone ") + SCONE_VERSION);
  scone::cli::Action action;
  scone::cli::RegisterVolumeCommands(app, action);
  scone::cli::RegisterRunCommand(app, action);
  scone::cli::RegisterMeasureCommand(app, action);
  scone::cli::RegisterSignCommand(app, action);
  scone::cli::RegisterCasCommands(app, action);
  scone::cli::RegisterSessionCommands(app, action);
  scone::cli::RegisterAttestCommands(app, action);
  scone::cli::RegisterConsoleCommands(app, action);
  scone::cli::RegisterImageCommands(app, action);
  scone::cli::RegisterStackCommands(app, action);
  // `scone run [OPTIONS] -- PROGRAM ARGS...`: the program's arguments never reach the parser.
  if (argc > 1 && std::string(argv[1]) == "run") {
    for (int i = 2; i < argc; ++i) {
      if (std::string(argv[i]) != "--") continue;
      for (int j = i + 1; j < argc; ++j) scone::cli::TrailingArguments().push_back(argv[j]);
      argc = i;
      break;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help, version or the usage error
    return code == 0 ? 0 : 2;
  }
  if (!action) return 0;
  scone::Status status = action();
  // OpenSSL's state is freed here, deterministically, not by exit handlers whose order depends
  // on which libraries are loaded; nothing uses OpenSSL after this point.
  scone::StopParallelHelper();
  OPENSSL_cleanup();
  std::fflush(stdout);  // reports before the summary on stderr
  if (status.ok()) return 0;
  if (scone::cli::IsReportedDamage(status)) {
    std::fprintf(stderr, "scone: %s\n", status.message().c_str());
    return scone::cli::kExitDamaged;
  }
  std::fprintf(stderr, "scone: %s\n", status.message().c_str());
  return scone::cli::kExitFailure;
}
