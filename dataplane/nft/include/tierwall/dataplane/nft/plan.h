// The nftables ruleset tierwall installs, as plain values.
//
// build_plan() turns a RuleSet into a Plan: pure, deterministic, testable
// without a kernel. The netlink layer (netlink.h) turns a Plan into one
// libnftnl batch; render() prints the same Plan in `nft -f` syntax for
// review (`tierctl compile --backend nft`) and golden tests.
//
// Layout (one `inet` table, see docs/nftables.md):
//   sets    ep4/ep6 every endpoint address, cidr4/cidr6 container networks,
//           node4/node6 the node's addresses, aud4/aud6 endpoints in audit
//           tiers, t<T>_4/6 per tier, s<S>_4/6 per selector set, and
//           w<R><f|t>4/6 the world prefixes of rule R's from/to side;
//   chains  forward/input/output (base chains: conntrack fast path, scope),
//           fwd4/fwd6, in4/in6, out4/out6 (the decision, one per hook and
//           family), staged_* (staged denies);
//   rules   one per (policy rule × tier alternative × port entry) — never
//           per endpoint. Endpoints are set elements only.
//
// With an overlay (Options::overlay, docs/nftables.md "Overlay: the tier on
// the wire") the plan adds: set `ovl` (the overlay devices), sets
// `peer4/6` (trusted underlay peers), maps `tag4/6` (endpoint address ->
// its GBP tag, gbp_tag()), chains `ovl_tag` (egress tagging), `ovl_check`
// (tag/address agreement) and the tagged decision chains fwd4g/fwd6g,
// in4g/in6g; counters `ovl_untrusted`, `ovl_spoof`, `ovl_badtag`. Without
// an overlay the plan is exactly the plain one.
//
// Costs: build_plan is linear in rules × tier alternatives plus endpoint
// addresses; it allocates the whole Plan. Thread contract: pure functions of
// their arguments, callable from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane::nft {

enum class Dir : std::uint8_t { Src, Dst };
enum class Hook : std::uint8_t { Forward, Input, Output };

// One match expression; a rule's matches are ANDed.
struct Match {
  enum class Kind : std::uint8_t {
    NfProto,        // meta nfproto == family
    L4Proto,        // meta l4proto == proto
    InSet,          // (ip|ip6) (saddr|daddr) @set
    NotInSet,       // (ip|ip6) (saddr|daddr) != @set
    DportRange,     // th dport lo-hi (tcp/udp/sctp)
    IcmpTypeRange,  // icmp(v6) type lo-hi
    CtStateEstRel,  // ct state established,related
    IcmpV6Nd,       // icmpv6 type neighbour discovery (133..137)
    IifInSet,       // iifname @set
    IifNotInSet,    // iifname != @set
    OifInSet,       // oifname @set
    TagRange,       // meta mark & 0xffff lo-hi (the GBP group id)
    TagNot,         // meta mark & 0xffff != lo
  };
  Kind kind = Kind::NfProto;
  IpAddress::Family family = IpAddress::Family::V4;
  Dir dir = Dir::Src;
  std::string set;
  std::uint8_t proto = 0;
  std::uint16_t lo = 0;
  std::uint16_t hi = 0;

  friend bool operator==(const Match&, const Match&) = default;
};

// Statements in order; the last one is the verdict.
struct Action {
  enum class Kind : std::uint8_t {
    Counter,
    Log,
    CtMark,
    Accept,
    Drop,
    Jump,
    Goto,
    SetMark,     // meta mark set value
    SetMarkMap,  // meta mark set (ip|ip6) saddr map @name (no-op when absent)
  };
  Kind kind = Kind::Accept;
  std::string name;         // Counter: named counter; Log: prefix; Jump/Goto: chain;
                            // SetMarkMap: the map
  std::uint32_t value = 0;  // Log: group; CtMark: rule id (low 16 bits of ct mark);
                            // SetMark: the mark
  IpAddress::Family family = IpAddress::Family::V4;  // SetMarkMap: the key's family

  friend bool operator==(const Action&, const Action&) = default;
};

struct RuleDef {
  std::string chain;
  std::vector<Match> matches;
  std::vector<Action> actions;
  RuleId origin = 0;  // the policy rule it implements (0: infrastructure)
};

struct SetDef {
  enum class Key : std::uint8_t { Address, Ifname };
  std::string name;
  Key key = Key::Address;
  IpAddress::Family family = IpAddress::Family::V4;
  bool interval = false;
  std::vector<Cidr> prefixes;        // interval sets
  std::vector<IpAddress> addresses;  // plain sets
  std::vector<std::string> ifnames;  // Key::Ifname: interface names
  // A map address -> mark: addresses[i] maps to marks[i].
  bool mark_map = false;
  std::vector<std::uint32_t> marks;
};

struct ChainDef {
  std::string name;
  std::optional<Hook> hook;  // base chain when set
  int priority = 0;
};

struct Plan {
  std::string table;
  std::uint64_t generation = 0;
  std::string digest;
  std::vector<SetDef> sets;
  std::vector<std::string> counters;  // named counters, one per rule id
  std::vector<ChainDef> chains;
  std::vector<RuleDef> rules;  // grouped by chain, in evaluation order

  [[nodiscard]] const SetDef* find_set(std::string_view name) const;
};

// Nodes joined by VXLAN with the Group Based Policy extension (`ip link add
// ... type vxlan ... gbp`): the kernel sends the low 16 bits of the packet
// mark as the group id and sets the mark from it on receipt. The group id is
// gbp_tag(tier of the source); 0 means untagged.
struct Overlay {
  std::vector<std::string> devices;  // the vxlan-gbp interfaces; empty: no overlay
  std::vector<IpAddress> peers;      // underlay addresses of the other nodes
  std::uint16_t port = 4789;         // the VXLAN UDP port

  [[nodiscard]] bool enabled() const { return !devices.empty(); }
};

// The group id carried for tier `t` (0 is "untagged"), and back.
inline constexpr std::uint16_t gbp_tag(TierId t) { return static_cast<std::uint16_t>(t + 1U); }
std::optional<TierId> tier_of_tag(const CompiledPolicy& policy, std::uint32_t mark);

struct Options {
  std::string table = "tierwall";
  std::uint16_t log_group = 100;
  // Base-chain priority: after conntrack (-200) and DNAT (-100), before the
  // usual filter chains (0) of iptables-nft and netavark, so our drops come
  // first and are logged once. Accepts never override other tables' drops.
  int priority = -10;
  Overlay overlay;
};

Plan build_plan(const RuleSet& rules, const Options& options = {});

// `nft -f` text of a Plan (deterministic; golden-tested).
std::string render(const Plan& plan);

// The NFLOG prefix of a decision: "tw:<d|a|l>:<rule id>:<generation>".
std::string log_prefix(char verdict, RuleId rule, std::uint64_t generation);
struct LogTag {
  char verdict = 'd';
  RuleId rule = 0;
  std::uint64_t generation = 0;
};
std::optional<LogTag> parse_log_prefix(std::string_view prefix);

// The set elements that place one endpoint (all its addresses) in the
// kernel: ep, t<tier>, s<selector>..., aud. Endpoint churn is exactly these.
struct Element {
  std::string set;
  IpAddress address;
  std::optional<std::uint32_t> mark = std::nullopt;  // map elements: the value (tag4/6)
  friend bool operator==(const Element&, const Element&) = default;
  friend auto operator<=>(const Element&, const Element&) = default;
};
std::vector<Element> endpoint_elements(const CompiledPolicy& policy, const EndpointTable& table,
                                       EndpointId id);
// The same, plus the tag map elements when `options` configure an overlay.
std::vector<Element> endpoint_elements(const CompiledPolicy& policy, const EndpointTable& table,
                                       EndpointId id, const Options& options);

// Name of the set of `kind` ("ep", "cidr", "node", "aud") for a family.
std::string set_name(std::string_view kind, IpAddress::Family family);
std::string tier_set(TierId tier, IpAddress::Family family);
std::string selector_set(SelectorId selector, IpAddress::Family family);
std::string counter_name(RuleId rule);

}  // namespace tierwall::dataplane::nft
