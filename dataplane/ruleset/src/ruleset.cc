#include "tierwall/dataplane/ruleset.h"

#include <algorithm>

namespace tierwall::dataplane {

std::string_view to_string(Mode m) { return m == Mode::Audit ? "audit" : "enforce"; }

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Allow:
      return "allow";
    case Verdict::Deny:
      return "deny";
    case Verdict::Audit:
      return "audit";
  }
  return "?";
}

std::string_view to_string(RuleKind k) {
  switch (k) {
    case RuleKind::Flow:
      return "flow";
    case RuleKind::Deny:
      return "deny";
    case RuleKind::IntraTier:
      return "intraTier";
    case RuleKind::DefaultDeny:
      return "default-deny";
    case RuleKind::Self:
      return "self";
  }
  return "?";
}

std::optional<TierId> CompiledPolicy::find_tier(std::string_view tier_name) const {
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    if (tiers[i].name == tier_name) return static_cast<TierId>(i);
  }
  return std::nullopt;
}

const Rule* CompiledPolicy::find_rule(RuleId id) const {
  for (const auto* list : {&denies, &flows}) {
    for (const auto& r : *list) {
      if (r.id == id) return &r;
    }
  }
  return nullptr;
}

const Rule* CompiledPolicy::find_rule(std::string_view rule_name) const {
  for (const auto* list : {&denies, &flows}) {
    for (const auto& r : *list) {
      if (r.origin.name == rule_name) return &r;
    }
  }
  return nullptr;
}

EndpointTable::EndpointTable() {
  profiles_.emplace_back();  // profile 0: member of no selector
  profile_index_.emplace(std::string(), 0);
}

std::uint32_t EndpointTable::intern(std::vector<SelectorId> selectors) {
  std::sort(selectors.begin(), selectors.end());
  selectors.erase(std::unique(selectors.begin(), selectors.end()), selectors.end());
  std::string key(reinterpret_cast<const char*>(selectors.data()),
                  selectors.size() * sizeof(SelectorId));
  auto [it, fresh] =
      profile_index_.emplace(std::move(key), static_cast<std::uint32_t>(profiles_.size()));
  if (fresh) profiles_.push_back(std::move(selectors));
  return it->second;
}

bool EndpointTable::upsert(EndpointId id, std::span<const IpAddress> addresses, TierId tier,
                           std::span<const SelectorId> selectors) {
  for (const auto& a : addresses) {
    auto it = by_address_.find(a);
    if (it != by_address_.end() && it->second != id) return false;
  }
  if (id >= slots_.size()) slots_.resize(static_cast<std::size_t>(id) + 1);
  Slot& slot = slots_[id];
  if (slot.live) {
    for (const auto& a : slot.addresses) by_address_.erase(a);
  } else {
    ++live_;
  }
  slot.live = true;
  slot.entry.tier = tier;
  slot.entry.profile = intern(std::vector<SelectorId>(selectors.begin(), selectors.end()));
  slot.addresses.assign(addresses.begin(), addresses.end());
  for (const auto& a : addresses) by_address_.emplace(a, id);
  return true;
}

void EndpointTable::reserve(std::size_t endpoints, std::size_t addresses) {
  slots_.reserve(endpoints);
  by_address_.reserve(addresses);
}

void EndpointTable::remove(EndpointId id) {
  if (id >= slots_.size() || !slots_[id].live) return;
  Slot& slot = slots_[id];
  for (const auto& a : slot.addresses) by_address_.erase(a);
  slot = Slot{};
  --live_;
}

std::optional<EndpointId> EndpointTable::find(const IpAddress& a) const {
  auto it = by_address_.find(a);
  if (it == by_address_.end()) return std::nullopt;
  return it->second;
}

const EndpointEntry* EndpointTable::entry(EndpointId id) const {
  if (id >= slots_.size() || !slots_[id].live) return nullptr;
  return &slots_[id].entry;
}

std::span<const IpAddress> EndpointTable::addresses(EndpointId id) const {
  if (id >= slots_.size()) return {};
  return slots_[id].addresses;
}

bool EndpointTable::is_node_address(const IpAddress& a) const {
  return std::find(node_addresses_.begin(), node_addresses_.end(), a) != node_addresses_.end();
}

bool EndpointTable::in_container_cidr(const IpAddress& a) const {
  return std::any_of(container_cidrs_.begin(), container_cidrs_.end(),
                     [&](const Cidr& c) { return c.contains(a); });
}

std::size_t EndpointTable::memory_bytes() const {
  std::size_t bytes = slots_.capacity() * sizeof(Slot);
  for (const auto& s : slots_) bytes += s.addresses.capacity() * sizeof(IpAddress);
  // unordered_map: one node (key, value, next pointer, cached hash) per
  // element plus the bucket array.
  bytes += by_address_.size() * (sizeof(IpAddress) + sizeof(EndpointId) + 2 * sizeof(void*));
  bytes += by_address_.bucket_count() * sizeof(void*);
  for (const auto& p : profiles_) bytes += sizeof(p) + p.capacity() * sizeof(SelectorId);
  return bytes;
}

}  // namespace tierwall::dataplane
