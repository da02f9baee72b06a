// The protected files a process opened last, kept loaded after their last descriptor closes.
// A server opens the same files for every request (nginx without `open_file_cache`), and
// loading one (its header, its chunk table, its keys: six system calls and a dozen hashes)
// cost more than serving it. A kept file stays open to its volume: it follows what other
// processes publish as any open file does, and every byte read from it is authenticated as
// ever. What changes is when a data file replaced behind the volume's back is noticed: as
// for a file a process holds open, by the next process that loads it (or `volume verify`).
//
// Thread-safety: all methods may be called concurrently. A file let go of may commit (its last
// reference): never call them while holding a volume's lock.
#pragma once

#include <deque>
#include <memory>
#include <mutex>

#include "fs/protected_file.h"

namespace scone::runtime {

class RecentFiles {
 public:
  // Enough for the hot files of a small server; each costs a descriptor and its chunk table.
  static constexpr size_t kMaxFiles = 32;

  // `file` was opened: it is kept, the least recently opened one goes past kMaxFiles, and
  // files unlinked since go at once (their disk space with them).
  void Note(std::shared_ptr<fs::ProtectedFile> file);
  // Lets go of files unlinked since they were kept.
  void ForgetUnlinked() { Note(nullptr); }
  // Lets go of every file (before a fork: a process with no file open rests; at exit).
  void Clear();
  // Fork: a thread of the parent noting a file as it forks would leave the lock held, and the
  // list half-changed, in the child, whose every open of the volume then waits for good.
  void BeforeFork() { mu_.lock(); }
  void AfterFork() { mu_.unlock(); }

 private:
  std::mutex mu_;
  std::deque<std::shared_ptr<fs::ProtectedFile>> files_;  // the most recently opened first
};

}  // namespace scone::runtime
