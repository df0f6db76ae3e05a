#include "tierwall/agent/reconciler.h"

#include <algorithm>
#include <set>
#include <utility>

#include "tierwall/policy/loader.h"

namespace tierwall::agent {

std::string_view to_string(Source s) {
  switch (s) {
    case Source::Inventory:
      return "inventory";
    case Source::Runtime:
      return "runtime";
    case Source::Cluster:
      return "cluster";
  }
  return "unknown";
}

namespace {

std::size_t index(Source s) { return static_cast<std::size_t>(s); }

bool contains(const std::vector<IpAddress>& v, const IpAddress& a) {
  return std::find(v.begin(), v.end(), a) != v.end();
}

}  // namespace

// The keys one event touched, in first-touch order; committed as one
// dataplane call.
class Reconciler::Batch {
 public:
  void touch(const Key* k) {
    if (seen_.insert(k).second) touched_.push_back(k);
  }
  [[nodiscard]] const std::vector<const Key*>& touched() const { return touched_; }
  bool freed = false;  // some address was released

 private:
  std::vector<const Key*> touched_;
  std::set<const Key*> seen_;
};

Reconciler::Reconciler(dataplane::Dataplane& dataplane, Options options)
    : dataplane_(dataplane), options_(std::move(options)) {}

Reconciler::~Reconciler() = default;

Reconciler::Key Reconciler::key_of(Source source, const identity::Endpoint& ep) {
  if (source != Source::Inventory && !ep.id.empty()) return Key{source, ep.id};
  return Key{source, ep.name};
}

std::map<Reconciler::Key, Reconciler::Record>::iterator Reconciler::find(Source source,
                                                                         const std::string& key) {
  auto it = records_.find(Key{source, key});
  if (it != records_.end() || source != Source::Runtime) return it;
  for (auto i = records_.lower_bound(Key{source, {}});
       i != records_.end() && i->first.source == source; ++i) {
    if (i->second.endpoint.name == key) return i;
  }
  return records_.end();
}

std::optional<Reconciler::Installed> Reconciler::desired(const Record& r) const {
  if (compilation_ == nullptr || r.removed || r.owned.empty()) return std::nullopt;
  return Installed{r.owned, r.binding.tier, r.binding.selectors};
}

void Reconciler::upsert(Batch& batch, const Key& key, identity::Endpoint endpoint) {
  auto [it, inserted] = records_.try_emplace(key);
  Record& r = it->second;
  const Key* k = &it->first;
  if (inserted) {
    if (!free_ids_.empty()) {
      r.id = free_ids_.back();
      free_ids_.pop_back();
    } else {
      r.id = next_id_++;
    }
    r.seq = next_seq_++;
  } else if (!r.removed && r.endpoint == endpoint) {
    return;  // nothing changed
  }
  r.removed = false;
  // Let go of the addresses it no longer has.
  for (const auto& a : r.owned) {
    if (!contains(endpoint.addresses, a)) {
      owner_.erase(a);
      batch.freed = true;
    }
  }
  r.endpoint = std::move(endpoint);
  // Claim the rest: first claimant wins.
  r.owned.clear();
  bool missing = false;
  for (const auto& a : r.endpoint.addresses) {
    if (contains(r.owned, a)) continue;
    auto [o, claimed] = owner_.try_emplace(a, k);
    if (claimed || o->second == k) {
      r.owned.push_back(a);
    } else {
      missing = true;
    }
  }
  if (missing && std::find(contested_.begin(), contested_.end(), k) == contested_.end()) {
    contested_.push_back(k);
  }
  if (compilation_ != nullptr) r.binding = compilation_->bind(r.endpoint);
  batch.touch(k);
}

void Reconciler::remove(Batch& batch, std::map<Key, Record>::iterator it) {
  Record& r = it->second;
  if (!r.owned.empty()) {
    removed_.push_back(view(it->first, r));
    if (removed_.size() > 65536) removed_.erase(removed_.begin());  // nobody takes them
  }
  for (const auto& a : r.owned) owner_.erase(a);
  batch.freed = batch.freed || !r.owned.empty();
  r.owned.clear();
  r.removed = true;
  batch.touch(&it->first);
}

void Reconciler::commit(Batch& batch) {
  // Addresses let go of go to waiting claimants, oldest first.
  if (batch.freed && !contested_.empty()) {
    std::sort(contested_.begin(), contested_.end(), [&](const Key* a, const Key* b) {
      return records_.at(*a).seq < records_.at(*b).seq;
    });
    for (const Key* k : contested_) {
      Record& r = records_.at(*k);
      if (r.removed) continue;
      std::vector<IpAddress> owned;
      for (const auto& a : r.endpoint.addresses) {
        if (contains(owned, a)) continue;
        auto [o, claimed] = owner_.try_emplace(a, k);
        if (claimed || o->second == k) owned.push_back(a);
      }
      if (owned != r.owned) {
        r.owned = std::move(owned);
        batch.touch(k);
      }
    }
  }
  std::erase_if(contested_, [&](const Key* k) {
    const Record& r = records_.at(*k);
    if (r.removed) return true;
    return std::all_of(r.endpoint.addresses.begin(), r.endpoint.addresses.end(),
                       [&](const IpAddress& a) {
                         auto o = owner_.find(a);
                         return o != owner_.end() && o->second == k;
                       });
  });

  std::vector<dataplane::EndpointChange> changes;
  std::vector<std::pair<Record*, std::optional<Installed>>> pending;
  for (const Key* k : batch.touched()) {
    Record& r = records_.at(*k);
    auto want = desired(r);
    if (want == r.installed) continue;
    dataplane::EndpointChange c;
    c.id = r.id;
    if (want) {
      c.addresses = want->addresses;
      c.tier = want->tier;
      c.selectors = want->selectors;
    } else {
      c.removed = true;
    }
    changes.push_back(std::move(c));
    pending.emplace_back(&r, std::move(want));
  }

  if (!changes.empty() && compilation_ != nullptr && !needs_full_apply_) {
    const auto t0 = std::chrono::steady_clock::now();
    auto err = dataplane_.update_endpoints(changes);
    status_.last_update_latency = std::chrono::steady_clock::now() - t0;
    latencies_.push_back(status_.last_update_latency);
    if (err) {
      dataplane_failed(*err);
    } else {
      ++status_.updates;
      for (auto& [r, want] : pending) r->installed = std::move(want);
    }
  }

  for (const Key* k : batch.touched()) {
    auto it = records_.find(*k);
    if (it == records_.end() || !it->second.removed) continue;
    free_ids_.push_back(it->second.id);
    records_.erase(it);
  }
}

void Reconciler::dataplane_failed(const dataplane::DataplaneError& e) {
  status_.dataplane_ok = false;
  status_.dataplane_error = e.message;
  if (e.concurrent_change) status_.dataplane_error += " (concurrent change)";
  ++status_.dataplane_failures;
  needs_full_apply_ = true;
}

bool Reconciler::full_apply() {
  if (compilation_ == nullptr) return true;
  auto table = std::make_shared<dataplane::EndpointTable>();
  table->set_node_addresses(options_.node_addresses);
  table->set_container_cidrs(options_.container_cidrs);
  table->reserve(records_.size(), owner_.size());
  for (const auto& [key, r] : records_) {
    if (auto want = desired(r)) table->upsert(r.id, want->addresses, want->tier, want->selectors);
  }
  dataplane::RuleSet rules{compilation_->policy(), std::move(table)};
  const auto t0 = std::chrono::steady_clock::now();
  auto err = dataplane_.apply(rules);
  status_.last_apply_latency = std::chrono::steady_clock::now() - t0;
  latencies_.push_back(status_.last_apply_latency);
  if (err) {
    dataplane_failed(*err);
    return false;
  }
  needs_full_apply_ = false;
  status_.dataplane_ok = true;
  status_.dataplane_error.clear();
  status_.applied_generation = generation_;
  ++status_.applies;
  for (auto& [key, r] : records_) r.installed = desired(r);
  return true;
}

bool Reconciler::set_policy(policy::Policy policy) {
  ++generation_;
  compilation_ = std::make_unique<compiler::Compilation>(policy, generation_);
  for (auto& [key, r] : records_) r.binding = compilation_->bind(r.endpoint);
  status_.generation = generation_;
  status_.policy_name = policy.name;
  status_.policy_digest = policy.digest;
  needs_full_apply_ = true;
  return full_apply();
}

PolicyResult Reconciler::load_and_set_policy(const std::vector<std::string>& paths) {
  PolicyResult result;
  auto loaded = policy::load_policy(paths, result.diagnostics);
  return accept_loaded(std::move(loaded), std::move(result));
}

PolicyResult Reconciler::load_and_set_policy_sources(
    const std::vector<policy::SourceFile>& sources) {
  PolicyResult result;
  auto loaded = policy::load_policy_sources(sources, result.diagnostics);
  return accept_loaded(std::move(loaded), std::move(result));
}

PolicyResult Reconciler::accept_loaded(std::optional<policy::Policy> loaded, PolicyResult result) {
  if (!loaded || result.diagnostics.has_errors()) {
    ++status_.rejected_policies;
    status_.last_rejection = result.diagnostics;
    status_.last_error.clear();
    for (const auto& d : result.diagnostics.sorted()) {
      if (d.severity == policy::Severity::Error) {
        status_.last_error = d.to_string();
        break;
      }
    }
    if (status_.last_error.empty()) status_.last_error = "the policy could not be loaded";
    return result;
  }
  result.accepted = true;
  if (compilation_ != nullptr && loaded->digest == compilation_->source().digest) {
    result.unchanged = true;
    return result;
  }
  set_policy(std::move(*loaded));
  return result;
}

void Reconciler::on_snapshot(Source source, std::vector<identity::Endpoint> endpoints) {
  Batch batch;
  std::set<Key> present;
  for (const auto& ep : endpoints) present.insert(key_of(source, ep));
  for (auto it = records_.lower_bound(Key{source, {}});
       it != records_.end() && it->first.source == source; ++it) {
    if (!present.contains(it->first)) remove(batch, it);
  }
  for (auto& ep : endpoints) {
    Key key = key_of(source, ep);
    upsert(batch, key, std::move(ep));
  }
  commit(batch);
  auto& s = status_.sources[index(source)];
  s.connected = true;
  s.reason.clear();
  ++s.snapshots;
}

void Reconciler::on_upsert(Source source, identity::Endpoint endpoint) {
  Batch batch;
  Key key = key_of(source, endpoint);
  upsert(batch, key, std::move(endpoint));
  commit(batch);
}

void Reconciler::on_remove(Source source, const std::string& key) {
  auto it = find(source, key);
  if (it == records_.end()) return;
  Batch batch;
  remove(batch, it);
  commit(batch);
}

void Reconciler::on_state(Source source, bool connected, std::string reason) {
  auto& s = status_.sources[index(source)];
  s.connected = connected;
  s.reason = connected ? std::string() : std::move(reason);
}

bool Reconciler::tick() {
  if (needs_full_apply_) full_apply();
  return status_.dataplane_ok;
}

bool Reconciler::reapply() {
  if (compilation_ == nullptr) return true;
  needs_full_apply_ = true;
  return full_apply();
}

bool Reconciler::repair_drift() {
  if (compilation_ == nullptr) return true;
  if (!reapply()) return false;
  ++status_.drift_repairs;
  return true;
}

std::vector<std::chrono::nanoseconds> Reconciler::take_latencies() {
  return std::exchange(latencies_, {});
}

ReconcilerStatus Reconciler::status() const {
  ReconcilerStatus s = status_;
  for (auto& src : s.sources) src.endpoints = 0;
  const dataplane::CompiledPolicy* compiled =
      compilation_ != nullptr ? compilation_->policy().get() : nullptr;
  if (compiled != nullptr) {
    for (const auto& t : compiled->tiers) s.tier_counts[t.name] = 0;
  }
  for (const auto& [key, r] : records_) {
    ++s.sources[index(key.source)].endpoints;
    if (r.owned.empty()) continue;
    ++s.endpoints;
    if (compiled != nullptr) ++s.tier_counts[compiled->tiers.at(r.binding.tier).name];
  }
  auto label = [this](const Key& k) {
    const Record& r = records_.at(k);
    return std::string(to_string(k.source)) + ":" +
           (r.endpoint.name.empty() ? k.name : r.endpoint.name);
  };
  for (const Key* k : contested_) {
    for (const auto& a : records_.at(*k).endpoint.addresses) {
      auto o = owner_.find(a);
      if (o == owner_.end() || o->second == k) continue;
      s.conflicts.push_back(AddressConflict{a, label(*o->second), label(*k)});
    }
  }
  return s;
}

EndpointView Reconciler::view(const Key& key, const Record& r, bool with_addresses) const {
  EndpointView v;
  v.id = r.id;
  v.source = key.source;
  v.name = r.endpoint.name;
  v.runtime_id = r.endpoint.id;
  v.image = r.endpoint.image;
  if (compilation_ != nullptr) v.tier = compilation_->policy()->tiers.at(r.binding.tier).name;
  if (with_addresses) v.addresses = r.owned;
  return v;
}

std::vector<EndpointView> Reconciler::endpoints() const {
  std::vector<EndpointView> out;
  out.reserve(records_.size());
  for (const auto& [key, r] : records_) out.push_back(view(key, r));
  std::sort(out.begin(), out.end(),
            [](const EndpointView& a, const EndpointView& b) { return a.id < b.id; });
  return out;
}

std::vector<identity::Endpoint> Reconciler::source_endpoints(Source source) const {
  std::vector<identity::Endpoint> out;
  for (auto it = records_.lower_bound(Key{source, {}});
       it != records_.end() && it->first.source == source; ++it) {
    if (!it->second.removed) out.push_back(it->second.endpoint);
  }
  return out;
}

std::optional<EndpointView> Reconciler::find_address(const IpAddress& address) const {
  auto o = owner_.find(address);
  if (o == owner_.end()) return std::nullopt;
  auto r = records_.find(*o->second);
  if (r == records_.end() || r->second.removed) return std::nullopt;
  return view(r->first, r->second, /*with_addresses=*/false);
}

std::vector<EndpointView> Reconciler::take_removed() { return std::exchange(removed_, {}); }

}  // namespace tierwall::agent
