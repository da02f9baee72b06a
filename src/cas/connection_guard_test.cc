// The connection guard and the elastic pool: caps per address, a deadline for the whole
// connection that ends a blocked read, and jobs that block never starving the next one.
#include "cas/connection_guard.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

namespace scone::cas {
namespace {

struct SocketPair {
  int fds[2] = {-1, -1};
  SocketPair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0); }
  ~SocketPair() {
    close(fds[0]);
    close(fds[1]);
  }
};

TEST(ConnectionGuardTest, CapsConnectionsPerAddress) {
  ConnectionGuard::Limits limits;
  limits.per_address = 2;
  ConnectionGuard guard(limits);
  SocketPair a, b, c, d;
  std::string why;
  EXPECT_TRUE(guard.Admit(a.fds[0], "10.0.0.1", &why));
  EXPECT_TRUE(guard.Admit(b.fds[0], "10.0.0.1", &why));
  EXPECT_FALSE(guard.Admit(c.fds[0], "10.0.0.1", &why));
  EXPECT_NE(why.find("10.0.0.1 holds 2 connections"), std::string::npos) << why;
  EXPECT_TRUE(guard.Admit(d.fds[0], "10.0.0.2", &why));  // another address is not affected
  guard.Release(a.fds[0]);
  EXPECT_TRUE(guard.Admit(c.fds[0], "10.0.0.1", &why));
  guard.Release(b.fds[0]);
  guard.Release(c.fds[0]);
  guard.Release(d.fds[0]);
}

TEST(ConnectionGuardTest, TheDeadlineEndsABlockedRead) {
  ConnectionGuard::Limits limits;
  limits.deadline = std::chrono::milliseconds(200);
  ConnectionGuard guard(limits);
  SocketPair p;
  std::string why;
  ASSERT_TRUE(guard.Admit(p.fds[0], "10.0.0.1", &why));
  auto start = std::chrono::steady_clock::now();
  char byte;
  // The peer sends nothing: only the guard's shutdown ends this read.
  EXPECT_EQ(recv(p.fds[0], &byte, 1, 0), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(150));
  guard.Release(p.fds[0]);
}

TEST(ElasticPoolTest, BlockedJobsDoNotHoldUpTheNext) {
  ElasticPool pool(2, 64);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  for (int i = 0; i < 40; ++i) pool.Run([released] { released.wait(); });
  std::promise<void> ran;
  pool.Run([&ran] { ran.set_value(); });
  EXPECT_EQ(ran.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "40 blocked jobs held up the 41st";
  release.set_value();
  pool.Drain();
}

}  // namespace
}  // namespace scone::cas
