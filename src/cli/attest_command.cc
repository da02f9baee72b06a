// `scone las serve|platform-key` (the sim platform's local attestation service) and
// `scone attest verify` (checks evidence against a platform key and a policy).
#include <cstdio>

#include "attest/evidence.h"
#include "attest/las.h"
#include "attest/sim/sim_platform.h"
#include "cli/command.h"
#include "cli/runtime_library.h"
#include "os/file.h"

namespace scone::cli {
namespace {

struct LasArgs {
  std::string state_dir;
  std::string socket;
  std::vector<uid_t> allowed_uids;
};

struct VerifyArgs {
  std::string evidence;
  std::string platform_key;
  std::vector<std::string> mrenclaves;
  std::vector<std::string> tolerate;
  std::string report_data;
};

volatile bool las_stop = false;

Result<attest::sim::SimPlatform> Platform(const std::string& state_dir) {
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(state_dir, 0700));
  return attest::sim::SimPlatform::OpenOrCreate(state_dir + "/platform.key");
}

Status Serve(const LasArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto platform, Platform(a.state_dir));
  SCONE_ASSIGN_OR_RETURN(std::string runtime, RuntimeLibrary());
  OnTerminationSignals([](int) { las_stop = true; });
  attest::LasOptions options;
  options.allowed_uids = a.allowed_uids;
  options.on_listening = [&] {
    std::printf("scone las: listening on %s; sim platform key %s (mode sim: no hardware protection)\n",
                a.socket.c_str(), ToHex(platform.platform_key()).c_str());
    std::fflush(stdout);
  };
  return attest::ServeLas(a.socket, platform, runtime, &las_stop, options);
}

Status PrintKey(const LasArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto platform, Platform(a.state_dir));
  std::printf("%s\n", ToHex(platform.platform_key()).c_str());
  return Status::Ok();
}

template <typename T>
Result<T> FixedHex(const std::string& text, const char* what) {
  auto out = FromHexArray<T{}.size()>(text);
  if (!out.ok()) return InvalidArgument(std::string(what) + " must be " + std::to_string(T{}.size() * 2) + " hex digits");
  return *out;
}

Status Verify(const VerifyArgs& a) {
  auto bytes = FromHex(a.evidence);
  if (!bytes.ok()) return InvalidArgument("--evidence must be hex");
  SCONE_ASSIGN_OR_RETURN(attest::Evidence e, attest::Evidence::Decode(*bytes));
  SCONE_ASSIGN_OR_RETURN(crypto::PublicKey key, FixedHex<crypto::PublicKey>(a.platform_key, "--platform-key"));
  attest::AttestationPolicy policy;
  for (const std::string& m : a.mrenclaves) {
    SCONE_ASSIGN_OR_RETURN(crypto::Hash h, FixedHex<crypto::Hash>(m, "--mrenclave"));
    policy.mrenclaves.push_back(h);
  }
  policy.tolerate = a.tolerate;
  attest::ReportData data{};
  if (a.report_data.empty()) {
    crypto::Hash h = crypto::Sha256({AsBytes("scone-print-evidence")});
    std::copy(h.begin(), h.end(), data.begin());
  } else {
    SCONE_ASSIGN_OR_RETURN(data, FixedHex<attest::ReportData>(a.report_data, "--report-data"));
  }
  SCONE_RETURN_IF_ERROR(attest::VerifyEvidence(e, {key}, data, policy));
  std::printf("evidence verified: mode %s, measurement %s\n", e.report.mode.c_str(),
              ToHex(e.report.measurement).c_str());
  return Status::Ok();
}

}  // namespace

void RegisterAttestCommands(CLI::App& app, Action& action) {
  auto las_args = std::make_shared<LasArgs>();
  CLI::App* las = app.add_subcommand("las", "Local attestation service (sim platform)");
  las->require_subcommand(1);
  CLI::App* serve = las->add_subcommand("serve", "Serve attestation requests on a unix socket");
  serve->add_option("--state", las_args->state_dir, "State directory (platform key)")->required();
  serve->add_option("--socket", las_args->socket, "Unix socket path")->required();
  serve->add_option("--allow-uid", las_args->allowed_uids,
                    "Another user whose processes may ask (repeatable; default: LAS's own user and root, socket 0600)");
  serve->callback([&action, las_args] { action = [las_args] { return Serve(*las_args); }; });
  CLI::App* key = las->add_subcommand("platform-key", "Print the platform's public key (hex)");
  key->add_option("--state", las_args->state_dir, "State directory (platform key)")->required();
  key->callback([&action, las_args] { action = [las_args] { return PrintKey(*las_args); }; });

  auto verify_args = std::make_shared<VerifyArgs>();
  CLI::App* attest = app.add_subcommand("attest", "Evidence");
  attest->require_subcommand(1);
  CLI::App* verify = attest->add_subcommand("verify", "Verify evidence against a platform key and a policy");
  verify->add_option("--evidence", verify_args->evidence, "Evidence (hex)")->required();
  verify->add_option("--platform-key", verify_args->platform_key, "Trusted platform key (hex)")->required();
  verify->add_option("--mrenclave", verify_args->mrenclaves, "Accepted measurement (repeatable)")->required();
  verify->add_option("--tolerate", verify_args->tolerate, "Tolerate: sim, debug-mode");
  verify->add_option("--report-data", verify_args->report_data, "Expected report data (128 hex digits)");
  verify->callback([&action, verify_args] { action = [verify_args] { return Verify(*verify_args); }; });
}

}  // namespace scone::cli
