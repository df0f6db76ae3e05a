// What a flow log says, added up for an audit report (`tierctl report`):
// the tier-by-tier matrix of allowed / denied / audited connection attempts,
// the most denied pairs and rules, quarantined and unassigned endpoints,
// policy generations, loss, and the result of the chain verification.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "tierwall/flowquery/record.h"

namespace tierwall::flowquery {

// The chain verification's result, computed elsewhere (tw_flowlog's
// verify_log) and handed in by the caller.
struct Verification {
  bool ran = false;  // false: not verified (grey badge)
  bool ok = false;
  std::string message;
  std::string first_problem;  // e.g. "flows-...jsonl:42: hash mismatch"
};

struct CellCounts {
  std::uint64_t allowed = 0, denied = 0, audited = 0;
};

struct DeniedPair {
  std::string src_tier, src_name, dst_tier, dst_name, proto;
  std::int32_t port = -1;
  std::uint64_t count = 0;
};

struct RuleCount {
  std::string kind, name;
  std::uint64_t count = 0;
};

// An endpoint seen in quarantine, or an address of the container networks
// that belongs to no known endpoint (entity endpoint without a name).
struct EndpointSeen {
  std::string ip, name, tier;
  std::uint64_t records = 0, events = 0;
  std::string first_time, last_time;
};

struct PolicyChange {
  std::string time, node, name, digest, by;
  std::int64_t generation = 0;
  std::int64_t time_us = 0;
};

struct LossSource {
  std::string source;
  std::uint64_t records = 0, events = 0;
  bool lower_bound = false;  // some count is only a lower bound
};

struct LossRecord {
  std::string time, node, source, reason;
  std::uint64_t count = 0;
  bool lower_bound = false;
};

struct Summary {
  std::string log_dir;
  std::vector<std::string> files;
  std::vector<std::string> nodes;
  std::string first_time, last_time;  // empty when there is no record
  std::int64_t first_us = 0, last_us = 0;

  std::uint64_t records = 0;  // parsed records of every type
  std::map<std::string, std::uint64_t> records_by_type;
  std::uint64_t flow_events = 0;                // sum of `count` over flow start records
  std::uint64_t malformed = 0;                  // lines that are not records
  std::vector<std::string> malformed_examples;  // "file:line: why", the first few
  std::vector<std::string> torn;                // "file:line (N bytes)"

  // Connection attempts (flow records with event "start", sum of `count`)
  // by (source peer, destination peer). A peer is the endpoint's tier, or
  // "host" / "world". `peers` orders rows and columns: tiers by name, then
  // quarantine, host, world.
  std::vector<std::string> peers;
  std::map<std::pair<std::string, std::string>, CellCounts> matrix;
  CellCounts totals;

  std::vector<DeniedPair> top_denied;  // most denied first
  std::vector<RuleCount> top_denied_rules;
  std::vector<EndpointSeen> quarantined;
  std::vector<EndpointSeen> unassigned;
  std::vector<PolicyChange> policies;  // in log order

  std::uint64_t loss_events = 0, loss_records = 0;
  bool loss_lower_bound = false;
  std::vector<LossSource> loss_by_source;
  std::vector<LossRecord> loss;  // the first kMaxLossRecords

  Verification verification;

  [[nodiscard]] CellCounts cell(const std::string& from, const std::string& to) const;
};

class SummaryBuilder {
 public:
  static constexpr std::size_t kDefaultTop = 20;
  static constexpr std::size_t kMaxLossRecords = 200;
  static constexpr std::size_t kMaxEndpoints = 500;
  static constexpr std::size_t kMaxExamples = 10;

  explicit SummaryBuilder(std::size_t top = kDefaultTop) : top_(top) {}

  // A complete record (RecordParser::parse / complete).
  void add(const Record& r);
  void add_malformed(const std::string& file, std::uint64_t line, const std::string& why);
  void add_torn(const std::string& file, std::uint64_t line, std::size_t bytes);

  Summary finish(std::string log_dir, std::vector<std::string> files, Verification verification) &&;

 private:
  using PairKey =
      std::tuple<std::string, std::string, std::string, std::string, std::string, std::int32_t>;

  std::size_t top_;
  Summary s_;
  std::set<std::string> nodes_;
  std::map<PairKey, std::uint64_t> denied_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> denied_rules_;
  std::map<std::string, EndpointSeen> quarantined_, unassigned_;
  std::map<std::string, LossSource> loss_sources_;
  std::set<std::string> peer_set_;
};

// The summary as one JSON document (`tierctl report -o json`).
nlohmann::json to_json(const Summary& s);

// Peer label of one side of a flow: its tier, "host" or "world".
std::string peer_of(const Peer& p);

}  // namespace tierwall::flowquery
