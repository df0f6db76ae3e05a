// tierctl audit: flow-log integrity for auditors (docs/flowlog.md).
//
//   tierctl audit verify DIR [--pubkey PEM] [-o text|json]
//   tierctl audit pubkey [KEY]
//
// Exit codes as every tierctl command: 0 the log is intact; 1 a problem was
// found (the first one is named as FILE:LINE: KIND: message, e.g.
// "flows-20261125T170000.123456Z.jsonl:1043: edited: record hash does not
// match its content"; a torn tail after a crash is kind torn-tail); 2 usage
// (no such directory, unreadable public key).
// Results on `out` (one JSON document with -o json), diagnostics on `err`.
// Thread contract: plain functions, no shared state.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "tierwall/flowquery/summary.h"

namespace tierwall::cli {

inline constexpr std::string_view kDefaultFlowLogKey = "/var/lib/tierwall/flowlog.key";

struct AuditVerifyOptions {
  std::string dir;
  std::optional<std::string> pubkey;  // PEM public key; without it the key in DIR is used
  std::string output = "text";        // text | json
};

int audit_verify(const AuditVerifyOptions& options, std::ostream& out, std::ostream& err);

// Prints the public key (PEM) of the node's flow-log key: KEY.pub when
// present, else derived from the private key KEY (which must be readable).
int audit_pubkey(const std::string& key_path, std::ostream& out, std::ostream& err);

// The chain verification as the report shows it (tierctl report).
flowquery::Verification report_verification(const std::string& dir,
                                            const std::optional<std::string>& pubkey);

}  // namespace tierwall::cli
