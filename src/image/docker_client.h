// The Docker engine, through its own command-line client run as a subprocess with an argument
// vector (no API client, no shell). The client is `$SCONE_DOCKER`, else `docker` on PATH.
// Output of builds goes to our stderr unless quiet.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "image/image_config.h"

namespace scone::image {

class DockerClient {
 public:
  // The engine's progress output reaches stderr as image::Progress's lines do (on a terminal,
  // without `quiet`); errors always reach it.
  explicit DockerClient(bool quiet);

  bool ImageExists(const std::string& image) const;
  // The image's id, or "" if it does not exist.
  std::string ImageId(const std::string& image) const;
  // Removes an image by id if nothing uses it (errors ignored: a replaced image still in use stays).
  void RemoveIfUnused(const std::string& id) const;
  Result<ImageConfig> Inspect(const std::string& image) const;
  // docker build -t TAG CONTEXT (Dockerfile in CONTEXT).
  Status Build(const std::string& context_dir, const std::string& tag) const;
  // docker build [-f DOCKERFILE] [--build-arg K=V]... [--no-cache] -t TAG CONTEXT.
  struct BuildRequest {
    std::string context_dir;
    std::string dockerfile;                // "" : CONTEXT/Dockerfile
    std::string tag;
    std::vector<std::string> build_args;   // K=V
    bool no_cache = false;
  };
  Status Build(const BuildRequest& request) const;
  // A root file system directory as a one-layer image: tar -C DIR -c . | docker import - TAG.
  Status ImportRootfs(const std::string& rootfs_dir, const std::string& tag,
                      const std::vector<std::string>& changes) const;
  // Runs `argv` in a throw-away container of `image` (no network, entrypoint argv[0]) with
  // `env` ("K=V") and read-only bind mounts ("HOST:CONTAINER"); returns its stdout. For running
  // an image's own code (its loader), which must never run on the host.
  Result<std::string> RunCapture(const std::string& image, const std::vector<std::string>& argv,
                                 const std::vector<std::string>& env, const std::vector<std::string>& mounts) const;
  // Unpacks the image's file system into `dir` (a stopped container, exported, removed).
  Status ExportRootfs(const std::string& image, const std::string& dir) const;

  // `docker ARGS...`: its stdout, or an error naming the command (its stderr passes through).
  Result<std::string> Run(const std::vector<std::string>& args) const;
  // `docker ARGS...` with its output discarded: whether it succeeded.
  bool Succeeds(const std::vector<std::string>& args) const;
  // `docker ARGS...` with its stdout on our stderr (progress), or discarded when quiet.
  Status RunShowingProgress(const std::vector<std::string>& args) const;

  const std::string& program() const { return program_; }

 private:

  std::string program_;
  bool quiet_;
};

}  // namespace scone::image
