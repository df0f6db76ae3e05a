// The agent's reconcile loop: desired state (one policy + the endpoints of
// each identity source) -> RuleSet generation -> dataplane.
//
// - A policy change compiles a new generation (1, 2, ...) and applies the
//   whole RuleSet atomically (Dataplane::apply).
// - Endpoint churn never rewrites rules: each identity event becomes ONE
//   Dataplane::update_endpoints call carrying only the endpoints it changed.
// - Endpoint ids are stable per endpoint (runtime: container id; inventory:
//   name), dense, and never reused while the endpoint lives.
// - An address claimed by two endpoints stays with the first claimant; the
//   other keeps its remaining addresses and the conflict shows in status().
//   When the holder lets go, the waiting claimant gets the address.
// - Fail closed: an identity source that disconnects keeps its endpoints
//   (only a new snapshot replaces them). Unknown addresses in the container
//   CIDRs are the dataplane's to quarantine.
// - A dataplane error keeps the desired state, sets status().dataplane_ok =
//   false, and the next tick() re-applies the whole generation; until then
//   endpoint events only update the desired state.
//
// Thread contract: not thread-safe. One control thread owns the reconciler
// and calls every method; identity sources post their callbacks to it.
// Cost: an endpoint event is O(changed endpoints · log n) plus bind(); a
// policy change and a retry are O(endpoints).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/dataplane.h"
#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/loader.h"
#include "tierwall/policy/model.h"

namespace tierwall::agent {

// Cluster: other nodes' endpoints from the cluster store (keyed by
// "<node>/<id>" in Endpoint::id); resolved to tiers like local ones, so
// this node's tier sets know remote addresses too.
enum class Source : std::uint8_t { Inventory = 0, Runtime = 1, Cluster = 2 };
inline constexpr std::size_t kSourceCount = 3;
std::string_view to_string(Source s);

struct SourceState {
  bool connected = false;  // false until the first snapshot or on_state(true)
  std::string reason;      // why it is disconnected; empty when connected
  std::size_t endpoints = 0;
  std::uint64_t snapshots = 0;
};

struct AddressConflict {
  IpAddress address;
  std::string holder;    // "runtime:<name>" of the endpoint that keeps it
  std::string claimant;  // ... of the endpoint denied it
};

struct ReconcilerStatus {
  std::uint64_t generation = 0;          // of the desired (latest compiled) policy; 0 = none
  std::uint64_t applied_generation = 0;  // last generation the dataplane accepted
  std::string policy_name;
  std::string policy_digest;
  std::size_t endpoints = 0;                        // known, with at least one address
  std::map<std::string, std::size_t> tier_counts;   // tier name -> endpoints (incl. quarantine)
  std::chrono::nanoseconds last_apply_latency{0};   // last full apply
  std::chrono::nanoseconds last_update_latency{0};  // last update_endpoints
  std::uint64_t applies = 0;                        // successful full applies
  std::uint64_t updates = 0;                        // successful update_endpoints calls
  std::uint64_t rejected_policies = 0;
  std::string last_error;  // last rejected policy: its first error (FILE:LINE:COL: ...)
  policy::Diagnostics last_rejection;
  bool dataplane_ok = true;
  std::string dataplane_error;  // the last dataplane failure; empty when ok
  std::uint64_t dataplane_failures = 0;
  std::uint64_t drift_repairs = 0;                // successful repair_drift() calls
  std::array<SourceState, kSourceCount> sources;  // index: Source
  std::vector<AddressConflict> conflicts;
};

// One endpoint as the reconciler knows it (for the API's `endpoints`).
struct EndpointView {
  dataplane::EndpointId id = 0;
  Source source = Source::Inventory;
  std::string name;
  std::string runtime_id;
  std::string image;
  std::string tier;                  // empty before any policy
  std::vector<IpAddress> addresses;  // the addresses it holds (conflicts excluded)
};

struct PolicyResult {
  bool accepted = false;
  bool unchanged = false;  // same digest as the current policy: nothing re-applied
  policy::Diagnostics diagnostics;
};

class Reconciler {
 public:
  struct Options {
    std::vector<Cidr> container_cidrs;
    std::vector<IpAddress> node_addresses;
  };

  Reconciler(dataplane::Dataplane& dataplane, Options options);
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Compiles `policy` (which must be valid) as the next generation and
  // applies it with every known endpoint rebound. Returns false when the
  // dataplane refused it (it is retried by tick()).
  bool set_policy(policy::Policy policy);
  // Loads and validates `paths`. Invalid: the current policy stays, the
  // rejection is counted and kept in status(), and nothing reaches the
  // dataplane. Unchanged digest: nothing is re-applied.
  PolicyResult load_and_set_policy(const std::vector<std::string>& paths);
  // The same for documents held in memory (the cluster store's), each
  // named by its `path` in diagnostics and in the digest.
  PolicyResult load_and_set_policy_sources(const std::vector<policy::SourceFile>& sources);

  // Identity events. Each results in at most one dataplane call.
  // A snapshot replaces every endpoint of `source`, and marks it connected.
  void on_snapshot(Source source, std::vector<identity::Endpoint> endpoints);
  void on_upsert(Source source, identity::Endpoint endpoint);
  // `key`: the runtime id (runtime) or name (inventory); a name is also
  // accepted for the runtime. Unknown keys are ignored.
  void on_remove(Source source, const std::string& key);
  // Connection state only: a disconnect never removes endpoints.
  void on_state(Source source, bool connected, std::string reason);

  // Retries a failed dataplane apply/update with a full apply. Returns
  // status().dataplane_ok afterwards. Cheap when nothing is pending.
  bool tick();

  // Re-applies the whole desired generation at once (after the dataplane
  // was emptied on purpose). True when nothing is to be applied yet.
  bool reapply();

  // Someone else changed the dataplane (drift): re-applies the whole desired
  // generation at once. Counts a success in status().drift_repairs; a
  // failure is a dataplane error, retried by tick(). True when nothing is
  // to be applied yet (no policy).
  bool repair_drift();

  // Everything, counted: O(endpoints).
  [[nodiscard]] ReconcilerStatus status() const;
  // O(1): status() without what it counts (endpoints, tier_counts,
  // sources[].endpoints, conflicts), for the checks on every event.
  [[nodiscard]] const ReconcilerStatus& core_status() const { return status_; }
  // Every successful dataplane call's latency (full applies and endpoint
  // updates) since the last call, oldest first; for the metrics histogram.
  std::vector<std::chrono::nanoseconds> take_latencies();
  [[nodiscard]] std::vector<EndpointView> endpoints() const;  // sorted by id
  // The identities `source` reported (as given, conflicts included), for
  // publishing this node's endpoints to the cluster. O(n).
  [[nodiscard]] std::vector<identity::Endpoint> source_endpoints(Source source) const;
  // The endpoint holding `address` now, if any, without its address list
  // (the flow log asks this for every event). O(log n).
  [[nodiscard]] std::optional<EndpointView> find_address(const IpAddress& address) const;
  // Endpoints removed since the last call, as they were (for the flow log's
  // identities of late events), oldest first.
  std::vector<EndpointView> take_removed();
  // The current compilation, nullptr before the first policy.
  [[nodiscard]] const compiler::Compilation* compilation() const { return compilation_.get(); }

 private:
  struct Key {
    Source source = Source::Inventory;
    std::string name;
    friend auto operator<=>(const Key&, const Key&) = default;
  };
  struct Installed {
    std::vector<IpAddress> addresses;
    dataplane::TierId tier = dataplane::kQuarantineTier;
    std::vector<dataplane::SelectorId> selectors;
    friend bool operator==(const Installed&, const Installed&) = default;
  };
  struct Record {
    identity::Endpoint endpoint;
    dataplane::EndpointId id = 0;
    std::uint64_t seq = 0;               // arrival order: the first claimant wins
    std::vector<IpAddress> owned;        // addresses it holds, in endpoint order
    compiler::EndpointBinding binding;   // under compilation_
    std::optional<Installed> installed;  // what the dataplane has; nullopt = absent
    bool removed = false;                // pending erase at the end of a batch
  };
  class Batch;

  static Key key_of(Source source, const identity::Endpoint& ep);
  std::map<Key, Record>::iterator find(Source source, const std::string& key);

  void upsert(Batch& batch, const Key& key, identity::Endpoint endpoint);
  void remove(Batch& batch, std::map<Key, Record>::iterator it);
  void commit(Batch& batch);
  bool full_apply();
  std::optional<Installed> desired(const Record& r) const;
  PolicyResult accept_loaded(std::optional<policy::Policy> loaded, PolicyResult result);
  void dataplane_failed(const dataplane::DataplaneError& e);

  dataplane::Dataplane& dataplane_;
  Options options_;
  std::unique_ptr<compiler::Compilation> compilation_;
  std::uint64_t generation_ = 0;
  bool needs_full_apply_ = false;

  std::map<Key, Record> records_;
  std::map<IpAddress, const Key*> owner_;  // address -> holder (key in records_)
  std::vector<const Key*> contested_;      // records missing some address
  std::vector<dataplane::EndpointId> free_ids_;
  dataplane::EndpointId next_id_ = 0;
  std::uint64_t next_seq_ = 0;

  ReconcilerStatus status_;
  std::vector<std::chrono::nanoseconds> latencies_;  // not yet taken
  std::vector<EndpointView> removed_;                // not yet taken
  [[nodiscard]] EndpointView view(const Key& key, const Record& r,
                                  bool with_addresses = true) const;
};

}  // namespace tierwall::agent
