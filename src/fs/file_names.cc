#include "fs/file_names.h"

namespace scone::fs {

void FileNames::Add(const FileId& id, const std::string& path) {
  std::set<std::string>& names = names_[id];
  if (!names.insert(path).second) return;
  if (names.size() == 2) ++linked_files_;
}

void FileNames::Remove(const FileId& id, const std::string& path) {
  auto it = names_.find(id);
  if (it == names_.end() || it->second.erase(path) == 0) return;
  if (it->second.size() == 1) --linked_files_;
  if (it->second.empty()) names_.erase(it);
}

void FileNames::Clear() {
  names_.clear();
  linked_files_ = 0;
}

const std::set<std::string>& FileNames::Of(const FileId& id) const {
  static const std::set<std::string> kNone;
  auto it = names_.find(id);
  return it == names_.end() ? kNone : it->second;
}

}  // namespace scone::fs
