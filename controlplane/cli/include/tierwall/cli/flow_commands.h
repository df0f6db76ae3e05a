// tierctl commands that read flow logs (docs/auditor.md): `tierctl flows`
// lists, filters and follows records; `tierctl report` adds them up into an
// HTML (or JSON) audit report.
//
// Exit codes as every tierctl command: 0 success; 1 the log cannot be read,
// has lines that are not records, or (report) the chain verification failed;
// 2 usage (a bad flag value, no --log). Results on `out`, diagnostics on
// `err`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tierwall/flowquery/summary.h"

namespace tierwall::cli {

struct FlowsOptions {
  std::string log_dir;  // --log DIR, required
  // RFC 3339 ("2026-11-25T17:00:00Z"), a date, "now", or a duration ago
  // ("15m", "2h", "7d"). since inclusive, until exclusive.
  std::optional<std::string> since, until;
  // Each value may also be a comma-separated list; values of one flag are
  // alternatives, flags combine with AND.
  std::vector<std::string> verdicts;   // --verdict allow|deny|audit
  std::vector<std::string> tiers;      // --tier T: src or dst (host/world too)
  std::vector<std::string> src_tiers;  // --src-tier T
  std::vector<std::string> dst_tiers;  // --dst-tier T
  std::vector<std::string> endpoints;  // --endpoint GLOB: src or dst name
  std::vector<std::string> rules;      // --rule GLOB: rule name, or kind when unnamed
  std::vector<std::string> addresses;  // --address IP|CIDR: src or dst
  std::vector<std::string> ports;      // --port N|N-M: dst port
  std::vector<std::string> types;      // --type flow|loss|policy|agent|checkpoint|all
  bool follow = false;                 // --follow
  std::string output = "table";        // -o table|json
  std::optional<std::uint64_t> limit;  // --limit N: stop after N matches
  // Follow mode runs until this is set (tests); tierctl leaves it null and
  // is ended by a signal.
  const std::atomic<bool>* stop = nullptr;
  std::optional<std::int64_t> now_us;  // "now" for relative times (tests)
  std::size_t buffer_size = 1 << 20;
};

int flows(const FlowsOptions& options, std::ostream& out, std::ostream& err);

struct ReportOptions {
  std::string log_dir;          // --log DIR, required
  std::string output = "-";     // --output PATH; "-" = stdout
  std::string format = "html";  // --format html|json
  std::optional<std::string> since, until;
  std::size_t top = 20;  // rows of the top-denied tables
  // The chain verification (tw_flowlog's verify_log). When set it is called
  // with the log directory; otherwise `verification` is shown as given
  // (default: not verified).
  std::function<flowquery::Verification(const std::string& log_dir)> verify;
  flowquery::Verification verification;
  std::optional<std::int64_t> now_us;  // "now" for relative times and the footer (tests)
};

int report(const ReportOptions& options, std::ostream& out, std::ostream& err);

}  // namespace tierwall::cli
