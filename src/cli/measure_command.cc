// `scone measure PROGRAM`: the measurement (MRENCLAVE analogue) the runtime will compute for
// PROGRAM at start-up, from the dynamic loader's trace; the description first, the 64-digit
// value alone on the last line.
#include <unistd.h>

#include <cstdio>

#include "attest/measurement.h"
#include "cli/command.h"
#include "cli/runtime_library.h"

namespace scone::cli {
namespace {

Status Measure(const std::string& program_name) {
  SCONE_ASSIGN_OR_RETURN(std::string program, FindProgram(program_name));
  SCONE_ASSIGN_OR_RETURN(std::string runtime, RuntimeLibrary());
  SCONE_ASSIGN_OR_RETURN(attest::ImageDescription d, attest::DescribeFromLoader(program, runtime));
  std::printf("%s%s\n", d.Canonical().c_str(), ToHex(d.Measurement()).c_str());
  return Status::Ok();
}

}  // namespace

void RegisterMeasureCommand(CLI::App& app, Action& action) {
  auto program = std::make_shared<std::string>();
  CLI::App* measure = app.add_subcommand(
      "measure", "Print PROGRAM's measurement (MRENCLAVE analogue) as the runtime computes it");
  measure->add_option("PROGRAM", *program, "A dynamically linked program")->required();
  measure->callback([&action, program] { action = [program] { return Measure(*program); }; });
}

}  // namespace scone::cli
