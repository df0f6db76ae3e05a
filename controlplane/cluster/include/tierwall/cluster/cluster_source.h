// The agent's side of cluster mode (docs/cluster.md, "Agents"): follows the
// cluster's policy and the other nodes' endpoints in etcd, and publishes
// this node's record and local endpoints under a lease it keeps alive.
//
// Contract:
//   - Policy: list the policy prefix, deliver it (documents named by their
//     document names, in the meta's order) when its digest differs from
//     the last delivered one, then watch the prefix from the listed
//     revision + 1; any change of the meta lists again. Validation is the
//     receiver's (the same loader as files): this layer delivers bytes. A
//     published policy whose documents are inconsistent with its meta is
//     not delivered (it is reported in status().last_error).
//   - Remote endpoints: list /tierwall/<c>/endpoints/ (every node but this
//     one), deliver the whole set as a snapshot, then watch from the
//     listed revision + 1 and deliver each put/delete. A watch that ends
//     with Compacted lists again (a new snapshot); a broken stream resumes
//     from the last revision seen + 1 (listing again if that was compacted).
//     A node whose lease expires shows up as the deletes of its keys.
//   - Own state: grant a lease (options.lease_ttl), put the node record and
//     every local endpoint under it, renew it every TTL/3, and write only
//     the differences when set_local_endpoints()/set_enforced() change
//     them. A lease etcd no longer knows (it expired while etcd was cut
//     off) is granted again and everything re-written.
//   - A watch on a member that stops answering (frozen, partitioned: the
//     connection stays open, nothing arrives) is noticed by a watchdog
//     thread that asks that member for a count every `probe_interval`;
//     when it does not answer within `probe_timeout`, the watch is ended
//     and started again on the other members (that member tried last).
//   - An error is never "empty": while etcd cannot be reached nothing is
//     delivered (no empty snapshot, no removal); the receiver keeps what it
//     has. Every loop retries with exponential backoff (retry_min ..
//     retry_max) and status() says disconnected with the last error.
//
// Threads: start() runs four threads (policy, endpoints, lease, watchdog),
// each with its own EtcdClient. Callbacks are called on those threads, one at a
// time per kind, in store order; the receiver posts them to its own thread.
// set_local_endpoints(), set_enforced(), status() and stop() may be called
// from any thread. stop() joins the threads within about a second (a watch
// checks its stop flag once a second); the destructor stops.
//
// Costs: one range per listing (the policy: meta + documents; endpoints:
// every remote endpoint), one watch connection per prefix, one keepalive
// per TTL/3, and one put or delete per changed local endpoint.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"
#include "tierwall/store/policy_store.h"

namespace tierwall::cluster {

struct ClusterOptions {
  store::ClientOptions client;
  std::string cluster{store::kDefaultCluster};
  std::string node;                    // this node's name (valid_node_name)
  std::vector<std::string> addresses;  // this node's addresses, for its record
  std::string agent_version;
  std::chrono::seconds lease_ttl{15};
  std::chrono::milliseconds retry_min{250};
  std::chrono::milliseconds retry_max{5000};
  std::chrono::milliseconds probe_interval{2000};
  std::chrono::milliseconds probe_timeout{1500};
};

// A published policy, as delivered.
struct PublishedPolicy {
  store::PolicyMeta meta;
  std::int64_t revision = 0;  // the meta's mod_revision (the publish)
  // name -> bytes, in the meta's order.
  std::vector<std::pair<std::string, std::string>> documents;
};

// Another node's endpoint. `key` is "<node>/<id>", unique in the cluster.
struct RemoteEndpoint {
  std::string key;
  std::string node;
  store::EndpointRecord record;
};

struct ClusterCallbacks {
  std::function<void(PublishedPolicy)> on_policy;
  // Every remote endpoint at one revision: replaces what was delivered.
  std::function<void(std::vector<RemoteEndpoint>)> on_snapshot;
  std::function<void(RemoteEndpoint)> on_upsert;
  std::function<void(std::string key)> on_remove;
  // connected changed (true once every loop has reached etcd, false when
  // any of them failed); `reason` is the error when false.
  std::function<void(bool connected, std::string reason)> on_state;
};

struct ClusterStatus {
  bool connected = false;
  std::string last_error;     // the last failure, kept after recovery
  std::int64_t revision = 0;  // the highest etcd revision seen
  std::string policy_name;    // of the last delivered policy
  std::string policy_digest;
  std::uint64_t policy_generation = 0;
  std::int64_t policy_revision = 0;
  std::int64_t lease = 0;            // the current lease id, 0 when none
  std::uint64_t watch_restarts = 0;  // watches that ended with an error
  std::uint64_t relists = 0;         // listings after the first (compaction, failures)
  std::uint64_t lease_grants = 0;
  std::uint64_t lease_renewals = 0;  // successful keepalives
  std::uint64_t errors = 0;          // failed requests of any loop
  std::uint64_t unresponsive = 0;    // watches ended because their member stopped answering
  std::string policy_watch;          // the member each watch is on ("" between watches)
  std::string endpoints_watch;
  std::size_t published_endpoints = 0;
};

// The change a remote-endpoint watch event makes. Pure: tested without etcd.
// nullopt: the key is not an endpoint key, or belongs to `self`, or its
// value does not decode (`error` says why then).
struct EndpointChange {
  bool removed = false;
  RemoteEndpoint endpoint;  // for a removal only `key` and `node`
};
std::optional<EndpointChange> endpoint_change(const store::Layout& layout, const std::string& self,
                                              bool deleted, const std::string& key,
                                              const std::string& value, std::string* error);

// Writes that turn `published` into `wanted` (endpoint id -> encoded
// record): puts of new or changed records, deletes of gone ones. Pure.
struct LocalDiff {
  std::vector<std::pair<std::string, std::string>> put;  // id -> value
  std::vector<std::string> erase;                        // ids
};
LocalDiff diff_local(const std::map<std::string, std::string>& published,
                     const std::map<std::string, std::string>& wanted);

// `endpoints` with `suspect` moved to the end (the order a client tries
// them in). Pure.
std::vector<std::string> demote(std::vector<std::string> endpoints, const std::string& suspect);

// Backoff after `failures` consecutive failures: min * 2^(failures-1),
// capped at max. Pure.
std::chrono::milliseconds backoff(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                  unsigned failures);

class ClusterSource {
 public:
  ClusterSource(ClusterOptions options, ClusterCallbacks callbacks);
  ~ClusterSource();
  ClusterSource(const ClusterSource&) = delete;
  ClusterSource& operator=(const ClusterSource&) = delete;

  void start();
  void stop();

  // This node's endpoints (id -> record): replaces the previous set; the
  // lease thread writes the difference.
  void set_local_endpoints(std::vector<store::EndpointRecord> endpoints);
  // The policy this node enforces, for its node record.
  void set_enforced(std::string digest, std::uint64_t generation);

  [[nodiscard]] ClusterStatus status() const;

 private:
  enum Loop : std::size_t { kPolicyLoop = 0, kEndpointsLoop = 1, kLeaseLoop = 2 };
  void policy_loop();
  void endpoints_loop();
  void lease_loop();
  void watchdog_loop();
  // Before a watch on `endpoint`: the watchdog probes it until watch_done().
  void watching(Loop loop, const std::string& endpoint);
  // After it: true when the watchdog ended it (the member did not answer).
  bool watch_done(Loop loop);
  void succeeded(Loop loop, std::int64_t revision);
  void failed(Loop loop, const store::Error& error);
  // Sleeps up to `d` or until stop(); false once stopping.
  bool pause(std::chrono::milliseconds d);

  ClusterOptions options_;
  ClusterCallbacks callbacks_;
  store::Layout layout_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;

  mutable std::mutex mu_;
  std::condition_variable wake_;  // stop, or local state changed
  ClusterStatus status_;
  std::array<bool, 3> loop_ok_{};
  std::array<std::string, 2> watch_endpoint_;      // per watch loop; empty: not watching
  std::array<std::atomic<bool>, 2> watch_stop_{};  // set by stop() or the watchdog
  std::map<std::string, std::string> local_;       // id -> encoded record
  std::string enforced_digest_;
  std::uint64_t enforced_generation_ = 0;
  std::uint64_t local_version_ = 0;  // bumped on every change of the above
};

}  // namespace tierwall::cluster
