// `scone volume ...`: create, import, export, verify and inspect protected volumes.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/command.h"
#include "cli/progress_meter.h"
#include "fs/tree_copy.h"
#include "fs/volume.h"

namespace scone::cli {
namespace {

struct VolumeArgs {
  std::string dir;
  std::string plain_dir;
  std::string key_file;
  std::string tag;
  std::string path;
  std::vector<std::string> regions;
  bool quiet = false;
};

Result<fs::RegionRules> ParseRegions(const std::vector<std::string>& texts) {
  fs::RegionRules rules;
  for (const std::string& text : texts) {
    SCONE_ASSIGN_OR_RETURN(fs::RegionRule rule, fs::RegionRules::ParseRule(text));
    SCONE_RETURN_IF_ERROR(rules.Add(std::move(rule)));
  }
  return rules;
}

// Reads the key file, or creates it (mode 0600) when `create_if_absent` and it does not exist.
Result<SecretBytes> LoadKey(const std::string& path, bool create_if_absent) {
  auto key = fs::ReadKeyFile(path);
  if (key.ok() || !create_if_absent || key.status().code() != Code::kNotFound) return key;
  auto created = fs::CreateKeyFile(path);
  if (created.ok()) std::fprintf(stderr, "scone: created key file %s (mode 0600)\n", path.c_str());
  return created;
}

Result<std::shared_ptr<fs::Volume>> OpenVolume(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, LoadKey(a.key_file, false));
  fs::Volume::OpenOptions options;
  if (!a.tag.empty()) {
    auto tag = FromHexArray<crypto::kHashSize>(a.tag);
    if (!tag.ok()) return InvalidArgument("--tag must be 64 hex digits (as printed by `scone volume tag`)");
    options.expected_tag = *tag;
  }
  return fs::Volume::Open(a.dir, key, options);
}

void PrintCopyStats(const char* verb, const fs::CopyStats& stats, const char* preposition,
                    const std::string& where) {
  std::printf("%s %llu protected and %llu not-protected files (%llu bytes) %s %s\n", verb,
              static_cast<unsigned long long>(stats.protected_files),
              static_cast<unsigned long long>(stats.plain_files),
              static_cast<unsigned long long>(stats.bytes), preposition, where.c_str());
}

// Files already in the directory would be unknown to the volume: every open of them fails
// ("unknown file"), and verify reports them (hostile finding: it succeeded silently).
Status RefuseNonEmpty(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec || it == std::filesystem::directory_iterator()) return Status::Ok();  // absent or empty
  if (it->path().filename() == fs::kMetaDirName) return Status::Ok();  // a volume: Create says so
  return InvalidArgument(dir + " is not empty (" + it->path().filename().string() +
                         "...): a volume starts empty, and files already there would read as unknown files. "
                         "To protect them: scone volume import " + dir + " NEW_DIR --key-file KEY");
}

Status Create(const VolumeArgs& a) {
  SCONE_RETURN_IF_ERROR(RefuseNonEmpty(a.dir));
  SCONE_ASSIGN_OR_RETURN(fs::RegionRules rules, ParseRegions(a.regions));
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, LoadKey(a.key_file, true));
  SCONE_ASSIGN_OR_RETURN(auto volume, fs::Volume::Create(a.dir, key, std::move(rules)));
  SCONE_RETURN_IF_ERROR(volume->Close());
  std::printf("created volume %s\n", a.dir.c_str());
  return Status::Ok();
}

Status Import(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(fs::RegionRules rules, ParseRegions(a.regions));
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, LoadKey(a.key_file, true));
  auto volume = fs::Volume::Open(a.dir, key);
  if (!volume.ok() && volume.status().code() == Code::kNotFound) {
    volume = fs::Volume::Create(a.dir, key, std::move(rules));
  } else if (volume.ok() && !a.regions.empty()) {
    return InvalidArgument(a.dir + " is already a volume; its regions were fixed when it was created");
  }
  if (!volume.ok()) return volume.status();
  ProgressMeter meter("importing " + a.plain_dir, a.quiet);
  auto show = [&meter](const fs::CopyStats& done, const fs::CopyStats& total) {
    meter.Update(done.protected_files + done.plain_files, total.protected_files, done.bytes, total.bytes);
  };
  SCONE_ASSIGN_OR_RETURN(fs::CopyStats stats, fs::ImportTree(a.plain_dir, **volume, show));
  meter.Done();
  SCONE_RETURN_IF_ERROR((*volume)->Close());
  PrintCopyStats("imported", stats, "into", a.dir);
  return Status::Ok();
}

Status Export(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto volume, OpenVolume(a));
  SCONE_ASSIGN_OR_RETURN(fs::CopyStats stats, fs::ExportTree(*volume, a.plain_dir));
  SCONE_RETURN_IF_ERROR(volume->Close());
  PrintCopyStats("exported", stats, "to", a.plain_dir);
  return Status::Ok();
}

Status Verify(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto volume, OpenVolume(a));
  std::vector<fs::VolumeProblem> problems = volume->Verify();
  size_t files = volume->Files().size();
  SCONE_RETURN_IF_ERROR(volume->Close());
  if (problems.empty()) {
    std::printf("volume %s is intact: %zu protected files verified\n", a.dir.c_str(), files);
    return Status::Ok();
  }
  // One line per damaged file.
  std::map<std::string, std::string> by_file;
  for (const fs::VolumeProblem& p : problems) {
    std::string& line = by_file[p.path];
    line += (line.empty() ? "" : "; ") + p.what;
  }
  for (const auto& [path, what] : by_file) {
    std::printf("%s: %s\n", path.empty() ? a.dir.c_str() : (a.dir + "/" + path).c_str(),
                what.c_str());
  }
  return ReportedDamage("volume " + a.dir + ": " + std::to_string(by_file.size()) +
                        " damaged file(s)");
}

Status PrintTag(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto volume, OpenVolume(a));
  std::string tag = ToHex(volume->Tag());
  SCONE_RETURN_IF_ERROR(volume->Close());
  std::printf("%s\n", tag.c_str());
  return Status::Ok();
}

Status List(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto volume, OpenVolume(a));
  for (const auto& [path, entry] : volume->Files()) {
    std::printf("%-13s %12llu  %s\n", fs::RegionName(entry.region),
                static_cast<unsigned long long>(entry.size), path.c_str());
  }
  return volume->Close();
}

Status Cat(const VolumeArgs& a) {
  SCONE_ASSIGN_OR_RETURN(auto volume, OpenVolume(a));
  SCONE_RETURN_IF_ERROR(fs::CopyFileToFd(*volume, a.path, STDOUT_FILENO));
  return volume->Close();
}

}  // namespace

void RegisterVolumeCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<VolumeArgs>();
  CLI::App* volume = app.add_subcommand(
      "volume", "Protected volumes: directories whose files are encrypted and integrity-protected");
  volume->require_subcommand(1);

  auto key_option = [&](CLI::App* cmd, bool may_create) {
    cmd->add_option("--key-file,-k", args->key_file,
                    may_create ? "Volume key file (64 hex digits, mode 0600); generated if absent"
                               : "Volume key file (64 hex digits, mode 0600)")
        ->required();
  };
  auto region_option = [&](CLI::App* cmd) {
    cmd->add_option("--region", args->regions,
                    "PREFIX=encrypted|authenticated|not-protected (repeatable; paths no rule "
                    "matches are encrypted)");
  };
  auto set = [&action, args](Status (*fn)(const VolumeArgs&)) {
    return [&action, args, fn] { action = [args, fn] { return fn(*args); }; };
  };

  CLI::App* create = volume->add_subcommand("create", "Create a new, empty volume in DIR");
  create->add_option("DIR", args->dir, "Volume directory")->required();
  key_option(create, true);
  region_option(create);
  create->callback(set(Create));

  CLI::App* import = volume->add_subcommand(
      "import", "Protect an existing tree: copy PLAIN_DIR into the volume DIR (created if needed)");
  import->add_option("PLAIN_DIR", args->plain_dir, "Directory to protect")->required();
  import->add_option("DIR", args->dir, "Volume directory")->required();
  key_option(import, true);
  region_option(import);
  import->add_flag("--quiet,-q", args->quiet, "No progress line on a terminal");
  import->callback(set(Import));

  CLI::App* exp = volume->add_subcommand(
      "export", "Decrypt the volume DIR into PLAIN_DIR, authenticating every byte");
  exp->add_option("DIR", args->dir, "Volume directory")->required();
  exp->add_option("PLAIN_DIR", args->plain_dir, "Destination (absent or empty)")->required();
  key_option(exp, false);
  exp->add_option("--tag", args->tag, "Refuse unless the volume's state is the one TAG names");
  exp->callback(set(Export));

  CLI::App* verify = volume->add_subcommand(
      "verify", "Check every file of the volume; one line per damaged file, exit 3 if any");
  verify->add_option("DIR", args->dir, "Volume directory")->required();
  key_option(verify, false);
  verify->add_option("--tag", args->tag, "Refuse unless the volume's state is the one TAG names");
  verify->callback(set(Verify));

  CLI::App* tag = volume->add_subcommand("tag", "Print the volume's current tag (hex)");
  tag->add_option("DIR", args->dir, "Volume directory")->required();
  key_option(tag, false);
  tag->callback(set(PrintTag));

  CLI::App* ls = volume->add_subcommand("ls", "List protected files: region, plaintext size, path");
  ls->add_option("DIR", args->dir, "Volume directory")->required();
  key_option(ls, false);
  ls->add_option("--tag", args->tag, "Refuse unless the volume's state is the one TAG names");
  ls->callback(set(List));

  CLI::App* cat = volume->add_subcommand("cat", "Write the plaintext of one protected file to stdout");
  cat->add_option("DIR", args->dir, "Volume directory")->required();
  cat->add_option("PATH", args->path, "File path inside the volume")->required();
  key_option(cat, false);
  cat->add_option("--tag", args->tag, "Refuse unless the volume's state is the one TAG names");
  cat->callback(set(Cat));
}

}  // namespace scone::cli
