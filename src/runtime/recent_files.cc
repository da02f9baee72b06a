#include "runtime/recent_files.h"

#include <algorithm>
#include <vector>

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
  if (file == nullptr) return;
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
