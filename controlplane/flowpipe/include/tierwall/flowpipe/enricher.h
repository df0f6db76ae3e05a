// From kernel flow events to flow-log records: who was talking (endpoint
// identity as of the event), under which rule and policy generation.
//
// Inputs are the capture's RawFlowEvents (dataplane/nft/flow_events.h):
//   - NFLOG starts (conntrack_id == 0): deny, audit, and allows of flows
//     with `log: true`; they carry the deciding generation;
//   - conntrack starts (conntrack_id != 0) of every accepted connection,
//     rule id from the ct mark. Those NFLOG already reported (audited
//     connections, logged flows) are not written twice: the NFLOG record,
//     which names the generation, is the one kept;
//   - conntrack ends, with per-direction counters. The identity, rule and
//     generation of an end are those remembered from the connection's start
//     (so a container removed before its connection ended is still named);
//   - losses, written as `loss` records (never silent).
// With Options::dataplane = Dpdk (flowpipe/dpdk_events.h), a start with a
// non-zero conntrack_id is the DPDK flow table's: its verdict is the one
// decided (not inferred from the rule), it is remembered under that id for
// its end, and never dropped as a duplicate; generation 0 (the DPDK
// dataplane flushed: no policy, every IP packet denied) is written as 0.
//
// Peers are resolved like the dataplane resolves them: an endpoint known to
// the agent (name, id, image, tier), else one removed within `tombstone_ttl`
// (events racing a container's removal), else a node address (host), else
// an address in a container CIDR (endpoint in tier quarantine, unnamed),
// else the world.
//
// Thread contract: one thread (the agent's control thread) calls everything;
// the lookup is called from within enrich() only.
// Costs: enrich() is O(log n) lookups plus one record; memory: the open
// connections remembered for their ends (bounded by max_connections) and the
// tombstones (bounded by max_tombstones).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/nft/flow_events.h"
#include "tierwall/dataplane/ruleset.h"
#include "tierwall/flowlog/record.h"

namespace tierwall::flowpipe {

struct Identity {
  std::string name;
  std::string id;  // runtime container id; empty for inventory endpoints
  std::string image;
  std::string tier;
};

// What the enricher asks about addresses (implemented by the agent over its
// reconciler; by fakes in tests).
class IdentityLookup {
 public:
  virtual ~IdentityLookup() = default;
  [[nodiscard]] virtual std::optional<Identity> endpoint(const IpAddress& address) const = 0;
  [[nodiscard]] virtual bool is_node(const IpAddress& address) const = 0;
  [[nodiscard]] virtual bool in_container_cidr(const IpAddress& address) const = 0;
};

struct EnricherStats {
  std::uint64_t records = 0;
  std::uint64_t duplicates_dropped = 0;  // conntrack starts NFLOG already reported
  std::uint64_t ends_without_start = 0;  // identity resolved at the end instead
  std::uint64_t unknown_rules = 0;       // a rule id no remembered generation has
};

class Enricher {
 public:
  struct Options {
    flowlog::Dataplane dataplane = flowlog::Dataplane::Nft;
    std::chrono::seconds tombstone_ttl{300};
    std::size_t max_tombstones = 65536;
    std::size_t max_connections = 1 << 20;
    std::size_t generations_kept = 8;
  };

  Enricher(Options options, const IdentityLookup& lookup);

  // A policy generation took effect (its rules name the events it decides).
  // The last `generations_kept` generations are remembered for late events.
  void set_policy(std::shared_ptr<const dataplane::CompiledPolicy> policy);

  // An endpoint is going away: remember who it was for late events.
  void endpoint_gone(const IpAddress& address, Identity identity);

  // The record for one event, or nullopt when it is not to be written (a
  // duplicate start, an event without a policy to name it by).
  std::optional<flowlog::FlowRecord> enrich(const dataplane::nft::RawFlowEvent& event);

  [[nodiscard]] const EnricherStats& stats() const { return stats_; }

 private:
  struct Remembered {
    flowlog::Peer src;
    flowlog::Peer dst;
    flowlog::RuleKind kind = flowlog::RuleKind::Flow;
    std::string rule_name;
    std::uint64_t generation = 0;
    flowlog::Verdict verdict = flowlog::Verdict::Allow;
  };
  struct Tombstone {
    Identity identity;
    std::chrono::steady_clock::time_point until;
  };

  [[nodiscard]] const dataplane::CompiledPolicy* policy_for(std::uint64_t generation) const;
  flowlog::Peer peer(const IpAddress& address, std::uint16_t port);
  // Kind and name of `rule` under `policy` (nullptr: unknown).
  void name_rule(const dataplane::CompiledPolicy* policy, dataplane::RuleId rule,
                 flowlog::Verdict verdict, flowlog::RuleKind& kind, std::string& name);
  void expire_tombstones();

  Options options_;
  const IdentityLookup& lookup_;
  std::deque<std::shared_ptr<const dataplane::CompiledPolicy>> policies_;  // newest last
  std::map<IpAddress, Tombstone> tombstones_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, IpAddress>> tombstone_order_;
  std::unordered_map<std::uint32_t, Remembered> open_;  // conntrack id -> its start
  EnricherStats stats_;
};

}  // namespace tierwall::flowpipe
