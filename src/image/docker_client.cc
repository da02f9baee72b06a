#include "image/docker_client.h"

#include <stdlib.h>

#include "image/progress.h"
#include "image/subprocess.h"

namespace scone::image {

DockerClient::DockerClient(bool quiet) : quiet_(!Progress::ShowsProgress(quiet)) {
  const char* env = getenv("SCONE_DOCKER");
  program_ = env != nullptr && *env != '\0' ? env : "docker";
}

Result<std::string> DockerClient::Run(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {program_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunChecked(argv);
}

bool DockerClient::Succeeds(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {program_};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions options;
  options.stdout_mode = ProcessOptions::Output::kDiscard;
  options.stderr_discard = true;
  auto r = RunProcess(argv, options);
  return r.ok() && r->exit_code == 0;
}

Status DockerClient::RunShowingProgress(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {program_};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions options;
  options.stdout_mode = quiet_ ? ProcessOptions::Output::kDiscard : ProcessOptions::Output::kToFd;
  options.stdout_fd = 2;  // stdout stays for results
  return RunChecked(argv, options).status();
}

bool DockerClient::ImageExists(const std::string& image) const {
  return Succeeds({"image", "inspect", "--format", "{{.Id}}", image});
}

std::string DockerClient::ImageId(const std::string& image) const {
  ProcessOptions options;
  options.stderr_discard = true;
  auto r = RunProcess({program_, "image", "inspect", "--format", "{{.Id}}", image}, options);
  if (!r.ok() || r->exit_code != 0) return "";
  return r->output.substr(0, r->output.find('\n'));
}

void DockerClient::RemoveIfUnused(const std::string& id) const { (void)Succeeds({"image", "rm", id}); }

Result<ImageConfig> DockerClient::Inspect(const std::string& image) const {
  ProcessOptions options;
  options.stderr_discard = true;
  SCONE_ASSIGN_OR_RETURN(ProcessResult r, RunProcess({program_, "image", "inspect", image}, options));
  if (r.exit_code != 0) return NotFound("image " + image + " does not exist (docker image inspect failed)");
  return ParseInspect(r.output, image);
}

Status DockerClient::Build(const std::string& context_dir, const std::string& tag) const {
  BuildRequest request;
  request.context_dir = context_dir;
  request.tag = tag;
  return Build(request);
}

Status DockerClient::Build(const BuildRequest& r) const {
  std::vector<std::string> args = {"build"};
  if (quiet_) args.push_back("--quiet");
  if (!r.dockerfile.empty()) args.insert(args.end(), {"-f", r.dockerfile});
  for (const std::string& a : r.build_args) args.insert(args.end(), {"--build-arg", a});
  if (r.no_cache) args.push_back("--no-cache");
  args.insert(args.end(), {"-t", r.tag, r.context_dir});
  return RunShowingProgress(args);
}

Status DockerClient::ImportRootfs(const std::string& rootfs_dir, const std::string& tag,
                                  const std::vector<std::string>& changes) const {
  std::vector<std::string> import = {program_, "import"};
  for (const std::string& c : changes) import.insert(import.end(), {"--change", c});
  import.insert(import.end(), {"-", tag});
  ProcessOptions options;
  options.stdout_mode = ProcessOptions::Output::kDiscard;
  return RunPipeline({"tar", "--numeric-owner", "-C", rootfs_dir, "-c", "."}, import, options);
}

Result<std::string> DockerClient::RunCapture(const std::string& image, const std::vector<std::string>& argv,
                                             const std::vector<std::string>& env,
                                             const std::vector<std::string>& mounts) const {
  std::vector<std::string> args = {"run", "--rm", "--network", "none", "--entrypoint", argv.at(0)};
  for (const std::string& e : env) args.insert(args.end(), {"--env", e});
  for (const std::string& m : mounts) args.insert(args.end(), {"--volume", m + ":ro"});
  args.push_back(image);
  args.insert(args.end(), argv.begin() + 1, argv.end());
  return Run(args);
}

Status DockerClient::ExportRootfs(const std::string& image, const std::string& dir) const {
  // `docker create` needs a command only for images without one; it never runs.
  SCONE_ASSIGN_OR_RETURN(std::string created, Run({"create", "--entrypoint", "/", image}));
  std::string container = created.substr(0, created.find_first_of(" \n"));
  Status exported = RunPipeline({program_, "export", container},
                                {"tar", "--numeric-owner", "-C", dir, "-x"});
  ProcessOptions quiet;
  quiet.stdout_mode = ProcessOptions::Output::kDiscard;
  (void)RunProcess({program_, "rm", "-f", "-v", container}, quiet);  // -v: its anonymous volumes
  return exported.Annotate("export of image " + image);
}

}  // namespace scone::image
