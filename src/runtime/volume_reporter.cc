#include "runtime/volume_reporter.h"

#include "runtime/entry/entry.h"

namespace scone::runtime {

void VolumeReporter::Synced() {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  pending_ = true;
  if (!thread_) thread_ = StartRuntimeThread([this] { Run(); });
  wake_.notify_one();
}

void VolumeReporter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_ && thread_->joinable()) thread_->join();
}

void VolumeReporter::AfterForkInChild() {
  // The child has only the thread that forked: forget the reporter's thread object without
  // destroying it (destroying a joinable std::thread terminates the process).
  (void)thread_.release();
  pending_ = false;
  mu_.unlock();
}

void VolumeReporter::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return pending_ || stopping_; });
    if (stopping_) return;
    pending_ = false;
    lock.unlock();
    report_();
    lock.lock();
    // Rate limit: syncs during the pause are folded into the next report.
    wake_.wait_for(lock, kMinInterval, [&] { return stopping_; });
  }
}

}  // namespace scone::runtime
