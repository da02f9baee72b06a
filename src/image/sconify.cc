#include "image/sconify.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "image/dockerfile.h"
#include "image/image_measurement.h"
#include "image/progress.h"
#include "image/root_path.h"
#include "image/session_template.h"
#include "image/shield_check.h"
#include "image/subprocess.h"
#include "image/temp_dir.h"
#include "os/file.h"

namespace scone::image {
namespace {

namespace fsys = std::filesystem;

// A word that goes into the image's configuration: no character Docker or the runtime would
// read differently (white space, quotes, '$', '\', control characters).
Status SafeWord(const std::string& what, const std::string& value) {
  if (value.empty()) return InvalidArgument(what + " is empty");
  for (unsigned char c : value) {
    if (c < 0x21 || c == 0x7f || c == '"' || c == '\'' || c == '$' || c == '\\' || c == '`') {
      return InvalidArgument(what + " '" + value + "' holds a character that cannot go into an image's settings");
    }
  }
  return Status::Ok();
}

// A session or service name: what CAS accepts in a config id.
Status SafeName(const std::string& what, const std::string& value) {
  if (value.empty() || value == "." || value == ".." ||
      !std::all_of(value.begin(), value.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; })) {
    return InvalidArgument(what + " '" + value + "' must be letters, digits, '-', '_' or '.'");
  }
  return Status::Ok();
}

std::vector<std::string> SplitWords(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Each --fs-dir: an absolute, normal path, not overlapping another, holding no file in the image
// (existing files would stay plaintext beside the volume, or would have to be encrypted under a
// key sconify must never see).
Status CheckFsDirs(const std::string& root, const std::vector<std::string>& dirs) {
  for (const std::string& d : dirs) {
    SCONE_RETURN_IF_ERROR(SafeWord("--fs-dir", d));
    if (d[0] != '/' || d == "/" || fsys::path(d).lexically_normal().string() != d || d.back() == '/') {
      return InvalidArgument("--fs-dir " + d + ": give an absolute, normalized directory other than /");
    }
    for (const std::string& other : dirs) {
      if (&other != &d && (other == d || other.rfind(d + "/", 0) == 0)) {
        return InvalidArgument("--fs-dir " + other + " lies inside --fs-dir " + d + " (or is given twice)");
      }
    }
    auto host = ResolveInRoot(root, d);
    if (!host.ok()) continue;  // created empty in the container
    std::error_code ec;
    if (!fsys::is_directory(*host, ec)) return Unsupported("--fs-dir " + d + " is a file in the image, not a directory");
    if (!fsys::is_empty(*host, ec)) {
      return Unsupported("--fs-dir " + d + " already holds files in the image: they would stay plaintext (encrypting "
                         "them needs the volume's key, which only CAS holds); move them elsewhere or start it empty");
    }
  }
  return Status::Ok();
}

// Image settings the session keeps (the runtime replaces the environment with the session's).
std::vector<std::pair<std::string, std::string>> SessionEnvironment(const ImageConfig& config,
                                                                    const std::vector<std::string>& extra) {
  std::vector<std::pair<std::string, std::string>> env;
  auto add = [&](const std::string& kv) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (key == "LD_PRELOAD" || key.rfind("SCONE_", 0) == 0) return;
    env.emplace_back(key, eq == std::string::npos ? "" : kv.substr(eq + 1));
  };
  for (const std::string& kv : config.env) add(kv);
  for (const std::string& kv : extra) add(kv);
  return env;
}

Status CopyRuntime(const std::string& from, const std::string& to) {
  std::error_code ec;
  fsys::create_directories(fsys::path(to).parent_path(), ec);
  if (ec) return IoError("mkdir " + fsys::path(to).parent_path().string(), ec.value());
  fsys::copy_file(from, to, fsys::copy_options::overwrite_existing, ec);
  if (ec) return IoError("copy " + from + " to " + to, ec.value());
  chmod(to.c_str(), 0755);
  return Status::Ok();
}

// The runtime's own shared libraries other than glibc's (Zydis), from the host's loader:
// they go beside it in the image (the runtime's RUNPATH is $ORIGIN).
Result<std::vector<std::string>> RuntimeDependencies(const std::string& runtime) {
  SCONE_ASSIGN_OR_RETURN(std::string trace, RunChecked({"/lib64/ld-linux-x86-64.so.2", "--list", runtime}));
  std::vector<std::string> out;
  std::istringstream in(trace);
  for (std::string line; std::getline(in, line);) {
    size_t arrow = line.find(" => ");
    if (arrow == std::string::npos) continue;
    std::string soname = line.substr(line.find_first_not_of(" \t"));
    soname = soname.substr(0, soname.find(' '));
    static const char* kGlibc[] = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
                                   "ld-linux-x86-64.so.2"};
    if (std::find(std::begin(kGlibc), std::end(kGlibc), soname) != std::end(kGlibc)) continue;
    std::string path = line.substr(arrow + 4);
    path = path.substr(0, path.find(" ("));
    if (path.empty() || path[0] != '/') return NotFound("the runtime's library " + soname + " is not found");
    out.push_back(path);
  }
  return out;
}

// The runtime and its libraries into `dir` (named by the names the loader looks for).
Status CopyRuntimeFiles(const std::string& runtime, const std::vector<std::string>& deps, const std::string& dir) {
  SCONE_RETURN_IF_ERROR(CopyRuntime(runtime, dir + "/libscone-runtime.so"));
  for (const std::string& dep : deps) {
    std::string name = fsys::path(dep).filename().string();
    SCONE_RETURN_IF_ERROR(CopyRuntime(dep, dir + "/" + name));
  }
  return Status::Ok();
}

Status CheckOptions(const SconifyOptions& o) {
  if (o.from.empty() || o.to.empty()) return InvalidArgument("give --from IMAGE and --to IMAGE");
  SCONE_RETURN_IF_ERROR(SafeWord("--from", o.from));
  SCONE_RETURN_IF_ERROR(SafeWord("--to", o.to));
  if (!o.cas_addr.empty()) SCONE_RETURN_IF_ERROR(SafeWord("--cas", o.cas_addr));
  SCONE_RETURN_IF_ERROR(SafeWord("LAS address", o.las_addr));
  for (const std::string& kv : o.env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("--env " + kv + ": expected KEY=VALUE");
  }
  return Status::Ok();
}

}  // namespace

std::string VolumeName(const std::string& path) {
  std::string name;
  for (char c : path) {
    if (c == '/') {
      if (!name.empty() && name.back() != '_') name += '_';
    } else {
      name += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
    }
  }
  while (!name.empty() && name.back() == '_') name.pop_back();
  return name.empty() ? "root" : name;
}

std::string ServiceNameOf(const std::string& image) {
  std::string name = image.substr(image.rfind('/') == std::string::npos ? 0 : image.rfind('/') + 1);
  name = name.substr(0, name.find_first_of(":@"));
  return name;
}

Result<SconifyResult> Sconify(const DockerClient& docker, const SconifyOptions& o, bool quiet) {
  SCONE_RETURN_IF_ERROR(CheckOptions(o));
  const std::string service = o.service_name.empty() ? ServiceNameOf(o.to) : o.service_name;
  const std::string session = o.session_name.empty() ? service : o.session_name;
  SCONE_RETURN_IF_ERROR(SafeName("service name", service));
  SCONE_RETURN_IF_ERROR(SafeName("session name", session));
  Progress progress(quiet, 5);
  progress.Step("inspecting " + o.from);
  SCONE_ASSIGN_OR_RETURN(ImageConfig config, docker.Inspect(o.from));
  SCONE_ASSIGN_OR_RETURN(TempDir work, TempDir::Create("scone-sconify"));
  const std::string root = fsys::canonical(work.path()).string() + "/root";
  const std::string context = fsys::canonical(work.path()).string() + "/context";
  fsys::create_directory(root);
  fsys::create_directory(context);
  progress.Step("unpacking " + o.from + "'s files to check what it runs");
  SCONE_RETURN_IF_ERROR(docker.ExportRootfs(o.from, root));

  std::vector<std::string> command = o.command.empty() ? config.Command() : SplitWords(o.command);
  if (command.empty() && !o.binary.empty()) command = {o.binary};
  auto entry = CheckShieldable(root, config, command);
  if (!entry.ok()) return entry.status().Annotate("image " + o.from + " cannot be shielded");
  if (!o.binary.empty()) {
    auto wanted = ResolveInRoot(root, o.binary);
    auto actual = ResolveInRoot(root, entry->program);
    if (!wanted.ok() || !actual.ok() || *wanted != *actual) {
      return Unsupported("image " + o.from + ": --binary " + o.binary + " is not what its command starts (" +
                         entry->program + ")");
    }
  }
  SCONE_RETURN_IF_ERROR(CheckFsDirs(root, o.fs_dirs).Annotate("image " + o.from));

  progress.Step("measuring " + entry->program + " with the runtime");
  SCONE_ASSIGN_OR_RETURN(std::vector<std::string> deps, RuntimeDependencies(o.runtime_library));
  const std::string runtime_dir = fsys::path(kImageRuntimePath).parent_path().string();
  SCONE_RETURN_IF_ERROR(CopyRuntimeFiles(o.runtime_library, deps, root + runtime_dir));
  // The image's loader lists what it maps, in a container of the image with the runtime's
  // files mounted where the sconified image will have them.
  auto trace = docker.RunCapture(o.from, {entry->interpreter, "--list", entry->program},
                                 {std::string("LD_PRELOAD=") + kImageRuntimePath},
                                 {root + runtime_dir + ":" + runtime_dir});
  if (!trace.ok()) return trace.status().Annotate("the loader of " + o.from + " cannot load " + entry->program);
  SCONE_ASSIGN_OR_RETURN(attest::ImageDescription description,
                         DescribeImageProgram(root, entry->program, entry->interpreter, kImageRuntimePath, *trace));
  SconifyResult result;
  result.measurement = description.Measurement();
  result.config_id = session + "/" + service;

  ServiceTemplate t;
  t.service_name = service;
  t.measurement = result.measurement;
  t.command = entry->command;
  t.environment = SessionEnvironment(config, o.env);
  t.pwd = config.working_dir;
  for (const std::string& d : o.fs_dirs) t.volumes.push_back({VolumeName(d), d});
  for (const std::string& script : entry->scripts) {
    SCONE_ASSIGN_OR_RETURN(std::string host, ResolveInRoot(root, script));
    SCONE_ASSIGN_OR_RETURN(Bytes content, os::ReadWholeFile(host, 1 << 20));
    t.injected.push_back({script, std::string(content.begin(), content.end())});
  }
  SessionTemplate session_template;
  session_template.session_name = session;
  session_template.services = {t};
  SCONE_ASSIGN_OR_RETURN(result.session_yaml, WriteSession(session_template));

  progress.Step("building " + o.to);
  SCONE_RETURN_IF_ERROR(CopyRuntimeFiles(o.runtime_library, deps, context + "/runtime"));
  SconeDockerfile d;
  d.from = config.id.empty() ? o.from : config.id;
  d.runtime_dir = "runtime/";
  d.runtime_path = runtime_dir + "/";
  d.volumes = o.fs_dirs;
  if (!o.command.empty()) {
    d.replace_command = true;
    d.entrypoint = command;
  }
  d.labels = {{"scone.measurement", ToHex(result.measurement)}, {"scone.config-id", result.config_id}};
  d.labels.insert(d.labels.end(), o.labels.begin(), o.labels.end());
  if (o.session_label) {
    std::string encoded(crypto::Base64Size(result.session_yaml.size()), '\0');
    encoded.resize(crypto::Base64Encode(AsBytes(result.session_yaml), encoded.data()));
    d.labels.push_back({kSessionLabel, encoded});
  }
  d.env = {{"SCONE_CONFIG_ID", result.config_id}, {"SCONE_LAS_ADDR", o.las_addr}, {"SCONE_VOLUME_ROOTS", ""}};
  if (!o.cas_addr.empty()) d.env.push_back({"SCONE_CAS_ADDR", o.cas_addr});
  d.env.push_back({"LD_PRELOAD", kImageRuntimePath});
  std::string dockerfile = WriteDockerfile(d);
  SCONE_RETURN_IF_ERROR(os::WriteFileAtomically(context + "/Dockerfile", AsBytes(dockerfile), 0644));
  // The image --to named before is replaced; left untagged, each sconify would keep one more
  // copy of the runtime's layer in the engine.
  const std::string previous = docker.ImageId(o.to);
  SCONE_RETURN_IF_ERROR(docker.Build(context, o.to));
  if (!previous.empty() && previous != docker.ImageId(o.to)) docker.RemoveIfUnused(previous);
  progress.Step("built " + o.to + " (measurement " + ToHex(result.measurement) + ")");
  return result;
}

}  // namespace scone::image
