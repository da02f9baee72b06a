// The hand-over's other half (fs/volume.h): a process that has a volume alone buffers writes,
// and one that joins waits until they are published. The joiner writes the volume's lock file;
// this thread of the runtime watches the lock files of the volumes the process has alone
// (inotify) and hands over at once, whatever the program is doing meanwhile (waiting in poll,
// sleeping, computing). Started when the process first has a volume alone.
//
// It also bounds how long a write stays buffered (fs/buffered_files.h): what the program wrote
// and did not publish otherwise is published within kPublishAfterMs, so that a process killed
// keeps what it wrote until a few milliseconds before (a logger that writes a line now and
// then, a server appending to its log).
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "fs/volume.h"

namespace scone::runtime {

class AloneWatcher {
 public:
  // Long enough that a program writing in a loop publishes a few hundred times a second at
  // most, short enough that a process killed loses what it wrote in that time only.
  static constexpr int kPublishAfterMs = 20;

  static AloneWatcher& Get();
  // Installs Watch as the volumes' alone hook, and the buffered hook that starts the clock.
  static void Install();

  void Watch(const std::shared_ptr<fs::Volume>& volume);
  // Publishes what the program buffered in every volume it has alone (before a call that sends
  // something out of the process: runtime/entry/dispatch.cc). REQUIRES: no volume or file lock.
  void PublishBuffered();

  // Fork: the child has no thread, and must not read the parent's inotify instance.
  void BeforeFork() { mu_.lock(); }
  void AfterForkInParent() { mu_.unlock(); }
  void AfterForkInChild();

 private:
  AloneWatcher() = default;
  void Run(int inotify, int wake);
  void HandOver(int inotify);
  // A volume holds buffered writes where none did: wakes the thread if it waits without a
  // deadline (one write to an eventfd; none while the clock runs).
  void Wake();

  std::mutex mu_;
  int inotify_ = -1;
  int parent_inotify_ = -1;  // in a forked child: closed when it first watches
  std::atomic<int> wake_{-1};  // eventfd
  int parent_wake_ = -1;
  std::atomic<bool> idle_{false};  // the thread waits with no deadline
  std::map<int, std::weak_ptr<fs::Volume>> watched_;  // by watch descriptor
  std::unique_ptr<std::thread> thread_;
};

}  // namespace scone::runtime
