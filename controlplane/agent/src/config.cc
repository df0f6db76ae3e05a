#include "tierwall/agent/config.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <memory>
#include <unistd.h>

#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/ipfix/ipfix.h"
#include "tierwall/policy/loader.h"
#include "tierwall/policy/model.h"
#include "tierwall/policy/yaml.h"
#include "tierwall/policy/yaml_reader.h"
#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"

namespace tierwall::agent {

namespace {

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "localhost";
  return std::string(buf.data());
}

const std::shared_ptr<const std::string>& command_line() {
  static const auto name = std::make_shared<const std::string>("<command line>");
  return name;
}

class ConfigReader {
 public:
  ConfigReader(const std::string& name, policy::Diagnostics& diags)
      : r_(std::make_shared<const std::string>(name), diags),
        base_(std::filesystem::path(name).parent_path()) {}

  void read(const policy::yaml::Node& root, AgentConfig& c) {
    if (root.is_null()) return;  // an empty file: all defaults
    if (!r_.check_map(
            root, "the agent configuration",
            {"apiVersion", "kind", "node", "containerCidrs", "policy", "inventory", "runtime",
             "dataplane", "nft", "dpdk", "flowLog", "api", "metrics", "cluster"})) {
      return;
    }
    if (const auto* n = field(root, "apiVersion")) {
      auto v = r_.string(*n, "apiVersion");
      if (v && *v != policy::kApiVersion) {
        r_.error(*n, "unsupported apiVersion '" + *v + "'; expected '" +
                         std::string(policy::kApiVersion) + "'");
      }
    }
    if (const auto* n = field(root, "kind")) {
      auto v = r_.string(*n, "kind");
      if (v && *v != kAgentConfigKind) {
        r_.error(*n, "kind must be '" + std::string(kAgentConfigKind) + "', not '" + *v + "'");
      }
    }
    if (const auto* n = field(root, "node")) read_node(*n, c.node);
    if (const auto* n = field(root, "containerCidrs")) read_cidrs(*n, c.container_cidrs);
    if (const auto* n = field(root, "policy")) {
      if (auto v = r_.string_or_list(*n, "policy")) {
        c.policy.clear();
        for (auto& p : *v) c.policy.push_back(path(std::move(p)));
      }
    }
    if (const auto* n = field(root, "inventory")) c.inventory = path_of(*n, "inventory");
    if (const auto* n = field(root, "runtime")) {
      if (r_.check_map(*n, "runtime", {"socket"})) {
        if (const auto* s = field(*n, "socket")) c.runtime_socket = path_of(*s, "runtime.socket");
      }
    }
    if (const auto* n = field(root, "dataplane")) {
      auto v = r_.string(*n, "dataplane");
      if (v && *v != "nft" && *v != "dpdk") {
        r_.error(*n, "unknown dataplane '" + *v + "'; the agent supports 'nft' and 'dpdk'");
      } else if (v) {
        c.dataplane = *v;
      }
    }
    if (const auto* n = field(root, "nft")) read_nft(*n, c.nft);
    if (const auto* n = field(root, "dpdk")) read_dpdk(*n, c.dpdk);
    if (const auto* n = field(root, "flowLog")) {
      if (r_.check_map(*n, "flowLog", {"dir", "key", "fsync", "receiveBuffer", "ipfix"})) {
        if (const auto* x = field(*n, "ipfix")) {
          if (r_.check_map(*x, "flowLog.ipfix", {"collector"})) {
            if (const auto* col = field(*x, "collector")) {
              if (auto v = nonempty(*col, "flowLog.ipfix.collector")) {
                std::string host;
                std::uint16_t port = 0;
                if (ipfix::parse_collector(*v, host, port)) {
                  c.ipfix_collector = *v;
                } else {
                  r_.error(*col, "invalid flowLog.ipfix.collector '" + *v +
                                     "': expected HOST:PORT, HOST or [IPv6]:PORT");
                }
              }
            }
          }
        }
        if (const auto* b = field(*n, "receiveBuffer")) {
          if (auto v = r_.integer(*b, "flowLog.receiveBuffer")) {
            if (*v < 4096 || *v > (1LL << 30)) {
              r_.error(*b, "flowLog.receiveBuffer must be between 4096 and 1073741824 bytes");
            } else {
              c.flow_log_receive_buffer = static_cast<int>(*v);
            }
          }
        }
        if (const auto* d = field(*n, "dir")) c.flow_log_dir = path_of(*d, "flowLog.dir");
        if (const auto* k = field(*n, "key")) {
          if (auto v = path_of(*k, "flowLog.key")) c.flow_log_key = *v;
        }
        if (const auto* f = field(*n, "fsync")) {
          if (auto v = r_.string(*f, "flowLog.fsync")) {
            static constexpr std::array<std::string_view, 4> kPolicies = {
                "none", "checkpoint", "interval", "every-record"};
            if (std::find(kPolicies.begin(), kPolicies.end(), *v) == kPolicies.end()) {
              r_.error(*f,
                       "flowLog.fsync must be none, checkpoint, interval or every-record, "
                       "not '" +
                           *v + "'");
            } else {
              c.flow_log_fsync = *v;
            }
          }
        }
      }
    }
    if (const auto* n = field(root, "api")) {
      if (r_.check_map(*n, "api", {"socket", "group", "roles"})) {
        if (const auto* s = n->find("socket"); s != nullptr && !s->is_null()) {
          auto v = r_.string(*s, "api.socket");
          if (v) c.api.socket = v->empty() ? std::string() : path(std::move(*v));
        }
        if (const auto* roles = field(*n, "roles")) read_roles(*roles, c.api.roles);
        if (const auto* g = field(*n, "group")) {
          auto v = nonempty(*g, "api.group");
          if (v) c.api.group = *v;
        }
      }
    }
    if (const auto* n = field(root, "cluster")) read_cluster(*n, c.cluster);
    if (const auto* n = field(root, "metrics")) {
      if (r_.check_map(*n, "metrics", {"address"})) {
        if (const auto* a = field(*n, "address")) {
          if (auto v = r_.string(*a, "metrics.address")) {
            std::string why;
            if (parse_host_port(*v, &why)) {
              c.metrics_address = *v;
            } else {
              r_.error(*a, "invalid metrics.address '" + *v + "': " + why);
            }
          }
        }
      }
    }
  }

 private:
  // The value of `key`, or nullptr when absent or null (`key:` alone).
  static const policy::yaml::Node* field(const policy::yaml::Node& map, std::string_view key) {
    const auto* n = map.find(key);
    return n == nullptr || n->is_null() ? nullptr : n;
  }

  std::optional<std::string> nonempty(const policy::yaml::Node& n, std::string_view what) {
    auto v = r_.string(n, what);
    if (v && v->empty()) {
      r_.error(n, std::string(what) + " must not be empty");
      return std::nullopt;
    }
    return v;
  }

  std::string path(std::string p) const {
    std::filesystem::path fp(p);
    if (fp.is_absolute() || base_.empty()) return p;
    return (base_ / fp).string();
  }

  std::optional<std::string> path_of(const policy::yaml::Node& n, std::string_view what) {
    auto v = nonempty(n, what);
    if (!v) return std::nullopt;
    return path(std::move(*v));
  }

  void read_node(const policy::yaml::Node& n, AgentConfig::Node& node) {
    if (!r_.check_map(n, "node", {"name", "addresses"})) return;
    if (const auto* name = field(n, "name")) {
      if (auto v = nonempty(*name, "node.name")) node.name = *v;
    }
    if (const auto* list = field(n, "addresses")) {
      if (!r_.check_list(*list, "node.addresses")) return;
      node.addresses.clear();
      for (const auto& item : list->children) {
        auto v = r_.string(item, "a node address");
        if (!v) continue;
        auto a = IpAddress::parse(*v);
        if (!a) {
          r_.error(item, "invalid node address '" + *v + "'");
          continue;
        }
        node.addresses.push_back(*a);
      }
    }
  }

  void read_cidrs(const policy::yaml::Node& n, std::vector<Cidr>& out) {
    if (!r_.check_list(n, "containerCidrs")) return;
    out.clear();
    for (const auto& item : n.children) {
      auto v = r_.string(item, "a container CIDR");
      if (!v) continue;
      std::string why;
      auto c = Cidr::parse(*v, &why);
      if (!c) {
        r_.error(item, "invalid container CIDR '" + *v + "': " + why);
        continue;
      }
      out.push_back(*c);
    }
  }

  void read_roles(const policy::yaml::Node& n, std::array<AgentConfig::RoleMembers, 3>& roles) {
    static constexpr std::array<std::string_view, 3> kNames = {"auditor", "operator", "admin"};
    if (!r_.check_map(n, "api.roles", {"auditor", "operator", "admin"})) return;
    for (std::size_t i = 0; i < kNames.size(); ++i) {
      const auto* role = field(n, kNames[i]);
      if (role == nullptr) continue;
      const std::string where = "api.roles." + std::string(kNames[i]);
      if (!r_.check_map(*role, where, {"users", "groups"})) continue;
      if (const auto* u = field(*role, "users")) {
        if (auto v = r_.string_or_list(*u, where + ".users")) roles[i].users = *v;
      }
      if (const auto* g = field(*role, "groups")) {
        if (auto v = r_.string_or_list(*g, where + ".groups")) roles[i].groups = *v;
      }
    }
  }

  void read_cluster(const policy::yaml::Node& n, AgentConfig::Cluster& c) {
    if (!r_.check_map(n, "cluster",
                      {"store", "name", "user", "passwordFile", "ca", "cert", "key", "leaseTtl"})) {
      return;
    }
    if (const auto* s = field(n, "store")) {
      if (auto v = r_.string_or_list(*s, "cluster.store")) {
        std::vector<std::string> urls;
        for (const auto& item : *v) {
          auto parsed = store::parse_endpoints(item);
          if (!parsed) {
            r_.error(*s, "invalid cluster.store '" + item + "': " + parsed.error().message);
            continue;
          }
          urls.insert(urls.end(), parsed->begin(), parsed->end());
        }
        if (urls.empty() && v->empty()) r_.error(*s, "cluster.store must name an etcd URL");
        c.store = std::move(urls);
      }
    }
    if (const auto* s = field(n, "name")) {
      if (auto v = nonempty(*s, "cluster.name")) {
        if (store::valid_cluster_name(*v)) {
          c.name = *v;
        } else {
          r_.error(*s, "invalid cluster.name '" + *v +
                           "': lower-case letters, digits, '.' and '-', at most 63");
        }
      }
    }
    if (const auto* s = field(n, "user")) c.user = nonempty(*s, "cluster.user");
    if (const auto* s = field(n, "passwordFile")) {
      c.password_file = path_of(*s, "cluster.passwordFile");
    }
    if (const auto* s = field(n, "ca")) c.ca_file = path_of(*s, "cluster.ca");
    if (const auto* s = field(n, "cert")) c.cert_file = path_of(*s, "cluster.cert");
    if (const auto* s = field(n, "key")) c.key_file = path_of(*s, "cluster.key");
    if (c.cert_file.has_value() != c.key_file.has_value()) {
      r_.error(n, "cluster.cert and cluster.key go together: give both or neither");
    }
    if (const auto* s = field(n, "leaseTtl")) {
      if (auto v = r_.integer(*s, "cluster.leaseTtl")) {
        if (*v < 2 || *v > 3600) {
          r_.error(*s, "cluster.leaseTtl must be between 2 and 3600 seconds");
        } else {
          c.lease_ttl_seconds = static_cast<int>(*v);
        }
      }
    }
  }

  void read_nft(const policy::yaml::Node& n, AgentConfig::Nft& nft) {
    if (!r_.check_map(n, "nft", {"table", "logGroup", "overlay"})) return;
    if (const auto* t = field(n, "table")) {
      if (auto v = nonempty(*t, "nft.table")) {
        if (v->size() > 255) {
          r_.error(*t, "nft.table is longer than 255 characters");
        } else {
          nft.table = *v;
        }
      }
    }
    if (const auto* g = field(n, "logGroup")) {
      if (auto v = r_.integer(*g, "nft.logGroup")) {
        if (*v < 0 || *v > 65535) {
          r_.error(*g, "nft.logGroup " + std::to_string(*v) + " is not in 0..65535");
        } else {
          nft.log_group = static_cast<std::uint16_t>(*v);
        }
      }
    }
    if (const auto* o = field(n, "overlay")) read_nft_overlay(*o, nft.overlay);
  }

  // nft.overlay: devices (interface names) and the peers' underlay
  // addresses are both required; a peer list is what keeps anyone else
  // from injecting tagged VXLAN.
  void read_nft_overlay(const policy::yaml::Node& n, AgentConfig::NftOverlay& overlay) {
    if (!r_.check_map(n, "nft.overlay", {"devices", "peers", "port"})) return;
    const auto* devices = field(n, "devices");
    const auto* peers = field(n, "peers");
    if (devices == nullptr) r_.missing(n, "devices", "nft.overlay");
    if (peers == nullptr) r_.missing(n, "peers", "nft.overlay");
    if (devices != nullptr && r_.check_list(*devices, "nft.overlay.devices")) {
      overlay.devices.clear();
      for (const auto& item : devices->children) {
        auto v = nonempty(item, "an overlay device");
        if (!v) continue;
        if (v->size() > 15 || v->find_first_of("/ \t") != std::string::npos) {
          r_.error(item,
                   "invalid interface name '" + *v + "' (at most 15 characters, no '/' or spaces)");
        } else if (std::find(overlay.devices.begin(), overlay.devices.end(), *v) !=
                   overlay.devices.end()) {
          r_.error(item, "overlay device '" + *v + "' is listed twice");
        } else {
          overlay.devices.push_back(*v);
        }
      }
      if (devices->children.empty()) r_.error(*devices, "nft.overlay.devices is empty");
    }
    if (peers != nullptr && r_.check_list(*peers, "nft.overlay.peers")) {
      overlay.peers.clear();
      for (const auto& item : peers->children) {
        auto v = r_.string(item, "an overlay peer");
        if (!v) continue;
        auto a = IpAddress::parse(*v);
        if (!a) {
          r_.error(item, "invalid overlay peer address '" + *v + "'");
        } else if (std::find(overlay.peers.begin(), overlay.peers.end(), *a) !=
                   overlay.peers.end()) {
          r_.error(item, "overlay peer " + *v + " is listed twice");
        } else {
          overlay.peers.push_back(*a);
        }
      }
      if (peers->children.empty()) {
        r_.error(*peers, "nft.overlay.peers is empty: VXLAN would be accepted from no node");
      }
    }
    if (const auto* port = field(n, "port")) {
      if (auto v = r_.integer(*port, "nft.overlay.port")) {
        if (*v < 1 || *v > 65535) {
          r_.error(*port, "nft.overlay.port " + std::to_string(*v) + " is not in 1..65535");
        } else {
          overlay.port = static_cast<std::uint16_t>(*v);
        }
      }
    }
  }

  void read_dpdk(const policy::yaml::Node& n, AgentConfig::Dpdk& dpdk) {
    if (!r_.check_map(n, "dpdk",
                      {"ealArgs", "ports", "workers", "idleSleepUs", "flowTableCapacity"})) {
      return;
    }
    if (const auto* a = field(n, "ealArgs")) {
      if (r_.check_list(*a, "dpdk.ealArgs")) {
        std::vector<std::string> args;
        for (const auto& item : a->children) {
          if (auto v = nonempty(item, "an EAL argument")) args.push_back(*v);
        }
        dpdk.eal_args = std::move(args);
      }
    }
    const policy::yaml::Node* first_overlay = nullptr;  // the first port with an overlay
    if (const auto* p = field(n, "ports")) {
      if (r_.check_list(*p, "dpdk.ports")) {
        dpdk.ports.clear();
        for (const auto& item : p->children) {
          if (!r_.check_map(item, "a DPDK port", {"devargs", "name", "overlay"})) continue;
          const auto* d = field(item, "devargs");
          if (d == nullptr) {
            r_.missing(item, "devargs", "a DPDK port");
            continue;
          }
          AgentConfig::DpdkPort port;
          if (auto v = nonempty(*d, "dpdk.ports[].devargs")) {
            port.devargs = *v;
          } else {
            continue;
          }
          if (const auto* name = field(item, "name")) {
            if (auto v = nonempty(*name, "dpdk.ports[].name")) port.name = *v;
          }
          if (const auto* o = field(item, "overlay")) {
            port.overlay = read_overlay(*o);
            if (!port.overlay) continue;
            if (first_overlay == nullptr) first_overlay = o;
          }
          dpdk.ports.push_back(std::move(port));
        }
        if (dpdk.ports.size() > kMaxDpdkPorts) {
          r_.error(*p, "dpdk.ports has " + std::to_string(dpdk.ports.size()) +
                           " ports; the DPDK dataplane bridges at most " +
                           std::to_string(kMaxDpdkPorts));
        }
        // An uplink only carries what container ports send and receive.
        const bool any_container_port =
            std::any_of(dpdk.ports.begin(), dpdk.ports.end(),
                        [](const AgentConfig::DpdkPort& port) { return !port.overlay; });
        if (first_overlay != nullptr && !any_container_port) {
          r_.error(*first_overlay,
                   "every DPDK port is an overlay uplink: an uplink needs at least one "
                   "container port (a port without `overlay:`) to bridge to");
        }
      }
    }
    if (const auto* w = field(n, "workers")) {
      if (auto v = r_.integer(*w, "dpdk.workers")) {
        if (*v < 1 || *v > kMaxDpdkWorkers) {
          r_.error(*w, "dpdk.workers " + std::to_string(*v) + " is not in 1.." +
                           std::to_string(kMaxDpdkWorkers));
        } else {
          dpdk.workers = static_cast<std::uint32_t>(*v);
        }
        // An uplink's queues are spread by the outer VXLAN header, a
        // container port's by the inner packet (docs/dpdk.md, "Workers").
        if (dpdk.workers > 1 && first_overlay != nullptr) {
          r_.error(*w, "dpdk.workers " + std::to_string(dpdk.workers) +
                           " with an overlay uplink: an uplink needs workers: 1 (its queues are "
                           "spread by the outer VXLAN header, a container port's by the inner "
                           "packet, so a connection's two directions would meet different "
                           "workers)");
        }
      }
    }
    if (const auto* s = field(n, "idleSleepUs")) {
      if (auto v = r_.integer(*s, "dpdk.idleSleepUs")) {
        if (*v < 0 || *v > 1'000'000) {
          r_.error(*s, "dpdk.idleSleepUs " + std::to_string(*v) + " is not in 0..1000000");
        } else {
          dpdk.idle_sleep_us = static_cast<std::uint32_t>(*v);
        }
      }
    }
    if (const auto* f = field(n, "flowTableCapacity")) {
      if (auto v = r_.integer(*f, "dpdk.flowTableCapacity")) {
        if (*v < 1024 || *v > (std::int64_t{1} << 28)) {
          r_.error(*f,
                   "dpdk.flowTableCapacity " + std::to_string(*v) + " is not in 1024..268435456");
        } else {
          dpdk.flow_capacity = static_cast<std::uint64_t>(*v);
        }
      }
    }
  }

  std::string where(const policy::yaml::Node& n) const {
    return std::to_string(n.line) + ":" + std::to_string(n.column);
  }

  // An address usable as a VTEP: parses, and is neither unspecified nor
  // multicast (the underlay is unicast to static peers).
  std::optional<IpAddress> vtep_address(const policy::yaml::Node& n, std::string_view what) {
    auto v = r_.string(n, what);
    if (!v) return std::nullopt;
    auto a = IpAddress::parse(*v);
    if (!a) {
      r_.error(n, "invalid " + std::string(what) + " '" + *v + "': not an IPv4 or IPv6 address");
      return std::nullopt;
    }
    const std::size_t len = a->is_v4() ? 4 : 16;
    const bool unspecified =
        std::all_of(a->bytes.begin(), a->bytes.begin() + static_cast<std::ptrdiff_t>(len),
                    [](std::uint8_t b) { return b == 0; });
    const bool multicast = a->is_v4() ? (a->bytes[0] & 0xf0U) == 0xe0U : a->bytes[0] == 0xffU;
    if (unspecified || multicast) {
      r_.error(n, "invalid " + std::string(what) + " '" + *v + "': a VTEP needs a unicast address");
      return std::nullopt;
    }
    return a;
  }

  std::optional<std::array<std::uint8_t, 6>> unicast_mac(const policy::yaml::Node& n,
                                                         std::string_view what) {
    auto v = r_.string(n, what);
    if (!v) return std::nullopt;
    dataplane::dpdk::MacAddress mac{};
    if (!dataplane::dpdk::parse_mac(*v, mac)) {
      r_.error(n, "invalid " + std::string(what) + " '" + *v + "': expected aa:bb:cc:dd:ee:ff");
      return std::nullopt;
    }
    if ((mac[0] & 1U) != 0 || std::all_of(mac.begin(), mac.end(), [](auto b) { return b == 0; })) {
      r_.error(n, "invalid " + std::string(what) + " '" + *v +
                      "': frames to a peer need a unicast MAC (not zero, not multicast)");
      return std::nullopt;
    }
    return mac;
  }

  // `overlay:` of a DPDK port; nullopt (reported) when anything is wrong.
  std::optional<AgentConfig::DpdkOverlay> read_overlay(const policy::yaml::Node& n) {
    if (!r_.check_map(n, "dpdk.ports[].overlay",
                      {"localVtep", "vni", "udpPort", "peers", "macAgeingSeconds"})) {
      return std::nullopt;
    }
    const std::size_t errors_before = r_.diags().error_count();
    AgentConfig::DpdkOverlay o;
    const auto* local = field(n, "localVtep");
    if (local == nullptr) r_.missing(n, "localVtep", "dpdk.ports[].overlay");
    std::optional<IpAddress> local_vtep;
    if (local != nullptr) local_vtep = vtep_address(*local, "overlay.localVtep");
    if (local_vtep) o.local_vtep = *local_vtep;

    if (const auto* v = field(n, "vni")) {
      if (auto vni = r_.integer(*v, "overlay.vni")) {
        if (*vni < 0 || *vni > kMaxVni) {
          r_.error(*v, "overlay.vni " + std::to_string(*vni) + " does not fit in 24 bits (0.." +
                           std::to_string(kMaxVni) + ")");
        } else {
          o.vni = static_cast<std::uint32_t>(*vni);
        }
      }
    } else {
      r_.missing(n, "vni", "dpdk.ports[].overlay");
    }
    if (const auto* u = field(n, "udpPort")) {
      if (auto port = r_.integer(*u, "overlay.udpPort")) {
        if (*port < 1 || *port > 65535) {
          r_.error(*u, "overlay.udpPort " + std::to_string(*port) + " is not in 1..65535");
        } else {
          o.udp_port = static_cast<std::uint16_t>(*port);
        }
      }
    }
    if (const auto* a = field(n, "macAgeingSeconds")) {
      if (auto secs = r_.integer(*a, "overlay.macAgeingSeconds")) {
        if (*secs < 1 || *secs > 86400) {
          r_.error(*a, "overlay.macAgeingSeconds " + std::to_string(*secs) + " is not in 1..86400");
        } else {
          o.mac_ageing_seconds = static_cast<std::uint32_t>(*secs);
        }
      }
    }

    const auto* peers = field(n, "peers");
    if (peers == nullptr) {
      r_.missing(n, "peers", "dpdk.ports[].overlay");
    } else if (r_.check_list(*peers, "overlay.peers")) {
      if (peers->children.empty() || peers->children.size() > kMaxOverlayPeers) {
        r_.error(*peers, "overlay.peers has " + std::to_string(peers->children.size()) +
                             " peers; an uplink needs 1 to " + std::to_string(kMaxOverlayPeers));
      }
      std::vector<const policy::yaml::Node*> seen;  // each peer's vtep node
      for (const auto& item : peers->children) {
        if (!r_.check_map(item, "an overlay peer", {"vtep", "mac"})) continue;
        const auto* vtep = field(item, "vtep");
        const auto* mac = field(item, "mac");
        if (vtep == nullptr) r_.missing(item, "vtep", "an overlay peer");
        if (mac == nullptr) r_.missing(item, "mac", "an overlay peer");
        if (vtep == nullptr || mac == nullptr) continue;
        auto address = vtep_address(*vtep, "overlay.peers[].vtep");
        auto mac_value = unicast_mac(*mac, "overlay.peers[].mac");
        if (!address || !mac_value) continue;
        if (local_vtep && address->is_v4() != local_vtep->is_v4()) {
          r_.error(*vtep, "overlay peer " + address->to_string() + " is " +
                              (address->is_v4() ? "IPv4" : "IPv6") + " but localVtep " +
                              local_vtep->to_string() + " is " +
                              (local_vtep->is_v4() ? "IPv4" : "IPv6") +
                              ": an uplink's underlay has one address family");
          continue;
        }
        if (local_vtep && *address == *local_vtep) {
          r_.error(*vtep, "overlay peer " + address->to_string() + " is the localVtep itself");
          continue;
        }
        const auto dup = std::find_if(o.peers.begin(), o.peers.end(),
                                      [&](const auto& p) { return p.vtep == *address; });
        if (dup != o.peers.end()) {
          r_.error(*vtep, "overlay peer " + address->to_string() + " is listed twice (first at " +
                              where(*seen[static_cast<std::size_t>(dup - o.peers.begin())]) + ")");
          continue;
        }
        o.peers.push_back({*address, *mac_value});
        seen.push_back(vtep);
      }
    }
    if (r_.diags().error_count() > errors_before) return std::nullopt;
    return o;
  }

  policy::YamlReader r_;
  std::filesystem::path base_;
};

}  // namespace

AgentConfig default_config() {
  AgentConfig c;
  c.node.name = host_name();
  return c;
}

std::optional<AgentConfig> parse_config(std::string_view text, const std::string& name,
                                        policy::Diagnostics& diags) {
  const std::size_t errors_before = diags.error_count();
  auto file = std::make_shared<const std::string>(name);
  auto docs = policy::yaml::parse(text, file, policy::yaml::Parser::YamlCpp, diags);
  AgentConfig config = default_config();
  if (docs.size() > 1) {
    diags.error(policy::SourceLoc{file, docs[1].root.line, docs[1].root.column},
                "the agent configuration must be a single YAML document");
  }
  if (!docs.empty()) {
    ConfigReader reader(name, diags);
    reader.read(docs.front().root, config);
  }
  if (diags.error_count() > errors_before) return std::nullopt;
  return config;
}

std::optional<AgentConfig> load_config(const std::string& path, policy::Diagnostics& diags) {
  std::string text;
  if (!policy::read_file(path, text, diags)) return std::nullopt;
  return parse_config(text, path, diags);
}

bool apply_overrides(AgentConfig& config, const Overrides& flags, policy::Diagnostics& diags) {
  const std::size_t errors_before = diags.error_count();
  const policy::SourceLoc where{command_line(), 0, 0};
  if (!flags.policy.empty()) config.policy = flags.policy;
  if (flags.inventory) config.inventory = flags.inventory;
  if (flags.runtime_socket) config.runtime_socket = flags.runtime_socket;
  if (flags.api_socket) config.api.socket = *flags.api_socket;  // "" disables the API
  if (flags.node_name) config.node.name = *flags.node_name;
  if (flags.flow_log) config.flow_log_dir = *flags.flow_log;
  if (flags.flow_log_key) config.flow_log_key = *flags.flow_log_key;
  if (flags.ipfix) {
    std::string host;
    std::uint16_t port = 0;
    if (ipfix::parse_collector(*flags.ipfix, host, port)) {
      config.ipfix_collector = *flags.ipfix;
    } else {
      diags.error(where, "invalid --ipfix '" + *flags.ipfix + "': expected HOST:PORT");
    }
  }
  if (config.ipfix_collector && !config.flow_log_dir) {
    diags.error(where, "IPFIX export needs the flow log: set flowLog.dir or --flow-log DIR");
  }
  if (!flags.container_cidrs.empty()) {
    std::vector<Cidr> cidrs;
    for (const auto& text : flags.container_cidrs) {
      std::string why;
      auto c = Cidr::parse(text, &why);
      if (c) {
        cidrs.push_back(*c);
      } else {
        diags.error(where, "invalid --container-cidr '" + text + "': " + why);
      }
    }
    config.container_cidrs = std::move(cidrs);
  }
  if (flags.metrics) {
    std::string why;
    if (parse_host_port(*flags.metrics, &why)) {
      config.metrics_address = *flags.metrics;
    } else {
      diags.error(where, "invalid --metrics '" + *flags.metrics + "': " + why);
    }
  }
  if (flags.dataplane) {
    if (*flags.dataplane == "nft" || *flags.dataplane == "dpdk") {
      config.dataplane = *flags.dataplane;
    } else {
      diags.error(where, "invalid --dataplane '" + *flags.dataplane + "': expected nft or dpdk");
    }
  }
  if (config.dataplane == "dpdk" && config.dpdk.ports.empty()) {
    diags.error(where,
                "the DPDK dataplane needs at least one port: set dpdk.ports in the config file");
  }
  if (flags.store) {
    auto parsed = store::parse_endpoints(*flags.store);
    if (parsed) {
      config.cluster.store = std::move(*parsed);
    } else {
      diags.error(where, "invalid --store '" + *flags.store + "': " + parsed.error().message);
    }
  }
  if (flags.cluster) {
    if (store::valid_cluster_name(*flags.cluster)) {
      config.cluster.name = *flags.cluster;
    } else {
      diags.error(where, "invalid --cluster '" + *flags.cluster +
                             "': lower-case letters, digits, '.' and '-', at most 63");
    }
  }
  if (config.cluster_mode()) {
    if (!config.policy.empty()) {
      diags.error(where,
                  "both a local policy and a cluster store are given: in cluster mode the policy "
                  "comes from the store; remove `policy:` / --policy (publish with tierctl apply "
                  "--store)");
    }
    if (!store::valid_node_name(config.node.name)) {
      diags.error(where, "node name '" + config.node.name +
                             "' cannot name a node in the cluster store: lower-case letters, "
                             "digits, '.' and '-', at most 63 (set node.name or --node-name)");
    }
  } else if (config.policy.empty()) {
    diags.error(where,
                "no policy given: set `policy:` in the config file or pass --policy PATH "
                "(or join a cluster with --store URL)");
  }
  return diags.error_count() == errors_before;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<HostPort> {
    if (error != nullptr) *error = why;
    return std::nullopt;
  };
  HostPort out;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after an IPv6 address");
    out.host = std::string(text.substr(1, close - 1));
    if (!IpAddress::parse(out.host) || IpAddress::parse(out.host)->is_v4()) {
      return fail("not an IPv6 address inside [ ]");
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') return fail("expected HOST:PORT");
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("expected HOST:PORT");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return fail("write an IPv6 address in brackets: [ADDR]:PORT");
    }
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) return fail("the host is empty");
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || value > 65535) {
    return fail("the port must be a number in 0..65535");
  }
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

}  // namespace tierwall::agent
