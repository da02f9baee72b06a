#include "stack/swarm.h"

#include <chrono>
#include <sstream>
#include <thread>

namespace scone::stack {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::string Trim(const std::string& s) {
  size_t end = s.find_last_not_of(" \n\t");
  return end == std::string::npos ? "" : s.substr(0, end + 1);
}

// What of the stack is left, by kind, as the engine lists it.
struct Leftovers {
  std::vector<std::string> services, containers, networks;

  bool empty() const { return services.empty() && containers.empty() && networks.empty(); }
  bool OnlyNetworks() const { return services.empty() && containers.empty() && !networks.empty(); }

  // "2 services, 1 container"
  std::string Describe() const {
    std::string text;
    for (const auto& [what, ids] : {std::pair{"service", &services}, std::pair{"container", &containers},
                                    std::pair{"network", &networks}}) {
      if (ids->empty()) continue;
      text += (text.empty() ? "" : ", ") + std::to_string(ids->size()) + " " + what +
              (ids->size() > 1 ? "s" : "");
    }
    return text;
  }
};

Result<Leftovers> ListLeftovers(const image::DockerClient& docker, const std::string& stack) {
  const std::string filter = "label=com.docker.stack.namespace=" + stack;
  Leftovers left;
  for (const auto& [ids, args] : std::vector<std::pair<std::vector<std::string>*, std::vector<std::string>>>{
           {&left.services, {"service", "ls", "-q", "--filter", filter}},
           {&left.containers, {"ps", "-a", "-q", "--filter", filter}},
           {&left.networks, {"network", "ls", "-q", "--filter", filter}}}) {
    SCONE_ASSIGN_OR_RETURN(std::string out, docker.Run(args));
    *ids = Lines(out);
  }
  return left;
}

}  // namespace

Status CheckSwarm(const image::DockerClient& docker) {
  auto state =
      docker.Run({"info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"});
  if (!state.ok()) return state.status().Annotate("the Docker engine does not answer");
  if (Trim(*state) != "active true") {
    return Unsupported(
        "this Docker engine is not a swarm manager (" + Trim(*state) +
        "): run docker swarm init (e.g. --advertise-addr 127.0.0.1 for a single node)");
  }
  return Status::Ok();
}

Result<std::string> HostAddressForContainers(const image::DockerClient& docker) {
  // The engine creates docker_gwbridge shortly after `docker swarm init` returns, not before:
  // a deploy right after the init waits for it (bounded).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto inspect = [&] {
    return docker.Run({"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
                       "docker_gwbridge"});
  };
  auto out = inspect();
  while (!out.ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    out = inspect();
  }
  if (!out.ok()) return out.status().Annotate("no docker_gwbridge network after 30 s (is this a swarm node?)");
  std::istringstream in(*out);
  std::string gateway;
  in >> gateway;
  if (gateway.empty() || gateway.find(':') != std::string::npos) {
    return Internal("docker_gwbridge has no IPv4 gateway ('" + Trim(*out) + "')");
  }
  return gateway;
}

bool StackExists(const image::DockerClient& docker, const std::string& stack) {
  auto out = docker.Run({"stack", "ls", "--format", "{{.Name}}"});
  if (!out.ok()) return false;
  for (const std::string& name : Lines(*out)) {
    if (name == stack) return true;
  }
  return false;
}

Result<std::vector<std::string>> StackServices(const image::DockerClient& docker,
                                               const std::string& stack) {
  SCONE_ASSIGN_OR_RETURN(std::string out,
                         docker.Run({"service", "ls", "--format", "{{.Name}}", "--filter",
                                     "label=com.docker.stack.namespace=" + stack}));
  return Lines(out);
}

Status DeployStack(const image::DockerClient& docker, const std::string& compose_file,
                   const std::string& stack) {
  return docker.RunShowingProgress(
      {"stack", "deploy", "--resolve-image", "never", "--compose-file", compose_file, stack});
}

Status RemoveStack(const image::DockerClient& docker, const std::string& stack,
                   int timeout_seconds, bool* found) {
  if (found != nullptr) {
    SCONE_ASSIGN_OR_RETURN(Leftovers before, ListLeftovers(docker, stack));
    *found = !before.empty();
  }
  // Always: a stack whose deploy failed may hold only a network, which `stack ls` does not list.
  // `stack rm` fails when a network is still "in use by task": the engine stops a removed
  // service's tasks after the call returns. Such a network is removed again once its tasks are
  // gone, so only what is still left at the deadline is an error.
  Status removal = docker.RunShowingProgress({"stack", "rm", stack});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  Leftovers left;
  while (true) {
    SCONE_ASSIGN_OR_RETURN(left, ListLeftovers(docker, stack));
    if (left.empty()) return Status::Ok();
    if (std::chrono::steady_clock::now() > deadline) break;
    if (left.OnlyNetworks()) {
      for (const std::string& id : left.networks) (void)docker.Succeeds({"network", "rm", id});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string error = "stack " + stack + " still has " + left.Describe() + " after " +
                      std::to_string(timeout_seconds) + " s";
  if (!removal.ok()) error += " (" + removal.message() + ")";
  return Internal(error);
}

}  // namespace scone::stack
