#include "image/shield_check.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include "attest/measurement.h"
#include "image/root_path.h"
#include "os/file.h"

namespace scone::image {
namespace {

constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Found {
  std::string host;    // the file on the host (links resolved inside the root)
  std::string called;  // the path the container's runtime passes to execve
};

// What the kernel would execute for `name`: a path as it is (relative to the working
// directory), else the first executable match on the image's PATH.
Result<Found> FindInImage(const std::string& root, const ImageConfig& config, const std::string& name) {
  auto executable = [&](const std::string& in_image) -> Result<Found> {
    SCONE_ASSIGN_OR_RETURN(std::string host, ResolveInRoot(root, in_image));
    struct stat st;
    if (stat(host.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
      return NotFound(in_image + " is not an executable file in the image");
    }
    return Found{host, in_image};
  };
  if (name.find('/') != std::string::npos) {
    std::string dir = config.working_dir.empty() ? "/" : config.working_dir;
    auto found = executable(name[0] == '/' ? name : dir + "/" + name);
    if (found.ok()) found->called = name;
    return found;
  }
  std::string dirs = config.EnvValue("PATH", kDefaultPath);
  for (size_t pos = 0; pos <= dirs.size();) {
    size_t colon = dirs.find(':', pos);
    if (colon == std::string::npos) colon = dirs.size();
    auto found = executable(dirs.substr(pos, colon - pos) + "/" + name);
    if (found.ok()) return found;
    pos = colon + 1;
  }
  return NotFound(name + " is not found on the image's PATH (" + dirs + ")");
}

// "#!INTERPRETER [ARG]" of a script, or nullopt-like empty for anything else.
std::vector<std::string> ShebangOf(const std::string& host_path) {
  auto file = os::File::Open(host_path, O_RDONLY);
  if (!file.ok()) return {};
  char head[256] = {};
  auto n = file->ReadAt(0, MutableByteSpan(reinterpret_cast<uint8_t*>(head), sizeof(head) - 1));
  if (!n.ok() || *n < 3 || head[0] != '#' || head[1] != '!') return {};
  std::string line(head + 2, strnlen(head + 2, *n - 2));
  line = line.substr(0, line.find('\n'));
  std::vector<std::string> words;
  size_t start = line.find_first_not_of(" \t");
  if (start == std::string::npos) return {};
  size_t end = line.find_first_of(" \t", start);
  words.push_back(line.substr(start, end == std::string::npos ? std::string::npos : end - start));
  if (end != std::string::npos) {
    size_t arg = line.find_first_not_of(" \t", end);
    if (arg != std::string::npos) {
      std::string rest = line.substr(arg);
      rest.erase(rest.find_last_not_of(" \t\r") + 1);
      words.push_back(rest);  // Linux passes the rest of the line as one argument
    }
  }
  return words;
}

Status CheckElf(const std::string& host_path, const std::string& in_image) {
  auto file = os::File::Open(host_path, O_RDONLY);
  if (!file.ok()) return file.status();
  Elf64_Ehdr eh = {};
  auto n = file->ReadAt(0, MutableByteSpan(reinterpret_cast<uint8_t*>(&eh), sizeof(eh)));
  if (!n.ok() || *n < EI_NIDENT || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return Unsupported(in_image + " is neither an ELF program nor a script with #!: the runtime cannot enter it");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
    return Unsupported(in_image + " is not a 64-bit x86 program: the runtime cannot enter it");
  }
  return Status::Ok();
}

}  // namespace

Result<EntryProgram> CheckShieldable(const std::string& root, const ImageConfig& config,
                                     const std::vector<std::string>& command) {
  if (command.empty()) return Unsupported("the image runs nothing (no ENTRYPOINT, no CMD; give --command)");
  for (const std::string& word : command) {
    if (word.empty() || word.find_first_of(" \t\n") != std::string::npos) {
      return Unsupported("its command has the argument '" + word +
                         "' with white space (or empty): CAS hands a service its command split at white "
                         "space, so it would not run as written (give --command with an entry script)");
    }
  }
  EntryProgram entry;
  // What the program that attests gets as its command line: for a script, the kernel starts
  // its interpreter with "INTERPRETER [ARG] SCRIPT ARGS...", and CAS's command replaces exactly that.
  std::vector<std::string> argv = command;
  std::string name = command[0];
  for (int depth = 0;; ++depth) {
    if (depth > 4) return Unsupported(command[0] + ": more than 4 script interpreters in a row");
    SCONE_ASSIGN_OR_RETURN(Found found, FindInImage(root, config, name));
    std::string host = found.host;
    std::string in_image = PathInImage(root, host);
    std::vector<std::string> shebang = ShebangOf(host);
    if (!shebang.empty()) {
      // The interpreter opens the script by the name it was called by: CAS serves it there.
      std::string dir = config.working_dir.empty() ? "/" : config.working_dir;
      entry.scripts.push_back(found.called[0] == '/' ? found.called : dir + "/" + found.called);
      std::vector<std::string> next = shebang;
      next.push_back(found.called);
      next.insert(next.end(), argv.begin() + 1, argv.end());
      argv = std::move(next);
      name = shebang[0];
      if (name.find('/') == std::string::npos) {
        return Unsupported(in_image + ": its interpreter '" + name + "' is not a path");
      }
      continue;
    }
    SCONE_RETURN_IF_ERROR(CheckElf(host, in_image));
    std::string interp = attest::ProgramInterpreter(host);
    if (interp.empty()) {
      return Unsupported(in_image + " is statically linked: the runtime is loaded by glibc's dynamic loader "
                         "(LD_PRELOAD), which a static program does not have, so it would run unshielded");
    }
    std::string base = interp.substr(interp.rfind('/') + 1);
    if (base != kGlibcLoader) {
      return Unsupported(in_image + " is not a glibc program: its loader is " + interp +
                         " (musl or another C library; the runtime needs glibc's " + kGlibcLoader + ")");
    }
    if (!ResolveInRoot(root, interp).ok()) {
      return Unsupported(in_image + ": its loader " + interp + " is missing from the image");
    }
    for (const std::string& word : argv) {
      if (word.find_first_of(" \t\n") != std::string::npos) {
        return Unsupported(entry.scripts.back() + ": its #! line passes '" + word +
                           "', with white space, which CAS's command (split at white space) cannot");
      }
    }
    entry.command = std::move(argv);
    entry.program = in_image;
    entry.interpreter = interp;
    return entry;
  }
}

}  // namespace scone::image
