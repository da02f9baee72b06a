// How processes that map one protected file come to share its image (shared_image.h), without a
// name in any file system: each process holding an image listens on an abstract unix socket
// named after the file (a tag derived from the file's sharing key, so a name says nothing about
// the file and differs per volume), a random suffix and a MAC of the suffix (so only a holder of
// the key makes a name that verifies). A process about to make an image looks for such names in
// /proc/net/unix first and asks a holder; both prove that they hold the volume's key
// (HMAC-SHA256 over both sides' nonces and both processes' ids as the kernel reports them, so a
// program relaying the messages between the two proves nothing) before the holder passes its
// memory file (SCM_RIGHTS). A program without the key gets nothing, and a process of the volume
// takes nothing from one. A holder that does not answer within 10 s (stopped) makes the mapping
// fail (EAGAIN and a scone: line) rather than a second image that would split the file's content.
//
// Abstract sockets belong to the network namespace: the processes of one container find one
// another. A process that made or received an image serves it until it lets go of it; a forked
// child serves the images it inherited under a listener of its own, made before the fork.
//
// Thread-safety: all methods may be called concurrently; one thread of the runtime answers
// requests.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "crypto/secret.h"

namespace scone::runtime {

class ImageBroker {
 public:
  static ImageBroker& Get();

  // What a holder hands over: its image (a memory file) and its base (the file's content when
  // the holder last agreed with it: shared_image.h), both now this process's descriptors.
  struct Fetched {
    int memfd = -1;  // -1: no process answers for the file
    int basefd = -1;
  };
  // The image another process holds for the file with this sharing key.
  Result<Fetched> Fetch(const SecretBytes& key);
  // Answers for `memfd` (and its base `basefd`) under `key` from now on, until Withdraw(handle).
  Result<uint64_t> Serve(const SecretBytes& key, int memfd, int basefd);
  void Withdraw(uint64_t handle);

  // Which files' images some process serves now, as their listeners' name prefixes (one scan of
  // /proc/net/unix); NamePrefix(key) is a file's.
  static std::set<std::string> ServedPrefixes();
  static std::string NamePrefix(const SecretBytes& key);

  // Fork (runtime/process/fork.cc): a listener for the child per image, made before; the parent
  // closes its copies, the child takes them and closes the parent's (no allocation), and starts
  // its own thread when it completes its fork.
  void BeforeFork();
  void AfterForkInParent();
  void AfterForkInChild();
  void CompleteForkInChild();

 private:
  struct Served {
    uint64_t handle;
    SecretBytes key;
    std::string name_prefix;  // "scone-image-<tag>-"
    int memfd;
    int basefd;
    int listener;
    int child_listener = -1;   // made before a fork, for the child
    int parent_listener = -1;  // in a child, until it completes its fork
  };
  ImageBroker() = default;
  struct Handshake;
  void EnsureThread();  // REQUIRES: mu_
  void Run();
  // One step of a holder's handshake on connection `s`; false once it is over.
  bool Step(int s, Handshake& h);
  // `now`: listen at once (else the caller listens later, in the process that will answer).
  static Result<int> Listen(const std::string& prefix, const SecretBytes& key, bool now);

  std::mutex mu_;
  std::vector<Served> served_;
  uint64_t next_handle_ = 1;
  int wake_fd_ = -1;  // an eventfd: the thread re-reads the listeners
  int parent_wake_fd_ = -1;
  std::unique_ptr<std::thread> thread_;
};

}  // namespace scone::runtime
