// Hard links inside a volume: several names of one protected file.
//
// A link is made natively: the kernel keeps one data file (inode, link count) under both names,
// so writes through either name reach the same bytes and an open through either name yields the
// same ProtectedFile (open files are keyed by file id). The volume state lists each name with
// the file's entry; a commit updates them all, the data goes with the last name.
#include <sys/stat.h>

#include <optional>
#include <set>
#include <utility>

#include "fs/volume.h"
#include "os/syscalls.h"

namespace scone::fs {

void Volume::NameAdded(const FileId& id, const std::string& path) {
  names_.Add(id, path);
  path_by_id_[id] = *names_.Of(id).begin();
}

void Volume::NameRemoved(const FileId& id, const std::string& path) {
  names_.Remove(id, path);
  const std::set<std::string>& left = names_.Of(id);
  if (left.empty()) {
    path_by_id_.erase(id);
  } else {
    path_by_id_[id] = *left.begin();
  }
}

uint32_t Volume::StateVersion() const {
  return names_.HasLinks() ? kStateVersionWithLinks : kStateVersionSingleNames;
}

Status Volume::RestoreLostNames() {
  for (const auto& [path, entry] : state_.files) {
    const std::set<std::string>& names = names_.Of(entry.file_id);
    if (names.size() < 2) continue;
    std::string full = dir_ + "/" + path;
    SCONE_ASSIGN_OR_RETURN(bool exists, os::Exists(full));
    if (exists) continue;
    for (const std::string& other : names) {
      std::string from = dir_ + "/" + other;
      SCONE_ASSIGN_OR_RETURN(bool there, os::Exists(from));
      if (other == path || !there) continue;
      SCONE_RETURN_IF_ERROR(os::MakeDirectories(full.substr(0, full.rfind('/'))));
      if (os::Sys().link(from.c_str(), full.c_str()) != 0) {
        return IoError("restore " + full + " from " + from, errno);
      }
      break;
    }
  }
  return Status::Ok();
}

void Volume::CheckLinks(std::vector<VolumeProblem>* problems) {
  std::vector<std::set<std::string>> linked;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, first] : path_by_id_) {
      if (names_.CountOf(id) > 1) linked.push_back(names_.Of(id));
    }
  }
  for (const std::set<std::string>& names : linked) {
    // Every name must be the data file the first name is: a copy put in place of a link would
    // part from it at the next write.
    std::optional<std::pair<dev_t, ino_t>> first;
    std::string first_name;
    for (const std::string& name : names) {
      struct stat st;
      if (os::Sys().lstat((dir_ + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      std::pair<dev_t, ino_t> inode{st.st_dev, st.st_ino};
      if (!first) {
        first = inode;
        first_name = name;
      } else if (inode != *first) {
        problems->push_back({name, "not the same file as " + first_name +
                                       " (a hard link replaced behind the volume's back)"});
      }
    }
  }
}

}  // namespace scone::fs
