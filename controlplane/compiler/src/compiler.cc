#include "tierwall/compiler/compiler.h"

#include <algorithm>
#include <map>

#include "tierwall/identity/resolver.h"

namespace tierwall::compiler {

using dataplane::PeerMatch;
using dataplane::RuleKind;
using dataplane::SelectorId;
using dataplane::TierId;

namespace {

// An unambiguous encoding of a selector's identity part: every string is
// length-prefixed, so no label value or glob can imitate another selector.
// (identity_key() is for people and may collide.)
std::string dedup_key(const policy::EndpointSelector& sel) {
  std::string out;
  auto put = [&](std::string_view tag, std::string_view v) {
    out += tag;
    out += std::to_string(v.size());
    out += ':';
    out += v;
  };
  for (const auto& req : sel.labels) {
    put("k", req.key);
    for (const auto& v : req.values) put("v", v);
  }
  if (sel.image) put("i", sel.image->pattern());
  if (sel.name) put("n", sel.name->pattern());
  return out;
}

}  // namespace

void Compilation::LabelIndex::add(const policy::EndpointSelector& sel, std::uint32_t entry) {
  if (sel.labels.empty()) {
    unlabelled.push_back(entry);
    return;
  }
  const auto& first = sel.labels.front();
  auto& by_value = by_label[first.key];
  for (const auto& v : first.values) by_value[v].push_back(entry);
}

void Compilation::LabelIndex::candidates(const identity::Endpoint& ep,
                                         std::vector<std::uint32_t>& out) const {
  out.assign(unlabelled.begin(), unlabelled.end());
  for (const auto& [key, value] : ep.labels.items()) {
    auto k = by_label.find(key);
    if (k == by_label.end()) continue;
    auto v = k->second.find(value);
    if (v == k->second.end()) continue;
    out.insert(out.end(), v->second.begin(), v->second.end());
  }
  std::sort(out.begin(), out.end());
}

Compilation::Compilation(const policy::Policy& source, std::uint64_t generation) : source_(source) {
  auto cp = std::make_shared<dataplane::CompiledPolicy>();
  cp->name = source.name;
  cp->digest = source.digest;
  cp->generation = generation;
  cp->mode = source.mode;
  cp->intra_tier_allow = source.intra_tier_allow;
  if (source.intra_tier_loc) {
    cp->intra_tier_origin.file = source.intra_tier_loc->file_name();
    cp->intra_tier_origin.line = source.intra_tier_loc->line;
  }

  cp->tiers.push_back(
      dataplane::TierInfo{std::string(dataplane::kQuarantineName), -1, source.mode, false});
  std::map<std::string, TierId, std::less<>> tier_ids{{"quarantine", dataplane::kQuarantineTier}};
  for (const auto& t : source.tiers) {
    tier_ids.emplace(t.name, static_cast<TierId>(cp->tiers.size()));
    cp->tiers.push_back(dataplane::TierInfo{t.name, t.level, t.mode.value_or(source.mode), true});
  }

  std::map<std::string, SelectorId> selector_ids;
  auto selector_for = [&](const policy::EndpointSelector& sel) -> SelectorId {
    auto [it, fresh] =
        selector_ids.emplace(dedup_key(sel), static_cast<SelectorId>(selectors_.size()));
    if (fresh) {
      policy::EndpointSelector identity_part = sel;
      identity_part.tiers.clear();
      selectors_.push_back(identity_part);
      cp->selectors.push_back(dataplane::SelectorInfo{sel.identity_key()});
    }
    return it->second;
  };
  auto peer = [&](const policy::Peer& p) {
    PeerMatch m;
    switch (p.kind) {
      case policy::Peer::Kind::Host:
        m.entity = PeerMatch::Entity::Host;
        break;
      case policy::Peer::Kind::World:
        m.entity = PeerMatch::Entity::World;
        m.cidrs = p.world;
        break;
      case policy::Peer::Kind::Endpoints:
        m.entity = PeerMatch::Entity::Endpoint;
        for (const auto& t : p.selector.tiers) m.tiers.push_back(tier_ids.at(t));
        std::sort(m.tiers.begin(), m.tiers.end());
        if (p.selector.has_identity_part()) m.selector = selector_for(p.selector);
        break;
    }
    return m;
  };

  dataplane::RuleId next = dataplane::kFirstPolicyRule;
  auto rule = [&](const policy::Rule& r, RuleKind kind) {
    dataplane::Rule out;
    out.id = next++;
    out.origin = dataplane::RuleOrigin{kind, r.name, r.loc.file_name(), r.loc.line};
    out.from = peer(r.from);
    out.to = peer(r.to);
    out.ports = r.ports;
    out.staged = kind == RuleKind::Deny && r.audit;
    out.log = kind == RuleKind::Flow && r.log;
    return out;
  };
  for (const auto& d : source.denies) cp->denies.push_back(rule(d, RuleKind::Deny));
  for (const auto& f : source.flows) cp->flows.push_back(rule(f, RuleKind::Flow));

  for (std::uint32_t i = 0; i < selectors_.size(); ++i) selector_index_.add(selectors_[i], i);
  for (const auto& sel : selectors_) uses_names_ = uses_names_ || sel.name.has_value();
  for (const auto& a : source.assignments) uses_names_ = uses_names_ || a.match.name.has_value();
  for (std::uint32_t i = 0; i < source.assignments.size(); ++i) {
    assignment_tiers_.push_back(tier_ids.at(source.assignments[i].tier));
    assignment_index_.add(source.assignments[i].match, i);
  }
  compiled_ = std::move(cp);
}

EndpointBinding Compilation::bind(const identity::Endpoint& endpoint) const {
  EndpointBinding b;
  std::vector<std::uint32_t> candidates;
  assignment_index_.candidates(endpoint, candidates);
  for (std::uint32_t i : candidates) {
    if (identity::matches_identity(source_.assignments[i].match, endpoint)) {
      b.tier = assignment_tiers_[i];
      b.assignment = static_cast<int>(i);
      break;
    }
  }
  selector_index_.candidates(endpoint, candidates);
  for (std::uint32_t i : candidates) {
    if (identity::matches_identity(selectors_[i], endpoint)) b.selectors.push_back(i);
  }
  return b;
}

std::shared_ptr<dataplane::EndpointTable> Compilation::bind_all(
    const identity::Inventory& inventory, std::vector<Cidr> container_cidrs,
    std::vector<int>* assignments) const {
  auto table = std::make_shared<dataplane::EndpointTable>();
  table->set_node_addresses(inventory.node.addresses);
  table->set_container_cidrs(std::move(container_cidrs));
  if (assignments != nullptr) {
    assignments->clear();
    assignments->reserve(inventory.endpoints.size());
  }
  // Endpoints with the same labels and image bind the same way unless a
  // selector looks at names; real inventories repeat label sets a lot.
  std::unordered_map<std::string, EndpointBinding> cache;
  std::string key;
  for (std::size_t i = 0; i < inventory.endpoints.size(); ++i) {
    const auto& ep = inventory.endpoints[i];
    const EndpointBinding* b = nullptr;
    EndpointBinding fresh;
    if (uses_names_) {
      fresh = bind(ep);
      b = &fresh;
    } else {
      key.assign(ep.image);
      for (const auto& [k, v] : ep.labels.items()) {
        key += '\0';
        key += k;
        key += '\0';
        key += v;
      }
      auto it = cache.find(key);
      if (it == cache.end()) it = cache.emplace(key, bind(ep)).first;
      b = &it->second;
    }
    table->upsert(static_cast<dataplane::EndpointId>(i), ep.addresses, b->tier, b->selectors);
    if (assignments != nullptr) assignments->push_back(b->assignment);
  }
  return table;
}

dataplane::RuleSet compile(const policy::Policy& policy, const identity::Inventory& inventory,
                           std::uint64_t generation, std::vector<Cidr> container_cidrs) {
  Compilation c(policy, generation);
  return dataplane::RuleSet{c.policy(), c.bind_all(inventory, std::move(container_cidrs))};
}

}  // namespace tierwall::compiler
