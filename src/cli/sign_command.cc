// `scone sign PROGRAM --key SIGNER.pem`: the SIGSTRUCT analogue. Measures PROGRAM as the
// runtime will, and signs (measurement, product id, security version) with the signer key, so
// that policies can name the signer (MRSIGNER) instead of every measurement.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "attest/measurement.h"
#include "attest/sigstruct.h"
#include "cli/command.h"
#include "cli/runtime_library.h"
#include "os/file.h"

namespace scone::cli {
namespace {

struct SignArgs {
  std::string program;
  std::string key_file;
  std::string output;
  uint16_t product_id = 0;
  uint16_t svn = 0;
};

Status Sign(const SignArgs& a) {
  SCONE_ASSIGN_OR_RETURN(bool has_key, os::Exists(a.key_file));
  if (!has_key) {
    SCONE_RETURN_IF_ERROR(crypto::SigningKey::Generate().Save(a.key_file));
    std::fprintf(stderr, "scone: created signer key %s (mode 0600)\n", a.key_file.c_str());
  }
  SCONE_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::SigningKey::Load(a.key_file));
  SCONE_ASSIGN_OR_RETURN(std::string runtime, RuntimeLibrary());
  SCONE_ASSIGN_OR_RETURN(attest::ImageDescription d, attest::DescribeFromLoader(a.program, runtime));
  attest::SigStruct s = attest::SigStruct::Sign(key, d.Measurement(), a.product_id, a.svn);
  std::string out = a.output.empty() ? a.program.substr(a.program.rfind('/') + 1) + ".sig" : a.output;
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(out, s.Encode(), 0644));
  std::printf("mrenclave %s\nmrsigner %s\nisvprodid %u\nisvsvn %u\nsignature %s\n",
              ToHex(s.measurement).c_str(), ToHex(s.MrSigner()).c_str(), s.product_id, s.svn,
              out.c_str());
  return Status::Ok();
}

}  // namespace

void RegisterSignCommand(CLI::App& app, Action& action) {
  auto args = std::make_shared<SignArgs>();
  CLI::App* sign = app.add_subcommand(
      "sign", "Sign PROGRAM's measurement with a signer key (product id, security version)");
  sign->add_option("PROGRAM", args->program, "A dynamically linked program (a path)")->required();
  sign->add_option("--key", args->key_file, "Signer key (Ed25519 PEM, mode 0600); generated if absent")
      ->required();
  sign->add_option("--product-id", args->product_id, "Product id (ISVPRODID analogue)");
  sign->add_option("--svn", args->svn, "Security version (ISVSVN analogue)");
  sign->add_option("--output,-o", args->output, "Signature file (default: PROGRAM's name + .sig)");
  sign->callback([&action, args] { action = [args] { return Sign(*args); }; });
}

}  // namespace scone::cli
