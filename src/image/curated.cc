#include "image/curated.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "image/base_image.h"
#include "image/progress.h"
#include "image/temp_dir.h"
#include "os/file.h"

namespace scone::image {

const std::vector<CuratedImage>& CuratedCatalogue() {
  static const auto* catalogue = new std::vector<CuratedImage>{
      {"python", "python3 (Debian 12's 3.11); /data encrypted", {"python3"}, {}, {"python3"}, {"/data"}},
      {"redis", "redis-server, its data in /data (encrypted)", {"redis-server"}, {},
       {"redis-server", "--dir", "/data", "--protected-mode", "no", "--save", "60", "1"}, {"/data"}},
      {"nginx", "nginx in the foreground; /srv/data encrypted", {"nginx"},
       {"echo 'daemon off;' >> /etc/nginx/nginx.conf"}, {"nginx"}, {"/srv/data"}},
      {"sqlite", "sqlite3 with its database in /data (encrypted)", {"sqlite3"}, {},
       {"sqlite3", "/data/db.sqlite"}, {"/data"}},
  };
  return *catalogue;
}

const CuratedImage* FindCurated(const std::string& name) {
  for (const CuratedImage& c : CuratedCatalogue()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

namespace {

std::string NativeDockerfile(const CuratedImage& c) {
  std::string packages;
  for (const std::string& p : c.packages) packages += " " + p;
  std::string out = std::string("FROM ") + kBaseImage + "\n";
  out += "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends" + packages +
         " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb\n";
  for (const std::string& s : c.setup) out += "RUN " + s + "\n";
  out += "CMD " + nlohmann::json(c.cmd).dump() + "\n";
  return out;
}

}  // namespace

Result<SconifyResult> BuildCurated(const DockerClient& docker, const CuratedImage& c, SconifyOptions sconify,
                                   const std::string& mirror, bool quiet) {
  Progress progress(quiet, 3);
  progress.Step(std::string("base image ") + kBaseImage);
  SCONE_RETURN_IF_ERROR(EnsureBaseImage(docker, mirror, quiet).status());
  progress.Step("building " + NativeImageName(c.name) + " from Debian's packages");
  SCONE_ASSIGN_OR_RETURN(TempDir context, TempDir::Create("scone-curated"));
  std::string dockerfile = NativeDockerfile(c);
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(context.path() + "/Dockerfile", AsBytes(dockerfile), 0644));
  SCONE_RETURN_IF_ERROR(docker.Build(context.path(), NativeImageName(c.name)));
  progress.Step("sconifying it as " + CuratedImageName(c.name));
  sconify.from = NativeImageName(c.name);
  sconify.to = CuratedImageName(c.name);
  sconify.fs_dirs = c.fs_dirs;
  if (sconify.service_name.empty()) sconify.service_name = c.name;
  return Sconify(docker, sconify, quiet);
}

}  // namespace scone::image
