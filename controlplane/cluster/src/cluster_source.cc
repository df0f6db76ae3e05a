#include "tierwall/cluster/cluster_source.h"

#include <algorithm>

namespace tierwall::cluster {

std::optional<EndpointChange> endpoint_change(const store::Layout& layout, const std::string& self,
                                              bool deleted, const std::string& key,
                                              const std::string& value, std::string* error) {
  auto parts = layout.endpoint_key(key);
  if (!parts || parts->first == self) return std::nullopt;
  EndpointChange c;
  c.removed = deleted;
  c.endpoint.node = parts->first;
  c.endpoint.key = parts->first + "/" + parts->second;
  if (deleted) return c;
  auto record = store::decode_endpoint(value);
  if (!record) {
    if (error != nullptr) *error = "endpoint " + key + ": " + record.error().message;
    return std::nullopt;
  }
  c.endpoint.record = std::move(*record);
  c.endpoint.record.id = parts->second;  // the key names it, whatever the value says
  return c;
}

LocalDiff diff_local(const std::map<std::string, std::string>& published,
                     const std::map<std::string, std::string>& wanted) {
  LocalDiff d;
  for (const auto& [id, value] : wanted) {
    auto it = published.find(id);
    if (it == published.end() || it->second != value) d.put.emplace_back(id, value);
  }
  for (const auto& [id, value] : published) {
    if (!wanted.contains(id)) d.erase.push_back(id);
  }
  return d;
}

std::vector<std::string> demote(std::vector<std::string> endpoints, const std::string& suspect) {
  auto it = std::find(endpoints.begin(), endpoints.end(), suspect);
  if (it != endpoints.end()) std::rotate(it, it + 1, endpoints.end());
  return endpoints;
}

std::chrono::milliseconds backoff(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                  unsigned failures) {
  if (failures <= 1) return std::min(min, max);
  auto d = min;
  for (unsigned i = 1; i < failures && d < max; ++i) d *= 2;
  return std::min(d, max);
}

ClusterSource::ClusterSource(ClusterOptions options, ClusterCallbacks callbacks)
    : options_(std::move(options)), callbacks_(std::move(callbacks)), layout_(options_.cluster) {}

ClusterSource::~ClusterSource() { stop(); }

void ClusterSource::start() {
  if (!threads_.empty()) return;
  stop_ = false;
  threads_.emplace_back([this] { policy_loop(); });
  threads_.emplace_back([this] { endpoints_loop(); });
  threads_.emplace_back([this] { lease_loop(); });
  threads_.emplace_back([this] { watchdog_loop(); });
}

void ClusterSource::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    for (auto& w : watch_stop_) w = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void ClusterSource::set_local_endpoints(std::vector<store::EndpointRecord> endpoints) {
  std::map<std::string, std::string> wanted;
  for (const auto& e : endpoints) wanted[e.id] = store::encode_endpoint(e);
  {
    std::lock_guard lock(mu_);
    if (wanted == local_) return;
    local_ = std::move(wanted);
    ++local_version_;
  }
  wake_.notify_all();
}

void ClusterSource::set_enforced(std::string digest, std::uint64_t generation) {
  {
    std::lock_guard lock(mu_);
    if (digest == enforced_digest_ && generation == enforced_generation_) return;
    enforced_digest_ = std::move(digest);
    enforced_generation_ = generation;
    ++local_version_;
  }
  wake_.notify_all();
}

ClusterStatus ClusterSource::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

bool ClusterSource::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !wake_.wait_for(lock, d, [this] { return stop_.load(); });
}

void ClusterSource::watching(Loop loop, const std::string& endpoint) {
  std::lock_guard lock(mu_);
  watch_endpoint_[loop] = endpoint;
  (loop == kPolicyLoop ? status_.policy_watch : status_.endpoints_watch) = endpoint;
  watch_stop_[loop] = stop_.load();
}

bool ClusterSource::watch_done(Loop loop) {
  std::lock_guard lock(mu_);
  watch_endpoint_[loop].clear();
  (loop == kPolicyLoop ? status_.policy_watch : status_.endpoints_watch).clear();
  return watch_stop_[loop].exchange(false) && !stop_;
}

void ClusterSource::watchdog_loop() {
  // One client per member, each knowing only that member: a probe must
  // not fail over to another one.
  std::map<std::string, std::unique_ptr<store::EtcdClient>> probes;
  std::array<unsigned, 2> misses{};
  while (pause(options_.probe_interval)) {
    for (const Loop loop : {kPolicyLoop, kEndpointsLoop}) {
      std::string endpoint;
      {
        std::lock_guard lock(mu_);
        endpoint = watch_endpoint_[loop];
      }
      if (endpoint.empty()) {
        misses[loop] = 0;
        continue;
      }
      auto& probe = probes[endpoint];
      if (!probe) {
        store::ClientOptions o = options_.client;
        o.endpoints = {endpoint};
        o.request_timeout = options_.probe_timeout;
        o.connect_timeout = std::min(o.connect_timeout, options_.probe_timeout);
        probe = std::make_unique<store::EtcdClient>(std::move(o));
      }
      store::RangeRequest q;
      q.key = layout_.policy_meta();
      q.count_only = true;
      auto r = probe->range(q);
      if (r) {
        misses[loop] = 0;
        continue;
      }
      if (r.error().kind != store::Error::Kind::Unavailable || ++misses[loop] < 2) continue;
      misses[loop] = 0;
      store::Error e = r.error();
      e.message =
          "the watch on " + endpoint + " gets no answers; watching elsewhere (" + e.message + ")";
      failed(loop, e);
      std::lock_guard lock(mu_);
      if (watch_endpoint_[loop] == endpoint) {
        watch_stop_[loop] = true;
        ++status_.unresponsive;
      }
    }
  }
}

void ClusterSource::succeeded(Loop loop, std::int64_t revision) {
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    status_.revision = std::max(status_.revision, revision);
    loop_ok_[loop] = true;
    if (!status_.connected &&
        std::all_of(loop_ok_.begin(), loop_ok_.end(), [](bool b) { return b; })) {
      status_.connected = true;
      changed = true;
    }
  }
  if (changed && callbacks_.on_state) callbacks_.on_state(true, {});
}

void ClusterSource::failed(Loop loop, const store::Error& error) {
  if (error.kind == store::Error::Kind::Cancelled && stop_) return;
  static constexpr std::array<const char*, 3> kWhat = {"policy", "endpoints", "lease"};
  const std::string reason = std::string(kWhat[loop]) + ": " + error.message;
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    loop_ok_[loop] = false;
    ++status_.errors;
    status_.last_error = reason;
    if (status_.connected) {
      status_.connected = false;
      changed = true;
    }
  }
  if (changed && callbacks_.on_state) callbacks_.on_state(false, reason);
}

void ClusterSource::policy_loop() {
  auto client_ptr = std::make_unique<store::EtcdClient>(options_.client);
  const std::string prefix = layout_.policy_prefix();
  const std::string meta_key = layout_.policy_meta();
  std::string delivered;  // digest of the last delivered policy
  unsigned failures = 0;
  bool listed = false;
  bool counted_relist = false;  // this listing repeats one for a failure or compaction
  while (!stop_) {
    store::EtcdClient& client = *client_ptr;
    auto range = client.get_prefix(prefix);
    if (!range) {
      failed(kPolicyLoop, range.error());
      counted_relist = listed;
      if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
      continue;
    }
    failures = 0;
    if (counted_relist) {
      std::lock_guard lock(mu_);
      ++status_.relists;
    }
    counted_relist = false;
    listed = true;
    succeeded(kPolicyLoop, range->revision);

    // Decode: the meta names the documents; anything inconsistent is not
    // delivered and the last delivered policy stays.
    const store::KeyValue* meta_kv = nullptr;
    std::map<std::string, const store::KeyValue*> docs;
    for (const auto& kv : range->kvs) {
      if (kv.key == meta_key) {
        meta_kv = &kv;
      } else if (auto name = layout_.document_name(kv.key)) {
        docs[*name] = &kv;
      }
    }
    if (meta_kv != nullptr) {
      auto meta = store::decode_meta(meta_kv->value);
      std::string problem;
      PublishedPolicy p;
      if (!meta) {
        problem = "the published policy meta does not decode: " + meta.error().message;
      } else {
        p.meta = *meta;
        p.revision = meta_kv->mod_revision;
        for (const auto& name : meta->documents) {
          auto d = docs.find(name);
          if (d == docs.end()) {
            problem = "the published policy names document " + name + ", which is missing";
            break;
          }
          p.documents.emplace_back(name, d->second->value);
        }
      }
      if (!problem.empty()) {
        std::lock_guard lock(mu_);
        status_.last_error = "policy: " + problem;
      } else if (p.meta.digest != delivered) {
        delivered = p.meta.digest;
        {
          std::lock_guard lock(mu_);
          status_.policy_name = p.meta.name;
          status_.policy_digest = p.meta.digest;
          status_.policy_generation = p.meta.generation;
          status_.policy_revision = p.revision;
        }
        if (callbacks_.on_policy) callbacks_.on_policy(std::move(p));
      }
    }

    store::WatchRequest w;
    w.key = prefix;
    w.range_end = store::prefix_end(prefix);
    w.start_revision = range->revision + 1;
    bool meta_changed = false;
    const std::string watched = client.current_endpoint();
    watching(kPolicyLoop, watched);
    auto end = client.watch(
        w,
        [&](const store::WatchResponse& r) {
          succeeded(kPolicyLoop, r.revision);
          for (const auto& e : r.events) {
            if (e.kv.key == meta_key) meta_changed = true;
          }
          return !meta_changed && !stop_;
        },
        &watch_stop_[kPolicyLoop]);
    if (watch_done(kPolicyLoop)) {
      // The member stopped answering: try the others first from now on.
      store::ClientOptions o = client.options();
      o.endpoints = demote(std::move(o.endpoints), watched);
      client_ptr = std::make_unique<store::EtcdClient>(std::move(o));
      counted_relist = true;
      continue;
    }
    if (stop_) break;
    if (!end) {
      failed(kPolicyLoop, end.error());
      std::lock_guard lock(mu_);
      ++status_.watch_restarts;
      counted_relist = true;
    } else if (end->reason == store::WatchEnd::Reason::Compacted) {
      counted_relist = true;
    } else if (end->reason == store::WatchEnd::Reason::Canceled) {
      failed(kPolicyLoop, store::Error::make(store::Error::Kind::Etcd,
                                             "watch canceled by etcd: " + end->cancel_reason));
      counted_relist = true;
      if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
    }
    if (!end && !pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
  }
}

void ClusterSource::endpoints_loop() {
  auto client_ptr = std::make_unique<store::EtcdClient>(options_.client);
  const std::string prefix = layout_.endpoints_prefix();
  unsigned failures = 0;
  bool need_list = true;
  bool resuming = false;  // after a broken watch, before it is known to answer again
  bool listed = false;
  std::int64_t revision = 0;
  while (!stop_) {
    store::EtcdClient& client = *client_ptr;
    if (need_list) {
      auto range = client.get_prefix(prefix);
      if (!range) {
        failed(kEndpointsLoop, range.error());
        if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
        continue;
      }
      std::vector<RemoteEndpoint> snapshot;
      for (const auto& kv : range->kvs) {
        std::string error;
        auto c = endpoint_change(layout_, options_.node, false, kv.key, kv.value, &error);
        if (c) {
          snapshot.push_back(std::move(c->endpoint));
        } else if (!error.empty()) {
          std::lock_guard lock(mu_);
          status_.last_error = "endpoints: " + error;
        }
      }
      if (listed) {
        std::lock_guard lock(mu_);
        ++status_.relists;
      }
      listed = true;
      need_list = false;
      revision = range->revision;
      succeeded(kEndpointsLoop, revision);
      if (callbacks_.on_snapshot) callbacks_.on_snapshot(std::move(snapshot));
    } else if (resuming) {
      // A watch reports nothing until an event arrives: a count at the
      // revision to resume from tells that etcd answers again (and that the
      // revision is still there; compacted: list again).
      store::RangeRequest q;
      q.key = prefix;
      q.range_end = store::prefix_end(prefix);
      q.revision = revision;
      q.count_only = true;
      auto r = client.range(q);
      if (!r) {
        if (r.error().kind == store::Error::Kind::Compacted) {
          need_list = true;
          continue;
        }
        failed(kEndpointsLoop, r.error());
        if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
        continue;
      }
      failures = 0;
      resuming = false;
      succeeded(kEndpointsLoop, r->revision);
    }
    store::WatchRequest w;
    w.key = prefix;
    w.range_end = store::prefix_end(prefix);
    w.start_revision = revision + 1;
    const std::string watched = client.current_endpoint();
    watching(kEndpointsLoop, watched);
    auto end = client.watch(
        w,
        [&](const store::WatchResponse& r) {
          failures = 0;
          for (const auto& e : r.events) {
            std::string error;
            auto c =
                endpoint_change(layout_, options_.node, e.type == store::WatchEvent::Type::Delete,
                                e.kv.key, e.kv.value, &error);
            if (c && c->removed) {
              if (callbacks_.on_remove) callbacks_.on_remove(c->endpoint.key);
            } else if (c) {
              if (callbacks_.on_upsert) callbacks_.on_upsert(std::move(c->endpoint));
            } else if (!error.empty()) {
              std::lock_guard lock(mu_);
              status_.last_error = "endpoints: " + error;
            }
            revision = std::max(revision, e.kv.mod_revision);
          }
          revision = std::max(revision, r.revision);
          succeeded(kEndpointsLoop, revision);
          return !stop_.load();
        },
        &watch_stop_[kEndpointsLoop]);
    if (watch_done(kEndpointsLoop)) {
      store::ClientOptions o = client.options();
      o.endpoints = demote(std::move(o.endpoints), watched);
      client_ptr = std::make_unique<store::EtcdClient>(std::move(o));
      resuming = true;
      std::lock_guard lock(mu_);
      ++status_.watch_restarts;
      continue;
    }
    if (stop_) break;
    if (!end) {
      // Resume from the last revision seen; a compacted one lists again.
      failed(kEndpointsLoop, end.error());
      resuming = true;
      {
        std::lock_guard lock(mu_);
        ++status_.watch_restarts;
      }
      if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
    } else if (end->reason == store::WatchEnd::Reason::Compacted) {
      need_list = true;
    } else if (end->reason == store::WatchEnd::Reason::Canceled) {
      failed(kEndpointsLoop, store::Error::make(store::Error::Kind::Etcd,
                                                "watch canceled by etcd: " + end->cancel_reason));
      need_list = true;
      if (!pause(backoff(options_.retry_min, options_.retry_max, ++failures))) break;
    }
  }
}

void ClusterSource::lease_loop() {
  using Clock = std::chrono::steady_clock;
  store::EtcdClient client(options_.client);
  const auto ttl = std::max<std::chrono::seconds>(options_.lease_ttl, std::chrono::seconds{2});
  const auto renew_every = std::chrono::duration_cast<std::chrono::milliseconds>(ttl) / 3;
  const std::string started_at = store::utc_now();
  std::int64_t lease = 0;
  std::map<std::string, std::string> published;  // id -> value under `lease`
  std::string published_node;
  std::uint64_t seen_version = ~std::uint64_t{0};
  auto next_renewal = Clock::now();
  unsigned failures = 0;

  auto lease_lost = [&](const store::Error& e) {
    return e.kind == store::Error::Kind::NotFound ||
           e.etcd_error.find("lease not found") != std::string::npos;
  };
  auto fail = [&](const store::Error& e) {
    if (lease != 0 && lease_lost(e)) {
      lease = 0;  // expired while we could not renew it: grant another
      return true;
    }
    failed(kLeaseLoop, e);
    return pause(backoff(options_.retry_min, options_.retry_max, ++failures));
  };

  while (!stop_) {
    if (lease == 0) {
      auto g = client.lease_grant(ttl.count());
      if (!g) {
        if (!fail(g.error())) break;
        continue;
      }
      lease = g->id;
      published.clear();
      published_node.clear();
      next_renewal = Clock::now() + renew_every;
      std::lock_guard lock(mu_);
      status_.lease = lease;
      ++status_.lease_grants;
      status_.published_endpoints = 0;
    }
    std::map<std::string, std::string> wanted;
    std::string node_value;
    {
      std::lock_guard lock(mu_);
      wanted = local_;
      seen_version = local_version_;
      store::NodeRecord n;
      n.name = options_.node;
      n.addresses = options_.addresses;
      n.agent_version = options_.agent_version;
      n.started_at = started_at;
      n.policy_digest = enforced_digest_;
      n.policy_generation = enforced_generation_;
      node_value = store::encode_node(n);
    }
    bool ok = true;
    std::int64_t revision = 0;
    if (node_value != published_node) {
      auto r = client.put(layout_.node(options_.node), node_value, lease);
      if (!r) {
        if (!fail(r.error())) break;
        continue;
      }
      revision = *r;
      published_node = node_value;
    }
    const auto diff = diff_local(published, wanted);
    for (const auto& [id, value] : diff.put) {
      auto r = client.put(layout_.endpoint(options_.node, id), value, lease);
      if (!r) {
        ok = false;
        if (!fail(r.error())) return;
        break;
      }
      revision = *r;
      published[id] = value;
    }
    if (!ok) continue;
    for (const auto& id : diff.erase) {
      auto r = client.erase(layout_.endpoint(options_.node, id));
      if (!r) {
        ok = false;
        if (!fail(r.error())) return;
        break;
      }
      published.erase(id);
    }
    if (!ok) continue;
    {
      std::lock_guard lock(mu_);
      status_.published_endpoints = published.size();
    }
    if (revision > 0 || Clock::now() >= next_renewal) {
      if (Clock::now() >= next_renewal) {
        auto k = client.lease_keepalive(lease);
        if (!k) {
          if (!fail(k.error())) break;
          continue;
        }
        next_renewal = Clock::now() + renew_every;
        std::lock_guard lock(mu_);
        ++status_.lease_renewals;
      }
      failures = 0;
      succeeded(kLeaseLoop, revision);
    }
    std::unique_lock lock(mu_);
    wake_.wait_until(lock, next_renewal,
                     [&] { return stop_.load() || local_version_ != seen_version; });
  }
}

}  // namespace tierwall::cluster
