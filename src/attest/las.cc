#include "attest/las.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "attest/measurement.h"

namespace scone::attest {
namespace {

constexpr char kRequestLabel[] = "scone-las-request-v1";
constexpr char kResponseLabel[] = "scone-las-response-v1";
constexpr uint32_t kMaxMessage = 64 * 1024;

Status SendAll(int fd, ByteSpan data) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
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

Status SendMessage(int fd, const Bytes& body) {
  ByteWriter w;
  w.U32(static_cast<uint32_t>(body.size()));
  w.Raw(body);
  return SendAll(fd, w.bytes());
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

Result<int> Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IoError("socket", errno);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    close(fd);
    return InvalidArgument("LAS socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return Status(Code::kIoError, "cannot reach LAS at " + path + ": " + strerror(e), e);
  }
  return fd;
}

// Builds the report for the peer of `fd`, measured by LAS itself.
Result<Report> ReportForPeer(int fd, ByteSpan request, const std::string& runtime_library) {
  ByteReader r(request);
  std::string label;
  ReportData data;
  uint8_t has_sig;
  if (!r.Str(&label, 64) || label != kRequestLabel || !r.Raw(data) || !r.U8(&has_sig) || has_sig > 1) {
    return InvalidArgument("malformed LAS request");
  }
  std::optional<SigStruct> sig;
  if (has_sig) {
    Bytes sig_bytes;
    if (!r.Blob(&sig_bytes, 4096)) return InvalidArgument("malformed LAS request");
    SCONE_ASSIGN_OR_RETURN(SigStruct s, SigStruct::Decode(sig_bytes));
    sig = s;
  }
  if (!r.done()) return InvalidArgument("malformed LAS request");
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return IoError("SO_PEERCRED", errno);
  SCONE_ASSIGN_OR_RETURN(ImageDescription d, DescribeProcess(cred.pid, runtime_library));
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

}  // namespace

Result<Evidence> RequestEvidence(const std::string& socket_path, const ReportData& report_data,
                                 const std::optional<SigStruct>& sigstruct) {
  SCONE_ASSIGN_OR_RETURN(int fd, Connect(socket_path));
  ByteWriter w;
  w.Str(kRequestLabel);
  w.Raw(report_data);
  w.U8(sigstruct ? 1 : 0);
  if (sigstruct) w.Blob(sigstruct->Encode());
  Status sent = SendMessage(fd, w.bytes());
  Result<Bytes> reply = sent.ok() ? ReceiveMessage(fd) : Result<Bytes>(sent);
  close(fd);
  if (!reply.ok()) return reply.status();
  ByteReader r(*reply);
  std::string label;
  uint8_t ok;
  Bytes payload;
  if (!r.Str(&label, 64) || label != kResponseLabel || !r.U8(&ok) || !r.Blob(&payload, kMaxMessage)) {
    return InvalidArgument("malformed LAS response");
  }
  if (!ok) return PermissionDenied("LAS refused: " + std::string(payload.begin(), payload.end()));
  return Evidence::Decode(payload);
}

Status ServeLas(const std::string& socket_path, const Platform& platform,
                const std::string& runtime_library, const volatile bool* stop) {
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return IoError("socket", errno);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) return InvalidArgument("LAS socket path too long");
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  unlink(socket_path.c_str());
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 64) != 0) {
    int e = errno;
    close(listener);
    return IoError("listen on " + socket_path, e);
  }
  chmod(socket_path.c_str(), 0666);  // any local program may ask; LAS measures it itself
  // A few workers accept on the one socket: requests are independent, and one slow client
  // (bounded by the receive timeout) does not hold up the others.
  auto work = [&] {
    while (!*stop) {
      int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EINTR) break;
        if (*stop) shutdown(listener, SHUT_RDWR);  // wakes the other workers
        continue;
      }
      struct timeval tv = {5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      ByteWriter w;
      w.Str(kResponseLabel);
      auto request = ReceiveMessage(fd);
      Result<Report> report = request.ok() ? ReportForPeer(fd, *request, runtime_library)
                                           : Result<Report>(request.status());
      Result<Evidence> evidence = report.ok() ? platform.Attest(*report) : Result<Evidence>(report.status());
      if (evidence.ok()) {
        w.U8(1);
        w.Blob(evidence->Encode());
      } else {
        w.U8(0);
        w.Str(evidence.status().message());
      }
      (void)SendMessage(fd, w.bytes());
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
