#include "runtime/recent_files.h"

#include <algorithm>
#include <vector>

#include "runtime/files/shield_syscalls.h"

namespace scone::runtime {

void RecentFiles::Note(std::shared_ptr<fs::ProtectedFile> file) {
  std::vector<std::shared_ptr<fs::ProtectedFile>> gone;  // released after mu_
  std::lock_guard lock(mu_);
  for (auto it = files_.begin(); it != files_.end();) {
    if (*it == file || (*it)->unlinked()) {
      gone.push_back(std::move(*it));
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  // Kept, a file whose descriptor could not go above the program's limit (soft and hard limit
  // alike and small: `ulimit -n 32`) would hold one of the program's own: it ran out after 23
  // files where it natively never does (hostile finding).
  if (file == nullptr || files::InProgramsReach(file->data_fd())) return;
  files_.push_front(std::move(file));
  while (files_.size() > kMaxFiles) {
    gone.push_back(std::move(files_.back()));
    files_.pop_back();
  }
}

void RecentFiles::Clear() {
  std::deque<std::shared_ptr<fs::ProtectedFile>> gone;
  std::lock_guard lock(mu_);
  gone.swap(files_);
}

}  // namespace scone::runtime
