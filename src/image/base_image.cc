#include "image/base_image.h"

#include <filesystem>

#include "image/apt_mirror.h"
#include "image/progress.h"
#include "image/subprocess.h"
#include "image/temp_dir.h"

namespace scone::image {

Result<std::string> EnsureBaseImage(const DockerClient& docker, const std::string& given_mirror, bool quiet) {
  if (docker.ImageExists(kBaseImage)) return std::string(kBaseImage);
  std::string mirror = given_mirror;
  if (mirror.empty()) {
    SCONE_ASSIGN_OR_RETURN(mirror, HostDebianMirror());
  }
  Progress progress(quiet, 2);
  SCONE_ASSIGN_OR_RETURN(TempDir work, TempDir::Create("scone-base"));
  const std::string rootfs = work.path() + "/rootfs";
  progress.Step("bootstrapping Debian 12 (minbase) from " + mirror);
  ProcessOptions options;
  options.stdout_mode = quiet ? ProcessOptions::Output::kDiscard : ProcessOptions::Output::kToFd;
  options.stdout_fd = 2;
  SCONE_RETURN_IF_ERROR(
      RunChecked({"debootstrap", "--variant=minbase", "bookworm", rootfs, mirror}, options).status());
  // apt's downloaded packages are not part of the image.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(rootfs + "/var/cache/apt/archives", ec)) {
    if (e.is_regular_file()) std::filesystem::remove(e.path(), ec);
  }
  progress.Step(std::string("importing it as ") + kBaseImage);
  SCONE_RETURN_IF_ERROR(docker.ImportRootfs(rootfs, kBaseImage, {"CMD [\"/bin/bash\"]"}));
  return std::string(kBaseImage);
}

}  // namespace scone::image
