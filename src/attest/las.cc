#include "attest/las.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "attest/code_integrity.h"
#include "attest/measurement.h"
#include "os/file.h"
#include "os/syscalls.h"

namespace scone::attest {
namespace {

constexpr char kRequestLabel[] = "scone-las-request-v2";
constexpr char kResponseLabel[] = "scone-las-response-v2";
constexpr uint32_t kMaxMessage = 64 * 1024;
constexpr size_t kMaxEnviron = 1 << 20;
constexpr auto kConnectionDeadline = std::chrono::seconds(5);
constexpr long kProcSuperMagic = 0x9fa0;

enum class Kind : uint8_t { kEvidence = 1, kSealingKey = 2, kCounter = 3 };

using Clock = std::chrono::steady_clock;

Status SendAll(int fd, ByteSpan data, msghdr* first = nullptr) {
  for (size_t done = 0; done < data.size();) {
    iovec iov = {const_cast<uint8_t*>(data.data() + done), data.size() - done};
    msghdr plain = {};
    msghdr* m = done == 0 && first ? first : &plain;  // ancillary data goes with the first bytes
    m->msg_iov = &iov;
    m->msg_iovlen = 1;
    ssize_t n = sendmsg(fd, m, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError("LAS send", errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status RecvAll(int fd, uint8_t* out, size_t size) {
  for (size_t done = 0; done < size;) {
    ssize_t n = recv(fd, out + done, size - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return InvalidArgument("LAS connection closed mid-message");
    if (n < 0) return IoError("LAS receive", errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// A message as LAS receives it: every chunk's sender credentials, and the descriptors passed.
struct Incoming {
  Bytes body;
  std::vector<ucred> senders;  // one per chunk; a chunk without credentials has pid 0
  std::vector<int> fds;
  ~Incoming() {
    for (int fd : fds) close(fd);
  }
};

// Receives into `out` before `deadline`, recording credentials and descriptors per chunk.
Status RecvAllFrom(int fd, uint8_t* out, size_t size, Clock::time_point deadline, Incoming* in) {
  for (size_t done = 0; done < size;) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count();
    if (left <= 0) return InvalidArgument("LAS request not complete within its deadline");
    struct timeval tv = {static_cast<time_t>(left / 1000000), static_cast<suseconds_t>(left % 1000000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    iovec iov = {out + done, size - done};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 4)];
    msghdr m = {};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return InvalidArgument("LAS connection closed mid-message");
    if (n < 0) return IoError("LAS receive", errno);
    ucred sender = {};
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(ucred))) {
        std::memcpy(&sender, CMSG_DATA(c), sizeof(sender));
      } else if (c->cmsg_type == SCM_RIGHTS) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int passed;
          std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          in->fds.push_back(passed);
        }
      }
    }
    in->senders.push_back(sender);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status SendMessage(int fd, const Bytes& body, msghdr* ancillary = nullptr) {
  ByteWriter w;
  w.U32(static_cast<uint32_t>(body.size()));
  w.Raw(body);
  return SendAll(fd, w.bytes(), ancillary);
}

Result<Bytes> ReceiveMessage(int fd) {
  uint8_t size_bytes[4];
  SCONE_RETURN_IF_ERROR(RecvAll(fd, size_bytes, sizeof(size_bytes)));
  uint32_t size;
  ByteReader r(ByteSpan(size_bytes, 4));
  r.U32(&size);
  if (size > kMaxMessage) return InvalidArgument("LAS message of " + std::to_string(size) + " bytes");
  Bytes body(size);
  SCONE_RETURN_IF_ERROR(RecvAll(fd, body.data(), size));
  return body;
}

Status ReceiveRequest(int fd, Clock::time_point deadline, Incoming* in) {
  uint8_t size_bytes[4];
  SCONE_RETURN_IF_ERROR(RecvAllFrom(fd, size_bytes, sizeof(size_bytes), deadline, in));
  uint32_t size;
  ByteReader r(ByteSpan(size_bytes, 4));
  r.U32(&size);
  if (size > kMaxMessage) return InvalidArgument("LAS message of " + std::to_string(size) + " bytes");
  in->body.resize(size);
  return RecvAllFrom(fd, in->body.data(), size, deadline, in);
}

// Sends `body` with the caller's credentials (the kernel checks them) and, if `passed_fd` is
// not -1, that descriptor.
Status SendAsMe(int fd, const Bytes& body, int passed_fd) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int))] = {};
  msghdr m = {};
  m.msg_control = control;
  m.msg_controllen = CMSG_SPACE(sizeof(ucred)) + (passed_fd >= 0 ? CMSG_SPACE(sizeof(int)) : 0);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_CREDENTIALS;
  c->cmsg_len = CMSG_LEN(sizeof(ucred));
  ucred me = {getpid(), geteuid(), getegid()};
  std::memcpy(CMSG_DATA(c), &me, sizeof(me));
  if (passed_fd >= 0) {
    c = CMSG_NXTHDR(&m, c);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &passed_fd, sizeof(int));
  }
  return SendMessage(fd, body, &m);
}

// Sends `request` as the caller and returns the payload of LAS's ok reply.
Result<Bytes> Ask(const std::string& socket_path, const Bytes& request) {
  SCONE_ASSIGN_OR_RETURN(int fd, ConnectLas(socket_path));
  Status sent = SendAsMe(fd, request, -1);
  Result<Bytes> reply = sent.ok() ? ReceiveMessage(fd) : Result<Bytes>(sent);
  close(fd);
  if (!reply.ok()) return reply.status();
  return ParseLasReply(*reply);
}

Result<Bytes> ReadAll(int fd, size_t max_size) {
  Bytes out;
  uint8_t buf[4096];
  while (out.size() <= max_size) {
    ssize_t n = pread(fd, buf, sizeof(buf), static_cast<off_t>(out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("read", errno);
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

// Checks that `environ_fd` is the sender's /proc/self/environ, opened by it before it sent the
// request, and that the address space it was opened on still exists: the process has neither
// executed another program nor exited since. Called after measuring, so the measurement is of
// that address space.
Status CheckStillTheSender(pid_t pid, int environ_fd) {
  struct statfs fs;
  char link[64];
  char target[256] = {};
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", environ_fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  std::string path = n > 0 ? std::string(target, static_cast<size_t>(n)) : "";
  if (fstatfs(environ_fd, &fs) != 0 || fs.f_type != kProcSuperMagic || path.size() < 8 ||
      path.compare(path.size() - 8, 8, "/environ") != 0) {
    return PermissionDenied("the request did not come with the sender's /proc/self/environ");
  }
  // In LAS's own /proc the path names the process ("/proc/PID/environ"); in another pid
  // namespace's /proc it cannot, and the comparison of contents below has to do.
  pid_t named = 0;
  char tail = 0;
  struct stat own_proc, theirs;
  bool in_our_proc = stat("/proc/self", &own_proc) == 0 && fstat(environ_fd, &theirs) == 0 &&
                     own_proc.st_dev == theirs.st_dev;
  if (in_our_proc && std::sscanf(path.c_str(), "/proc/%d/environ%c", &named, &tail) == 1 && named != pid) {
    return PermissionDenied("the request came with another process's environ (" + path + ")");
  }
  SCONE_ASSIGN_OR_RETURN(Bytes then, ReadAll(environ_fd, kMaxEnviron));
  if (then.empty()) {
    return PermissionDenied("process " + std::to_string(pid) +
                            " executed another program or exited after asking for evidence (or has an "
                            "empty environment): no evidence for it");
  }
  SCONE_ASSIGN_OR_RETURN(Bytes now, os::ReadWholeFile("/proc/" + std::to_string(pid) + "/environ", kMaxEnviron));
  if (now != then) return PermissionDenied("the request came with another process's environ");
  return Status::Ok();
}

struct Peer {
  ucred connected;  // SO_PEERCRED: who connected
};

// Every chunk of the request must come from the process that connected, of an allowed user.
Status CheckSender(const Peer& peer, const Incoming& in, const LasOptions& options) {
  for (const ucred& c : in.senders) {
    if (c.pid != peer.connected.pid) {
      return PermissionDenied("the request was sent by process " + std::to_string(c.pid) +
                              ", not by process " + std::to_string(peer.connected.pid) +
                              " that connected (a forked child on its parent's connection?)");
    }
  }
  uid_t uid = peer.connected.uid;
  if (uid != 0 && uid != geteuid() &&
      std::find(options.allowed_uids.begin(), options.allowed_uids.end(), uid) == options.allowed_uids.end()) {
    return PermissionDenied("user " + std::to_string(uid) + " may not use this LAS");
  }
  return Status::Ok();
}

Result<Report> EvidenceReport(const Peer& peer, const LasRequest& request, const Incoming& in,
                              const std::string& runtime_library) {
  const ReportData& data = request.report_data;
  const std::optional<SigStruct>& sig = request.sigstruct;
  if (in.fds.size() != 1) return PermissionDenied("an evidence request carries exactly one descriptor");
  pid_t pid = peer.connected.pid;
  // A tracer can change the process's memory after LAS measured its files.
  std::string tracer = ProcessStatusField(pid, "TracerPid");
  if (tracer != "0") {
    return PermissionDenied("process " + std::to_string(pid) + " is being traced (TracerPid " +
                            (tracer.empty() ? "unknown" : tracer) + "): no evidence for it");
  }
  SCONE_ASSIGN_OR_RETURN(ImageDescription d, DescribeProcess(pid, runtime_library));
  SCONE_RETURN_IF_ERROR(CheckOnlyMeasuredCodeRuns(pid));
  SCONE_RETURN_IF_ERROR(CheckStillTheSender(pid, in.fds[0]));
  Report report;
  report.measurement = d.Measurement();
  report.report_data = data;
  if (sig) {
    if (!sig->Verify() || sig->measurement != report.measurement) {
      return PermissionDenied("the signature structure does not sign this program's measurement");
    }
    report.mrsigner = sig->MrSigner();
    report.product_id = sig->product_id;
    report.svn = sig->svn;
  }
  return report;
}

// The payload of the reply to one request.
Result<Bytes> Answer(const Peer& peer, const Incoming& in, const Platform& platform,
                     const std::string& runtime_library, const LasOptions& options) {
  SCONE_RETURN_IF_ERROR(CheckSender(peer, in, options));
  SCONE_ASSIGN_OR_RETURN(LasRequest request, ParseLasRequest(in.body));
  switch (request.kind) {
    case LasRequest::kEvidence: {
      SCONE_ASSIGN_OR_RETURN(Report report, EvidenceReport(peer, request, in, runtime_library));
      SCONE_ASSIGN_OR_RETURN(Evidence e, platform.Attest(report));
      return e.Encode();
    }
    case LasRequest::kSealingKey: {
      SCONE_ASSIGN_OR_RETURN(SecretBytes key, platform.SealingKey(peer.connected.uid, request.name));
      return Bytes(key.span().begin(), key.span().end());  // wiped by the caller after sending
    }
    case LasRequest::kCounter: {
      SCONE_ASSIGN_OR_RETURN(uint64_t value, platform.AdvanceCounter(peer.connected.uid, request.name, request.at_least));
      ByteWriter w;
      w.U64(value);
      return w.bytes();
    }
  }
  return Internal("unhandled LAS request kind");
}

void ServeConnection(int fd, const Platform& platform, const std::string& runtime_library,
                     const LasOptions& options) {
  Peer peer;
  socklen_t len = sizeof(peer.connected);
  Incoming in;
  Status received = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer.connected, &len) == 0
                        ? ReceiveRequest(fd, Clock::now() + kConnectionDeadline, &in)
                        : IoError("SO_PEERCRED", errno);
  Result<Bytes> payload = received.ok() ? Answer(peer, in, platform, runtime_library, options)
                                        : Result<Bytes>(received);
  Bytes reply = EncodeLasReply(payload);
  if (payload.ok()) Wipe(*payload);
  (void)SendMessage(fd, reply);
  Wipe(reply);
}

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return InvalidArgument("LAS socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Bytes EncodeLasRequest(const LasRequest& request) {
  ByteWriter w;
  w.Str(kRequestLabel);
  switch (request.kind) {
    case LasRequest::kEvidence:
      w.U8(static_cast<uint8_t>(Kind::kEvidence));
      w.Raw(request.report_data);
      w.U8(request.sigstruct ? 1 : 0);
      if (request.sigstruct) w.Blob(request.sigstruct->Encode());
      break;
    case LasRequest::kSealingKey:
      w.U8(static_cast<uint8_t>(Kind::kSealingKey));
      w.Str(request.name);
      break;
    case LasRequest::kCounter:
      w.U8(static_cast<uint8_t>(Kind::kCounter));
      w.Str(request.name);
      w.U64(request.at_least);
      break;
  }
  return w.Take();
}

Bytes EncodeLasReply(const Result<Bytes>& payload) {
  ByteWriter w;
  w.Str(kResponseLabel);
  if (payload.ok()) {
    w.U8(1);
    w.Blob(*payload);
  } else {
    w.U8(0);
    w.Str(payload.status().message());
  }
  return w.Take();
}

Result<LasRequest> ParseLasRequest(ByteSpan body) {
  ByteReader r(body);
  std::string label;
  uint8_t kind;
  LasRequest out;
  if (!r.Str(&label, 64) || label != kRequestLabel || !r.U8(&kind)) return InvalidArgument("malformed LAS request");
  switch (static_cast<Kind>(kind)) {
    case Kind::kEvidence: {
      out.kind = LasRequest::kEvidence;
      uint8_t has_sig;
      if (!r.Raw(out.report_data) || !r.U8(&has_sig) || has_sig > 1) return InvalidArgument("malformed LAS request");
      if (has_sig) {
        Bytes sig_bytes;
        if (!r.Blob(&sig_bytes, 4096)) return InvalidArgument("malformed LAS request");
        SCONE_ASSIGN_OR_RETURN(SigStruct s, SigStruct::Decode(sig_bytes));
        out.sigstruct = s;
      }
      break;
    }
    case Kind::kSealingKey:
      out.kind = LasRequest::kSealingKey;
      if (!r.Str(&out.name, 256)) return InvalidArgument("malformed LAS request");
      break;
    case Kind::kCounter:
      out.kind = LasRequest::kCounter;
      if (!r.Str(&out.name, 256) || !r.U64(&out.at_least)) return InvalidArgument("malformed LAS request");
      break;
    default:
      return InvalidArgument("unknown LAS request kind " + std::to_string(kind));
  }
  if (!r.done()) return InvalidArgument("malformed LAS request");
  return out;
}

Result<Bytes> ParseLasReply(ByteSpan body) {
  ByteReader r(body);
  std::string label;
  uint8_t ok;
  Bytes payload;
  if (!r.Str(&label, 64) || label != kResponseLabel || !r.U8(&ok) || ok > 1 || !r.Blob(&payload, kMaxMessage) ||
      !r.done()) {
    return InvalidArgument("malformed LAS response");
  }
  if (!ok) return PermissionDenied("LAS refused: " + std::string(payload.begin(), payload.end()));
  return payload;
}

Result<int> ConnectLas(const std::string& path) {
  SCONE_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IoError("socket", errno);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return Status(Code::kIoError, "cannot reach LAS at " + path + ": " + strerror(e), e);
  }
  return fd;
}

Status SendEvidenceRequest(int fd, const ReportData& report_data, const std::optional<SigStruct>& sigstruct) {
  LasRequest request;
  request.report_data = report_data;
  request.sigstruct = sigstruct;
  // Opened before sending: it names this address space, which LAS checks still exists.
  int environ_fd = os::Sys().open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
  if (environ_fd < 0) return IoError("open /proc/self/environ", errno);
  Status sent = SendAsMe(fd, EncodeLasRequest(request), environ_fd);
  os::Sys().close(environ_fd);
  return sent;
}

Result<Evidence> ReceiveEvidence(int fd) {
  SCONE_ASSIGN_OR_RETURN(Bytes reply, ReceiveMessage(fd));
  SCONE_ASSIGN_OR_RETURN(Bytes payload, ParseLasReply(reply));
  return Evidence::Decode(payload);
}

Result<Evidence> RequestEvidence(const std::string& socket_path, const ReportData& report_data,
                                 const std::optional<SigStruct>& sigstruct) {
  SCONE_ASSIGN_OR_RETURN(int fd, ConnectLas(socket_path));
  Status sent = SendEvidenceRequest(fd, report_data, sigstruct);
  Result<Evidence> evidence = sent.ok() ? ReceiveEvidence(fd) : Result<Evidence>(sent);
  close(fd);
  return evidence;
}

Result<SecretBytes> RequestSealingKey(const std::string& socket_path, const std::string& label) {
  LasRequest request;
  request.kind = LasRequest::kSealingKey;
  request.name = label;
  SCONE_ASSIGN_OR_RETURN(Bytes key, Ask(socket_path, EncodeLasRequest(request)));
  SecretBytes out(key);
  Wipe(key);
  if (out.size() != crypto::kKeySize) return InvalidArgument("LAS sent a sealing key of the wrong size");
  return out;
}

Result<uint64_t> RequestCounter(const std::string& socket_path, const std::string& name, uint64_t at_least) {
  LasRequest request;
  request.kind = LasRequest::kCounter;
  request.name = name;
  request.at_least = at_least;
  SCONE_ASSIGN_OR_RETURN(Bytes reply, Ask(socket_path, EncodeLasRequest(request)));
  ByteReader r(reply);
  uint64_t value;
  if (!r.U64(&value) || !r.done()) return InvalidArgument("malformed LAS counter reply");
  return value;
}

Status ServeLas(const std::string& socket_path, const Platform& platform, const std::string& runtime_library,
                const volatile bool* stop, const LasOptions& options) {
  SCONE_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path));
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return IoError("socket", errno);
  unlink(socket_path.c_str());
  // Created 0600 (no window in which others could connect); opened to other users only if
  // some are allowed, each request then checked against the list.
  mode_t old_mask = umask(0177);
  int bound = bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old_mask);
  int one = 1;
  if (bound != 0 || setsockopt(listener, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0 ||
      listen(listener, 64) != 0 || (!options.allowed_uids.empty() && chmod(socket_path.c_str(), 0666) != 0)) {
    int e = errno;
    close(listener);
    return IoError("listen on " + socket_path, e);
  }
  if (options.on_listening) options.on_listening();
  // A few workers accept on the one socket: requests are independent, and a slow client
  // (bounded by the connection's deadline) holds up one worker at most.
  auto work = [&] {
    while (!*stop) {
      int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EINTR && errno != ECONNABORTED) break;
        if (*stop) shutdown(listener, SHUT_RDWR);  // wakes the other workers
        continue;
      }
      setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
      ServeConnection(fd, platform, runtime_library, options);
      close(fd);
    }
    shutdown(listener, SHUT_RDWR);
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i) workers.emplace_back(work);
  work();
  for (std::thread& t : workers) t.join();
  close(listener);
  unlink(socket_path.c_str());
  return Status::Ok();
}

}  // namespace scone::attest
