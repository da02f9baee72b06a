#include "cas/protocol.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>

namespace scone::cas {
namespace {

constexpr char kRequestLabel[] = "scone-cas-request-v1";
constexpr char kConfigLabel[] = "scone-service-config-v2";
constexpr size_t kMaxString = 64 * 1024;
constexpr uint32_t kMaxItems = 4096;

Status WriteAll(SSL* ssl, const uint8_t* data, size_t size) {
  while (size > 0) {
    size_t written = 0;
    if (SSL_write_ex(ssl, data, size, &written) != 1) return IoError("TLS write", ECONNRESET);
    data += written;
    size -= written;
  }
  return Status::Ok();
}

Status ReadAll(SSL* ssl, uint8_t* data, size_t size) {
  while (size > 0) {
    size_t got = 0;
    if (SSL_read_ex(ssl, data, size, &got) != 1) return IoError("TLS read (truncated message)", ECONNRESET);
    data += got;
    size -= got;
  }
  return Status::Ok();
}

bool ReadSecret(ByteReader& r, SecretBytes* out, size_t max) {
  uint32_t size;
  ByteSpan view;
  if (!r.U32(&size) || size > max || !r.View(size, &view)) return false;
  *out = SecretBytes(view);
  return true;
}

}  // namespace

ServiceConfig::~ServiceConfig() {
  for (std::string& a : argv) Wipe(a);
  for (std::string& e : environment) Wipe(e);
  Wipe(pwd);
}

SecretBytes ServiceConfig::Encode() const {
  // The size first (label, the four counts, pwd; then each item): the buffer is never
  // reallocated, so no unwiped copy is left.
  size_t size = 4 + sizeof(kConfigLabel) + 4 * 4 + 4 + pwd.size();
  for (const auto& a : argv) size += 4 + a.size();
  for (const auto& e : environment) size += 4 + e.size();
  for (const VolumeGrant& v : volumes) {
    size += 12 + v.name.size() + v.path.size() + v.key.size() + 1 + (v.expected ? v.expected->tag.size() + 8 : 0);
  }
  for (const InjectedFile& f : injected_files) size += 8 + f.path.size() + f.content.size();
  size += 8 + network_identity.size() + session_ca.size();
  size += 4 + console_key.size();
  ByteWriter w;
  w.Reserve(size);
  w.Str(kConfigLabel);
  w.U32(static_cast<uint32_t>(argv.size()));
  for (const auto& a : argv) w.Str(a);
  w.U32(static_cast<uint32_t>(environment.size()));
  for (const auto& e : environment) w.Str(e);
  w.Str(pwd);
  w.U32(static_cast<uint32_t>(volumes.size()));
  for (const VolumeGrant& v : volumes) {
    w.Str(v.name);
    w.Str(v.path);
    w.Blob(v.key.span());
    w.U8(v.expected ? 1 : 0);
    if (v.expected) {
      w.Raw(v.expected->tag);
      w.U64(v.expected->generation);
    }
  }
  w.U32(static_cast<uint32_t>(injected_files.size()));
  for (const InjectedFile& f : injected_files) {
    w.Str(f.path);
    w.Blob(f.content.span());
  }
  w.Blob(network_identity.span());
  w.Str(session_ca);
  w.Blob(console_key.span());
  Bytes plain = w.Take();
  SecretBytes out(plain);
  Wipe(plain);
  return out;
}

Result<ServiceConfig> ServiceConfig::Decode(ByteSpan bytes) {
  ByteReader r(bytes);
  ServiceConfig c;
  std::string label;
  uint32_t n;
  auto bad = [] { return InvalidArgument("CAS sent a malformed service configuration"); };
  if (!r.Str(&label, 64) || label != kConfigLabel || !r.U32(&n) || n > kMaxItems) return bad();
  c.argv.resize(n);
  for (auto& a : c.argv) {
    if (!r.Str(&a, kMaxString)) return bad();
  }
  if (!r.U32(&n) || n > kMaxItems) return bad();
  c.environment.resize(n);
  for (auto& e : c.environment) {
    if (!r.Str(&e, kMaxString)) return bad();
  }
  if (!r.Str(&c.pwd, kMaxString) || !r.U32(&n) || n > kMaxItems) return bad();
  c.volumes.resize(n);
  for (VolumeGrant& v : c.volumes) {
    uint8_t has_mark;
    if (!r.Str(&v.name, kMaxString) || !r.Str(&v.path, kMaxString) ||
        !ReadSecret(r, &v.key, crypto::kKeySize) || v.key.size() != crypto::kKeySize ||
        !r.U8(&has_mark) || has_mark > 1) {
      return bad();
    }
    if (has_mark) {
      v.expected.emplace();
      if (!r.Raw(v.expected->tag) || !r.U64(&v.expected->generation)) return bad();
    }
  }
  if (!r.U32(&n) || n > kMaxItems) return bad();
  c.injected_files.resize(n);
  for (InjectedFile& f : c.injected_files) {
    if (!r.Str(&f.path, kMaxString) || !ReadSecret(r, &f.content, kMaxFrame)) return bad();
  }
  if (!ReadSecret(r, &c.network_identity, kMaxString) || !r.Str(&c.session_ca, kMaxString) ||
      !ReadSecret(r, &c.console_key, crypto::kKeySize) ||
      (!c.console_key.empty() && c.console_key.size() != crypto::kKeySize) || !r.done()) {
    return bad();
  }
  return c;
}

Bytes Request::Encode() const {
  ByteWriter w;
  w.Str(kRequestLabel);
  w.U8(static_cast<uint8_t>(kind));
  w.Str(config_id);
  w.U32(static_cast<uint32_t>(reports.size()));
  for (const VolumeReport& v : reports) {
    w.Str(v.name);
    w.Raw(v.mark.tag);
    w.U64(v.mark.generation);
  }
  return w.Take();
}

Result<Request> Request::Decode(ByteSpan bytes) {
  ByteReader r(bytes);
  Request q;
  std::string label;
  uint8_t kind;
  uint32_t n;
  if (!r.Str(&label, 64) || label != kRequestLabel || !r.U8(&kind) ||
      kind < static_cast<uint8_t>(RequestKind::kConfig) || kind > static_cast<uint8_t>(RequestKind::kReport) ||
      !r.Str(&q.config_id, 512) || !r.U32(&n) || n > kMaxItems) {
    return InvalidArgument("malformed request");
  }
  q.kind = static_cast<RequestKind>(kind);
  q.reports.resize(n);
  for (VolumeReport& v : q.reports) {
    if (!r.Str(&v.name, 256) || !r.Raw(v.mark.tag) || !r.U64(&v.mark.generation)) {
      return InvalidArgument("malformed volume report");
    }
  }
  if (!r.done()) return InvalidArgument("malformed request (trailing bytes)");
  return q;
}

Status SendFrame(SSL* ssl, ByteSpan body) {
  if (body.size() > kMaxFrame) return InvalidArgument("message too large");
  uint8_t head[4];
  uint32_t size = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) head[i] = static_cast<uint8_t>(size >> (8 * i));
  SCONE_RETURN_IF_ERROR(WriteAll(ssl, head, sizeof(head)));
  return WriteAll(ssl, body.data(), body.size());
}

Result<Bytes> ReceiveFrame(SSL* ssl, size_t max_size) {
  uint8_t head[4];
  SCONE_RETURN_IF_ERROR(ReadAll(ssl, head, sizeof(head)));
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size |= static_cast<uint32_t>(head[i]) << (8 * i);
  if (size > max_size) return InvalidArgument("message of " + std::to_string(size) + " bytes is too large");
  Bytes body(size);
  SCONE_RETURN_IF_ERROR(ReadAll(ssl, body.data(), body.size()));
  return body;
}

Bytes OkReply(ByteSpan payload) {
  Bytes out;
  out.reserve(payload.size() + 1);
  out.push_back(1);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes ErrorReply(const std::string& reason) {
  Bytes out(reason.size() + 1, 0);
  std::copy(reason.begin(), reason.end(), out.begin() + 1);
  return out;
}

Result<Bytes> ParseReply(ByteSpan reply) {
  if (reply.empty() || reply[0] > 1) return InvalidArgument("malformed reply from CAS");
  if (reply[0] == 0) return PermissionDenied("CAS refused: " + std::string(reply.begin() + 1, reply.end()));
  return Bytes(reply.begin() + 1, reply.end());
}

Status SplitConfigId(const std::string& id, std::string* session, std::string* service) {
  if (id.empty()) return InvalidArgument("the config id is empty (an unset variable in a template?): give SESSION/SERVICE");
  // White space or a control character would name another session than it shows ("s1/app ").
  if (std::any_of(id.begin(), id.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)); })) {
    return InvalidArgument("config id '" + id + "' holds white space or a control character");
  }
  size_t slash = id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == id.size() ||
      id.find('/', slash + 1) != std::string::npos) {
    return InvalidArgument("config id '" + id + "' is not SESSION/SERVICE");
  }
  *session = id.substr(0, slash);
  *service = id.substr(slash + 1);
  return Status::Ok();
}

}  // namespace scone::cas
