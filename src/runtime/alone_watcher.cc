#include "runtime/alone_watcher.h"

#include <sys/inotify.h>
#include <sys/syscall.h>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/runtime.h"

namespace scone::runtime {

AloneWatcher& AloneWatcher::Get() {
  static AloneWatcher* watcher = new AloneWatcher();  // its thread may outlive exit handlers
  return *watcher;
}

void AloneWatcher::Install() {
  fs::Volume::SetAloneHook([](const std::shared_ptr<fs::Volume>& volume) { Get().Watch(volume); });
}

void AloneWatcher::Watch(const std::shared_ptr<fs::Volume>& volume) {
  std::lock_guard lock(mu_);
  if (parent_inotify_ >= 0) {  // the first watch of a forked child
    files::CloseOwn(parent_inotify_);
    parent_inotify_ = -1;
    watched_.clear();
  }
  if (inotify_ < 0) {
    long fd = RawSyscall(SYS_inotify_init1, IN_CLOEXEC);
    if (fd < 0) {
      Log("volume " + volume->LockPath() + ": no inotify (" + std::to_string(-fd) +
          "): processes that join it wait for this one's next call on it");
      return;
    }
    inotify_ = files::KeepOwn(static_cast<int>(fd));
  }
  std::string path = volume->LockPath();
  long wd = RawSyscall(SYS_inotify_add_watch, inotify_, Arg(path.c_str()), IN_MODIFY);
  if (wd < 0) return;
  watched_[static_cast<int>(wd)] = volume;
  if (!thread_) thread_ = std::make_unique<std::thread>([this, fd = inotify_] { Run(fd); });
}

void AloneWatcher::Run(int inotify) {
  BecomeRuntimeThread();
  alignas(inotify_event) char buffer[4096];
  for (;;) {
    long n = RawSyscall(SYS_read, inotify, Arg(buffer), sizeof(buffer));
    if (n == -EINTR) continue;
    if (n <= 0) return;
    for (long at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      at += static_cast<long>(sizeof(inotify_event) + event->len);
      std::shared_ptr<fs::Volume> volume;
      {
        std::lock_guard lock(mu_);
        auto it = watched_.find(event->wd);
        if (it != watched_.end()) volume = it->second.lock();
      }
      if (volume == nullptr) continue;
      RuntimeSection section;
      Status s = volume->HandOverIfJoined();
      if (!s.ok()) Log("handing volume " + volume->LockPath() + " over: " + s.message());
    }
  }
}

void AloneWatcher::AfterForkInChild() {
  // No allocation here: the parent's thread and inotify instance are only forgotten.
  (void)thread_.release();
  parent_inotify_ = inotify_;
  inotify_ = -1;
  mu_.unlock();
  // watched_ is cleared lazily: a child shares every volume it inherited (no hand-over to do).
}

}  // namespace scone::runtime
