// The console shield's record: what a shielded program's stdout and stderr carry instead of
// plaintext (docs/console-shield.md), and what `scone console decrypt` reads back. A pure
// library: no I/O, no state beyond one stream's cipher.
//
// A record is one write(2) of the program's (or a piece of one), sealed with AES-256-GCM:
//
//   version u8 | type u8 | size u32 | stream id [16] | sequence u64 | nonce [12]   (header, 42 bytes)
//   ciphertext [size] | tag [16]
//
// Integers little-endian. The header up to the nonce is authenticated (the AEAD's additional
// data); the nonce is random (a stream that continues in a program executed by its process can
// never reuse one, whatever the interleaving of threads at the exec). Every stream (one process's
// writes to one console description) has its own key, HKDF-SHA-256 of the console key with the
// stream id as salt, and numbers its records from 0; record 0 is a kStart, the last a kEnd.
//
// Cost: one AES-GCM pass over the payload and one HMAC-free header; no allocation.
// Thread-safety: the functions are pure; a StreamCipher may be used from many threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"
#include "crypto/primitives.h"
#include "crypto/secret.h"

namespace scone::console {

// 2: the start record names the run and its sibling first streams; records may be base64 lines.
inline constexpr uint8_t kVersion = 2;
inline constexpr size_t kStreamIdSize = 16;
using StreamId = std::array<uint8_t, kStreamIdSize>;

enum class RecordType : uint8_t {
  kStart = 1,  // payload: StartInfo (StartPayload)
  kData = 2,   // payload: bytes the program wrote
  kFork = 3,   // payload: the stream id of a child process's stream on the same description
  kEnd = 4,    // empty: the stream ended cleanly (exit, or its last descriptor closed)
};

// Which of the program's standard descriptors the stream's description started as (kStdin: an
// input stream, `scone console encrypt`, that the program reads).
enum class Channel : uint8_t { kStdin = 0, kStdout = 1, kStderr = 2 };
const char* ChannelName(Channel c);

inline constexpr size_t kHeaderSize = 1 + 1 + 4 + kStreamIdSize + 8 + crypto::kNonceSize;
inline constexpr size_t kOverhead = kHeaderSize + crypto::kTagSize;
// Payloads above this are malformed (a writer makes them far smaller).
inline constexpr size_t kMaxPayload = 1 << 20;
// The largest payload of an input record (`scone console encrypt` writes at most this much per
// record; the runtime reading sealed stdin takes no larger).
inline constexpr size_t kMaxInputPayload = 16 * 1024;
// A run has at most this many first streams (one per standard descriptor).
inline constexpr size_t kMaxSiblings = 3;

StreamId NewStreamId();
std::string ShortName(const StreamId& id);  // the first 8 hex digits, for messages

// One stream's AEAD key: HKDF-SHA-256(console key, salt = stream id).
std::unique_ptr<crypto::Aes256Gcm> StreamCipher(const SecretBytes& console_key, const StreamId& id);

// Seals `payload` into `out`, which has room for kOverhead + payload.size() bytes.
void SealRecord(const crypto::Aes256Gcm& cipher, RecordType type, const StreamId& stream, uint64_t sequence,
                ByteSpan payload, uint8_t* out);

struct RecordHeader {
  RecordType type;
  uint32_t size;  // of the payload
  StreamId stream;
  uint64_t sequence;
  size_t RecordSize() const { return kOverhead + size; }
};

// Parses the header at the start of `bytes` (at least kHeaderSize of them). False (and why)
// if it is not a record's.
bool ParseHeader(ByteSpan bytes, RecordHeader* out, std::string* why);
// Authenticates and decrypts a whole record (RecordSize() bytes) into `out` (size bytes).
// Fails with "decryption failed" only.
Status OpenRecord(const crypto::Aes256Gcm& cipher, const RecordHeader& header, ByteSpan record, uint8_t* out);

// What a stream's start record says: parent stream id (zeros: the run's first process) | channel
// u8 | run id | u8 count | the other first streams of the run on the same file, pipe or terminal.
// The run id is random per run and carried by every stream of it, so a reader prints nothing of
// another run's stream; `siblings` (first streams only) makes a removed first stream evident.
struct StartInfo {
  StreamId parent{};
  Channel channel = Channel::kStdout;
  StreamId run{};
  std::vector<StreamId> siblings;
};
Bytes StartPayload(const StartInfo& info);
// False if `payload` is no start record's.
bool ParseStart(ByteSpan payload, StartInfo* out);

// Records as text, for terminals (whose line discipline rewrites bytes: onlcr makes each 0x0a
// "\r\n"): one line, the record in base64 then "\n". A reader takes either form, record by
// record, and ignores carriage returns before the line's end.
inline constexpr size_t TextRecordSize(size_t record_size) { return crypto::Base64Size(record_size) + 1; }
// Writes the line for `record` into `out` (room for TextRecordSize); returns its size.
size_t EncodeTextRecord(ByteSpan record, char* out);
// Whether `c` may begin a text record (a binary record begins with kVersion).
bool BeginsTextRecord(uint8_t c);

}  // namespace scone::console
