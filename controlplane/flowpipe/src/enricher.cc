#include "tierwall/flowpipe/enricher.h"

#include <utility>

namespace tierwall::flowpipe {

namespace {

using dataplane::nft::FlowEventKind;
using dataplane::nft::RawFlowEvent;

flowlog::Verdict to_log(dataplane::Verdict v) {
  switch (v) {
    case dataplane::Verdict::Allow:
      return flowlog::Verdict::Allow;
    case dataplane::Verdict::Audit:
      return flowlog::Verdict::Audit;
    case dataplane::Verdict::Deny:
      break;
  }
  return flowlog::Verdict::Deny;
}

flowlog::RuleKind to_log(dataplane::RuleKind k) {
  switch (k) {
    case dataplane::RuleKind::Flow:
      return flowlog::RuleKind::Flow;
    case dataplane::RuleKind::Deny:
      return flowlog::RuleKind::Deny;
    case dataplane::RuleKind::IntraTier:
      return flowlog::RuleKind::IntraTier;
    case dataplane::RuleKind::Self:
      return flowlog::RuleKind::Self;
    case dataplane::RuleKind::DefaultDeny:
      break;
  }
  return flowlog::RuleKind::DefaultDeny;
}

std::int64_t micros(dataplane::nft::WallClock::time_point t) {
  if (t == dataplane::nft::WallClock::time_point{}) t = dataplane::nft::WallClock::now();
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

}  // namespace

Enricher::Enricher(Options options, const IdentityLookup& lookup)
    : options_(options), lookup_(lookup) {}

void Enricher::set_policy(std::shared_ptr<const dataplane::CompiledPolicy> policy) {
  if (policy == nullptr) return;
  if (!policies_.empty() && policies_.back()->generation == policy->generation) {
    policies_.back() = std::move(policy);
    return;
  }
  policies_.push_back(std::move(policy));
  while (policies_.size() > options_.generations_kept) policies_.pop_front();
}

const dataplane::CompiledPolicy* Enricher::policy_for(std::uint64_t generation) const {
  if (policies_.empty()) return nullptr;
  if (generation == 0) return policies_.back().get();  // conntrack: the current one
  for (auto it = policies_.rbegin(); it != policies_.rend(); ++it) {
    if ((*it)->generation == generation) return it->get();
  }
  return nullptr;
}

void Enricher::endpoint_gone(const IpAddress& address, Identity identity) {
  const auto until = std::chrono::steady_clock::now() + options_.tombstone_ttl;
  tombstones_.insert_or_assign(address, Tombstone{std::move(identity), until});
  tombstone_order_.emplace_back(until, address);
  while (tombstone_order_.size() > options_.max_tombstones) {
    const auto& [t, a] = tombstone_order_.front();
    if (auto it = tombstones_.find(a); it != tombstones_.end() && it->second.until == t) {
      tombstones_.erase(it);
    }
    tombstone_order_.pop_front();
  }
}

void Enricher::expire_tombstones() {
  const auto now = std::chrono::steady_clock::now();
  while (!tombstone_order_.empty() && tombstone_order_.front().first <= now) {
    const auto& [t, a] = tombstone_order_.front();
    if (auto it = tombstones_.find(a); it != tombstones_.end() && it->second.until == t) {
      tombstones_.erase(it);
    }
    tombstone_order_.pop_front();
  }
}

flowlog::Peer Enricher::peer(const IpAddress& address, std::uint16_t port) {
  flowlog::Peer p;
  p.ip = address.to_string();
  p.port = port;
  std::optional<Identity> id = lookup_.endpoint(address);
  if (!id) {
    if (auto it = tombstones_.find(address); it != tombstones_.end()) id = it->second.identity;
  }
  if (id) {
    p.entity = flowlog::Entity::Endpoint;
    p.name = std::move(id->name);
    p.id = std::move(id->id);
    p.image = std::move(id->image);
    p.tier = std::move(id->tier);
  } else if (lookup_.is_node(address)) {
    p.entity = flowlog::Entity::Host;
  } else if (lookup_.in_container_cidr(address)) {
    p.entity = flowlog::Entity::Endpoint;
    p.tier = "quarantine";
  } else {
    p.entity = flowlog::Entity::World;
  }
  return p;
}

void Enricher::name_rule(const dataplane::CompiledPolicy* policy, dataplane::RuleId rule,
                         flowlog::Verdict verdict, flowlog::RuleKind& kind, std::string& name) {
  const dataplane::Rule* r = policy != nullptr ? policy->find_rule(rule) : nullptr;
  if (r != nullptr) {
    kind = to_log(r->origin.kind);
    name = r->origin.name;
    return;
  }
  if (rule == dataplane::kRuleSelf) {
    kind = flowlog::RuleKind::Self;
  } else if (rule == dataplane::kRuleIntraTier) {
    kind = flowlog::RuleKind::IntraTier;
  } else if (rule == dataplane::kRuleDefaultDeny) {
    kind = flowlog::RuleKind::DefaultDeny;
  } else {
    // A generation no longer remembered: say what is known.
    ++stats_.unknown_rules;
    kind = verdict == flowlog::Verdict::Allow ? flowlog::RuleKind::Flow : flowlog::RuleKind::Deny;
    name = "rule " + std::to_string(rule);
  }
}

std::optional<flowlog::FlowRecord> Enricher::enrich(const RawFlowEvent& e) {
  flowlog::FlowRecord record;
  record.time_us = micros(e.time);

  if (e.kind == FlowEventKind::Loss) {
    flowlog::Loss loss;
    loss.source = e.loss_source == dataplane::nft::LossSource::Nflog
                      ? flowlog::LossSource::Nflog
                      : flowlog::LossSource::Conntrack;
    loss.reason = std::string(dataplane::nft::to_string(e.loss_reason));
    loss.count = e.loss_count;
    loss.lower_bound = e.lower_bound;
    record.body = std::move(loss);
    ++stats_.records;
    return record;
  }

  flowlog::Flow flow;
  flow.dataplane = options_.dataplane;
  flow.protocol = e.proto;
  flow.icmp_type = e.icmp_type;
  flow.icmp_code = e.icmp_code;

  if (e.kind == FlowEventKind::End) {
    flow.event = flowlog::FlowEvent::End;
    flow.packets_orig = e.packets_orig;
    flow.packets_reply = e.packets_reply;
    flow.bytes_orig = e.bytes_orig;
    flow.bytes_reply = e.bytes_reply;
    if (auto it = open_.find(e.conntrack_id); it != open_.end() && e.conntrack_id != 0) {
      Remembered& r = it->second;
      flow.src = std::move(r.src);
      flow.dst = std::move(r.dst);
      flow.rule_kind = r.kind;
      flow.rule_name = std::move(r.rule_name);
      flow.generation = r.generation;
      flow.verdict = r.verdict;
      open_.erase(it);
    } else {
      ++stats_.ends_without_start;
      const auto* policy = policy_for(0);
      if (policy == nullptr) return std::nullopt;
      expire_tombstones();
      flow.src = peer(e.src, e.sport);
      flow.dst = peer(e.dst, e.dport);
      flow.generation = policy->generation;
      flow.verdict = to_log(e.verdict);
      name_rule(policy, e.rule, flow.verdict, flow.rule_kind, flow.rule_name);
    }
    record.body = std::move(flow);
    ++stats_.records;
    return record;
  }

  // Start.
  const bool from_conntrack = e.conntrack_id != 0;
  // The DPDK dataplane's starts carry the verdict it decided and a flow id
  // (in conntrack_id) that its end will name: remembered, never a duplicate.
  const bool nft_conntrack = from_conntrack && options_.dataplane == flowlog::Dataplane::Nft;
  const auto* policy = policy_for(e.generation);
  if (policies_.empty()) return std::nullopt;  // nothing enforced yet, nothing to name
  expire_tombstones();
  flow.event = flowlog::FlowEvent::Start;
  flow.src = peer(e.src, e.sport);
  flow.dst = peer(e.dst, e.dport);
  // Generation 0 from the DPDK dataplane is its flushed state (no policy:
  // every IP packet denied), written as such; from conntrack it is unknown.
  const bool dpdk = options_.dataplane == flowlog::Dataplane::Dpdk;
  flow.generation = e.generation != 0 || dpdk ? e.generation : policies_.back()->generation;
  flow.verdict = to_log(e.verdict);
  const dataplane::Rule* rule = policy != nullptr ? policy->find_rule(e.rule) : nullptr;
  bool reported_by_nflog = false;
  if (nft_conntrack) {
    // The ct mark names the rule, not the verdict: a connection accepted by
    // a deny rule (or default-deny / intra-tier deny) was passed by audit.
    const bool accepted_by_allow =
        e.rule == dataplane::kRuleSelf ||
        (e.rule == dataplane::kRuleIntraTier && policy != nullptr && policy->intra_tier_allow) ||
        (rule != nullptr && rule->origin.kind == dataplane::RuleKind::Flow);
    flow.verdict = accepted_by_allow ? flowlog::Verdict::Allow : flowlog::Verdict::Audit;
    // NFLOG reported audited connections and logged flows already.
    reported_by_nflog = flow.verdict == flowlog::Verdict::Audit || (rule != nullptr && rule->log);
  }
  name_rule(policy, e.rule, flow.verdict, flow.rule_kind, flow.rule_name);
  if (from_conntrack) {
    if (open_.size() >= options_.max_connections) open_.erase(open_.begin());
    open_.insert_or_assign(e.conntrack_id,
                           Remembered{flow.src, flow.dst, flow.rule_kind, flow.rule_name,
                                      flow.generation, flow.verdict});
    if (reported_by_nflog) {
      ++stats_.duplicates_dropped;
      return std::nullopt;
    }
  }
  record.body = std::move(flow);
  ++stats_.records;
  return record;
}

}  // namespace tierwall::flowpipe
