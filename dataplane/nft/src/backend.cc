#include "tierwall/dataplane/nft/backend.h"

#include <algorithm>
#include <set>

#include "tierwall/dataplane/evaluator.h"

namespace tierwall::dataplane::nft {

std::variant<std::unique_ptr<NftBackend>, std::string> NftBackend::open(Config config) {
  std::string error;
  auto socket = NftSocket::open(&error);
  if (!socket) return "cannot open the nftables netlink socket: " + error;
  return std::unique_ptr<NftBackend>(new NftBackend(std::move(*socket), std::move(config)));
}

NftBackend::NftBackend(NftSocket socket, Config config)
    : socket_(std::move(socket)), config_(std::move(config)) {}

DataplaneError NftBackend::error_of(const ApplyError& e) {
  DataplaneError out;
  out.message = e.message;
  out.rule = e.rule;
  out.concurrent_change = e.err == ERESTART;
  return out;
}

template <typename Attempt>
std::optional<ApplyError> NftBackend::with_retries(Attempt&& attempt) {
  std::optional<ApplyError> last;
  for (int i = 0; i < kConcurrentRetries; ++i) {
    ApplyError gen_error;
    const auto genid = socket_.get_generation(&gen_error);
    if (!genid) return gen_error;
    if (config_.before_commit) config_.before_commit();
    last = attempt(*genid);
    // ERESTART: another process committed to nftables (any table) between
    // our generation read and our commit; nothing of ours was applied.
    // Our own state is unchanged, so the same batch is simply sent again.
    if (!last || last->err != ERESTART) return last;
  }
  return last;
}

std::optional<DataplaneError> NftBackend::apply(const RuleSet& rules) {
  const Plan plan = build_plan(rules, config_.plan);
  // The table is replaced whole, which resets its named counters: re-applying
  // the same generation (retry, drift repair, resume) carries them over so
  // that they never go backwards; a new generation starts them afresh.
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> before;
  const bool same_generation = rules.policy != nullptr && rules.policy == carried_policy_;
  if (same_generation && policy_ != nullptr) before = kernel_rule_counters();
  if (auto e = with_retries([&](std::uint32_t genid) { return socket_.apply_plan(plan, genid); })) {
    return error_of(*e);
  }
  if (!same_generation) carried_.clear();
  for (const auto& [id, v] : before) {
    carried_[id].first += v.first;
    carried_[id].second += v.second;
  }
  carried_policy_ = rules.policy;

  policy_ = rules.policy;
  live_ = *rules.endpoints;
  // Headroom for churn: updates must not pay for a rehash or a move of the
  // whole table (single adds stay sub-millisecond at 100k endpoints).
  const std::size_t room = live_.endpoint_count() * 2 + 1024;
  live_.reserve(room, live_.address_count() * 2 + 1024);
  installed_.clear();
  installed_.reserve(room);
  std::set<EndpointId> ids;
  live_.for_each_address(
      [&](const IpAddress&, EndpointId id, const EndpointEntry&) { ids.insert(id); });
  for (EndpointId id : ids) installed_[id] = endpoint_elements(*policy_, live_, id, config_.plan);
  last_cut_ = 0;
  if (config_.cut_connections) cut({});
  return std::nullopt;
}

std::optional<DataplaneError> NftBackend::update_endpoints(
    std::span<const EndpointChange> changes) {
  if (!policy_) return DataplaneError{"no policy applied yet", 0, false};
  // Validate against the live view without copying it (100k endpoints): an
  // address may only move to an endpoint if its owner gives it up in this
  // same batch. The live view changes only after the kernel accepts.
  std::vector<IpAddress> touched;
  std::unordered_map<IpAddress, EndpointId, IpAddressHash> claimed;
  for (const auto& c : changes) {
    for (const auto& a : live_.addresses(c.id)) touched.push_back(a);
  }
  for (const auto& c : changes) {
    if (c.removed) continue;
    for (const auto& a : c.addresses) {
      const auto owner = live_.find(a);
      const bool released =
          owner && std::any_of(changes.begin(), changes.end(),
                               [&](const EndpointChange& o) { return o.id == *owner; });
      auto [it, fresh] = claimed.emplace(a, c.id);
      if ((owner && *owner != c.id && !released) || (!fresh && it->second != c.id)) {
        return DataplaneError{"endpoint " + std::to_string(c.id) + ": address " + a.to_string() +
                                  " already belongs to another endpoint",
                              0, false};
      }
      touched.push_back(a);
    }
  }
  std::vector<Element> add;
  std::vector<Element> remove;
  std::unordered_map<EndpointId, std::vector<Element>> updated;
  for (const auto& c : changes) {
    std::vector<Element> now;
    if (!c.removed) {
      // Elements of the changed endpoint alone, from a one-endpoint table.
      EndpointTable one;
      one.upsert(c.id, c.addresses, c.tier, c.selectors);
      now = endpoint_elements(*policy_, one, c.id, config_.plan);
    }
    std::sort(now.begin(), now.end());
    std::vector<Element> before;
    if (auto it = installed_.find(c.id); it != installed_.end()) before = it->second;
    std::sort(before.begin(), before.end());
    std::set_difference(before.begin(), before.end(), now.begin(), now.end(),
                        std::back_inserter(remove));
    std::set_difference(now.begin(), now.end(), before.begin(), before.end(),
                        std::back_inserter(add));
    updated[c.id] = std::move(now);
  }
  if (!add.empty() || !remove.empty()) {
    if (auto e = with_retries([&](std::uint32_t genid) {
          return socket_.apply_elements(config_.plan.table, add, remove, genid);
        })) {
      return error_of(*e);
    }
  }
  // Remove every changed endpoint first, so that addresses moving between
  // endpoints of this batch are free when their new owner is inserted.
  for (const auto& c : changes) live_.remove(c.id);
  for (const auto& c : changes) {
    if (!c.removed) live_.upsert(c.id, c.addresses, c.tier, c.selectors);
  }
  for (auto& [id, elems] : updated) {
    if (elems.empty()) {
      installed_.erase(id);
    } else {
      installed_[id] = std::move(elems);
    }
  }
  last_cut_ = 0;
  if (config_.cut_connections && !touched.empty() && (!add.empty() || !remove.empty())) {
    cut(touched);  // a new tier or new memberships may deny what the old state allowed
  }
  return std::nullopt;
}

std::optional<DataplaneError> NftBackend::flush() {
  const auto before = policy_ != nullptr
                          ? kernel_rule_counters()
                          : std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>>{};
  if (auto e = socket_.flush(config_.plan.table)) return error_of(*e);
  for (const auto& [id, v] : before) {
    carried_[id].first += v.first;
    carried_[id].second += v.second;
  }
  policy_.reset();
  installed_.clear();
  live_ = EndpointTable{};
  return std::nullopt;
}

void NftBackend::cut(const std::vector<IpAddress>& addresses) {
  const auto& locals = config_.local_addresses;
  auto local = [&](const IpAddress& a) {
    return std::find(locals.begin(), locals.end(), a) != locals.end() || live_.is_node_address(a);
  };
  auto concerns = [&](const CtEntry& e) {
    if (addresses.empty()) return true;
    return std::find(addresses.begin(), addresses.end(), e.src) != addresses.end() ||
           std::find(addresses.begin(), addresses.end(), e.dst) != addresses.end();
  };
  using E = PeerMatch::Entity;
  last_cut_ = ct_delete_if([&](const CtEntry& e) {
    if (!concerns(e)) return false;
    ResolvedPeer src = resolve(live_, e.src);
    ResolvedPeer dst = resolve(live_, e.dst);
    const bool src_local = local(e.src);
    const bool dst_local = local(e.dst);
    if (src_local && dst_local) return false;  // the host talking to itself
    if (dst_local) dst = ResolvedPeer{E::Host, e.dst, kUnknownEndpoint, kQuarantineTier, {}};
    if (src_local) src = ResolvedPeer{E::Host, e.src, kUnknownEndpoint, kQuarantineTier, {}};
    // Only container traffic is policed (see docs/nftables.md).
    if (src.entity != E::Endpoint && dst.entity != E::Endpoint) return false;
    if (src.entity == E::Endpoint && dst.entity == E::Endpoint && src.endpoint == dst.endpoint &&
        src.endpoint != kUnknownEndpoint) {
      return false;
    }
    const Decision d = decide(*policy_, src, dst, e.proto, e.dport);
    return d.verdict == Verdict::Deny;
  });
}

std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> NftBackend::rule_counters() {
  auto out = kernel_rule_counters();
  for (const auto& [id, v] : carried_) {
    out[id].first += v.first;
    out[id].second += v.second;
  }
  return out;
}

std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> NftBackend::kernel_rule_counters() {
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> out;
  for (const auto& [name, value] : socket_.read_counters(config_.plan.table)) {
    if (name.size() < 2 || name[0] != 'c') continue;
    out[static_cast<RuleId>(std::stoul(name.substr(1)))] = value;
  }
  return out;
}

std::map<std::string, std::uint64_t> NftBackend::overlay_counters() {
  std::map<std::string, std::uint64_t> out;
  for (const auto& [name, value] : socket_.read_counters(config_.plan.table)) {
    if (name.starts_with("ovl_")) out[name] = value.first;
  }
  return out;
}

std::optional<KernelCounts> NftBackend::kernel_counts() {
  return socket_.kernel_counts(config_.plan.table);
}

}  // namespace tierwall::dataplane::nft
