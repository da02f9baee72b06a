// Tells CAS the volumes' new states soon after the service syncs, so that a restart on an
// older copy is refused even after a crash that skipped the report at exit. Reports run on a
// thread of their own, off the program's fsync path, one at a time and at most every
// kMinInterval: syncs in between are folded into the next report. After a crash, CAS accepts
// the state it last heard of or a newer one (a commit whose report was still pending).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace scone::runtime {

class VolumeReporter {
 public:
  static constexpr std::chrono::milliseconds kMinInterval{100};

  // `report` sends the current states; it runs on the reporter's thread.
  explicit VolumeReporter(std::function<void()> report) : report_(std::move(report)) {}
  ~VolumeReporter() { Stop(); }

  // A sync happened: report soon. Starts the thread on first use.
  void Synced();
  // Waits for a report in flight, then stops the thread (at exit, before the final report).
  void Stop();

  // Fork: the thread does not exist in the child; its lock must not be held across fork.
  void BeforeFork() { mu_.lock(); }
  void AfterForkInParent() { mu_.unlock(); }
  void AfterForkInChild();

 private:
  void Run();

  std::function<void()> report_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool pending_ = false;
  bool stopping_ = false;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace scone::runtime
