// ClusterLab: several nodes on one machine, one cluster. Each node is a
// network namespace running its own tierwalld (so each agent programs only
// its own namespace's nftables), with "containers" (namespaces behind a
// bridge of the node, routed between nodes); a three-member etcd runs in a
// hub namespace the nodes reach over veths:
//
//   hub: bridge "hub" 198.18.0.1/24, etcd m0..m2 on 198.18.0.1
//    ├── node-0 up0 198.18.0.10  cbr 10.88.0.1/24  containers .10, .11, ...
//    ├── node-1 up0 198.18.0.11  cbr 10.88.1.1/24
//    └── node-i up0 198.18.0.(10+i)  cbr 10.88.i.1/24   (i < 80)
//
// With ClusterLabOptions::overlay, node i also has tw-vx0 10.99.0.(10+i)
// (VXLAN-GBP over up0) and reaches the other nodes' containers through it.
//
// Addresses are from the benchmarking range 198.18.0.0/15 and private
// container networks, all inside namespaces the lab makes; the root
// namespace is not touched. Shared by cluster_agents_test and
// tierwall-bench-cluster.
//
// Teardown: the destructor stops every agent and server, then etcd, then
// the nodes' and the hub's namespaces; the caller owns `dir`.
// Threads: one thread builds, uses and destroys a lab.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "tierwall/testsupport/etcd_cluster.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {

inline constexpr std::uint16_t kClusterApiPort = 8080;
inline constexpr std::uint16_t kClusterDbPort = 5432;
inline const std::string kClusterHubAddress = "198.18.0.1";

// The lab's three-tier policy (roles web, api, db): web -> api on
// kClusterApiPort, api -> db on kClusterDbPort; `flows` are appended flow
// lines (policy updates). `name` is its metadata name.
inline std::string cluster_policy_text(const std::string& name, const std::string& flows = {}) {
  return "apiVersion: tierwall.io/v1\n"
         "kind: SegmentationPolicy\n"
         "metadata: {name: " +
         name +
         "}\n"
         "spec:\n"
         "  mode: enforce\n"
         "  tiers:\n"
         "    - {name: web, level: 100}\n"
         "    - {name: api, level: 200}\n"
         "    - {name: db, level: 300}\n"
         "  assignments:\n"
         "    - {name: web, match: {labels: {role: web}}, tier: web}\n"
         "    - {name: api, match: {labels: {role: api}}, tier: api}\n"
         "    - {name: db, match: {labels: {role: db}}, tier: db}\n"
         "  flows:\n"
         "    - {name: web-to-api, from: {tier: web}, to: {tier: api}, ports: [tcp/" +
         std::to_string(kClusterApiPort) +
         "]}\n"
         "    - {name: api-to-db, from: {tier: api}, to: {tier: db}, ports: [tcp/" +
         std::to_string(kClusterDbPort) + "]}\n" + flows;
}
inline constexpr const char* kClusterOverlayDevice = "tw-vx0";

struct ClusterContainer {
  ClusterContainer(std::string n, std::string r, std::string a)
      : ns(n), name(std::move(n)), role(std::move(r)), v4(std::move(a)) {}
  NetNs ns;
  std::string name;
  std::string role;
  std::string v4;
  std::unique_ptr<TcpServer> api_server;  // kClusterApiPort, when servers were asked for
  std::unique_ptr<TcpServer> db_server;   // kClusterDbPort
};

struct ClusterNode {
  explicit ClusterNode(int i);
  int index;
  std::string name;  // "node-<i>"
  NetNs ns;
  std::string uplink;  // "198.18.0.<10+i>"
  std::string subnet;  // "10.88.<i>"
  std::deque<ClusterContainer> containers;
  pid_t agent = -1;
  std::filesystem::path dir;  // <lab dir>/node-<i>: inventory, config, agent.log, api.sock
};

struct ClusterLabOptions {
  std::filesystem::path dir;  // exists; the lab writes under it
  std::string tierwalld;      // binaries
  std::string tierctl;
  int nodes = 3;  // 1..80
  int lease_ttl_s = 3;
  // Carry container traffic between nodes over a kernel VXLAN-GBP device
  // per node ("tw-vx0", VNI 42, 10.99.0.<10+i>/24, MTU 1450, head-end
  // replication to every other node's up0) instead of routing it through
  // the hub, and configure the agents with nft.overlay (that device, the
  // other nodes' up0 addresses as the trusted peers): the source tier
  // travels in the GBP group id.
  bool overlay = false;
};

class ClusterLab {
 public:
  explicit ClusterLab(ClusterLabOptions options);
  ~ClusterLab();
  ClusterLab(const ClusterLab&) = delete;
  ClusterLab& operator=(const ClusterLab&) = delete;

  NetNs hub{"hub"};
  std::unique_ptr<EtcdCluster> etcd;
  std::vector<std::unique_ptr<ClusterNode>> nodes;

  // The hub, the nodes and their links (no containers, no etcd).
  void build();
  // A container namespace on `n` at <subnet>.<10 + its index>; with
  // `servers`, TCP servers on kClusterApiPort and kClusterDbPort in it.
  ClusterContainer& add_container(ClusterNode& n, const std::string& name, const std::string& role,
                                  bool servers = true);
  // A three-member etcd in the hub namespace.
  void start_etcd();
  // n.dir/inventory.yaml from n.containers (atomically, by rename).
  void write_inventory(const ClusterNode& n) const;
  // Writes the inventory and config and spawns tierwalld in n's namespace.
  void start_agent(ClusterNode& n) const;

  // `tierctl status -o json` of n's agent; {} when it does not answer.
  [[nodiscard]] nlohmann::json status(const ClusterNode& n) const;
  [[nodiscard]] std::string nft_table(const ClusterNode& n) const;
  // Publishes `text` as the policy with `tierctl apply --store` from the
  // hub (through `store`, default every member): its JSON output, or
  // {"error": output} when tierctl failed.
  [[nodiscard]] nlohmann::json publish(const std::string& text,
                                       const std::string& store = {}) const;
  // When n's agent logged policy-applied for `digest` (its JSON log).
  [[nodiscard]] static std::optional<std::chrono::system_clock::time_point> applied_at(
      const ClusterNode& n, const std::string& digest);
  [[nodiscard]] std::vector<const ClusterContainer*> all_containers() const;
  // n's tierwall table holds every container's address.
  [[nodiscard]] bool knows_everything(const ClusterNode& n) const;
  // n's address on the overlay device (ClusterLabOptions::overlay).
  [[nodiscard]] static std::string overlay_address(const ClusterNode& n);

 private:
  // The nft.overlay block of n's agent config ("" without an overlay).
  [[nodiscard]] std::string overlay_config(const ClusterNode& n) const;
  ClusterLabOptions options_;
};

// "2026-11-25T23:39:05.500Z" -> system_clock; {} when it does not parse.
std::chrono::system_clock::time_point parse_log_ts(const std::string& ts);
// Writes `text` to `path` through a temporary file and a rename.
void write_file_atomic(const std::filesystem::path& path, const std::string& text);

}  // namespace tierwall::testsupport
