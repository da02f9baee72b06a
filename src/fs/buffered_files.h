// The files a process alone with its volume wrote to without publishing yet (fs/volume.h), in
// the order it first wrote to them. A process alone buffers small writes in its memory, where a
// kill (SIGKILL, the OOM killer) loses them; natively the kernel already holds every write that
// returned. So that what a killed process leaves is at least a prefix of what it wrote, in the
// order it wrote it, a file's buffer is published before anything that comes after it in the
// program's order reaches the disk or leaves the process: a write to another file, a commit, a
// rename, a byte to a pipe or socket (the runtime's part, runtime/entry/dispatch.cc). SQLite
// without syncs (synchronous=OFF, which it documents as safe against an application crash)
// then finds its rollback journal whenever the database holds part of a transaction, and a
// server's reply never precedes the log write it acknowledges (redis's appendfsync everysec).
// What is buffered longer than a few milliseconds is published by the runtime's watcher thread
// (runtime/alone_watcher.h), so that a slow logger killed keeps its lines.
//
// Thread-safety: all methods may be called concurrently (a leaf lock: taken under a file's).
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "fs/format.h"

namespace scone::fs {

class BufferedFiles {
 public:
  // Notes that `id` has unpublished writes. True when it is the first since the last Take
  // (nothing of this volume was buffered until now).
  bool Note(const FileId& id);
  // Takes every noted file but `except` (nullptr: every one), in the order they were noted.
  // A non-empty take counts as being published until Published() is called for it.
  std::vector<FileId> Take(const FileId* except);
  static void Published() { being_published_.fetch_sub(1, std::memory_order_acq_rel); }

  // Whether any volume of the process has a file noted: one load, for the runtime's calls that
  // send something out of the process.
  static bool AnyInProcess() { return noted_sets_.load(std::memory_order_acquire) > 0; }
  // Whether any file of the process is noted or being published by some thread (a fault ends
  // the process only once nothing is: runtime/process/termination.h).
  static bool AnyUnpublishedInProcess() {
    return noted_sets_.load(std::memory_order_seq_cst) > 0 || being_published_.load(std::memory_order_seq_cst) > 0;
  }

  // Fork: held across it, and the child forgets what is noted (its parent publishes its writes).
  void BeforeFork() { mu_.lock(); }
  void AfterForkInParent() { mu_.unlock(); }
  void AfterForkInChild();

 private:
  void ForgetLocked();

  std::mutex mu_;
  std::vector<FileId> files_;  // a handful at most: one, for a single-threaded program
  static std::atomic<int> noted_sets_;  // volumes of the process with a file noted
  static std::atomic<int> being_published_;  // takes not yet published (counted before noted_sets_ drops)
};

}  // namespace scone::fs
