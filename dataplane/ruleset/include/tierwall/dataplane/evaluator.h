// The reference evaluator: the policy's evaluation order applied to one new
// connection, over the compiled RuleSet. It is deliberately simple (linear in
// the number of rules) because it is the oracle that every dataplane is
// tested against; dataplanes must reach the same Decision faster.
#pragma once

#include <cstdint>
#include <span>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane {

// The first packet of a connection. `port` is the destination port for
// tcp/udp/sctp, the ICMP type for icmp/icmpv6, and ignored otherwise.
struct Connection {
  IpAddress src;
  IpAddress dst;
  std::uint8_t protocol = 0;
  std::uint16_t port = 0;
};

// An address resolved against the EndpointTable.
struct ResolvedPeer {
  PeerMatch::Entity entity = PeerMatch::Entity::World;
  IpAddress address;
  EndpointId endpoint = kUnknownEndpoint;  // Endpoint only
  TierId tier = kQuarantineTier;           // Endpoint only
  std::span<const SelectorId> selectors;   // Endpoint only; sorted
};

struct Decision {
  Verdict verdict = Verdict::Deny;
  RuleKind kind = RuleKind::DefaultDeny;
  const Rule* rule = nullptr;  // the deciding flow or deny; null otherwise
  [[nodiscard]] RuleId rule_id() const;

  friend bool operator==(const Decision&, const Decision&) = default;
};

ResolvedPeer resolve(const EndpointTable& table, const IpAddress& address);

// True when `peer` is selected by `match`.
bool peer_matches(const PeerMatch& match, const ResolvedPeer& peer);

// True when `rule` matches the connection's peers and protocol/port.
bool rule_matches(const Rule& rule, const ResolvedPeer& src, const ResolvedPeer& dst,
                  std::uint8_t protocol, std::uint16_t port);

// True when a deny between these peers is audited instead of enforced.
bool deny_is_audited(const CompiledPolicy& policy, const ResolvedPeer& src,
                     const ResolvedPeer& dst);

Decision decide(const CompiledPolicy& policy, const ResolvedPeer& src, const ResolvedPeer& dst,
                std::uint8_t protocol, std::uint16_t port);
Decision decide(const RuleSet& rules, const Connection& connection);

// A source known only by the tier it carries on the wire (the VXLAN-GBP
// group id of the overlay): an endpoint of tier `tier` whose labels, image
// and name are unknown. Decided fail-closed: a deny (enforced or staged)
// whose source side names a selector counts as matching when its other
// checks hold; a flow whose source side names a selector never matches.
// Never `self`. Every other step is decide()'s. Linear in the rules.
Decision decide_tagged(const CompiledPolicy& policy, TierId tier, const ResolvedPeer& dst,
                       std::uint8_t protocol, std::uint16_t port);

}  // namespace tierwall::dataplane
