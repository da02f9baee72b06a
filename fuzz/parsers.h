// The parsers of untrusted bytes, as fuzz entry points: each must reject or accept any input
// without crashing, reading out of bounds or looping. Shared by the libFuzzer targets (clang,
// -DSCONE_FUZZ=ON) and by the deterministic mutation test that runs in every CI build.
#pragma once

#include <cstddef>
#include <cstdint>

#include "crypto/secret.h"

namespace scone::fuzz {

void JournalRecordParser(const uint8_t* data, size_t size);
void VolumeStateParser(const uint8_t* data, size_t size);
void PathAndRuleParser(const uint8_t* data, size_t size);
void JournalFileParser(const uint8_t* data, size_t size);
void SessionParser(const uint8_t* data, size_t size);
// What a runtime sends CAS's attestation port, and what CAS answers (cas/protocol.h).
void CasRequestParser(const uint8_t* data, size_t size);
void ServiceConfigParser(const uint8_t* data, size_t size);
// Evidence as it arrives in an RA-TLS certificate, and the runtime's configuration blob.
void EvidenceParser(const uint8_t* data, size_t size);
void RuntimeConfigParser(const uint8_t* data, size_t size);
// The network shield's variables (net/network_rules.h), as NAME=VALUE lines.
void NetworkRulesParser(const uint8_t* data, size_t size);
// What a process sends LAS, and what LAS answers (attest/las.h).
void LasRequestParser(const uint8_t* data, size_t size);
void LasReplyParser(const uint8_t* data, size_t size);
// A shielded console's records, as `scone console decrypt` reads them (console/reader.h).
void ConsoleParser(const uint8_t* data, size_t size);
// A stack file (stack/stack_file.h), and when it parses, its translation (stack/translate.h):
// no given secret's value may reach the Compose file for Docker.
void StackFileParser(const uint8_t* data, size_t size);
// The fixed key ConsoleParser reads with, so that seeds sealed with it authenticate.
const SecretBytes& ConsoleFuzzKey();

}  // namespace scone::fuzz
