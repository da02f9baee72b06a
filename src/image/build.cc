#include "image/build.h"

#include <sys/stat.h>

#include "image/progress.h"

namespace scone::image {

std::string NativeTagOf(const std::string& image) {
  // The tag (or digest) begins after the last ':' or '@' of the last path component; a ':'
  // before the last '/' is a registry's port.
  size_t slash = image.rfind('/');
  size_t start = slash == std::string::npos ? 0 : slash + 1;
  size_t tag = image.find_first_of(":@", start);
  if (tag == std::string::npos) return image + "-native";
  return image.substr(0, tag) + "-native" + image.substr(tag);
}

namespace {

Status CheckInputs(const BuildOptions& o) {
  struct stat st;
  if (stat(o.context_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgument("build context " + o.context_dir + " is not a directory");
  }
  std::string dockerfile = o.dockerfile.empty() ? o.context_dir + "/Dockerfile" : o.dockerfile;
  if (stat(dockerfile.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return InvalidArgument((o.dockerfile.empty() ? "no Dockerfile in the build context: " : "-f: no such file: ") +
                           dockerfile);
  }
  for (const std::string& a : o.build_args) {
    if (a.empty() || a.front() == '=') return InvalidArgument("--build-arg " + a + ": expected NAME[=VALUE]");
  }
  if (o.sconify.to.empty()) return InvalidArgument("give -t IMAGE, the secure image to build");
  return Status::Ok();
}

}  // namespace

Result<SconifyResult> BuildAndSconify(const DockerClient& docker, BuildOptions o, bool quiet) {
  SCONE_RETURN_IF_ERROR(CheckInputs(o));
  if (o.native_tag.empty()) o.native_tag = NativeTagOf(o.sconify.to);
  if (o.native_tag == o.sconify.to) return InvalidArgument("--native-tag must differ from -t " + o.sconify.to);
  Progress progress(quiet, 2);
  progress.Step("building " + o.native_tag + " from " + (o.dockerfile.empty() ? "Dockerfile" : o.dockerfile));
  Status built = docker.Build(DockerClient::BuildRequest{.context_dir = o.context_dir,
                                                          .dockerfile = o.dockerfile,
                                                          .tag = o.native_tag,
                                                          .build_args = o.build_args,
                                                          .no_cache = o.no_cache});
  if (!built.ok()) return built.Annotate("docker build");
  progress.Step("sconifying " + o.native_tag + " into " + o.sconify.to);
  o.sconify.from = o.native_tag;
  return Sconify(docker, o.sconify, quiet);
}

}  // namespace scone::image
