#include "fs/buffered_files.h"

#include <algorithm>

namespace scone::fs {

std::atomic<int> BufferedFiles::noted_sets_{0};
std::atomic<int> BufferedFiles::being_published_{0};

bool BufferedFiles::Note(const FileId& id) {
  std::lock_guard lock(mu_);
  if (std::find(files_.begin(), files_.end(), id) != files_.end()) return false;
  files_.push_back(id);
  if (files_.size() > 1) return false;
  noted_sets_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

std::vector<FileId> BufferedFiles::Take(const FileId* except) {
  std::lock_guard lock(mu_);
  std::vector<FileId> taken;
  if (files_.empty()) return taken;
  if (files_.size() == 1 && except != nullptr && files_[0] == *except) return taken;
  being_published_.fetch_add(1, std::memory_order_seq_cst);
  bool kept = false;
  for (const FileId& f : files_) {
    if (except != nullptr && f == *except) {
      kept = true;
    } else {
      taken.push_back(f);
    }
  }
  if (kept) {
    files_.assign(1, *except);
  } else {
    ForgetLocked();
  }
  return taken;
}

void BufferedFiles::ForgetLocked() {
  if (files_.empty()) return;
  files_.clear();  // keeps its capacity: no allocation (the fork child's case)
  noted_sets_.fetch_sub(1, std::memory_order_acq_rel);
}

void BufferedFiles::AfterForkInChild() {
  ForgetLocked();
  being_published_.store(0, std::memory_order_relaxed);  // by threads the child does not have
  mu_.unlock();
}

}  // namespace scone::fs
