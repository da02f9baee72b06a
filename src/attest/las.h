// LAS, the local attestation service (one per host): turns a runtime's request into evidence
// that CAS can verify. With the sim platform, LAS measures the requesting process itself (its
// executable and every file it maps executable, via SO_PEERCRED and /proc), so a process cannot
// claim another program's measurement; it then signs the report with the platform key.
//
// Protocol on a unix stream socket: request = u32 size | body, response likewise.
//   request body:  label | report_data (64) | u8 has_sigstruct | [sigstruct]
//   response body: label | u8 ok | evidence or error message
#pragma once

#include <optional>
#include <string>

#include "attest/evidence.h"
#include "attest/platform.h"

namespace scone::attest {

// Asks the LAS at `socket_path` for evidence about the calling process.
Result<Evidence> RequestEvidence(const std::string& socket_path, const ReportData& report_data,
                                 const std::optional<SigStruct>& sigstruct);

// Serves requests until `stop` becomes true (checked between connections). `runtime_library`
// names the runtime in measurements.
Status ServeLas(const std::string& socket_path, const Platform& platform,
                const std::string& runtime_library, const volatile bool* stop);

}  // namespace scone::attest
