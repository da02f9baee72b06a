// Which paths name each protected file: one, or several once a program made hard links
// (link(2): git's object store, `git clone --local`, `ln`). The volume state maps the other way
// (path -> entry, every name of a file carrying the same entry); this index lets a commit, an
// unlink or a rename reach every name of a file id without a scan.
//
// Thread-safety: none; the volume guards it with its lock.
#pragma once

#include <map>
#include <set>
#include <string>

#include "fs/format.h"

namespace scone::fs {

class FileNames {
 public:
  void Add(const FileId& id, const std::string& path);
  void Remove(const FileId& id, const std::string& path);
  void Clear();

  // Every name of the file, in path order; empty if it has none.
  const std::set<std::string>& Of(const FileId& id) const;
  size_t CountOf(const FileId& id) const { return Of(id).size(); }
  // Whether some file has more than one name.
  bool HasLinks() const { return linked_files_ != 0; }

 private:
  std::map<FileId, std::set<std::string>> names_;
  size_t linked_files_ = 0;  // files with more than one name
};

}  // namespace scone::fs
