// The DPDK dataplane's decision core: a RuleSet compiled into an immutable
// Generation of fast-path tables that decides a new connection with a few
// memory lookups and no rule scan, and reproduces the reference evaluator
// (`decide()` in evaluator.h) exactly: the same verdict and the same deciding
// rule id for every (src, dst, protocol, port). docs/dpdk.md, "Decision
// core", has the layout, the choices and the measured cost.
//
// Layout of a Generation:
//  * address -> peer: two hash tables (IPv4 keys, IPv6 keys) of one-cache-
//    line buckets (4 IPv4 or 2 IPv6 slots, one column per field), at most
//    half the slots used, power-of-two bucket count; a full bucket spills
//    into the next. A slot holds the endpoint id, its decision class (tier,
//    or the host class) and its selector profile record, so a lookup is one
//    line and one compare of all keys, without a branch per slot. rte_hash
//    is not used: it needs rte_malloc (hence an EAL) to create, and we want
//    the same tables in unit tests on any machine.
//  * every other address -> (in a container CIDR?, world class): a sorted
//    array of elementary address intervals cut by the container CIDRs and the
//    world CIDRs that rules mention, searched by binary search (one array per
//    family; log2(2 x prefixes) probes). A world class is the interned set of
//    rule world-peers whose CIDR list contains the address. Exact for any
//    prefix lengths, O(prefixes) memory, no hugepages (rte_lpm/rte_lpm6 need
//    an EAL); the unknown-address path is the slow one anyway.
//  * decisions: peers are grouped into classes (one per tier, host, world);
//    for every (src class, dst class, protocol bucket) the rules that can
//    match are pre-selected in policy order (denies, then flows), each with
//    only its residual checks: a port/type range and at most one selector
//    or world-class bit per side. Each such list is then compiled: its port
//    ranges cut the ports into intervals, and each interval gets a program,
//    the entries covering it in order with their selector checks only,
//    ending with one that always matches (the rule, intra-tier allow or
//    default deny, with "deny is audited" resolved). A pair is one cache
//    line of 8-byte heads, one per protocol bucket, each saying where its
//    port map (8 boundaries per 16 bytes, compared at once) and programs
//    are; lists alike (an empty one: the pair's fallback alone) share one
//    block. A decision is: self check, the pair's line, the interval of the
//    port, then the program's entries until one matches (usually the
//    first). Lists of several protocols ("other") or past the memory budget
//    (GenerationOptions) are scanned as pre-selected, with early exit.
//  * tagged peers: a remote endpoint known only by the tier a trusted
//    overlay peer names (VXLAN-GBP group id, overlay.h) is a PeerClass of
//    that tier with no identity and an unknown selector profile
//    (tagged_peer()). decide() stays fail-closed for it: a deny whose only
//    unmet check is a selector on that side matches, a flow (allow) that
//    needs a selector on that side does not. For every other PeerClass the
//    decision is exactly the reference evaluator's.
//
// Thread contract: build_generation() runs on the control thread. A built
// Generation is never mutated; any number of lcores may call its const
// methods concurrently. Lifetime is managed by GenerationStore (RCU).
// Costs: classify() is O(1) hash probes + O(log prefixes) for non-endpoint
// addresses + O(log intervals + entries of the port's program); no
// allocation, lock, log or system call. build_generation() is
// O(addresses + rules x matching pairs x intervals of their lists).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane::dpdk {

// An address resolved against a Generation (the fast path's ResolvedPeer).
// 16 bytes, so that it travels in two registers.
struct PeerClass {
  EndpointId endpoint = kUnknownEndpoint;  // Endpoint only
  std::uint32_t profile = 0;               // Endpoint only: selector profile record
  std::uint32_t world_class = 0;           // World only
  std::uint16_t cls = 0;                   // decision class: tier, host or world
  PeerMatch::Entity entity = PeerMatch::Entity::World;
  // Endpoint only: its selector memberships are unknown (a tagged remote
  // peer, Generation::tagged_peer()); decide() then treats a selector on
  // this side as met by denies and unmet by flows.
  bool unknown_profile = false;
};
static_assert(sizeof(PeerClass) == 16);

// What the fast path needs from a decision: the evaluator's Decision
// without the rule pointer (rule_id says which rule, as Decision::rule_id()).
struct FastDecision {
  Verdict verdict = Verdict::Deny;
  RuleKind kind = RuleKind::DefaultDeny;
  RuleId rule_id = kRuleDefaultDeny;

  friend bool operator==(const FastDecision&, const FastDecision&) = default;
};

// How a source tagged by a trusted overlay peer (tag = TierId + 1, the GBP
// group id; overlay.h) is classified: Generation::check_tag().
enum class TagCheck : std::uint8_t {
  None,        // no tag (or not checked: a flow-table hit)
  ByAddress,   // a known endpoint of the tagged tier: its own class
  ByTag,       // unknown here: tagged_peer(tier)
  UnknownTag,  // the tag names no tier of this generation: refused
  Spoofed,     // a known endpoint of another tier, or this node: refused
};

struct GenerationOptions {
  // Generation id stamped on flows; 0 takes the policy's generation.
  std::uint64_t id = 0;
  // Memory bound of the compiled decision lists: a (pair, protocol) list of
  // n candidates becomes a port map only if it fits in
  // map_units_per_candidate x n + 16 units of 16 bytes (and 65,535), else
  // it is scanned as is (exact either way, slower). 0 scans every list.
  std::uint32_t map_units_per_candidate = 8;
};

class Generation;

struct BuildResult {
  std::unique_ptr<const Generation> generation;  // null on error
  std::string error;                             // why, when null
};

// Compiles `rules` (both halves non-null) into fast-path tables. Fails (no
// exception) on an inconsistent RuleSet: an endpoint or rule naming a tier
// the policy does not have.
BuildResult build_generation(const RuleSet& rules, const GenerationOptions& options = {});

class Generation {
 public:
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;
  ~Generation();

  // The decision for a connection's first packet, as decide(rules, c).
  [[nodiscard]] FastDecision classify(const IpAddress& src, const IpAddress& dst,
                                      std::uint8_t protocol, std::uint16_t port) const;
  [[nodiscard]] FastDecision classify(const Connection& c) const {
    return classify(c.src, c.dst, c.protocol, c.port);
  }
  // The two halves of classify(), for callers that resolve once.
  [[nodiscard]] PeerClass resolve(const IpAddress& address) const;
  [[nodiscard]] FastDecision decide(const PeerClass& src, const PeerClass& dst,
                                    std::uint8_t protocol, std::uint16_t port) const;
  // A remote endpoint known only by its tier (`tier` < tier_count()): the
  // source class of traffic a trusted overlay peer tagged with that tier.
  // It is a member of `tier` and of no known selector (unknown_profile).
  [[nodiscard]] PeerClass tagged_peer(TierId tier) const;
  // Tiers of the policy, quarantine included (TierIds are [0, tier_count())).
  [[nodiscard]] std::size_t tier_count() const;
  // The source class of a packet tagged `tag` (nonzero: TierId + 1) by a
  // trusted overlay peer, from its address as resolve() gave it
  // (`resolved`): the resolved class when it is a known endpoint of the
  // tagged tier (ByAddress), tagged_peer(tier) when the address is not an
  // endpoint or host here (ByTag); UnknownTag / Spoofed (`decided`
  // untouched) refuse the packet. O(1), no memory access beyond the args.
  [[nodiscard]] TagCheck check_tag(const PeerClass& resolved, std::uint16_t tag,
                                   PeerClass& decided) const;
  // Burst pipelining (see FlowTable::process_burst): prefetch the address
  // hash bucket of `address`; then, once resolved, the pair's line and both
  // profile records; then (reading the pair's line) the first two lines of
  // the port map and programs, or of the scanned list. Each is a few
  // instructions and no branch on the usual path.
  void prefetch(const IpAddress& address) const;
  void prefetch_pair(const PeerClass& src, const PeerClass& dst, std::uint8_t protocol) const;
  void prefetch_candidates(const PeerClass& src, const PeerClass& dst, std::uint8_t protocol) const;

  // The generation id (GenerationOptions::id, else the policy's generation):
  // for logs and flow records.
  [[nodiscard]] std::uint64_t id() const { return id_; }
  // Unique per build_generation() call in the process (monotonic): what
  // flow entries are stamped with, so that a rebuild for an endpoint change
  // under the same policy generation still re-checks established flows.
  [[nodiscard]] std::uint64_t serial() const { return serial_; }
  // The RuleSet this generation was built from (for explain / flow logs).
  [[nodiscard]] const RuleSet& rules() const { return rules_; }

  struct Stats {
    std::size_t endpoint_addresses = 0;  // v4 + v6 keys, host addresses included
    std::size_t hash_bytes = 0;          // both address hashes
    std::size_t profile_bytes = 0;
    std::size_t interval_count = 0;  // v4 + v6 elementary intervals
    std::size_t interval_bytes = 0;
    std::size_t world_classes = 0;
    std::size_t classes = 0;            // tiers + host + world
    std::size_t candidate_entries = 0;  // over all (pair, protocol) lists
    std::size_t max_candidates = 0;     // longest (pair, protocol) list
    std::size_t decision_bytes = 0;
    std::size_t total_bytes = 0;
  };
  [[nodiscard]] const Stats& stats() const { return stats_; }

 private:
  friend BuildResult build_generation(const RuleSet&, const GenerationOptions&);
  struct Impl;
  explicit Generation(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::uint64_t id_ = 0;
  std::uint64_t serial_ = 0;
  RuleSet rules_;
  Stats stats_;
};

}  // namespace tierwall::dataplane::dpdk
