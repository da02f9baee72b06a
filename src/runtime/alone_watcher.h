// The hand-over's other half (fs/volume.h): a process that has a volume alone buffers writes,
// and one that joins waits until they are published. The joiner writes the volume's lock file;
// this thread of the runtime watches the lock files of the volumes the process has alone
// (inotify) and hands over at once, whatever the program is doing meanwhile (waiting in poll,
// sleeping, computing). Started when the process first has a volume alone.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "fs/volume.h"

namespace scone::runtime {

class AloneWatcher {
 public:
  static AloneWatcher& Get();
  // Installs Watch as the volumes' alone hook.
  static void Install();

  void Watch(const std::shared_ptr<fs::Volume>& volume);

  // Fork: the child has no thread, and must not read the parent's inotify instance.
  void BeforeFork() { mu_.lock(); }
  void AfterForkInParent() { mu_.unlock(); }
  void AfterForkInChild();

 private:
  AloneWatcher() = default;
  void Run(int inotify);

  std::mutex mu_;
  int inotify_ = -1;
  int parent_inotify_ = -1;  // in a forked child: closed when it first watches
  std::map<int, std::weak_ptr<fs::Volume>> watched_;  // by watch descriptor
  std::unique_ptr<std::thread> thread_;
};

}  // namespace scone::runtime
