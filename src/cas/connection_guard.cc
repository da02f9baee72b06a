#include "cas/connection_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

namespace scone::cas {

ConnectionGuard::ConnectionGuard(Limits limits) : limits_(limits), watchdog_([this] { Watch(); }) {}

ConnectionGuard::~ConnectionGuard() {
  ShutdownAll();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  watchdog_.join();
}

std::string ConnectionGuard::PeerAddress(int fd) {
  sockaddr_storage addr = {};
  socklen_t len = sizeof(addr);
  char ip[INET6_ADDRSTRLEN] = "?";
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    if (addr.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, ip, sizeof(ip));
    } else if (addr.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, ip, sizeof(ip));
    }
  }
  return ip;
}

bool ConnectionGuard::Admit(int fd, const std::string& address, std::string* refusal) {
  std::lock_guard lock(mu_);
  if (admitted_.size() >= limits_.max_connections) {
    *refusal = "CAS holds " + std::to_string(admitted_.size()) + " connections, its limit";
    return false;
  }
  int& count = per_address_[address];
  if (count >= limits_.per_address) {
    *refusal = address + " holds " + std::to_string(count) + " connections, the limit per address";
    return false;
  }
  ++count;
  // No wake-up for the watchdog: it looks at least every quarter deadline anyway, and a
  // wake-up per connection would cost every attestation a context switch.
  admitted_[fd] = Entry{address, std::chrono::steady_clock::now() + limits_.deadline};
  return true;
}

void ConnectionGuard::Release(int fd) {
  std::lock_guard lock(mu_);
  auto it = admitted_.find(fd);
  if (it == admitted_.end()) return;
  if (--per_address_[it->second.address] == 0) per_address_.erase(it->second.address);
  admitted_.erase(it);
}

void ConnectionGuard::ShutdownAll() {
  std::lock_guard lock(mu_);
  for (auto& [fd, entry] : admitted_) {
    shutdown(fd, SHUT_RDWR);
    entry.expired = true;
  }
}

void ConnectionGuard::Watch() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    auto now = std::chrono::steady_clock::now();
    auto next = now + std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(1), limits_.deadline / 4);
    for (auto& [fd, entry] : admitted_) {
      if (entry.expired) continue;
      if (entry.deadline <= now) {
        // The owner still holds the descriptor (it calls Release before closing, under mu_),
        // so this number names this connection.
        shutdown(fd, SHUT_RDWR);
        entry.expired = true;
      } else {
        next = std::min(next, entry.deadline);
      }
    }
    changed_.wait_until(lock, next);
  }
}

ElasticPool::ElasticPool(size_t keep_threads, size_t max_threads)
    : state_(std::make_shared<State>(keep_threads, max_threads)) {}

ElasticPool::~ElasticPool() {
  State& s = *state_;
  std::unique_lock lock(s.mu);
  s.stop = true;
  s.ready.notify_all();
  s.idle_changed.wait(lock, [&] { return s.threads == 0; });
}

void ElasticPool::Run(std::function<void()> job) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  s.jobs.push_back(std::move(job));
  ++s.running;
  if (s.jobs.size() > s.idle && s.threads < s.max) {
    ++s.threads;
    std::thread([state = state_] { Work(state); }).detach();
  } else {
    s.ready.notify_one();
  }
}

void ElasticPool::Drain() {
  State& s = *state_;
  std::unique_lock lock(s.mu);
  s.idle_changed.wait(lock, [&] { return s.running == 0; });
}

void ElasticPool::Work(const std::shared_ptr<State>& state) {
  // A peer that went away must make a write fail (EPIPE), not kill the process: SIGPIPE is
  // blocked on these threads (a thread-directed signal then stays pending, harmlessly).
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  State& s = *state;
  std::unique_lock lock(s.mu);
  while (true) {
    if (s.jobs.empty()) {
      ++s.idle;
      bool woken = s.ready.wait_for(lock, std::chrono::seconds(30), [&] { return s.stop || !s.jobs.empty(); });
      --s.idle;
      if (s.jobs.empty() && (s.stop || (!woken && s.threads > s.keep))) break;
      if (s.jobs.empty()) continue;
    }
    std::function<void()> job = std::move(s.jobs.front());
    s.jobs.pop_front();
    lock.unlock();
    job();
    job = nullptr;
    lock.lock();
    if (--s.running == 0) s.idle_changed.notify_all();
  }
  --s.threads;
  lock.unlock();
  s.idle_changed.notify_all();  // `state` keeps the condition variable alive, whatever the pool's fate
}

}  // namespace scone::cas
