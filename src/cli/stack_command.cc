// `scone stack deploy|ca|rm` and `scone cas split`: SCONE's extended stack files on Docker Swarm
// (docs/docker.md "Stacks"). The stack file is parsed and checked in full before anything is
// built or deployed; secure services' images are sconified (cached by source image and runtime);
// the stack's session goes to CAS and the translated Compose file to `docker stack deploy`.
//
// CAS and LAS run on the host (the local ones by default): LAS measures a container's process
// through /proc, which a Swarm service (no host pid namespace) cannot see; CAS's attestation port
// (never its REST API) also listens at the Docker gateway address, where containers on the
// stack's overlay networks reach the host.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cas/client.h"
#include "cli/command.h"
#include "cli/local_cas.h"
#include "cli/runtime_library.h"
#include "crypto/tls_identity.h"
#include "image/docker_client.h"
#include "image/progress.h"
#include "image/temp_dir.h"
#include "os/file.h"
#include "policy/session.h"
#include "stack/stack_file.h"
#include "stack/stack_images.h"
#include "stack/swarm.h"
#include "stack/translate.h"

namespace scone::cli {
namespace {

namespace fsys = std::filesystem;

constexpr int kRemoveTimeoutSeconds = 120;

struct StackArgs {
  std::string file;
  std::string name;
  std::string out_dir = ".";
  std::string cas;
  std::string cas_cert;
  std::string cas_addr;  // with --cas: CAS's attestation port as containers reach it
  bool quiet = false;
  bool keep_data = false;  // rm: keep the stack's volumes and its session (their keys)
};

Status CheckStackName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 48 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (char c : name)
    ok = ok && (std::islower(static_cast<unsigned char>(c)) ||
                std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_');
  return ok ? Status::Ok()
            : InvalidArgument("stack name '" + name + "': lower-case letters, digits, '-' and '_'");
}

// The stack file, parsed and checked, and the contents of the configs its secure services use.
struct Loaded {
  stack::StackFile file;
  std::map<std::string, std::string> configs;
  std::string dir;
};

Result<Loaded> Load(const StackArgs& a) {
  SCONE_RETURN_IF_ERROR(CheckStackName(a.name));
  SCONE_ASSIGN_OR_RETURN(Bytes text, os::ReadWholeFile(a.file, 1 << 20));
  Loaded l;
  SCONE_ASSIGN_OR_RETURN(l.file,
                         stack::ParseStackFile(std::string(text.begin(), text.end()), a.file));
  l.dir = fsys::absolute(a.file).parent_path().string();
  for (const stack::StackService& s : l.file.services) {
    if (!s.secure) continue;
    for (const stack::ConfigRef& c : s.configs) {
      const stack::StackConfig* config = l.file.FindConfig(c.source);
      std::string path = config->file[0] == '/' ? config->file : l.dir + "/" + config->file;
      auto content = os::ReadWholeFile(path, 1 << 20);
      if (!content.ok()) {
        return content.status().Annotate(a.file + ":" + std::to_string(config->line) + ": config " +
                                         c.source);
      }
      l.configs[c.source] = std::string(content->begin(), content->end());
    }
  }
  return l;
}

// Where CAS is for this user (REST API) and for the containers (attestation port, key hash), and
// LAS's socket on this host.
struct CasPlacement {
  cas::CasEndpoint endpoint;
  std::string container_address;
  std::string key_hash;
  std::string las_socket;
};

Result<CasPlacement> PlaceCas(const StackArgs& a, const image::DockerClient& docker) {
  CasPlacement p;
  std::string cas_cert = a.cas_cert;
  if (a.cas.empty()) {
    SCONE_ASSIGN_OR_RETURN(std::string host, stack::HostAddressForContainers(docker));
    SCONE_ASSIGN_OR_RETURN(LocalServices s, StartLocalServices(host));
    p.container_address = s.container_attestation_address;
    p.las_socket = s.las_socket;
    cas_cert = s.cas_cert;
  } else {
    if (a.cas_addr.empty())
      return InvalidArgument(
          "--cas needs --cas-addr HOST:PORT (its attestation port, as containers reach it)");
    p.container_address = a.cas_addr;
    SCONE_ASSIGN_OR_RETURN(p.las_socket, StartLocalLas());
  }
  SCONE_ASSIGN_OR_RETURN(p.endpoint, ResolveCas(a.cas, a.cas_cert));
  SCONE_ASSIGN_OR_RETURN(p.key_hash, crypto::PublicKeyFingerprintOfFile(cas_cert));
  return p;
}

Result<std::string> RuntimeHash(const std::string& runtime) {
  SCONE_ASSIGN_OR_RETURN(Bytes content, os::ReadWholeFile(runtime, size_t{1} << 30));
  return ToHex(crypto::Sha256({content}));
}

// The images of the secure services, sconified or taken from the cache; `built` collects the
// ones made now (a failed deploy removes them).
Result<std::map<std::string, stack::ServiceImage>> SecureImages(const StackArgs& a, const Loaded& l,
                                                                const image::DockerClient& docker,
                                                                image::Progress& progress,
                                                                std::vector<std::string>* built) {
  SCONE_ASSIGN_OR_RETURN(std::string runtime, RuntimeLibrary());
  SCONE_ASSIGN_OR_RETURN(std::string runtime_hash, RuntimeHash(runtime));
  std::map<std::string, stack::ServiceImage> images;
  for (const stack::StackService& s : l.file.services) {
    if (!s.secure) continue;
    progress.Step("sconifying " + s.image + " for service " + s.name);
    auto image = stack::ImageForService(docker, a.name, s, runtime, runtime_hash, a.quiet);
    if (!image.ok()) {
      // At the service's image: line, where the image is named.
      const int line = s.node["image"] ? s.node["image"].Mark().line + 1 : s.line;
      return image.status().Annotate(a.file + ":" + std::to_string(line) + ": service " + s.name);
    }
    if (image->built) built->push_back(image->facts.image);
    images[s.name] = image->facts;
  }
  return images;
}

size_t SecureCount(const stack::StackFile& f) {
  size_t n = 0;
  for (const auto& s : f.services) n += s.secure ? 1 : 0;
  return n;
}

// The session's current hash on CAS, if it exists (an update names it as predecessor).
Result<std::optional<crypto::Hash>> CurrentSession(cas::Client& client, const std::string& name) {
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Get("/session/" + name));
  if (r.status == 404) return std::optional<crypto::Hash>();
  if (r.status != 200) return cas::ErrorFromReply(r);
  return std::optional<crypto::Hash>(policy::Session::HashOf(r.body));
}

struct Prepared {
  Loaded loaded;
  CasPlacement cas;
  stack::Translation translation;
  std::vector<std::string> built;
};

Result<Prepared> Prepare(const StackArgs& a, Loaded loaded, const image::DockerClient& docker,
                         image::Progress& progress, bool ask_cas) {
  Prepared p;
  p.loaded = std::move(loaded);
  SCONE_RETURN_IF_ERROR(stack::CheckSwarm(docker));
  progress.Step("starting CAS and LAS on this host if needed");
  SCONE_ASSIGN_OR_RETURN(p.cas, PlaceCas(a, docker));
  stack::Deployment d;
  d.stack = a.name;
  d.config_contents = p.loaded.configs;
  d.stack_dir = p.loaded.dir;
  d.cas_addr = p.cas.container_address;
  d.cas_key_hash = p.cas.key_hash;
  d.las_socket = p.cas.las_socket;
  d.no_ipvs = !stack::HostHasIpvs();
  // The images made here go again if anything after them fails.
  auto translation = [&]() -> Result<stack::Translation> {
    SCONE_ASSIGN_OR_RETURN(d.images, SecureImages(a, p.loaded, docker, progress, &p.built));
    if (ask_cas) {
      cas::Client client(p.cas.endpoint);
      SCONE_ASSIGN_OR_RETURN(d.predecessor, CurrentSession(client, a.name));
    }
    return stack::Translate(p.loaded.file, d);
  }();
  if (!translation.ok()) {
    for (const std::string& image : p.built) docker.RemoveIfUnused(image);
    return translation.status();
  }
  p.translation = *translation;
  return p;
}

Status Split(const StackArgs& a) {
  SCONE_ASSIGN_OR_RETURN(Loaded loaded, Load(a));
  image::DockerClient docker(a.quiet);
  image::Progress progress(a.quiet, 1 + static_cast<int>(SecureCount(loaded.file)));
  SCONE_ASSIGN_OR_RETURN(Prepared p, Prepare(a, std::move(loaded), docker, progress, false));
  SCONE_RETURN_IF_ERROR(os::MakeDirectories(a.out_dir, 0700));
  const std::string compose = a.out_dir + "/" + a.name + "-stack.yml";
  const std::string session = a.out_dir + "/" + a.name + "-session.yml";
  SCONE_RETURN_IF_ERROR(
      os::WriteFileAtomically(compose, AsBytes(p.translation.compose_yaml), 0644));
  // The session holds the values the stack file gave (value:): as private as the stack file.
  if (!p.translation.session_yaml.empty()) {
    SCONE_RETURN_IF_ERROR(
        os::WriteFileAtomically(session, AsBytes(p.translation.session_yaml), 0600));
  }
  std::printf(
      "%s\n%s\n", compose.c_str(),
      p.translation.session_yaml.empty() ? "(no secure service: no session)" : session.c_str());
  return Status::Ok();
}

// Undoes the Docker side of a deploy that failed: a new stack is removed; an existing one has its
// services rolled back to their previous spec and the services this deploy added removed.
void RollBackDocker(const image::DockerClient& docker, const std::string& stack, bool existed,
                    const std::vector<std::string>& before, const std::vector<std::string>& built) {
  if (!existed) {
    (void)stack::RemoveStack(docker, stack, kRemoveTimeoutSeconds);
  } else if (auto now = stack::StackServices(docker, stack); now.ok()) {
    for (const std::string& service : *now) {
      bool old = std::find(before.begin(), before.end(), service) != before.end();
      (void)docker.Succeeds(
          old ? std::vector<std::string>{"service", "rollback", "--detach", service}
              : std::vector<std::string>{"service", "rm", service});
    }
  }
  for (const std::string& image : built) docker.RemoveIfUnused(image);
}

Status Deploy(const StackArgs& a) {
  if (geteuid() != 0) {
    return PermissionDenied("scone stack deploy runs as root: this host's LAS measures the containers' processes "
                            "through /proc/PID/map_files, which needs CAP_SYS_ADMIN (docs/docker.md, Stacks)");
  }
  SCONE_ASSIGN_OR_RETURN(Loaded loaded, Load(a));
  image::DockerClient docker(a.quiet);
  image::Progress progress(a.quiet, 3 + static_cast<int>(SecureCount(loaded.file)));
  SCONE_ASSIGN_OR_RETURN(Prepared p, Prepare(a, std::move(loaded), docker, progress, true));
  SCONE_ASSIGN_OR_RETURN(image::TempDir work, image::TempDir::Create("scone-stack"));
  const std::string compose = work.path() + "/stack.yml";
  SCONE_RETURN_IF_ERROR(
      os::WriteFileAtomically(compose, AsBytes(p.translation.compose_yaml), 0600));
  const bool existed = stack::StackExists(docker, a.name);
  std::vector<std::string> before;
  if (existed) {
    SCONE_ASSIGN_OR_RETURN(before, stack::StackServices(docker, a.name));
  }
  // Docker first, CAS last: a failed `docker stack deploy` leaves nothing on CAS, and a session
  // CAS refuses is undone on the Docker side. Tasks that start before the session exists fail
  // attestation and are restarted by Swarm.
  progress.Step("deploying stack " + a.name + " (docker stack deploy)");
  if (Status s = stack::DeployStack(docker, compose, a.name); !s.ok()) {
    RollBackDocker(docker, a.name, existed, before, p.built);
    return s.Annotate("docker stack deploy " + a.name + " (rolled back)");
  }
  std::string hash;
  if (!p.translation.session_yaml.empty()) {
    progress.Step("registering session " + a.name + " on CAS");
    cas::Client client(p.cas.endpoint);
    auto r = client.Post("/session", p.translation.session_yaml, "application/yaml");
    Status posted = !r.ok()                                  ? r.status()
                    : (r->status == 200 || r->status == 201) ? Status::Ok()
                                                             : cas::ErrorFromReply(*r);
    if (!posted.ok()) {
      RollBackDocker(docker, a.name, existed, before, p.built);
      return posted.Annotate("session " + a.name + " (stack deploy rolled back)");
    }
    hash = ToHex(policy::Session::HashOf(p.translation.session_yaml));
  }
  std::printf("deployed stack %s: %zu services (%zu secure)%s%s\n", a.name.c_str(),
              p.loaded.file.services.size(), SecureCount(p.loaded.file),
              hash.empty() ? "" : ", session hash ", hash.c_str());
  return Status::Ok();
}

// Removes every image (or volume) `kind` lists under `filter`; names the first that stays.
// `*found` becomes true if it listed any.
Status RemoveListed(const image::DockerClient& docker, const std::string& kind, const std::string& filter,
                    const std::string& stack, bool* found) {
  SCONE_ASSIGN_OR_RETURN(std::string ids, docker.Run({kind, "ls", "-q", "--filter", filter}));
  std::istringstream in(ids);
  for (std::string id; in >> id;) {
    *found = true;
    if (!docker.Succeeds({kind, "rm", "-f", id})) {
      return Internal("stack " + stack + ": " + kind + " " + id + " could not be removed");
    }
  }
  return Status::Ok();
}

// Undoes a deploy: services, networks, the images made for it, and (unless --keep-data) its
// volumes and its session on CAS. The volumes go first: their data is encrypted under keys that
// go with the session, so a volume that stays (in use) must leave the session too.
Status Remove(const StackArgs& a) {
  SCONE_RETURN_IF_ERROR(CheckStackName(a.name));
  image::DockerClient docker(a.quiet);
  image::Progress progress(a.quiet, a.keep_data ? 2 : 3);
  progress.Step("removing stack " + a.name +
                " and waiting until its services and networks are gone");
  bool found = false;
  SCONE_RETURN_IF_ERROR(stack::RemoveStack(docker, a.name, kRemoveTimeoutSeconds, &found));
  progress.Step("removing the images made for it");
  SCONE_RETURN_IF_ERROR(
      RemoveListed(docker, "image", std::string("label=") + stack::kStackLabel + "=" + a.name, a.name, &found));
  if (!a.keep_data) {
    progress.Step("removing its volumes and its session on CAS (with the volumes' keys)");
    SCONE_RETURN_IF_ERROR(
        RemoveListed(docker, "volume", "label=com.docker.stack.namespace=" + a.name, a.name, &found));
    SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint endpoint, ResolveCas(a.cas, a.cas_cert));
    cas::Client client(endpoint);
    SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Delete("/session/" + a.name));
    if (r.status != 200 && r.status != 404) {
      return cas::ErrorFromReply(r).Annotate("stack " + a.name + " removed from Docker, but its session");
    }
    found = found || r.status == 200;
  }
  if (!found) {
    // As docker stack rm says it (exit 0): a typo in the name is seen, not reported as done.
    std::printf("nothing found in stack %s\n", a.name.c_str());
    return Status::Ok();
  }
  std::printf("removed stack %s%s\n", a.name.c_str(),
              a.keep_data ? " (its volumes and session kept)" : ", its volumes and its session");
  return Status::Ok();
}

void AddCommon(CLI::App* cmd, StackArgs* a) {
  AddCasOptions(cmd, &a->cas, &a->cas_cert);
  cmd->add_option("--cas-addr", a->cas_addr,
                  "With --cas: CAS's attestation port HOST:PORT as containers reach it");
  cmd->add_flag("--quiet,-q", a->quiet, "No progress output");
}

}  // namespace

void RegisterStackCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<StackArgs>();
  CLI::App* st =
      app.add_subcommand("stack", "Stack files of secure and standard services on Docker Swarm");
  st->require_subcommand(1);
  CLI::App* deploy = st->add_subcommand("deploy",
                                        "Sconify the secure services' images, register the stack's "
                                        "session on CAS, docker stack deploy");
  deploy
      ->add_option("-c,--compose-file", args->file,
                   "The stack file (Compose v3 with SCONE's extensions)")
      ->required();
  deploy->add_option("NAME", args->name, "The stack's name (and its session's)")->required();
  AddCommon(deploy, args.get());
  deploy->callback([&action, args] { action = [args] { return Deploy(*args); }; });
  CLI::App* ca = st->add_subcommand(
      "ca", "Print the certificate (PEM) of the CA that certifies the stack's services");
  ca->add_option("NAME", args->name, "The stack's name")->required();
  AddCasOptions(ca, &args->cas, &args->cas_cert);
  ca->callback([&action, args] {
    action = [args] { return PrintSessionCa(args->cas, args->cas_cert, args->name); };
  });
  CLI::App* rm = st->add_subcommand(
      "rm", "docker stack rm, wait until it is gone, remove the images made for it, its volumes and its "
            "session (their keys: the data is gone)");
  rm->add_option("NAME", args->name, "The stack's name")->required();
  rm->add_flag("--keep-data", args->keep_data,
               "Keep the stack's volumes and its session on CAS: a later deploy of NAME reads the data again");
  AddCasOptions(rm, &args->cas, &args->cas_cert);
  rm->add_flag("--quiet,-q", args->quiet, "No progress output");
  rm->callback([&action, args] { action = [args] { return Remove(*args); }; });

  CLI::App* cas = app.get_subcommand("cas");
  CLI::App* split = cas->add_subcommand("split",
                                        "Write the translated stack file and the stack's session "
                                        "without deploying (sconifies the images)");
  split->add_option("FILE", args->file, "The stack file")->required();
  split->add_option("--stack", args->name, "The stack's name")->required();
  split->add_option("--out", args->out_dir,
                    "Directory for NAME-stack.yml and NAME-session.yml (default .)");
  AddCommon(split, args.get());
  split->callback([&action, args] { action = [args] { return Split(*args); }; });
}

}  // namespace scone::cli
