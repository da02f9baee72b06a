// The Swarm side of a stack, through the engine's client (image/docker_client.h): whether the
// node is a swarm manager, where containers reach the host, deploying and removing a stack and
// waiting (bounded, polled) until its services, containers and networks are gone.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "image/docker_client.h"

namespace scone::stack {

// OK if this engine is an active swarm manager; else says how to make it one.
Status CheckSwarm(const image::DockerClient& docker);

// The address containers on a stack's overlay networks reach this host at: the gateway of
// Swarm's docker_gwbridge.
Result<std::string> HostAddressForContainers(const image::DockerClient& docker);

bool StackExists(const image::DockerClient& docker, const std::string& stack);
// The stack's services by name (STACK_SERVICE).
Result<std::vector<std::string>> StackServices(const image::DockerClient& docker,
                                               const std::string& stack);

// docker stack deploy, images used as they are in the local engine (no registry).
Status DeployStack(const image::DockerClient& docker, const std::string& compose_file,
                   const std::string& stack);

// docker stack rm, then waits until no service, container or network of the stack is left.
// `found` (if given): whether any was there before.
Status RemoveStack(const image::DockerClient& docker, const std::string& stack,
                   int timeout_seconds, bool* found = nullptr);

}  // namespace scone::stack
