// `scone image ...`: the base image, curated images and sconify; and `scone build` (docs/docker.md). The work is
// in src/image; this file parses options and prints results (progress on stderr, results on
// stdout).
#include <sys/stat.h>

#include <cstdio>

#include "cli/command.h"
#include "cli/runtime_library.h"
#include "image/base_image.h"
#include "image/build.h"
#include "image/curated.h"
#include "image/docker_client.h"
#include "image/sconify.h"
#include "os/file.h"

namespace scone::cli {
namespace {

struct ImageArgs {
  bool quiet = false;
  std::string mirror;
  std::string curated_name;
  std::string session_out;
  std::string las_addr = image::kDefaultLasPath;
  image::SconifyOptions sconify;
  image::BuildOptions build;  // scone build (its .sconify is taken from `sconify` above)
};

// The session goes to FILE, else to stdout; the measurement and config id to stderr as a note.
Status Report(const image::SconifyResult& r, const std::string& session_out, bool quiet) {
  struct stat st;
  if (session_out.empty() || session_out == "-") {
    std::fputs(r.session_yaml.c_str(), stdout);
  } else if (stat(session_out.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return InvalidArgument("--session-out " + session_out + " is not a regular file (give - for stdout)");
  } else {
    // Its owner's alone: it holds the values --env gave (helper's finding: world-readable), as
    // `scone cas split` keeps its session file.
    SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(session_out, AsBytes(r.session_yaml), 0600));
  }
  if (!quiet) {
    std::fprintf(stderr, "scone: SCONE_CONFIG_ID=%s, measurement %s%s%s\n", r.config_id.c_str(),
                 ToHex(r.measurement).c_str(), session_out.empty() ? "" : "; session in ", session_out.c_str());
  }
  return Status::Ok();
}

Status Base(const ImageArgs& a) {
  image::DockerClient docker(a.quiet);
  SCONE_ASSIGN_OR_RETURN(std::string name, image::EnsureBaseImage(docker, a.mirror, a.quiet));
  if (!a.quiet) std::printf("%s\n", name.c_str());
  return Status::Ok();
}

Status CuratedList() {
  image::DockerClient docker(true);
  std::printf("%-8s %-24s %-24s %s\n", "NAME", "NATIVE", "CURATED", "CONTENT");
  for (const image::CuratedImage& c : image::CuratedCatalogue()) {
    auto mark = [&](const std::string& image) { return image + (docker.ImageExists(image) ? "" : " (not built)"); };
    std::printf("%-8s %-24s %-24s %s\n", c.name.c_str(), mark(image::NativeImageName(c.name)).c_str(),
                mark(image::CuratedImageName(c.name)).c_str(), c.description.c_str());
  }
  return Status::Ok();
}

Status CuratedBuild(ImageArgs a) {
  const image::CuratedImage* c = image::FindCurated(a.curated_name);
  if (c == nullptr) {
    std::string names;
    for (const auto& e : image::CuratedCatalogue()) names += (names.empty() ? "" : ", ") + e.name;
    return NotFound("no curated image '" + a.curated_name + "' (there are: " + names + ")");
  }
  SCONE_ASSIGN_OR_RETURN(a.sconify.runtime_library, RuntimeLibrary());
  a.sconify.las_addr = a.las_addr;
  image::DockerClient docker(a.quiet);
  SCONE_ASSIGN_OR_RETURN(image::SconifyResult r, image::BuildCurated(docker, *c, a.sconify, a.mirror, a.quiet));
  std::string out = a.session_out.empty() ? c->name + "-session.yml" : a.session_out;
  return Report(r, out, a.quiet);
}

Status Sconify(ImageArgs a) {
  SCONE_ASSIGN_OR_RETURN(a.sconify.runtime_library, RuntimeLibrary());
  a.sconify.las_addr = a.las_addr;
  image::DockerClient docker(a.quiet);
  SCONE_ASSIGN_OR_RETURN(image::SconifyResult r, image::Sconify(docker, a.sconify, a.quiet));
  return Report(r, a.session_out, a.quiet);
}

Status Build(ImageArgs a) {
  SCONE_ASSIGN_OR_RETURN(a.sconify.runtime_library, RuntimeLibrary());
  a.sconify.las_addr = a.las_addr;
  a.build.sconify = a.sconify;
  image::DockerClient docker(a.quiet);
  SCONE_ASSIGN_OR_RETURN(image::SconifyResult r, image::BuildAndSconify(docker, a.build, a.quiet));
  return Report(r, a.session_out, a.quiet);
}

// sconify's own options, shared by `scone image sconify` and `scone build`.
void AddSconifyOptions(CLI::App* cmd, image::SconifyOptions* o) {
  cmd->add_option("--binary", o->binary, "The program that must run first (checked against the command)");
  cmd->add_option("--fs-dir", o->fs_dirs, "A directory to encrypt (repeatable; must be empty in the image)");
  cmd->add_option("--service-name", o->service_name, "The service's name in the session (default: the image's name)");
  cmd->add_option("--name", o->session_name, "The session's name (default: the service name)");
  cmd->add_option("--env", o->env, "KEY=VALUE for the session's environment (repeatable; $$SCONE::s$$ for secrets)");
  cmd->add_option("--command", o->command, "The command to run instead of ENTRYPOINT and CMD");
}

void AddSettings(CLI::App* cmd, ImageArgs* a) {
  cmd->add_option("--cas", a->sconify.cas_addr,
                  "CAS's attestation address HOST[:PORT], put in the image (default: SCONE_CAS_ADDR at docker run)");
  cmd->add_option("--las-addr", a->las_addr, "LAS's socket inside the container (default " +
                                                 std::string(image::kDefaultLasPath) + ")");
  cmd->add_option("--session-out", a->session_out, "Write the session here (sconify: default stdout)");
  cmd->add_flag("--quiet,-q", a->quiet, "No progress output");
}

}  // namespace

void RegisterImageCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<ImageArgs>();
  CLI::App* img = app.add_subcommand("image", "Build secure Docker images: base, curated, sconify");
  img->require_subcommand(1);

  CLI::App* base = img->add_subcommand("base", std::string("Build the Debian 12 base image (") + image::kBaseImage +
                                                   ") with debootstrap, unless it exists");
  base->add_option("--mirror", args->mirror, "Debian mirror (default: the one apt uses)");
  base->add_flag("--quiet,-q", args->quiet, "No progress output");
  base->callback([&action, args] { action = [args] { return Base(*args); }; });

  CLI::App* curated = img->add_subcommand("curated", "Curated images: scone-native/NAME and scone-curated/NAME");
  curated->require_subcommand(1);
  CLI::App* list = curated->add_subcommand("list", "The curated images and whether they are built");
  list->callback([&action] { action = [] { return CuratedList(); }; });
  CLI::App* build = curated->add_subcommand("build", "Build scone-native/NAME and scone-curated/NAME (and the base)");
  build->add_option("NAME", args->curated_name, "python, redis, nginx or sqlite")->required();
  build->add_option("--mirror", args->mirror, "Debian mirror for the base (default: the one apt uses)");
  AddSettings(build, args.get());
  build->callback([&action, args] { action = [args] { return CuratedBuild(*args); }; });

  CLI::App* sconify = img->add_subcommand(
      "sconify", "Turn an image into a secure one: its ENTRYPOINT and CMD run shielded and attested, each "
                 "--fs-dir an encrypted volume; writes the session it needs");
  image::SconifyOptions& o = args->sconify;
  sconify->add_option("--from", o.from, "The image to sconify")->required();
  sconify->add_option("--to", o.to, "The secure image to build")->required();
  AddSconifyOptions(sconify, &o);
  AddSettings(sconify, args.get());
  sconify->callback([&action, args] { action = [args] { return Sconify(*args); }; });

  // `scone build` is docker build + sconify: a top-level command, as `docker build` is.
  CLI::App* docker_build = app.add_subcommand(
      "build", "Build a secure image from a Dockerfile: docker build into IMAGE's -native tag, then sconify into IMAGE");
  image::BuildOptions& b = args->build;
  docker_build->add_option("CONTEXT", b.context_dir, "The build context (default: .)");
  docker_build->add_option("-f,--file", b.dockerfile, "The Dockerfile (default: CONTEXT/Dockerfile)");
  docker_build->add_option("-t,--tag", o.to, "The secure image to build")->required();
  docker_build->add_option("--native-tag", b.native_tag, "The native image docker builds (default: IMAGE's name + -native)");
  docker_build->add_option("--build-arg", b.build_args, "NAME=VALUE for docker build (repeatable; not for secrets: they stay in the image's history)");
  docker_build->add_flag("--no-cache", b.no_cache, "Build without the engine's cache");
  AddSconifyOptions(docker_build, &o);
  AddSettings(docker_build, args.get());
  docker_build->callback([&action, args] { action = [args] { return Build(*args); }; });
}

}  // namespace scone::cli
