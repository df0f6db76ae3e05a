#include "tierwall/dataplane/evaluator.h"

#include <algorithm>

namespace tierwall::dataplane {

RuleId Decision::rule_id() const {
  if (rule != nullptr) return rule->id;
  switch (kind) {
    case RuleKind::Self:
      return kRuleSelf;
    case RuleKind::IntraTier:
      return kRuleIntraTier;
    default:
      return kRuleDefaultDeny;
  }
}

ResolvedPeer resolve(const EndpointTable& table, const IpAddress& address) {
  ResolvedPeer p;
  p.address = address;
  if (auto id = table.find(address)) {
    const EndpointEntry* e = table.entry(*id);
    p.entity = PeerMatch::Entity::Endpoint;
    p.endpoint = *id;
    p.tier = e->tier;
    p.selectors = table.selectors(*e);
  } else if (table.is_node_address(address)) {
    p.entity = PeerMatch::Entity::Host;
  } else if (table.in_container_cidr(address)) {
    // Fail closed: an address in a container network that no identity
    // source has reported yet is a quarantined endpoint, not `world`.
    p.entity = PeerMatch::Entity::Endpoint;
    p.endpoint = kUnknownEndpoint;
    p.tier = kQuarantineTier;
  } else {
    p.entity = PeerMatch::Entity::World;
  }
  return p;
}

bool peer_matches(const PeerMatch& match, const ResolvedPeer& peer) {
  if (match.entity != peer.entity) return false;
  switch (match.entity) {
    case PeerMatch::Entity::Host:
      return true;
    case PeerMatch::Entity::World:
      return std::any_of(match.cidrs.begin(), match.cidrs.end(),
                         [&](const Cidr& c) { return c.contains(peer.address); });
    case PeerMatch::Entity::Endpoint:
      if (!match.tiers.empty() &&
          !std::binary_search(match.tiers.begin(), match.tiers.end(), peer.tier)) {
        return false;
      }
      if (match.selector &&
          !std::binary_search(peer.selectors.begin(), peer.selectors.end(), *match.selector)) {
        return false;
      }
      return true;
  }
  return false;
}

bool rule_matches(const Rule& rule, const ResolvedPeer& src, const ResolvedPeer& dst,
                  std::uint8_t protocol, std::uint16_t port) {
  if (!peer_matches(rule.from, src) || !peer_matches(rule.to, dst)) return false;
  return std::any_of(rule.ports.begin(), rule.ports.end(),
                     [&](const PortMatch& p) { return p.matches(protocol, port); });
}

bool deny_is_audited(const CompiledPolicy& policy, const ResolvedPeer& src,
                     const ResolvedPeer& dst) {
  bool any_endpoint = false;
  for (const ResolvedPeer* p : {&src, &dst}) {
    if (p->entity != PeerMatch::Entity::Endpoint) continue;
    any_endpoint = true;
    if (policy.tiers[p->tier].mode != Mode::Audit) return false;
  }
  return any_endpoint || policy.mode == Mode::Audit;
}

namespace {

// Steps 3 to 6 of the evaluation order, shared by decide and decide_tagged:
// `matches(rule, is_deny)` says whether a rule applies to the packet.
template <typename Matches>
Decision decide_by_rules(const CompiledPolicy& policy, const ResolvedPeer& src,
                         const ResolvedPeer& dst, const Matches& matches) {
  using E = PeerMatch::Entity;
  // 3. Enforced guardrails; remember the first staged one that matches.
  const Rule* staged = nullptr;
  for (const Rule& r : policy.denies) {
    if (!matches(r, true)) continue;
    if (r.staged) {
      if (staged == nullptr) staged = &r;
      continue;
    }
    const Verdict v = deny_is_audited(policy, src, dst) ? Verdict::Audit : Verdict::Deny;
    return Decision{v, RuleKind::Deny, &r};
  }
  // 4. Flows, 5. intra-tier.
  Decision allow{Verdict::Deny, RuleKind::DefaultDeny, nullptr};
  bool allowed = false;
  for (const Rule& r : policy.flows) {
    if (matches(r, false)) {
      allow = Decision{Verdict::Allow, RuleKind::Flow, &r};
      allowed = true;
      break;
    }
  }
  if (!allowed && policy.intra_tier_allow && src.entity == E::Endpoint &&
      dst.entity == E::Endpoint && src.tier == dst.tier && policy.tiers[src.tier].declared) {
    allow = Decision{Verdict::Allow, RuleKind::IntraTier, nullptr};
    allowed = true;
  }
  if (allowed) {
    if (staged != nullptr) return Decision{Verdict::Audit, RuleKind::Deny, staged};
    return allow;
  }
  // 6. Default deny.
  const Verdict v = deny_is_audited(policy, src, dst) ? Verdict::Audit : Verdict::Deny;
  return Decision{v, RuleKind::DefaultDeny, nullptr};
}

}  // namespace

Decision decide(const CompiledPolicy& policy, const ResolvedPeer& src, const ResolvedPeer& dst,
                std::uint8_t protocol, std::uint16_t port) {
  using E = PeerMatch::Entity;
  // 2. Self.
  if (src.entity == E::Endpoint && dst.entity == E::Endpoint && src.endpoint == dst.endpoint &&
      src.endpoint != kUnknownEndpoint) {
    return Decision{Verdict::Allow, RuleKind::Self, nullptr};
  }
  return decide_by_rules(policy, src, dst, [&](const Rule& r, bool /*is_deny*/) {
    return rule_matches(r, src, dst, protocol, port);
  });
}

Decision decide(const RuleSet& rules, const Connection& c) {
  const ResolvedPeer src = resolve(*rules.endpoints, c.src);
  const ResolvedPeer dst = resolve(*rules.endpoints, c.dst);
  return decide(*rules.policy, src, dst, c.protocol, c.port);
}

namespace {

// The source side of `rule` for a source known only by its tier.
bool tagged_source_matches(const PeerMatch& from, TierId tier, bool deny) {
  if (from.entity != PeerMatch::Entity::Endpoint) return false;
  if (!from.tiers.empty() && !std::binary_search(from.tiers.begin(), from.tiers.end(), tier)) {
    return false;
  }
  return deny || !from.selector;  // unknown memberships: a deny assumes, a flow does not
}

bool tagged_rule_matches(const Rule& rule, TierId tier, const ResolvedPeer& dst, bool deny,
                         std::uint8_t protocol, std::uint16_t port) {
  if (!tagged_source_matches(rule.from, tier, deny) || !peer_matches(rule.to, dst)) return false;
  return std::any_of(rule.ports.begin(), rule.ports.end(),
                     [&](const PortMatch& p) { return p.matches(protocol, port); });
}

}  // namespace

Decision decide_tagged(const CompiledPolicy& policy, TierId tier, const ResolvedPeer& dst,
                       std::uint8_t protocol, std::uint16_t port) {
  ResolvedPeer src;
  src.entity = PeerMatch::Entity::Endpoint;
  src.tier = tier;
  return decide_by_rules(policy, src, dst, [&](const Rule& r, bool is_deny) {
    return tagged_rule_matches(r, tier, dst, is_deny, protocol, port);
  });
}

}  // namespace tierwall::dataplane
