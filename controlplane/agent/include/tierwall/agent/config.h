// The node agent's configuration: a YAML file, then command-line flags that
// override it.
//
//   apiVersion: tierwall.io/v1            # optional
//   kind: AgentConfig                     # optional
//   node:
//     name: node-1                        # default: this host's name
//     addresses: [192.0.2.10]             # default: [] = discover from interfaces
//   containerCidrs: [10.88.0.0/16]        # default: [] (no quarantine of unknowns)
//   policy: /etc/tierwall/policy.d        # a path or a list of paths (files/dirs)
//   inventory: /etc/tierwall/inv.yaml     # optional
//   runtime: {socket: /run/podman/podman.sock}   # optional: Docker API socket
//   dataplane: nft                        # nft (default) | dpdk
//   nft: {table: tierwall, logGroup: 100} # defaults shown
//   nft:                                  # optional: the tier on the wire between nodes
//     overlay:                            # (docs/nftables.md, "Overlay")
//       devices: [tw-vx0]                 # this node's vxlan-gbp interfaces
//       peers: [192.0.2.11, 192.0.2.12]   # underlay addresses of the other nodes
//       port: 4789                        # the VXLAN UDP port (default shown)
//   dpdk:                                 # dataplane: dpdk only (docs/dpdk.md)
//     ealArgs: [-l, "2", --no-huge, -m, "256"]  # default: the built-in EAL arguments
//     ports:                              # 1..8 ports, bridged and policed
//       - {devargs: "net_af_packet0,iface=veth0", name: c0}   # name optional
//       - devargs: "net_af_packet1,iface=uplink0"       # an overlay uplink:
//         overlay:                        # VXLAN-GBP to trusted peer VTEPs
//           localVtep: 192.168.77.1       # IPv4 or IPv6; our outer address
//           vni: 4242                     # 0..16777215
//           udpPort: 4789                 # default shown
//           peers: [{vtep: 192.168.77.2, mac: "02:00:00:00:77:02"}]
//           macAgeingSeconds: 300         # inner MAC -> peer; default shown
//     workers: 1                          # forwarding threads, 1..16 (queue i of every port)
//     idleSleepUs: 0                      # sleep after an idle poll; 0 = busy poll
//     flowTableCapacity: 65536            # flows remembered per worker (8 x 2^k)
//   flowLog:                              # optional: no flow log when absent
//     dir: /var/log/tierwall/flows        # chained JSONL files (docs/flowlog.md)
//     key: /var/lib/tierwall/flowlog.key  # Ed25519 signing key (default shown)
//     fsync: interval                     # none | checkpoint | interval | every-record
//     receiveBuffer: 67108864             # bytes per kernel event socket (NFLOG, conntrack)
//     ipfix: {collector: "192.0.2.9:4739"}  # optional: also export flows over IPFIX/UDP
//   api:                                  # the local API (tierctl status/apply/...)
//     socket: /run/tierwall/api.sock      # default shown; "" = no API
//     group: tierwall                     # optional: socket group (mode 0660)
//     roles:                              # optional; uid 0 is always admin
//       admin: {users: [alice], groups: [tierwall-admin]}
//       operator: {groups: [tierwall]}
//       auditor: {groups: [tierwall-audit]}
//   metrics: {address: 127.0.0.1:9641}    # default shown; HOST:PORT, [V6]:PORT
//   cluster:                              # optional: cluster mode (docs/cluster.md)
//     store: [https://etcd-1:2379]        # etcd client URLs (a string or a list)
//     name: default                       # keys under /tierwall/<name>/
//     user: tierwall-node-node-1          # optional: etcd user ...
//     passwordFile: /etc/tierwall/etcd.pw #   ... and its password (first line)
//     ca: /etc/tierwall/etcd-ca.pem       # optional TLS: CA, client cert and key
//     cert: /etc/tierwall/node.pem
//     key: /etc/tierwall/node-key.pem
//     leaseTtl: 15                        # seconds, 2..3600
//
// In cluster mode the policy comes from the store: giving a local policy
// too (`policy:` or --policy) is an error, so that a node never enforces
// something other than what the cluster published.
//
// Relative paths in the file are relative to the file's directory; paths in
// flags are taken as given. Every problem is reported as FILE:LINE:COL, with
// a did-you-mean for unknown keys, as for policies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/policy/diagnostics.h"

namespace tierwall::agent {

inline constexpr std::string_view kAgentConfigKind = "AgentConfig";
inline constexpr std::string_view kDefaultApiSocket = "/run/tierwall/api.sock";
inline constexpr std::string_view kDefaultMetricsAddress = "127.0.0.1:9641";
inline constexpr std::string_view kDefaultNftTable = "tierwall";
inline constexpr std::uint16_t kDefaultLogGroup = 100;
inline constexpr std::uint64_t kDefaultDpdkFlowCapacity = 65536;
inline constexpr std::uint32_t kMaxDpdkWorkers = 16;  // dataplane::dpdk::Port::kMaxQueues
inline constexpr std::size_t kMaxDpdkPorts = 8;
inline constexpr std::uint16_t kDefaultVxlanUdpPort = 4789;
inline constexpr std::size_t kMaxOverlayPeers = 255;
inline constexpr std::uint32_t kMaxVni = (1U << 24) - 1;
inline constexpr std::uint32_t kDefaultMacAgeingSeconds = 300;
inline constexpr std::string_view kDefaultFlowLogKey = "/var/lib/tierwall/flowlog.key";

struct AgentConfig {
  struct Node {
    std::string name;                  // default: gethostname()
    std::vector<IpAddress> addresses;  // empty: discover (agent::local_addresses)
  };
  // Nodes joined by kernel VXLAN-GBP devices carry the source's tier in
  // the group id (dataplane::nft::Overlay). Empty devices: no overlay.
  struct NftOverlay {
    std::vector<std::string> devices;
    std::vector<IpAddress> peers;  // the only underlay sources VXLAN is accepted from
    std::uint16_t port = 4789;
  };
  struct Nft {
    std::string table{kDefaultNftTable};
    std::uint16_t log_group = kDefaultLogGroup;
    NftOverlay overlay;
  };
  // A trusted remote VTEP of an overlay uplink: its underlay address and
  // the MAC frames to it are sent to (static: no ARP on the underlay).
  struct OverlayPeer {
    IpAddress vtep;
    std::array<std::uint8_t, 6> mac{};
  };
  // A port that is a VXLAN-GBP overlay uplink (docs/dpdk.md, "Overlay").
  // Its own MAC is the port's, read when the port is opened.
  struct DpdkOverlay {
    IpAddress local_vtep;
    std::uint32_t vni = 0;  // 24 bits
    std::uint16_t udp_port = kDefaultVxlanUdpPort;
    std::vector<OverlayPeer> peers;  // 1..kMaxOverlayPeers, distinct, family of local_vtep
    std::uint32_t mac_ageing_seconds = kDefaultMacAgeingSeconds;
  };
  struct DpdkPort {
    std::string devargs;                 // "net_af_packet0,iface=veth0"
    std::string name;                    // empty: the device name
    std::optional<DpdkOverlay> overlay;  // set: an overlay uplink, else a container port
  };
  struct Dpdk {
    // EAL arguments (argv[1..]); nullopt: the dataplane's defaults
    // (dataplane::dpdk::Eal::default_args()).
    std::optional<std::vector<std::string>> eal_args;
    std::vector<DpdkPort> ports;
    std::uint32_t workers = 1;  // forwarding threads, 1..kMaxDpdkWorkers
    std::uint32_t idle_sleep_us = 0;
    std::uint64_t flow_capacity = kDefaultDpdkFlowCapacity;  // per worker
  };
  // Who may do what through the local API (see api.h). Names or numeric
  // ids; uid 0 is always admin.
  struct RoleMembers {
    std::vector<std::string> users;
    std::vector<std::string> groups;
  };
  struct Api {
    std::string socket{kDefaultApiSocket};  // empty: no API
    std::optional<std::string> group;       // owner group of the socket (mode 0660)
    // index: auditor, operator, admin
    std::array<RoleMembers, 3> roles{};
  };

  struct Cluster {
    std::vector<std::string> store;  // etcd client URLs; empty: not in cluster mode
    std::string name = "default";
    std::optional<std::string> user;
    std::optional<std::string> password_file;  // else $TIERWALL_STORE_PASSWORD
    std::optional<std::string> ca_file;
    std::optional<std::string> cert_file;
    std::optional<std::string> key_file;
    int lease_ttl_seconds = 15;
  };

  Node node;
  Cluster cluster;
  [[nodiscard]] bool cluster_mode() const { return !cluster.store.empty(); }
  std::vector<Cidr> container_cidrs;
  std::vector<std::string> policy;  // required (file or flag)
  std::optional<std::string> inventory;
  std::optional<std::string> runtime_socket;
  std::string dataplane = "nft";  // "nft" | "dpdk"
  Nft nft;
  Dpdk dpdk;
  std::optional<std::string> flow_log_dir;
  std::string flow_log_key{kDefaultFlowLogKey};
  std::string flow_log_fsync = "interval";
  int flow_log_receive_buffer = 64 << 20;      // bytes; the kernel doubles it
  std::optional<std::string> ipfix_collector;  // HOST:PORT; flows are also exported there
  Api api;
  std::string metrics_address{kDefaultMetricsAddress};
};

// The defaults above, with node.name set to this host's name.
AgentConfig default_config();

// Reads `path` over the defaults. nullopt (with every problem in `diags`) on
// any error.
std::optional<AgentConfig> load_config(const std::string& path, policy::Diagnostics& diags);
// The same for text held in memory; `name` is the file name in diagnostics
// and the base of relative paths.
std::optional<AgentConfig> parse_config(std::string_view text, const std::string& name,
                                        policy::Diagnostics& diags);

// Flags of tierwalld that override the file. Unset (nullopt / empty) means
// "keep the file's value". A repeated flag replaces the file's list whole.
struct Overrides {
  std::vector<std::string> policy;            // --policy PATH (repeatable)
  std::optional<std::string> inventory;       // --inventory FILE
  std::optional<std::string> runtime_socket;  // --runtime-socket PATH
  std::vector<std::string> container_cidrs;   // --container-cidr CIDR (repeatable)
  std::optional<std::string> api_socket;      // --api-socket PATH
  std::optional<std::string> metrics;         // --metrics ADDR:PORT
  std::optional<std::string> node_name;       // --node-name NAME
  std::optional<std::string> flow_log;        // --flow-log DIR
  std::optional<std::string> flow_log_key;    // --flow-log-key FILE
  std::optional<std::string> ipfix;           // --ipfix HOST:PORT
  std::optional<std::string> dataplane;       // --dataplane nft|dpdk
  std::optional<std::string> store;           // --store URL[,URL...]
  std::optional<std::string> cluster;         // --cluster NAME
};

// Applies the flags, then checks what only the merged result can tell (a
// policy path is given, or a cluster store and no local policy; the node
// and cluster names and store URLs are valid in cluster mode). Bad flag values are reported at
// "<command line>". Returns false (leaving `config` partly updated) on any error.
bool apply_overrides(AgentConfig& config, const Overrides& flags, policy::Diagnostics& diags);

struct HostPort {
  std::string host;  // without brackets for IPv6
  std::uint16_t port = 0;
};
// "127.0.0.1:9641", "[::1]:9641", "localhost:9641". nullopt with `error` set
// otherwise.
std::optional<HostPort> parse_host_port(std::string_view text, std::string* error = nullptr);

}  // namespace tierwall::agent
