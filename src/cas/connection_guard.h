// What one client can hold of CAS: both ports (the REST API and the attestation port) admit a
// connection only while its address holds fewer than a cap, and give it a deadline for the whole
// connection, TLS handshake included; at the deadline (a quarter of it late at most) its socket
// is shut down, which ends any read or write blocked on it. Each admitted connection runs on a
// thread of an elastic pool (threads made on demand up to a cap, idle ones kept a while), so
// connections that dribble bytes hold their own threads and never the one an honest request
// needs.
//
// cpp-httplib bounds neither a chunked body before it is whole, nor a connection's total time,
// nor connections per address; its server admits connections through this guard (from OpenSSL's
// handshake callback) and runs them on this pool (cas/server.cc).
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace scone::cas {

class ConnectionGuard {
 public:
  struct Limits {
    int per_address = 128;
    std::chrono::milliseconds deadline{10000};
    size_t max_connections = 1024;
  };
  explicit ConnectionGuard(Limits limits);
  ~ConnectionGuard();  // shuts down what is still admitted and stops the watchdog

  // Admits the connection on `fd` from `address`, or says why not (a cap is reached). The
  // caller keeps `fd` and calls Release before closing it.
  bool Admit(int fd, const std::string& address, std::string* refusal);
  void Release(int fd);
  // Shuts down every admitted connection (the server stops).
  void ShutdownAll();

  // The peer's IP address ("?" if unknown).
  static std::string PeerAddress(int fd);

 private:
  struct Entry {
    std::string address;
    std::chrono::steady_clock::time_point deadline;
    bool expired = false;
  };
  void Watch();

  Limits limits_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<int, Entry> admitted_;
  std::map<std::string, int> per_address_;
  bool stop_ = false;
  std::thread watchdog_;
};

// Runs jobs on threads made on demand up to `max_threads`; beyond, jobs wait in order. Idle
// threads beyond `keep_threads` end after a while.
class ElasticPool {
 public:
  ElasticPool(size_t keep_threads, size_t max_threads);
  ~ElasticPool();  // runs what is queued, then joins

  void Run(std::function<void()> job);
  // Returns once every job run so far has finished.
  void Drain();

 private:
  // Shared with the threads: the last one out may still notify after the destructor returned
  // (a condition variable inside the pool was then notified after it was freed, corrupting the
  // memory that took its place).
  struct State {
    State(size_t keep_threads, size_t max_threads) : keep(keep_threads), max(max_threads) {}
    const size_t keep, max;
    std::mutex mu;
    std::condition_variable ready, idle_changed;
    std::deque<std::function<void()>> jobs;
    size_t threads = 0, idle = 0, running = 0;
    bool stop = false;
  };
  static void Work(const std::shared_ptr<State>& state);

  const std::shared_ptr<State> state_;
};

}  // namespace scone::cas
