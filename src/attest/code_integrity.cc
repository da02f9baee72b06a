#include "attest/code_integrity.h"

#include <dirent.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "os/file.h"

namespace scone::attest {
namespace {

constexpr size_t kMaxProcText = 64u << 20;

std::string_view NextLine(std::string_view text, size_t* pos) {
  size_t eol = text.find('\n', *pos);
  if (eol == std::string_view::npos) eol = text.size();
  std::string_view line = text.substr(*pos, eol - *pos);
  *pos = eol + 1;
  return line;
}

// A mapping's header: "start-end perms offset dev inode [name]"; false for a field line.
bool ParseHeader(std::string_view line, std::string* range, bool* executable, std::string* name) {
  char r[64] = {}, perms[8] = {}, offset[32] = {}, dev[32] = {};
  unsigned long inode = 0;
  int consumed = 0;
  // Field lines ("Rss:", "VmFlags:") start with a capital, headers with a lower-case hex digit:
  // most lines go without a copy or a scan.
  if (line.empty() || !(std::isdigit(static_cast<unsigned char>(line[0])) || (line[0] >= 'a' && line[0] <= 'f'))) {
    return false;
  }
  const std::string text(line);
  if (std::sscanf(text.c_str(), "%63s %7s %31s %31s %lu%n", r, perms, offset, dev, &inode, &consumed) != 5) return false;
  if (std::string_view(r).find('-') == std::string_view::npos || std::string_view(perms).size() != 4) return false;
  *range = r;
  *executable = perms[2] == 'x';
  std::string rest = text.substr(static_cast<size_t>(consumed));
  rest.erase(0, rest.find_first_not_of(' '));
  *name = rest;
  return true;
}

}  // namespace

std::string ProcessStatusField(pid_t pid, const std::string& field) {
  auto text = os::ReadWholeFile("/proc/" + std::to_string(pid) + "/status", 64 * 1024);
  if (!text.ok()) return "";
  std::string s(text->begin(), text->end());
  size_t at = s.find("\n" + field + ":");
  if (at == std::string::npos) return "";
  at += field.size() + 2;
  size_t end = s.find('\n', at);
  std::string value = s.substr(at, end == std::string::npos ? std::string::npos : end - at);
  value.erase(0, value.find_first_not_of(" \t"));
  return value;
}

Status CheckExecutableMemory(std::string_view smaps, pid_t pid) {
  const std::string who = "process " + std::to_string(pid);
  std::string range, name;
  bool executable = false;
  for (size_t pos = 0; pos < smaps.size();) {
    std::string_view line = NextLine(smaps, &pos);
    std::string r, n;
    bool x = false;
    if (ParseHeader(line, &r, &x, &n)) {
      range = r, name = n, executable = x;
      // The kernel's own code pages; anything else executable must be a file's.
      if (executable && name != "[vdso]" && name != "[vsyscall]" && (name.empty() || name[0] != '/')) {
        // An executable stack is what a program or library linked with `-z execstack` asks for.
        const std::string why = name == "[stack]" ? "an executable stack (a program or library linked with "
                                                    "-z execstack) can hold code nothing measured"
                                                  : "code loaded by hand or generated before the runtime asked is "
                                                    "not measured";
        return PermissionDenied(who + " executes memory that is no file's (" + range +
                                (name.empty() ? "" : " " + name) + "): " + why + ", no evidence for it");
      }
      continue;
    }
    // "Anonymous: N kB" of a file's executable mapping: its pages copied on write, changed code.
    unsigned long kb = 0;
    if (executable && !name.empty() && name[0] == '/' && line.starts_with("Anonymous:") &&
        std::sscanf(std::string(line).c_str(), "Anonymous: %lu kB", &kb) == 1 && kb != 0) {
      return PermissionDenied(who + " executes a changed copy of " + name + " (" + std::to_string(kb) +
                              " kB of its code at " + range +
                              " written in memory): the measurement is of the file, no evidence for it");
    }
  }
  return Status::Ok();
}

Status CheckNoOtherProcessSharesMemory(pid_t pid) {
  // A process made with clone(CLONE_VM) and no CLONE_THREAD shares the address space and is no
  // thread of it (it has a pid of its own, and may be nobody's child). kcmp tells; processes
  // LAS may not inspect are another user's, which cannot share it.
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return IoError("/proc", errno);
  Status found = Status::Ok();
  while (struct dirent* e = readdir(proc)) {
    char* end = nullptr;
    const long other = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || other == pid) continue;
    if (syscall(SYS_kcmp, pid, static_cast<pid_t>(other), KCMP_VM, 0, 0) == 0) {
      found = PermissionDenied("process " + std::to_string(other) + " shares process " + std::to_string(pid) +
                               "'s memory (made with clone(CLONE_VM) by code that ran before the runtime asked): "
                               "it could read what CAS releases, no evidence for it");
      break;
    }
  }
  closedir(proc);
  return found;
}

Status CheckOnlyMeasuredCodeRuns(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  SCONE_ASSIGN_OR_RETURN(Bytes smaps, os::ReadWholeFile(proc + "/smaps", kMaxProcText));
  SCONE_RETURN_IF_ERROR(
      CheckExecutableMemory(std::string_view(reinterpret_cast<const char*>(smaps.data()), smaps.size()), pid));
  // Counted after the memory: a thread that made its code non-executable meanwhile is still there.
  const std::string count = ProcessStatusField(pid, "Threads");
  const long threads = count.empty() ? -1 : std::strtol(count.c_str(), nullptr, 10);
  if (threads != 1) {
    return PermissionDenied("process " + std::to_string(pid) + " runs " +
                            (threads < 0 ? "an unknown number of" : std::to_string(threads)) +
                            " threads when its runtime asks for evidence (before main, alone): another thread was "
                            "started by code that ran first (a library's constructor), which the runtime does "
                            "not shield, no evidence for it");
  }
  return CheckNoOtherProcessSharesMemory(pid);
}

}  // namespace scone::attest
