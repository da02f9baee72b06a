#include "runtime/alone_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <time.h>

#include <new>
#include <vector>

#include "runtime/entry/entry.h"
#include "runtime/entry/raw_syscall.h"
#include "runtime/files/shield_syscalls.h"
#include "runtime/runtime.h"

namespace scone::runtime {

namespace {
int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}
}  // namespace

AloneWatcher& AloneWatcher::Get() {
  static AloneWatcher* watcher = new AloneWatcher();  // its thread may outlive exit handlers
  return *watcher;
}

void AloneWatcher::Install() {
  fs::Volume::SetAloneHook([](const std::shared_ptr<fs::Volume>& volume) { Get().Watch(volume); });
  fs::Volume::SetBufferedHook([] { Get().Wake(); });
}

void AloneWatcher::Watch(const std::shared_ptr<fs::Volume>& volume) {
  std::lock_guard lock(mu_);
  if (parent_inotify_ >= 0) {  // the first watch of a forked child
    files::CloseOwn(parent_inotify_);
    parent_inotify_ = -1;
    if (parent_wake_ >= 0) files::CloseOwn(parent_wake_);
    parent_wake_ = -1;
    watched_.clear();
  }
  if (inotify_ < 0) {
    long fd = RawSyscall(SYS_inotify_init1, IN_CLOEXEC);
    long wake = RawSyscall(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0 || wake < 0) {
      if (fd >= 0) RawSyscall(SYS_close, fd);
      if (wake >= 0) RawSyscall(SYS_close, wake);
      Log("volume " + volume->LockPath() + ": no inotify or eventfd (" + std::to_string(fd < 0 ? -fd : -wake) +
          "): processes that join it wait for this one's next call on it, and what it buffers is published "
          "at its next write elsewhere");
      return;
    }
    inotify_ = files::KeepOwn(static_cast<int>(fd));
    wake_.store(files::KeepOwn(static_cast<int>(wake)), std::memory_order_release);
  }
  std::string path = volume->LockPath();
  long wd = RawSyscall(SYS_inotify_add_watch, inotify_, Arg(path.c_str()), IN_MODIFY);
  if (wd < 0) return;
  watched_[static_cast<int>(wd)] = volume;
  if (!thread_) thread_ = StartRuntimeThread([this, fd = inotify_, wake = wake_.load()] { Run(fd, wake); });
}

void AloneWatcher::Wake() {
  if (!idle_.exchange(false, std::memory_order_acq_rel)) return;
  int fd = wake_.load(std::memory_order_acquire);
  uint64_t one = 1;
  if (fd >= 0) (void)RawSyscall(SYS_write, fd, Arg(&one), sizeof(one));
}

void AloneWatcher::PublishBuffered() {
  // Out of memory (a program that took all it may have): published later, by the program's
  // own calls (its close, its next write elsewhere), or lost with it if it is killed first.
  try {
    std::vector<std::shared_ptr<fs::Volume>> volumes;
    {
      std::lock_guard lock(mu_);
      for (const auto& [wd, weak] : watched_) {
        if (auto v = weak.lock()) volumes.push_back(std::move(v));
      }
    }
    for (auto& v : volumes) {
      Status s = v->PublishBuffered();
      if (!s.ok()) Log("publishing what was written to volume " + v->dir() + ": " + s.message());
    }
  } catch (const std::bad_alloc&) {
  }
}

void AloneWatcher::Run(int inotify, int wake) {
  int64_t deadline = -1;  // when what is buffered now is published; -1: nothing is
  for (;;) {
    if (deadline < 0) {
      // Idle first, then look: a writer that notes a file after the look wakes the thread.
      idle_.store(true, std::memory_order_seq_cst);
      if (fs::Volume::AnyBuffered()) {
        idle_.store(false, std::memory_order_relaxed);
        deadline = NowMs() + kPublishAfterMs;
      }
    }
    const int timeout = deadline < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
    struct pollfd fds[2] = {{inotify, POLLIN, 0}, {wake, POLLIN, 0}};
    long n = RawSyscall(SYS_poll, Arg(fds), 2, timeout);
    if (n == -EINTR) continue;
    if (n < 0) return;
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      (void)RawSyscall(SYS_read, wake, Arg(&count), sizeof(count));
      if (deadline < 0) deadline = NowMs() + kPublishAfterMs;
    }
    if (fds[0].revents & POLLIN) {
      try {
        HandOver(inotify);
      } catch (const std::bad_alloc&) {  // the joiner waits for the program's next call
      }
    }
    if (fds[0].revents & (POLLERR | POLLNVAL)) return;
    if (deadline >= 0 && NowMs() >= deadline) {
      RuntimeSection section;
      PublishBuffered();
      deadline = -1;
    }
  }
}

void AloneWatcher::HandOver(int inotify) {
  alignas(inotify_event) char buffer[4096];
  long n = RawSyscall(SYS_read, inotify, Arg(buffer), sizeof(buffer));
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

void AloneWatcher::AfterForkInChild() {
  // No allocation here: the parent's thread and descriptors are only forgotten.
  (void)thread_.release();
  parent_inotify_ = inotify_;
  inotify_ = -1;
  parent_wake_ = wake_.exchange(-1);
  idle_.store(false);
  mu_.unlock();
  // watched_ is cleared lazily: a child shares every volume it inherited (no hand-over to do).
}

}  // namespace scone::runtime
