// A console pipe's lock kept between records (console_shield.h): the streams of this process that
// keep one, and the runtime thread that lets go of a lock its stream stopped using.
//
// On a pipe every record goes out under the pipe's flock, so that records of processes sharing
// the pipe never interleave. Taking and giving it back around each record is two system calls
// per write: a program streaming its output (`head -c 1G` on a pipe) made four calls where it
// natively makes two. A stream that writes record after record keeps the lock instead, and lets
// go of it
//   - after kMaxRecords records, so that another writer waiting for it gets its turn;
//   - before this process makes a call that could wait for another process (which may be waiting
//     for the lock): every call but a write to the console, a read that finds bytes at once, and
//     calls on memory, time and ids (runtime/entry/dispatch.cc);
//   - before a record of another of its streams, which could be the lock another writer holds
//     while it waits for this one;
//   - and, when the program makes no call at all (computing after a line), by this thread, once
//     the stream wrote nothing for kIdleMs.
// So no writer waits for a kept lock longer than a program computing for kIdleMs would make it.
//
// Thread-safety: all functions may be called concurrently. A stream's lock is let go under its
// own mutex, only tried (never waited for) by others: a thread inside a record keeps or lets go
// itself at its end.
#pragma once

#include <atomic>

namespace scone::runtime {

class ConsoleStream;

class KeptConsoleLocks {
 public:
  static constexpr int kMaxStreams = 8;
  // Records written under one taking of the lock (32 KiB at 4 KiB a record): a writer that waits
  // for it, e.g. a shell echoing a line beside two streaming programs, waits as long as before
  // (20 lines: 70-170 ms with 8, 350-900 ms with 64).
  static constexpr int kMaxRecords = 8;
  static constexpr int kIdleMs = 2;

  // Whether a stream of this process keeps its lock now (one relaxed load: every system call).
  static bool Any() { return count_.load(std::memory_order_relaxed) > 0; }
  // `stream` keeps its pipe's lock after its record. False: it may not (no room in the list, no
  // thread to be had), and lets go now. REQUIRES: the stream's mutex.
  static bool Add(ConsoleStream* stream);
  // `stream` let go of its lock. REQUIRES: the stream's mutex.
  static void Remove(ConsoleStream* stream);
  // Lets go of every kept lock but `except`'s (tried: one another thread is writing stays).
  static void LetGoAll(const ConsoleStream* except = nullptr);
  // In a forked child: the parent's locks and thread are not the child's.
  static void AfterForkInChild();

  // A thread of this process waits for a pipe's lock (another of its streams may keep it, while
  // a third thread is inside that stream's record): no stream keeps its lock meanwhile.
  class Waiting {
   public:
    Waiting() { waiting_.fetch_add(1); }
    ~Waiting() { waiting_.fetch_sub(1); }
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;
  };
  static bool AnyWaiting() { return waiting_.load() > 0; }

 private:
  static void Run();

  static std::atomic<int> count_;
  static std::atomic<int> waiting_;
};

}  // namespace scone::runtime
