// A connection the network shield protects, as the program sees it: the kernel descriptor is
// the real TCP (or unix stream) socket, carrying only TLS records; what the program reads and
// writes goes through a net::TlsConnection. The kernel calls are made here, raw, with the
// program's blocking mode: a blocking read waits in ppoll on the socket (a signal ends the wait
// with EINTR), a non-blocking one returns EAGAIN. A handshake in progress is never an end of
// stream: reads wait (or EAGAIN) until it completes or fails.
//
// Locks, always taken in this order, each inside a RuntimeSection: rd_mu_ (one reader takes
// ciphertext from the kernel at a time), wr_mu_ (ciphertext leaves in order), ssl_mu_ (the SSL
// object). A writer takes rd_mu_ only while the handshake is not done (it may need the peer's
// messages). Thread-safety: all methods may be called concurrently.
#pragma once

#include <poll.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/tls_connection.h"
#include "runtime/fd_table.h"
#include "runtime/net/connection_owners.h"

namespace scone::runtime::sockets {

class TlsSocketFd final : public ShieldedFd {
 public:
  // `rule`: what `scone:` lines name ("server rule WEB").
  TlsSocketFd(std::unique_ptr<net::TlsConnection> connection, std::string rule, std::string peer, bool server);
  ~TlsSocketFd() override;

  // recv/read: MSG_DONTWAIT and MSG_PEEK honoured, MSG_WAITALL fills the buffer.
  long Receive(int fd, void* buf, size_t count, int flags);
  // send/write: MSG_DONTWAIT, MSG_NOSIGNAL and MSG_MORE honoured. A blocking socket takes
  // everything.
  long Send(int fd, const void* buf, size_t count, int flags);
  // ioctl(FIONREAD): the plaintext a read returns now (the kernel's count is ciphertext): what
  // the kernel holds is taken in first, without waiting. At least 1 when a read would return
  // data; 0 during the handshake.
  long ReadableBytes(int fd);
  // Runs the handshake to its end on a blocking socket (connect): 0, or -errno.
  long CompleteHandshake(int fd);
  // shutdown(2): SHUT_WR sends close_notify first.
  long Shutdown(int fd, int how);

  // Readiness, for poll/select/epoll: the events the shield adds to the kernel's (POLLIN for
  // plaintext already decrypted or records already received), and the events to ask the kernel
  // for in place of `wanted` (a handshake in progress waits for input, not output; ciphertext
  // still to send asks for POLLOUT).
  short ShieldEvents(short wanted);
  short KernelEvents(short wanted);
  // A readiness call on the connection: the plaintext held back (TCP_CORK, MSG_MORE) is sealed
  // (the program waits, maybe for an answer to it), and ciphertext left over by a non-blocking
  // write is sent, without waiting.
  void FlushWithoutWaiting(int fd);

  // TCP_CORK and MSG_MORE: natively the bytes a corked socket (or a send with MSG_MORE) is
  // given sit in the kernel's queue until they fill a segment; here they would each be a TLS
  // record. So while the program corks, or passes MSG_MORE, its plaintext is held back in the
  // connection (net::TlsConnection::Write with `more`: at most a record, counted as written) and
  // sealed as one record when the program uncorks, writes without MSG_MORE, sets TCP_NODELAY
  // (which pushes corked data, tcp(7)), shuts the socket down or closes it, leaves it (exit,
  // exec), or waits for its peer (a read that finds nothing, a readiness call on the
  // connection): the record then reaches the kernel, whose own cork (the program's setting,
  // passed through; getsockopt reads it unchanged) holds it as it would the program's bytes.
  // An uncork on a blocking socket returns once the kernel holds the record (as a blocking
  // write does), at most SO_SNDTIMEO; setsockopt's result is the kernel's.
  long SetCork(int fd, const void* value, socklen_t size);
  // The program leaves the connection without closing it (exit, exec, close_range): what it
  // held back is sealed and sent without waiting, if this process owns the connection (one
  // that has not used it since a fork leaves it alone).
  void SendHeld(int fd);

  // Nagle and the handshake: natively a client's first write leaves at once (nothing of the
  // connection is in flight yet); here the handshake's last flight is, and a small first write
  // would wait for its acknowledgement, which the peer delays (40 ms per new connection). So a
  // client's connection runs with TCP_NODELAY from the handshake until its first data has left
  // or arrived, and then gets the program's own setting back. The program's setsockopt of
  // TCP_NODELAY meanwhile is its choice (kept); its getsockopt sees its own setting.
  void LendNoDelay(int fd);
  long SetNoDelay(int fd, const void* value, socklen_t size);
  long GetNoDelay(int fd, void* value, socklen_t* size);
  // Drives a handshake in progress as far as it goes without waiting (poll found input).
  void AdvanceHandshake(int fd);
  bool HandshakeDone() const { return handshake_done_.load(std::memory_order_acquire); }
  // Nothing for a readiness call to do: the handshake is done, no ciphertext waits to leave,
  // and no decrypted data or received record may be waiting (one atomic load each).
  bool Quiet() const {
    return HandshakeDone() && !Broken() && !output_waiting_.load(std::memory_order_acquire) &&
           !maybe_readable_.load(std::memory_order_acquire) && !plaintext_held_.load(std::memory_order_acquire);
  }
  // The connection failed (said once in a `scone:` line), or the kernel's socket did (a refused
  // connect, met while the handshake moved on).
  bool Broken() const {
    return failure_logged_.load(std::memory_order_acquire) || socket_error_.load(std::memory_order_acquire) != 0;
  }
  // getsockopt(SO_ERROR): the kernel's error that a handshake step took from the socket (its
  // send or recv returned it), once, as the kernel reports it; 0 when there is none (ask the
  // kernel).
  int TakeSocketError() { return socket_error_.exchange(0, std::memory_order_acq_rel); }

  long Read(int fd, void* buf, size_t count) override { return Receive(fd, buf, count, 0); }
  long Write(int fd, const void* buf, size_t count) override { return Send(fd, buf, count, 0); }
  long ReadAt(void*, size_t, uint64_t) override { return -ESPIPE; }
  long WriteAt(const void*, size_t, uint64_t) override { return -ESPIPE; }
  long Seek(int, int64_t, int) override { return -ESPIPE; }
  // Fork (connection_owners.h). Before the kernel's call: the slot that decides which process
  // owns the connection from now on, held for the child too, and the connection's locks taken,
  // so a call in flight on another thread either ends before the fork or claims the connection
  // after it. A call that another thread began before the fork (waiting for a lock or for the
  // kernel) is the parent's: the parent then owns the connection from the fork on, and the child
  // gets EIO (the call came first, whichever process the scheduler runs first after the fork).
  // AfterFork lets go of the locks in each process. `generation`: the fork's
  // (process::ForkGeneration), so that a connection with several descriptors is prepared once.
  // Returns whether it took the locks (false: already prepared for this fork).
  bool BeforeFork(uint64_t generation);
  void AfterFork(bool in_child);
  void ShareWithOtherProcesses(int) override {}
  void PatchStat(struct stat*) override {}
  uint64_t PlaintextSize() override { return 0; }
  long Truncate(int64_t) override { return -EINVAL; }
  long Allocate(int, int64_t, int64_t) override { return -ENODEV; }
  long Sync() override { return -EINVAL; }
  long KeepTimes(bool, bool) override { return 0; }
  long Map(void*, size_t, int, int, int64_t) override { return -ENODEV; }
  int StatusFlags(int kernel_flags) override { return kernel_flags; }
  int SetStatusFlags(int flags) override { return flags; }
  // The program closes the last descriptor `fd` of the connection: close_notify, if it can
  // leave without waiting.
  void Closing(int fd);
  // The last descriptor is closed, or the process exits or executes another program: this
  // process lets go of its owner slot. (At exit or close_range the kernel ends the stream: the
  // peer sees its end without close_notify.)
  long LastClose() override;
  TlsSocketFd* AsTlsSocket() override { return this; }
  void ForgetParentWrites() override {}
  // A TLS connection's state lives in this process's memory: it cannot follow exec. The
  // descriptor is made close-on-exec (the new program must never write plaintext to it).
  bool Describe(int fd, InheritedFd* out) override;

 private:
  static constexpr long kAgain = -100000;  // a step needs the kernel: wait for *wait events

  // The step of a call made with the locks held; kAgain (and `wait`) when it must wait.
  long ReceiveStep(int fd, void* buf, size_t count, bool peek, short* wait);
  long HandshakeStep(int fd, short* wait);
  // Ciphertext from the kernel into the connection, without waiting: > 0, 0 (end of stream),
  // -EAGAIN, -errno (one deferred by ReadMore first). REQUIRES: rd_mu_.
  long Fill(int fd);
  // After a read of `got` > 0 bytes: more plaintext into `buf`, up to `count`, from what has
  // arrived, as the kernel's recv returns all it holds. A program that reads with EPOLLET takes
  // a short read for "drained" (nginx does) and waited for an edge that never came: the shield
  // had decrypted one record of what the kernel held. Asks the kernel again only if its last
  // read filled the buffer (so more may be queued). An error is kept for the next call.
  // REQUIRES: rd_mu_.
  size_t ReadMore(int fd, uint8_t* buf, size_t count);
  // Moves the connection's output to pending_ and sends what the kernel takes without waiting:
  // 0 when all is sent, -EAGAIN, or -errno. `more`: the program said more follows (MSG_MORE,
  // TCP_CORK), which the kernel is told too. REQUIRES: wr_mu_.
  long Flush(int fd, bool nosignal = true, bool more = false);
  // Seals the plaintext held back as one record, then Flush. REQUIRES: wr_mu_, Owned().
  long PushHeld(int fd);
  // The program pushed what it held back (uncork, TCP_NODELAY): PushHeld, waiting on a blocking
  // socket until the kernel holds it.
  void Push(int fd);
  // Whether this process owns the connection, without claiming it (close, exit: a process that
  // did not use the connection since a fork must not take it from the one that does).
  bool OwnedWithoutClaim() const;
  // Whether the program asked for non-blocking behaviour (MSG_DONTWAIT or O_NONBLOCK).
  static bool NonBlocking(int fd, int flags);
  // When a blocking call on `fd` gives up: now plus the socket's `option` (SO_RCVTIMEO,
  // SO_SNDTIMEO), as CLOCK_MONOTONIC ns; 0 without a timeout (or option 0).
  static int64_t Deadline(int fd, int option);
  // Waits for `events` on the kernel socket (ppoll) until `deadline` (0: none): 0, -EINTR, or
  // -EAGAIN when the deadline passed.
  static long Wait(int fd, short events, int64_t deadline);
  // The connection failed: says why once; the call gets ECONNRESET (a server's read of a
  // connection whose handshake failed: the end of the stream).
  long Failed(bool reading = false);
  // The `scone:` line saying why, rate-limited per rule.
  void LogFailure();
  // Whether this process may use the connection's TLS state: the connection was never shared by
  // a fork, or this process owns it, claiming it if no process used it since. Says why once
  // when not. REQUIRES: one of the connection's locks (a fork takes them all).
  bool Owned();
  // The process that owns a connection shared by fork; 0 if none yet or never shared.
  int32_t Owner() const;
  // Runs `step` (with the locks it takes, in a RuntimeSection) until it does not need to wait;
  // waits in between unless non-blocking, at most the socket's `timeout_option` (SO_RCVTIMEO,
  // SO_SNDTIMEO, 0: none); a signal handler's SA_RESTART restarts the wait, as the kernel does.
  template <typename Step>
  long Run(int fd, int flags, int timeout_option, Step step);
  // The connection's first data left or arrived: the program's TCP_NODELAY back.
  void ReturnNoDelay(int fd) {
    if (nodelay_lent_.load(std::memory_order_acquire)) ReturnNoDelaySlow(fd);
  }
  void ReturnNoDelaySlow(int fd);

  const std::unique_ptr<net::TlsConnection> connection_;  // under ssl_mu_
  const std::string rule_;
  const std::string peer_;
  const bool server_;
  std::mutex rd_mu_, wr_mu_, ssl_mu_;
  // Ciphertext not yet taken by the kernel: pending_ from pending_sent_ on (empty when all was
  // taken); under wr_mu_.
  std::vector<uint8_t> pending_;
  size_t pending_sent_ = 0;
  std::atomic<bool> handshake_done_{false};
  std::atomic<bool> failure_logged_{false};
  // Fork (connection_owners.h): the slot shared with the other processes holding the
  // connection (nullptr until the first fork), the fork generation at which this process last
  // found it owned the connection, and whether it learned that another process does.
  std::atomic<OwnerSlot*> owner_{nullptr};
  std::atomic<uint64_t> owned_generation_{0};
  uint64_t prepared_generation_ = 0;  // written by the forking thread, under all three locks
  std::atomic<bool> foreign_{false};
  std::atomic<int> calls_in_flight_{0};  // this process's threads inside Run (blocking calls)
  std::atomic<bool> released_{false};  // let go of the slot: the connection is no longer usable here
  std::atomic<bool> output_waiting_{false};  // pending_ is not empty
  std::atomic<bool> corked_{false};          // the program's TCP_CORK
  std::atomic<bool> plaintext_held_{false};  // the connection holds plaintext back (written under ssl_mu_)
  std::atomic<bool> nodelay_lent_{false};    // TCP_NODELAY set by the shield (LendNoDelay)
  std::mutex nodelay_mu_;                    // the program's setsockopt against ReturnNoDelay
  // Set when records arrived or a read returned data (more may be buffered); cleared by a
  // readiness check that found nothing to read. Written under ssl_mu_.
  std::atomic<bool> maybe_readable_{false};
  // Under rd_mu_: whether the kernel's last recv filled Fill's buffer (more may be queued), and
  // an error a recv returned to ReadMore, for the next call.
  bool last_fill_full_ = false;
  // The kernel's socket error a handshake step took (ECONNREFUSED of a non-blocking connect):
  // what the program's getsockopt(SO_ERROR), or its next read or write, gets.
  std::atomic<int> socket_error_{0};
  std::atomic<bool> write_shut_{false};  // shutdown(SHUT_WR or SHUT_RDWR) done
  // Keeps `r` (a -errno from the kernel's socket) for the program; returns it.
  long NoteSocketError(long r);
  long deferred_fill_error_ = 0;
};

}  // namespace scone::runtime::sockets
