// `scone console ...`: the console shield's key and reader (docs/console-shield.md).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "cas/client.h"
#include "cli/command.h"
#include "cli/local_cas.h"
#include "console/reader.h"
#include "fs/volume.h"

namespace scone::cli {
namespace {

struct ConsoleArgs {
  std::string key_file;
  std::string session;  // with CAS: the key of this session's service
  std::string service;
  std::string cas;
  std::string cas_cert;
  std::string input;  // empty or "-": stdin
  std::string split_dir;
  bool runs = false;  // decrypt: runs one after another in one input
};

Status Keygen(const ConsoleArgs& a) {
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, fs::CreateKeyFile(a.key_file));
  std::fprintf(stderr, "scone: created console key file %s (mode 0600)\n", a.key_file.c_str());
  return Status::Ok();
}

Status WriteAll(ByteSpan bytes, FILE* to) {
  if (bytes.empty()) return Status::Ok();
  if (std::fwrite(bytes.data(), 1, bytes.size(), to) != bytes.size()) return IoError("writing the plaintext", errno);
  return Status::Ok();
}

// The key from a file, or (--session, --service) from CAS, which gives it to the session's owner.
Result<SecretBytes> ConsoleKey(const ConsoleArgs& a) {
  if (a.session.empty() != a.service.empty()) return InvalidArgument("--session and --service go together");
  if (a.session.empty()) {
    if (a.key_file.empty()) return InvalidArgument("give the console's key: --key-file K, or --session NAME --service S");
    return fs::ReadKeyFile(a.key_file);
  }
  if (!a.key_file.empty()) return InvalidArgument("--key-file or --session/--service, not both");
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Get("/session/" + a.session + "/console-key/" + a.service));
  if (r.status != 200) return cas::ErrorFromReply(r);
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  Wipe(r.body);
  if (j.is_discarded() || !j.contains("key") || !j["key"].is_string()) return Internal("CAS sent an unreadable key");
  std::string hex = j["key"].get<std::string>();
  auto key = FromHex(hex);
  Wipe(hex);
  j["key"] = "";
  if (!key.ok() || key->size() != crypto::kKeySize) return Internal("CAS sent a malformed key");
  SecretBytes out(*key);
  Wipe(*key);
  return out;
}

// The plaintext goes out as each record is found authentic and in its place; damage stops the
// reading (exit 3) with the record and stream named, and says that what was printed is incomplete.
Status Decrypt(const ConsoleArgs& a) {
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, ConsoleKey(a));
  const bool from_stdin = a.input.empty() || a.input == "-";
  int fd = from_stdin ? 0 : open(a.input.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("open " + a.input, errno);
  const std::string name = from_stdin ? "stdin" : a.input;
  // --split: each stream (one process's stdout or stderr) into a file of its own.
  std::map<int, FILE*> files;
  auto sink = [&](ByteSpan plaintext, int stream, console::Channel channel) -> Status {
    if (a.split_dir.empty()) return WriteAll(plaintext, stdout);
    FILE*& f = files[stream];
    if (f == nullptr) {
      std::string path = a.split_dir + "/" + std::to_string(stream) + "." + console::ChannelName(channel);
      f = std::fopen(path.c_str(), "wx");
      if (f == nullptr) {
        const int error = errno;
        files.erase(stream);  // nothing to close (a null FILE crashed the close below)
        return IoError("--split: create " + path, error);
      }
    }
    return WriteAll(plaintext, f);
  };
  console::Reader reader(std::move(key), sink);
  if (a.runs) {
    reader.AcceptRunsInSequence([](size_t run, uint64_t record) {
      std::fflush(stdout);
      std::fprintf(stderr, "scone: run %zu of this console begins at record %llu (the run before it is complete)\n", run,
                   static_cast<unsigned long long>(record));
    });
  }
  std::vector<uint8_t> buffer(256 * 1024);
  Status status;
  for (;;) {
    ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = IoError("read " + name, errno);
      break;
    }
    if (n == 0) {
      status = reader.Finish();
      break;
    }
    status = reader.Consume(ByteSpan(buffer.data(), static_cast<size_t>(n)));
    if (!status.ok()) break;
  }
  if (!from_stdin) close(fd);
  std::fflush(stdout);
  for (auto& [stream, f] : files) {
    if (std::fclose(f) != 0 && status.ok()) status = IoError("writing stream " + std::to_string(stream), errno);
  }
  if (reader.skipped_lines() > 0) {
    // Counted, not shown: they are the host's (a capture's header, blank lines), never the program's.
    std::fprintf(stderr, "scone: console %s: %llu line(s) that are no console records skipped (never printed)\n",
                 name.c_str(), static_cast<unsigned long long>(reader.skipped_lines()));
  }
  if (status.code() == Code::kDataCorrupted) {
    return ReportedDamage("console " + name + ":\n" + status.message() +
                          "\nscone: the output above is what authenticated before the damage: it is incomplete");
  }
  SCONE_RETURN_IF_ERROR(status);
  std::fprintf(stderr, "scone: console %s intact: %llu records, %zu streams, %zu run%s\n", name.c_str(),
               static_cast<unsigned long long>(reader.records()), reader.streams(), reader.runs(),
               reader.runs() == 1 ? "" : "s");
  return Status::Ok();
}

Status WriteFully(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return IoError("write the sealed input", errno);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Input for `scone run -i`: one stream of records (a start, one data record per read of the
// input, so a line typed reaches the program at once, and the final record at its end).
Status Encrypt(const ConsoleArgs& a) {
  SCONE_ASSIGN_OR_RETURN(SecretBytes key, ConsoleKey(a));
  const bool from_stdin = a.input.empty() || a.input == "-";
  int fd = from_stdin ? 0 : open(a.input.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("open " + a.input, errno);
  const console::StreamId id = console::NewStreamId();
  auto cipher = console::StreamCipher(key, id);
  uint64_t next = 0;
  std::vector<uint8_t> plain(console::kMaxInputPayload), record(console::kOverhead + console::kMaxInputPayload);
  auto emit = [&](console::RecordType type, ByteSpan payload) {
    console::SealRecord(*cipher, type, id, next++, payload, record.data());
    return WriteFully(1, record.data(), console::kOverhead + payload.size());
  };
  console::StartInfo start;
  start.channel = console::Channel::kStdin;
  start.run = console::NewStreamId();
  Status status = emit(console::RecordType::kStart, console::StartPayload(start));
  while (status.ok()) {
    ssize_t n = read(fd, plain.data(), plain.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = IoError("read " + (from_stdin ? std::string("stdin") : a.input), errno);
      break;
    }
    if (n == 0) {
      status = emit(console::RecordType::kEnd, {});
      break;
    }
    status = emit(console::RecordType::kData, ByteSpan(plain.data(), static_cast<size_t>(n)));
  }
  Wipe(plain);
  if (!from_stdin) close(fd);
  return status;
}

}  // namespace

void RegisterConsoleCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<ConsoleArgs>();
  CLI::App* console = app.add_subcommand(
      "console", "The console shield: stdout and stderr of `scone run --console-key-file` as sealed records");
  console->require_subcommand(1);

  CLI::App* keygen = console->add_subcommand("keygen", "Create a console key file (mode 0600; 64 hex digits, "
                                                       "the format of volume key files)");
  keygen->add_option("KEY_FILE", args->key_file, "The key file to create")->required();
  keygen->callback([&action, args] { action = [args] { return Keygen(*args); }; });

  CLI::App* decrypt = console->add_subcommand(
      "decrypt", "Authenticate and decrypt a shielded console's output; exit 3 naming the record on any damage "
                 "(modified, removed, reordered, duplicated or truncated records, a missing final record, "
                 "a wrong key)");
  decrypt->add_option("--key-file", args->key_file, "The console key file");
  decrypt->add_option("--session", args->session,
                      "With CAS: the session whose service wrote the console (for the session's owner)");
  decrypt->add_option("--service", args->service, "With CAS: the service (SCONE_CONSOLE_SHIELD=protected)");
  AddCasOptions(decrypt, &args->cas, &args->cas_cert);
  decrypt->add_option("FILE", args->input, "The captured output (default: stdin)");
  decrypt->add_option("--split", args->split_dir,
                      "Write each stream (one process's stdout or stderr) to DIR/N.stdout or DIR/N.stderr, N in "
                      "order of first appearance, instead of everything to stdout");
  decrypt->add_flag("--runs", args->runs,
                    "Accept several runs one after another (a log appended at every restart): each may begin "
                    "once the run before it is complete; every boundary is named on stderr");
  decrypt->callback([&action, args] { action = [args] { return Decrypt(*args); }; });

  CLI::App* encrypt = console->add_subcommand(
      "encrypt", "Seal input for a program's stdin (scone run --console-key-file K -i): records on stdout, one "
                 "per read of the input, the final record at its end");
  encrypt->add_option("--key-file", args->key_file, "The console key file")->required();
  encrypt->add_option("FILE", args->input, "The input (default: stdin)");
  encrypt->callback([&action, args] { action = [args] { return Encrypt(*args); }; });
}

}  // namespace scone::cli
