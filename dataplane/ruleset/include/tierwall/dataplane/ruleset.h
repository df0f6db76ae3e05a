// The compiled ruleset: the one input type of every dataplane.
//
// The control plane compiles a policy into an immutable CompiledPolicy
// (rules over tier ids and selector ids, never over endpoints) and keeps an
// EndpointTable (address -> endpoint -> tier and selector memberships).
// A RuleSet pairs one generation of each. Rules never mention endpoints, so
// the number of rules is independent of the number of containers, and an
// endpoint joining or leaving only changes EndpointTable entries.
//
// Thread contract: a published CompiledPolicy / EndpointTable snapshot is
// never mutated; readers on any thread may share it through shared_ptr.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/ports.h"

namespace tierwall::dataplane {

using TierId = std::uint16_t;
using SelectorId = std::uint32_t;
using EndpointId = std::uint32_t;
using RuleId = std::uint32_t;

// Tier 0 is always the reserved `quarantine` tier: every endpoint that no
// assignment matches, and (in the dataplanes) every unknown address inside a
// container CIDR. It sorts below every declared tier.
inline constexpr TierId kQuarantineTier = 0;
inline constexpr std::string_view kQuarantineName = "quarantine";

// Reserved rule ids for the decisions that no policy rule makes. Policy rules
// are numbered from kFirstPolicyRule in policy order (denies, then flows), so
// a rule id fits in a log prefix or a conntrack mark.
inline constexpr RuleId kRuleSelf = 1;
inline constexpr RuleId kRuleIntraTier = 2;
inline constexpr RuleId kRuleDefaultDeny = 3;
inline constexpr RuleId kFirstPolicyRule = 16;

inline constexpr EndpointId kUnknownEndpoint = 0xffffffffU;

enum class Mode : std::uint8_t { Enforce, Audit };
enum class Verdict : std::uint8_t { Allow, Deny, Audit };
enum class RuleKind : std::uint8_t { Flow, Deny, IntraTier, DefaultDeny, Self };

std::string_view to_string(Mode m);
std::string_view to_string(Verdict v);
std::string_view to_string(RuleKind k);

// Where a decision comes from: what `tierctl explain` and the flow log show.
struct RuleOrigin {
  RuleKind kind = RuleKind::DefaultDeny;
  std::string name;  // empty for IntraTier, DefaultDeny, Self
  std::string file;  // empty when not from a file
  int line = 0;      // 1-based; 0 when unknown
};

struct TierInfo {
  std::string name;
  int level = -1;             // -1 for quarantine (below every declared tier)
  Mode mode = Mode::Enforce;  // effective: the tier's own mode, else the policy's
  bool declared = false;      // false only for quarantine
};

// A selector set: the label/image/name part of an endpoint selector. The
// dataplane only sees its id and which endpoints are members; `text` is for
// people (nft comments, explain output).
struct SelectorInfo {
  std::string text;
};

// One side (initiator or responder) of a rule.
struct PeerMatch {
  enum class Entity : std::uint8_t { Endpoint, Host, World };

  Entity entity = Entity::Endpoint;
  // Endpoint: the allowed tiers, sorted; empty means every tier, quarantine
  // included.
  std::vector<TierId> tiers;
  // Endpoint: the selector set the endpoint must be a member of; nullopt when
  // the policy gave no labels/image/name.
  std::optional<SelectorId> selector;
  // World: addresses that are neither an endpoint nor the host, inside one of
  // these prefixes.
  std::vector<Cidr> cidrs;

  friend bool operator==(const PeerMatch&, const PeerMatch&) = default;
};

struct Rule {
  RuleId id = 0;
  RuleOrigin origin;
  PeerMatch from;
  PeerMatch to;
  std::vector<PortMatch> ports;  // never empty: {any} when the policy omits it
  bool staged = false;           // a deny with `audit: true`
  bool log = false;              // a flow with `log: true`
};

// The policy half of a RuleSet. Immutable once built by the compiler.
struct CompiledPolicy {
  std::string name;
  std::string digest;  // hex SHA-256 over the policy sources
  std::uint64_t generation = 0;
  Mode mode = Mode::Enforce;
  bool intra_tier_allow = false;
  RuleOrigin intra_tier_origin{RuleKind::IntraTier, {}, {}, 0};

  std::vector<TierInfo> tiers;          // index is TierId; [0] is quarantine
  std::vector<SelectorInfo> selectors;  // index is SelectorId
  std::vector<Rule> denies;             // policy order; staged ones included
  std::vector<Rule> flows;              // policy order

  [[nodiscard]] std::optional<TierId> find_tier(std::string_view tier_name) const;
  [[nodiscard]] const Rule* find_rule(RuleId id) const;
  [[nodiscard]] const Rule* find_rule(std::string_view rule_name) const;
  [[nodiscard]] std::size_t rule_count() const { return denies.size() + flows.size(); }
};

// What the dataplane knows of one endpoint.
struct EndpointEntry {
  TierId tier = kQuarantineTier;
  std::uint32_t profile = 0;  // index of its selector memberships (interned)
};

// address -> endpoint -> (tier, selector memberships), plus the node's own
// addresses (the `host` entity) and the container CIDRs in which an unknown
// address is treated as a quarantined endpoint rather than `world`.
//
// Endpoints with the same memberships share one interned profile, which keeps
// the compiled state per endpoint to an entry and its address keys.
class EndpointTable {
 public:
  EndpointTable();

  // Adds or replaces endpoint `id` with the given addresses and memberships.
  // `selectors` need not be sorted. Returns false (and changes nothing) when
  // an address already belongs to another endpoint.
  bool upsert(EndpointId id, std::span<const IpAddress> addresses, TierId tier,
              std::span<const SelectorId> selectors);
  void remove(EndpointId id);
  // Room for this many endpoints/addresses without rehashing or moving, so
  // that single updates stay fast at 100k endpoints.
  void reserve(std::size_t endpoints, std::size_t addresses);

  void set_node_addresses(std::vector<IpAddress> addresses) {
    node_addresses_ = std::move(addresses);
  }
  void set_container_cidrs(std::vector<Cidr> cidrs) { container_cidrs_ = std::move(cidrs); }

  [[nodiscard]] const std::vector<IpAddress>& node_addresses() const { return node_addresses_; }
  [[nodiscard]] const std::vector<Cidr>& container_cidrs() const { return container_cidrs_; }

  [[nodiscard]] std::optional<EndpointId> find(const IpAddress& a) const;
  [[nodiscard]] const EndpointEntry* entry(EndpointId id) const;
  [[nodiscard]] std::span<const SelectorId> selectors(const EndpointEntry& e) const {
    return profiles_[e.profile];
  }
  [[nodiscard]] std::span<const IpAddress> addresses(EndpointId id) const;
  [[nodiscard]] bool is_node_address(const IpAddress& a) const;
  [[nodiscard]] bool in_container_cidr(const IpAddress& a) const;

  [[nodiscard]] std::size_t endpoint_count() const { return live_; }
  [[nodiscard]] std::size_t address_count() const { return by_address_.size(); }
  [[nodiscard]] std::size_t profile_count() const { return profiles_.size(); }
  // Approximate heap bytes held by the table (for the benchmark).
  [[nodiscard]] std::size_t memory_bytes() const;

  // Calls fn(address, endpoint id, entry) for every address.
  template <typename Fn>
  void for_each_address(Fn&& fn) const {
    for (const auto& [addr, id] : by_address_) fn(addr, id, slots_[id].entry);
  }

 private:
  struct Slot {
    EndpointEntry entry;
    std::vector<IpAddress> addresses;
    bool live = false;
  };
  std::uint32_t intern(std::vector<SelectorId> selectors);

  std::vector<Slot> slots_;
  std::unordered_map<IpAddress, EndpointId, IpAddressHash> by_address_;
  std::vector<std::vector<SelectorId>> profiles_;
  std::unordered_map<std::string, std::uint32_t> profile_index_;
  std::vector<IpAddress> node_addresses_;
  std::vector<Cidr> container_cidrs_;
  std::size_t live_ = 0;
};

// One generation as a dataplane receives it.
struct RuleSet {
  std::shared_ptr<const CompiledPolicy> policy;
  std::shared_ptr<const EndpointTable> endpoints;
};

}  // namespace tierwall::dataplane
