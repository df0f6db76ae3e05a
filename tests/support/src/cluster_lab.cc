#include "tierwall/testsupport/cluster_lab.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "tierwall/testsupport/podman.h"

namespace tierwall::testsupport {

namespace fs = std::filesystem;
using nlohmann::json;

ClusterNode::ClusterNode(int i)
    : index(i),
      name("node-" + std::to_string(i)),
      ns(name),
      uplink("198.18.0." + std::to_string(10 + i)),
      subnet("10.88." + std::to_string(i)) {}

ClusterLab::ClusterLab(ClusterLabOptions options) : options_(std::move(options)) {
  if (options_.nodes < 1 || options_.nodes > 80) {
    throw std::invalid_argument("ClusterLab: nodes must be 1..80");
  }
}

// Agents and servers first (with their namespaces), then etcd, then the hub
// (a member, declared first, destroyed last).
ClusterLab::~ClusterLab() {
  for (auto& n : nodes) {
    if (n->agent > 0) n->ns.stop(n->agent, Millis{2000});
    for (auto& c : n->containers) {
      c.api_server.reset();
      c.db_server.reset();
    }
  }
  nodes.clear();
  etcd.reset();
}

void ClusterLab::build() {
  bridge(hub, "hub");
  addr(hub, "hub", kClusterHubAddress + "/24");
  for (int i = 0; i < options_.nodes; ++i) nodes.push_back(std::make_unique<ClusterNode>(i));
  for (auto& n : nodes) {
    const std::string port = "n" + std::to_string(n->index);
    veth(n->ns, "up0", hub, port);
    attach(hub, port, "hub");
    addr(n->ns, "up0", n->uplink + "/24");
    sysctl(n->ns, "net.ipv4.ip_forward", "1");
    bridge(n->ns, "cbr");
    addr(n->ns, "cbr", n->subnet + ".1/24");
    n->dir = options_.dir / n->name;
    fs::create_directories(n->dir);
  }
  for (auto& n : nodes) {
    if (options_.overlay) {
      n->ns.check("ip link add " + std::string(kClusterOverlayDevice) +
                  " type vxlan id 42 dstport 4789 local " + n->uplink +
                  " dev up0 gbp nolearning && ip link set " + kClusterOverlayDevice +
                  " mtu 1450 up");
      addr(n->ns, kClusterOverlayDevice, overlay_address(*n) + "/24");
    }
    for (auto& other : nodes) {
      if (other.get() == n.get()) continue;
      if (options_.overlay) {
        n->ns.check("bridge fdb append 00:00:00:00:00:00 dev " +
                    std::string(kClusterOverlayDevice) + " dst " + other->uplink);
        route(n->ns, other->subnet + ".0/24 via " + overlay_address(*other) + " dev " +
                         kClusterOverlayDevice);
      } else {
        route(n->ns, other->subnet + ".0/24 via " + other->uplink);
      }
    }
  }
}

std::string ClusterLab::overlay_address(const ClusterNode& n) {
  return "10.99.0." + std::to_string(10 + n.index);
}

ClusterContainer& ClusterLab::add_container(ClusterNode& n, const std::string& name,
                                            const std::string& role, bool servers) {
  const int j = static_cast<int>(n.containers.size());
  auto& c = n.containers.emplace_back(name, role, n.subnet + "." + std::to_string(10 + j));
  const std::string port = "c" + std::to_string(j);
  veth(c.ns, "eth0", n.ns, port);
  attach(n.ns, port, "cbr");
  addr(c.ns, "eth0", c.v4 + "/24");
  route(c.ns, "default via " + n.subnet + ".1");
  if (servers) {
    c.api_server = std::make_unique<TcpServer>(c.ns, "0.0.0.0", kClusterApiPort);
    c.db_server = std::make_unique<TcpServer>(c.ns, "0.0.0.0", kClusterDbPort);
  }
  return c;
}

void ClusterLab::start_etcd() {
  EtcdClusterOptions eo;
  eo.members = 3;
  eo.netns = hub.name();
  eo.host = kClusterHubAddress;
  etcd = std::make_unique<EtcdCluster>(eo);
}

void ClusterLab::write_inventory(const ClusterNode& n) const {
  std::string s = "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: " + n.name +
                  ", addresses: [" + n.uplink + "]}\nendpoints:\n";
  for (const auto& c : n.containers) {
    s += "  - {name: " + c.name + ", labels: {role: " + c.role + "}, addresses: [" + c.v4 + "]}\n";
  }
  write_file_atomic(n.dir / "inventory.yaml", s);
}

void ClusterLab::start_agent(ClusterNode& n) const {
  write_inventory(n);
  std::string store;
  for (const auto& url : etcd->client_urls()) store += (store.empty() ? "" : ", ") + url;
  write_file_atomic(n.dir / "agent.yaml",
                    "node: {name: " + n.name +
                        "}\n"
                        "containerCidrs: [10.88.0.0/16]\n"
                        "inventory: inventory.yaml\n"
                        "api: {socket: " +
                        (n.dir / "api.sock").string() +
                        "}\n"
                        "metrics: {address: 127.0.0.1:9641}\n"
                        "cluster: {store: [" +
                        store + "], leaseTtl: " + std::to_string(options_.lease_ttl_s) + "}\n" +
                        overlay_config(n));
  n.agent = n.ns.spawn("exec " + options_.tierwalld + " --config " +
                           (n.dir / "agent.yaml").string() + " --log-format json",
                       (n.dir / "agent.log").string());
}

std::string ClusterLab::overlay_config(const ClusterNode& n) const {
  if (!options_.overlay) return {};
  std::string peers;
  for (const auto& other : nodes) {
    if (other.get() == &n) continue;
    peers += (peers.empty() ? "" : ", ") + other->uplink;
  }
  return "nft: {overlay: {devices: [" + std::string(kClusterOverlayDevice) + "], peers: [" + peers +
         "]}}\n";
}

json ClusterLab::status(const ClusterNode& n) const {
  auto r = run_argv(
      {options_.tierctl, "status", "-o", "json", "--socket", (n.dir / "api.sock").string()},
      Millis{5000});
  if (!r.ok()) return json::object();
  try {
    return json::parse(r.out);
  } catch (const std::exception&) {
    return json::object();
  }
}

std::string ClusterLab::nft_table(const ClusterNode& n) const {
  return n.ns.run("nft list table inet tierwall").out;
}

json ClusterLab::publish(const std::string& text, const std::string& store) const {
  const fs::path pdir = options_.dir / "policy";
  fs::create_directories(pdir);
  write_file_atomic(pdir / "policy.yaml", text);
  auto r = hub.run(options_.tierctl + " apply " + pdir.string() + " --store " +
                   (store.empty() ? etcd->endpoints() : store) + " --author test -o json");
  if (!r.ok()) return json{{"error", r.out + r.err}};
  try {
    return json::parse(r.out);
  } catch (const std::exception&) {
    return json{{"error", "unparsable output: " + r.out}};
  }
}

std::optional<std::chrono::system_clock::time_point> ClusterLab::applied_at(
    const ClusterNode& n, const std::string& digest) {
  std::istringstream in(read_text(n.dir / "agent.log"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"policy-applied\"") == std::string::npos) continue;
    try {
      const auto j = json::parse(line);
      if (j.value("digest", "") == digest) return parse_log_ts(j.value("ts", ""));
    } catch (const std::exception&) {
    }
  }
  return std::nullopt;
}

std::vector<const ClusterContainer*> ClusterLab::all_containers() const {
  std::vector<const ClusterContainer*> out;
  for (const auto& n : nodes) {
    for (const auto& c : n->containers) out.push_back(&c);
  }
  return out;
}

bool ClusterLab::knows_everything(const ClusterNode& n) const {
  const std::string table = nft_table(n);
  for (const auto* c : all_containers()) {
    if (table.find(c->v4) == std::string::npos) return false;
  }
  return true;
}

std::chrono::system_clock::time_point parse_log_ts(const std::string& ts) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(ts.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return {};
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(::timegm(&tm)) + std::chrono::milliseconds{ms};
}

void write_file_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream f(tmp);
    f << text;
  }
  fs::rename(tmp, path);
}

}  // namespace tierwall::testsupport
