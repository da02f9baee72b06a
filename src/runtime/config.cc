#include "runtime/config.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace scone::runtime {
namespace {

constexpr char kMagic[] = "scone-runtime-config-v4";
constexpr size_t kMaxConfigSize = 16u << 20;

}  // namespace

SecretBytes RuntimeConfig::Encode() const {
  ByteWriter w;
  w.Str(kMagic);
  // The network shield's variables first: a process that will serve TLS sizes its secure heap
  // before the first key lands in it (Decode).
  w.U32(static_cast<uint32_t>(network.size()));
  for (const NetworkVariable& v : network) {
    w.Str(v.name);
    w.Blob(v.value.span());
  }
  w.U8(network_defaults ? 1 : 0);
  if (network_defaults) {
    w.Blob(network_defaults->identity.span());
    w.Str(network_defaults->session_ca);
  }
  w.U32(static_cast<uint32_t>(volumes.size()));
  for (const VolumeConfig& v : volumes) {
    w.Str(v.dir);
    w.Blob(v.key.span());
    w.U8(v.expected_tag ? 1 : 0);
    if (v.expected_tag) w.Raw(*v.expected_tag);
    w.Str(v.cas_name);
    w.U8(v.open_at_start ? 1 : 0);
    w.U64(v.root_device);
    w.U64(v.root_inode);
  }
  w.U32(static_cast<uint32_t>(fds.size()));
  for (const InheritedFd& f : fds) {
    w.U32(static_cast<uint32_t>(f.fd));
    w.Str(f.volume_dir);
    w.Str(f.path);
    w.U32(static_cast<uint32_t>(f.flags));
    w.U64(f.offset);
    w.U8(f.entry ? 1 : 0);
    if (f.entry) f.entry->Encode(w);
  }
  w.U32(static_cast<uint32_t>(injected_files.size()));
  for (const InjectedFileConfig& f : injected_files) {
    w.Str(f.path);
    w.Blob(f.content.span());
  }
  w.U8(cas ? 1 : 0);
  if (cas) {
    w.Str(cas->config_id);
    w.Str(cas->host);
    w.U32(static_cast<uint32_t>(cas->port));
    w.Raw(cas->cas_key_hash);
    w.Blob(cas->key_pem.span());
    w.Blob(cas->cert_der);
  }
  w.U8(console ? 1 : 0);
  if (console) {
    w.Blob(console->key.span());
    w.U8(console->first ? 1 : 0);
    w.U8(console->input ? 1 : 0);
    w.U32(static_cast<uint32_t>(console->input_memfd + 1));
    w.U32(static_cast<uint32_t>(console->input_fds.size()));
    for (int fd : console->input_fds) w.U32(static_cast<uint32_t>(fd));
    w.U32(static_cast<uint32_t>(console->streams.size()));
    for (const ConsoleStreamConfig& c : console->streams) {
      w.Raw(c.id);
      w.Raw(c.parent);
      w.U8(c.channel);
      w.Raw(c.run);
      w.U8(static_cast<uint8_t>(c.siblings.size()));
      for (const auto& sibling : c.siblings) w.Raw(sibling);
      w.U64(c.next_sequence);
      w.U8(c.started ? 1 : 0);
      w.U8(c.ended ? 1 : 0);
      w.U32(static_cast<uint32_t>(c.fds.size()));
      for (int fd : c.fds) w.U32(static_cast<uint32_t>(fd));
    }
  }
  w.U8(print_measurement ? 1 : 0);
  w.Str(las_socket);
  w.U8(print_evidence ? 1 : 0);
  w.Blob(entry_plan);
  w.Str(program_name);
  w.U8(command_line ? 1 : 0);
  if (command_line) {
    w.U32(static_cast<uint32_t>(command_line->arguments.size()));
    for (const std::string& a : command_line->arguments) w.Str(a);
    w.U32(static_cast<uint32_t>(command_line->environment.size()));
    for (const std::string& e : command_line->environment) w.Str(e);
  }
  Bytes bytes = w.Take();
  SecretBytes out(bytes);
  Wipe(bytes);
  return out;
}

Result<RuntimeConfig> RuntimeConfig::Decode(ByteSpan blob) {
  ByteReader r(blob);
  RuntimeConfig config;
  std::string magic;
  uint32_t count;
  if (!r.Str(&magic, 64) || magic != kMagic) return InvalidArgument("runtime configuration is malformed");
  if (!r.U32(&count) || count > 4096) return InvalidArgument("runtime configuration is malformed");
  // Every TLS handshake in progress holds its ephemeral key in the secure heap: a process that
  // serves TLS needs more of it than one that holds volume keys only.
  if (count > 0) ReserveSecureHeapWithinLimit(kNetworkSecureHeapSize);
  for (uint32_t i = 0; i < count; ++i) {
    NetworkVariable v;
    uint32_t size;
    ByteSpan value;
    if (!r.Str(&v.name, 512) || !r.U32(&size) || size > (1u << 20) || !r.View(size, &value)) {
      return InvalidArgument("runtime configuration is malformed (network variable " + std::to_string(i) + ")");
    }
    v.value = SecretBytes(value);
    config.network.push_back(std::move(v));
  }
  uint8_t has_defaults = 0;
  if (!r.U8(&has_defaults) || has_defaults > 1) return InvalidArgument("runtime configuration is malformed");
  if (has_defaults) {
    NetworkDefaults d;
    uint32_t size;
    ByteSpan identity;
    if (!r.U32(&size) || size > (1u << 20) || !r.View(size, &identity) || !r.Str(&d.session_ca, 1u << 20)) {
      return InvalidArgument("runtime configuration is malformed (network defaults)");
    }
    d.identity = SecretBytes(identity);
    config.network_defaults = std::move(d);
  }
  if (!r.U32(&count) || count > 256) return InvalidArgument("runtime configuration is malformed");
  for (uint32_t i = 0; i < count; ++i) {
    VolumeConfig v;
    ByteSpan key;
    uint32_t key_size;
    uint8_t has_tag;
    if (!r.Str(&v.dir, 4096) || !r.U32(&key_size) || key_size != crypto::kKeySize ||
        !r.View(key_size, &key) || !r.U8(&has_tag) || has_tag > 1) {
      return InvalidArgument("runtime configuration is malformed (volume " + std::to_string(i) + ")");
    }
    v.key = SecretBytes(key);
    if (has_tag) {
      v.expected_tag.emplace();
      if (!r.Raw(*v.expected_tag)) return InvalidArgument("runtime configuration is malformed");
    }
    uint8_t open_at_start;
    if (!r.Str(&v.cas_name, 256) || !r.U8(&open_at_start) || open_at_start > 1 || !r.U64(&v.root_device) ||
        !r.U64(&v.root_inode)) {
      return InvalidArgument("runtime configuration is malformed");
    }
    v.open_at_start = open_at_start == 1;
    config.volumes.push_back(std::move(v));
  }
  if (!r.U32(&count) || count > 65536) return InvalidArgument("runtime configuration is malformed");
  for (uint32_t i = 0; i < count; ++i) {
    InheritedFd f;
    uint32_t fd, flags;
    uint8_t has_entry = 0;
    fs::FileEntry entry;
    if (!r.U32(&fd) || !r.Str(&f.volume_dir, 4096) || !r.Str(&f.path, 4096) || !r.U32(&flags) ||
        !r.U64(&f.offset) || !r.U8(&has_entry) || has_entry > 1 || (has_entry && !fs::FileEntry::Decode(r, &entry))) {
      return InvalidArgument("runtime configuration is malformed (descriptor " + std::to_string(i) + ")");
    }
    if (has_entry) f.entry = entry;
    f.fd = static_cast<int>(fd);
    f.flags = static_cast<int>(flags);
    config.fds.push_back(std::move(f));
  }
  if (!r.U32(&count) || count > 4096) return InvalidArgument("runtime configuration is malformed");
  for (uint32_t i = 0; i < count; ++i) {
    InjectedFileConfig f;
    uint32_t size;
    ByteSpan content;
    if (!r.Str(&f.path, 4096) || !r.U32(&size) || !r.View(size, &content)) {
      return InvalidArgument("runtime configuration is malformed (injected file " + std::to_string(i) + ")");
    }
    f.content = SecretBytes(content);
    config.injected_files.push_back(std::move(f));
  }
  uint8_t has_cas = 0;
  if (!r.U8(&has_cas) || has_cas > 1) return InvalidArgument("runtime configuration is malformed");
  if (has_cas) {
    CasHandover h;
    uint32_t port, key_size;
    ByteSpan key;
    if (!r.Str(&h.config_id, 512) || !r.Str(&h.host, 512) || !r.U32(&port) || port > 65535 ||
        !r.Raw(h.cas_key_hash) || !r.U32(&key_size) || key_size > 16384 || !r.View(key_size, &key) ||
        !r.Blob(&h.cert_der, 65536)) {
      return InvalidArgument("runtime configuration is malformed (CAS identity)");
    }
    h.port = static_cast<int>(port);
    h.key_pem = SecretBytes(key);
    config.cas = std::move(h);
  }
  uint8_t has_console = 0;
  if (!r.U8(&has_console) || has_console > 1) return InvalidArgument("runtime configuration is malformed");
  if (has_console) {
    ConsoleConfig c;
    uint32_t key_size, streams;
    uint8_t first, input;
    uint32_t memfd, input_fds;
    ByteSpan key;
    if (!r.U32(&key_size) || key_size != crypto::kKeySize || !r.View(key_size, &key) || !r.U8(&first) ||
        first > 1 || !r.U8(&input) || input > 1 || !r.U32(&memfd) || memfd > 65536 || !r.U32(&input_fds) ||
        input_fds > 65536) {
      return InvalidArgument("runtime configuration is malformed (console)");
    }
    c.input = input == 1;
    c.input_memfd = static_cast<int>(memfd) - 1;
    for (uint32_t j = 0; j < input_fds; ++j) {
      uint32_t fd;
      if (!r.U32(&fd)) return InvalidArgument("runtime configuration is malformed (console)");
      c.input_fds.push_back(static_cast<int>(fd));
    }
    if (!r.U32(&streams) || streams > 64) return InvalidArgument("runtime configuration is malformed (console)");
    c.key = SecretBytes(key);
    c.first = first == 1;
    for (uint32_t i = 0; i < streams; ++i) {
      ConsoleStreamConfig sc;
      uint8_t started, ended, siblings;
      uint32_t fds;
      if (!r.Raw(sc.id) || !r.Raw(sc.parent) || !r.U8(&sc.channel) || sc.channel < 1 || sc.channel > 2 ||
          !r.Raw(sc.run) || !r.U8(&siblings) || siblings > 2) {
        return InvalidArgument("runtime configuration is malformed (console stream)");
      }
      sc.siblings.resize(siblings);
      for (auto& sibling : sc.siblings) {
        if (!r.Raw(sibling)) return InvalidArgument("runtime configuration is malformed (console stream)");
      }
      if (!r.U64(&sc.next_sequence) || !r.U8(&started) || started > 1 || !r.U8(&ended) || ended > 1 ||
          !r.U32(&fds) || fds > 65536) {
        return InvalidArgument("runtime configuration is malformed (console stream)");
      }
      sc.started = started == 1;
      sc.ended = ended == 1;
      for (uint32_t j = 0; j < fds; ++j) {
        uint32_t fd;
        if (!r.U32(&fd)) return InvalidArgument("runtime configuration is malformed (console stream)");
        sc.fds.push_back(static_cast<int>(fd));
      }
      c.streams.push_back(std::move(sc));
    }
    config.console = std::move(c);
  }
  uint8_t print = 0, evidence = 0;
  if (!r.U8(&print) || print > 1 || !r.Str(&config.las_socket, 4096) || !r.U8(&evidence) || evidence > 1 ||
      !r.Blob(&config.entry_plan, 1 << 20) || !r.Str(&config.program_name, 4096)) {
    return InvalidArgument("runtime configuration is malformed");
  }
  uint8_t has_command_line = 0;
  if (!r.U8(&has_command_line) || has_command_line > 1) return InvalidArgument("runtime configuration is malformed");
  if (has_command_line) {
    // Bounded as the kernel bounds them (MAX_ARG_STRLEN each, ARG_MAX in all, roughly).
    constexpr uint32_t kMaxStrings = 1u << 20;
    constexpr size_t kMaxString = 128 * 1024;
    RuntimeConfig::HandedCommandLine handed;
    for (std::vector<std::string>* list : {&handed.arguments, &handed.environment}) {
      uint32_t count = 0;
      if (!r.U32(&count) || count > kMaxStrings || count > r.remaining() / 4) return InvalidArgument("runtime configuration is malformed (command line)");
      list->resize(count);
      for (std::string& item : *list) {
        if (!r.Str(&item, kMaxString)) return InvalidArgument("runtime configuration is malformed (command line)");
      }
    }
    config.command_line = std::move(handed);
  }
  if (!r.done()) return InvalidArgument("runtime configuration is malformed");
  config.print_measurement = print != 0;
  config.print_evidence = evidence != 0;
  return config;
}

Result<int> WriteConfigFd(const RuntimeConfig& config) {
  SecretBytes blob = config.Encode();
  size_t size = sizeof(uint64_t) + blob.size();
  size_t mapped = (size + 4095) & ~size_t{4095};
  // memfd_secret pages are mapped only in processes that map the descriptor; the kernel's
  // direct map does not show them. Fallback: a sealed memfd.
  int fd = static_cast<int>(syscall(SYS_memfd_secret, 0));
  bool secret = fd >= 0;
  if (!secret) fd = memfd_create("scone-runtime", MFD_ALLOW_SEALING);
  if (fd < 0) return IoError("memfd for the runtime configuration", errno);
  if (ftruncate(fd, static_cast<off_t>(mapped)) != 0) {
    int e = errno;
    close(fd);
    return IoError("sizing the runtime configuration", e);
  }
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    close(fd);
    return IoError("mapping the runtime configuration", e);
  }
  uint64_t n = blob.size();
  std::memcpy(p, &n, sizeof(n));
  std::memcpy(static_cast<uint8_t*>(p) + sizeof(n), blob.data(), blob.size());
  munmap(p, mapped);
  if (!secret) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  return fd;
}

Result<RuntimeConfig> ReadConfigFd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return IoError("runtime configuration descriptor", errno);
  size_t size = static_cast<size_t>(st.st_size);
  if (size < sizeof(uint64_t) || size > kMaxConfigSize) {
    return InvalidArgument("runtime configuration descriptor has a bad size");
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return IoError("mapping the runtime configuration", errno);
  uint64_t n;
  std::memcpy(&n, p, sizeof(n));
  Result<RuntimeConfig> config = InvalidArgument("runtime configuration is truncated");
  if (n <= size - sizeof(n)) {
    config = RuntimeConfig::Decode(ByteSpan(static_cast<uint8_t*>(p) + sizeof(n), n));
  }
  munmap(p, size);
  return config;
}

}  // namespace scone::runtime
