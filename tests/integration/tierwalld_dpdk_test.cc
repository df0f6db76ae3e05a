// The real `tierwalld --dataplane dpdk` end to end: three "container"
// namespaces (web, api, db) whose veth peers sit in a node namespace, where
// the agent runs and opens one af_packet port per peer (docs/dpdk.md, "In
// the agent"). The agent's DPDK thread bridges and polices real TCP, UDP and
// ICMP between them under a three-tier policy with a guardrail deny; its
// flow log holds "dataplane":"dpdk" records with the right verdicts, tiers
// and rules, and verifies; /metrics shows the DPDK counters of the traffic
// sent; a policy change (SIGHUP) cuts an established connection live;
// tierctl status names the dataplane. A restart keeps an established
// connection and opens no hole. Two agents in two node namespaces,
// joined by an overlay uplink each (VXLAN-GBP on a veth pair), enforce the
// policy across nodes, the receiver deciding the remote container by its
// tag, and refuses forged underlay frames; a bad uplink is refused before
// the agent starts.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/podman.h"
#include "tierwall/testsupport/raw_socket.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace tierwall::testsupport;

const std::string kTierwalld = TIERWALLD_BINARY;
const std::string kTierctl = TIERCTL_BINARY;

constexpr Millis kPass{3000};  // first packets flood, ARP crosses the bridge
constexpr Millis kDrop{700};

constexpr const char* kWeb = "10.79.0.1";
constexpr const char* kApi = "10.79.0.2";
constexpr const char* kDb = "10.79.0.3";

std::string policy(bool web_to_api_8080) {
  std::string p = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: dpdk-agent}
spec:
  mode: enforce
  tiers:
    - {name: web, level: 10}
    - {name: api, level: 20}
    - {name: db, level: 30}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: api, match: {labels: {role: api}}, tier: api}
    - {name: db, match: {labels: {role: db}}, tier: db}
  denies:
    - {name: no-web-to-db, from: {tier: web}, to: {tier: db}}
  flows:
    - name: web-to-api
      from: {tier: web}
      to: {tier: api}
)";
  p += web_to_api_8080 ? "      ports: [tcp/8080, icmp/echo-request]\n"
                       : "      ports: [icmp/echo-request]\n";
  p += "    - {name: api-to-db, from: {tier: api}, to: {tier: db}, ports: [tcp/5432, udp/5353]}\n";
  return p;
}

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-d, addresses: [10.79.0.254]}
endpoints:
  - {name: web-1, labels: {role: web}, addresses: [10.79.0.1]}
  - {name: api-1, labels: {role: api}, addresses: [10.79.0.2]}
  - {name: db-1, labels: {role: db}, addresses: [10.79.0.3]}
)";

void replace_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream f(tmp);
    f << text;
  }
  fs::rename(tmp, path);
}

std::vector<json> flow_records(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("flows-", 0) == 0 && e.path().extension() == ".jsonl") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<json> out;
  for (const auto& f : files) {
    for (const auto& line : split_lines(read_text(f))) out.push_back(json::parse(line));
  }
  return out;
}

// Flow records from `src` to `dst` (endpoint names) with this verdict and
// destination port (or ICMP type for icmp).
std::vector<json> find_flows(const std::vector<json>& records, const std::string& src,
                             const std::string& dst, const std::string& proto,
                             const std::string& verdict, int port) {
  std::vector<json> out;
  for (const auto& r : records) {
    if (r.value("type", "") != "flow") continue;
    if (r["src"].value("name", "") != src || r["dst"].value("name", "") != dst) continue;
    if (r.value("proto", "") != proto || r.value("verdict", "") != verdict) continue;
    const int p = proto == "icmp" ? r["dst"].value("icmpType", -1) : r["dst"].value("port", -1);
    if (p != port) continue;
    out.push_back(r);
  }
  return out;
}

// Every namespace, server, process and file of one run, released in reverse
// order even when an assertion returns early.
struct Lab {
  TempDir tmp{"tierwalld-dpdk"};  // destroyed last: after the agent in `node` is stopped
  const fs::path& dir = tmp.path();
  NetNs web{"web"};
  NetNs api{"api"};
  NetNs db{"db"};
  NetNs node{"node"};
};

// Links web, api and db to ports pweb, papi and pdb in the node namespace
// and writes the agent's policy, inventory and config (two workers) in
// lab.dir.
void wire(Lab& lab) {
  veth(lab.web, "eth0", lab.node, "pweb");
  veth(lab.api, "eth0", lab.node, "papi");
  veth(lab.db, "eth0", lab.node, "pdb");
  addr(lab.web, "eth0", std::string(kWeb) + "/24");
  addr(lab.api, "eth0", std::string(kApi) + "/24");
  addr(lab.db, "eth0", std::string(kDb) + "/24");
  // af_packet needs complete checksums and no segmentation offloads
  // (docs/dpdk.md, "Ports (af_packet)").
  for (NetNs* ns : {&lab.web, &lab.api, &lab.db}) {
    ns->check("ethtool -K eth0 tx off tso off gso off");
  }
  lab.node.check("ethtool -K pweb gro off; ethtool -K papi gro off; ethtool -K pdb gro off");
  // The ports' interfaces belong to DPDK: no IPv6 of their own (their MLD
  // and ND would be captured and bridged like the containers' frames).
  for (const char* dev : {"pweb", "papi", "pdb"}) {
    sysctl(lab.node, std::string("net.ipv6.conf.") + dev + ".disable_ipv6", "1");
  }
  for (const char* dev : {"pweb", "papi", "pdb"}) wait_link_running(lab.node, dev);
  fs::create_directories(lab.dir / "policy");
  replace_file(lab.dir / "policy" / "policy.yaml", policy(true));
  replace_file(lab.dir / "inventory.yaml", kInventory);
  // The file says nft; the flag selects dpdk (flags override the file).
  replace_file(lab.dir / "agent.yaml", R"(dataplane: nft
dpdk:
  ports:
    - {devargs: "net_af_packet0,iface=pweb", name: web}
    - {devargs: "net_af_packet1,iface=papi", name: api}
    - {devargs: "net_af_packet2,iface=pdb", name: db}
  workers: 2
  idleSleepUs: 50
  flowTableCapacity: 4096
)");
}

// tierwalld --dataplane dpdk in the node namespace with lab.dir's files, a
// flow log in lab.dir/flows, the API on lab.dir/api.sock and metrics on
// 127.0.0.1:metrics_port; its output appended to lab.dir/tierwalld.log.
pid_t start_agent(Lab& lab, int metrics_port) {
  return lab.node.spawn("exec " + kTierwalld + " --config " + (lab.dir / "agent.yaml").string() +
                            " --dataplane dpdk --policy " + (lab.dir / "policy").string() +
                            " --inventory " + (lab.dir / "inventory.yaml").string() +
                            " --container-cidr 10.79.0.0/24 --node-name node-d --flow-log " +
                            (lab.dir / "flows").string() + " --flow-log-key " +
                            (lab.dir / "flowlog.key").string() + " --api-socket " +
                            (lab.dir / "api.sock").string() +
                            " --metrics 127.0.0.1:" + std::to_string(metrics_port),
                        (lab.dir / "tierwalld.log").string());
}

bool ready(Lab& lab, int metrics_port) {
  auto r = in_netns(lab.node, [&] { return http_get(metrics_port, "/readyz"); });
  return r && r->status == 200;
}

class TierwalldDpdk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = netns_unavailable_reason()) {
      if (std::getenv("CI") != nullptr) FAIL() << *why;
      GTEST_SKIP() << *why;
    }
    if (!fs::exists(kTierwalld)) FAIL() << kTierwalld << " missing";
  }
};

TEST_F(TierwalldDpdk, EnforcesLogsCountsAndFollowsPolicyChanges) {
  Lab lab;
  const fs::path log_path = lab.dir / "tierwalld.log";
  auto agent_log = [&] { return read_text(log_path); };

  wire(lab);
  const int metrics_port = free_loopback_port();
  ASSERT_NE(metrics_port, 0);
  const fs::path flow_dir = lab.dir / "flows";
  const fs::path api_socket = lab.dir / "api.sock";
  const pid_t pid = start_agent(lab, metrics_port);
  auto metrics = [&]() -> std::string {
    auto r = in_netns(lab.node, [&] { return http_get(metrics_port, "/metrics"); });
    return r ? r->body : std::string();
  };
  auto metric = [&](const std::string& text, const std::string& series) {
    return metric_value(text, series).value_or(-1);
  };
  ASSERT_TRUE(wait_until([&] { return ready(lab, metrics_port); }, Millis{10000})) << agent_log();
  EXPECT_NE(agent_log().find("DPDK dataplane running: 3 ports (web, api, db)"), std::string::npos)
      << agent_log();
  EXPECT_NE(agent_log().find("to the DPDK dataplane"), std::string::npos) << agent_log();

  TcpServer api8080(lab.api, kApi, 8080);
  TcpServer db5432(lab.db, kDb, 5432);
  TcpServer web8080(lab.web, kWeb, 8080);
  UdpEchoServer db5353(lab.db, kDb, 5353);

  // Allowed by the policy.
  EXPECT_EQ(ping_probe(lab.web, kApi, kPass), Outcome::kOk) << metrics();
  EXPECT_EQ(tcp_probe(lab.web, kApi, 8080, kPass), Outcome::kOk) << metrics();
  EXPECT_EQ(tcp_probe(lab.api, kDb, 5432, kPass), Outcome::kOk) << metrics();
  EXPECT_EQ(udp_probe(lab.api, kDb, 5353, kPass), Outcome::kOk) << metrics();
  // Denied: the guardrail (web -> db), and by default (db -> web, api -> web).
  EXPECT_EQ(tcp_probe(lab.web, kDb, 5432, kDrop), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.db, kWeb, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.api, kWeb, kDrop), Outcome::kTimeout);
  EXPECT_EQ(web8080.accepted(), 0U);
  EXPECT_GE(api8080.accepted(), 1U);
  EXPECT_GE(db5432.accepted(), 1U);
  EXPECT_GE(db5353.received(), 1U);

  // The DPDK counters of that traffic.
  const std::string m1 = metrics();
  EXPECT_GT(metric(m1, "tierwall_dpdk_ip_allowed_total"), 0) << m1;
  EXPECT_GT(metric(m1, "tierwall_dpdk_non_ip_total"), 0) << m1;  // ARP
  // At least one dropped packet per denied probe (TCP SYNs are retried).
  EXPECT_GE(metric(m1, "tierwall_dpdk_policy_dropped_total"), 3) << m1;
  EXPECT_GE(metric(m1, "tierwall_dpdk_flow_inserts_total"), 4) << m1;  // 4 allowed connections
  EXPECT_GE(metric(m1, "tierwall_dpdk_events_start_total"), 4) << m1;
  EXPECT_EQ(metric(m1, "tierwall_dpdk_events_lost_packets_total"), 0) << m1;
  EXPECT_EQ(metric(m1, "tierwall_dpdk_events_rate_limited_packets_total"), 0) << m1;
  EXPECT_EQ(metric(m1, "tierwall_dpdk_malformed_total"), 0) << m1;
  EXPECT_EQ(metric(m1, "tierwall_dpdk_generation"), 1) << m1;
  EXPECT_GT(metric(m1, "tierwall_dpdk_parse_frames_total{status=\"ok\"}"), 0) << m1;
  for (const char* port : {"web", "api", "db"}) {
    EXPECT_GT(metric(m1, std::string("tierwall_dpdk_port_rx_packets_total{port=\"") + port + "\"}"),
              0)
        << port << "\n"
        << m1;
  }
  // Two workers, whose shares add up to the totals.
  EXPECT_EQ(metric(m1, "tierwall_dpdk_workers"), 2) << m1;
  for (const char* what : {"rx_frames", "ip_allowed", "policy_dropped", "flow_inserts"}) {
    const std::string share = std::string("tierwall_dpdk_worker_") + what + "_total{worker=";
    EXPECT_EQ(metric(m1, share + "\"0\"}") + metric(m1, share + "\"1\"}"),
              metric(m1, std::string("tierwall_dpdk_") + what + "_total"))
        << what << "\n"
        << m1;
  }
  // Every IP frame received was either passed or dropped by the policy.
  EXPECT_EQ(metric(m1, "tierwall_dpdk_rx_frames_total"),
            metric(m1, "tierwall_dpdk_ip_allowed_total") +
                metric(m1, "tierwall_dpdk_policy_dropped_total") +
                metric(m1, "tierwall_dpdk_non_ip_total") +
                metric(m1, "tierwall_dpdk_no_generation_total") +
                metric(m1, "tierwall_dpdk_malformed_total") +
                metric(m1, "tierwall_dpdk_fragments_dropped_total"))
      << m1;

  // tierctl status names the dataplane.
  const auto status = run_argv({kTierctl, "status", "--socket", api_socket.string(), "-o", "json"});
  ASSERT_TRUE(status.ok()) << status.out << status.err;
  const json st = json::parse(status.out);
  EXPECT_EQ(st["dataplane"].value("kind", ""), "dpdk") << status.out;
  EXPECT_TRUE(st["dataplane"].value("ok", false)) << status.out;
  const auto status_text = run_argv({kTierctl, "status", "--socket", api_socket.string()});
  EXPECT_NE(status_text.out.find("DPDK dataplane"), std::string::npos) << status_text.out;

  // An established connection, then a policy without web -> api tcp/8080
  // (SIGHUP): its next packet is cut, new connections are denied, ICMP still
  // passes.
  TcpSession session(lab.web, kApi, 8080, kPass);
  ASSERT_TRUE(session.exchange(kPass)) << metrics();
  replace_file(lab.dir / "policy" / "policy.yaml", policy(false));
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  ASSERT_TRUE(
      wait_until([&] { return metric(metrics(), "tierwall_dpdk_generation") == 2; }, Millis{5000}))
      << agent_log();
  EXPECT_EQ(session.exchange_probe(kDrop), Outcome::kTimeout) << metrics();
  EXPECT_EQ(tcp_probe(lab.web, kApi, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.web, kApi, kPass), Outcome::kOk);
  const std::string m2 = metrics();
  EXPECT_GE(metric(m2, "tierwall_dpdk_policy_cut_total"), 1) << m2;
  EXPECT_GE(metric(m2, "tierwall_dpdk_events_cut_total"), 1) << m2;
  EXPECT_GE(metric(m2, "tierwall_dpdk_events_end_total"), 1) << m2;  // the cut session

  // An admin's flush fails closed: every IP packet is denied (not passed
  // unpoliced) until a reload re-applies the policy.
  const auto flushed = run_argv({kTierctl, "flush", "--yes", "--socket", api_socket.string()});
  ASSERT_TRUE(flushed.ok()) << flushed.out << flushed.err;
  EXPECT_EQ(metric(metrics(), "tierwall_dpdk_generation"), 0);
  EXPECT_EQ(ping_probe(lab.web, kApi, kDrop), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.api, kDb, 5432, kDrop), Outcome::kTimeout);
  const auto reloaded = run_argv({kTierctl, "reload", "--socket", api_socket.string()});
  ASSERT_TRUE(reloaded.ok()) << reloaded.out << reloaded.err;
  EXPECT_EQ(ping_probe(lab.web, kApi, kPass), Outcome::kOk) << agent_log();
  EXPECT_EQ(tcp_probe(lab.api, kDb, 5432, kPass), Outcome::kOk) << agent_log();

  // A clean stop: the folded denies and the ring are drained into the log.
  const auto before_stop = metric(metrics(), "tierwall_dpdk_event_packets_total");
  lab.node.stop(pid, Millis{10000});
  const std::string log = agent_log();
  ASSERT_NE(log.find("flow log closed"), std::string::npos) << log;
  // Under -DTIERWALL_SANITIZE=ON the agent reports leaks and UB at exit.
  EXPECT_EQ(log.find("Sanitizer"), std::string::npos) << log;
  EXPECT_EQ(log.find("runtime error"), std::string::npos) << log;

  const auto records = flow_records(flow_dir);
  ASSERT_FALSE(records.empty());
  std::uint64_t flow_count = 0;
  for (const auto& r : records) {
    if (r.value("type", "") == "flow") {
      EXPECT_EQ(r.value("dataplane", ""), "dpdk") << r.dump();
      flow_count += r.value("count", 0ULL);
    }
    EXPECT_NE(r.value("type", ""), "loss") << r.dump();
  }
  // Every packet an event stood for is in a record (nothing lost here), and
  // every packet the policy dropped is counted in a deny record.
  EXPECT_GE(static_cast<double>(flow_count), before_stop);
  std::uint64_t denied_count = 0;
  for (const auto& r : records) {
    if (r.value("type", "") == "flow" && r.value("verdict", "") == "deny") {
      denied_count += r.value("count", 0ULL);
    }
  }
  EXPECT_GE(static_cast<double>(denied_count), metric(m2, "tierwall_dpdk_policy_dropped_total"));

  auto expect_one = [&](const std::string& src, const std::string& dst, const std::string& proto,
                        const std::string& verdict, int port, const std::string& kind,
                        const std::string& rule, int generation) {
    const auto found = find_flows(records, src, dst, proto, verdict, port);
    ASSERT_FALSE(found.empty()) << src << " -> " << dst << " " << proto << "/" << port << " "
                                << verdict;
    bool match = false;
    for (const auto& r : found) {
      if (r["rule"].value("kind", "") == kind && r["rule"].value("name", "") == rule &&
          r.value("generation", 0) == generation && r.value("event", "") == "start") {
        match = true;
      }
    }
    EXPECT_TRUE(match) << found.front().dump();
  };
  expect_one("web-1", "api-1", "tcp", "allow", 8080, "flow", "web-to-api", 1);
  expect_one("web-1", "api-1", "icmp", "allow", 8, "flow", "web-to-api", 1);
  expect_one("api-1", "db-1", "tcp", "allow", 5432, "flow", "api-to-db", 1);
  expect_one("api-1", "db-1", "udp", "allow", 5353, "flow", "api-to-db", 1);
  expect_one("web-1", "db-1", "tcp", "deny", 5432, "deny", "no-web-to-db", 1);
  expect_one("db-1", "web-1", "tcp", "deny", 8080, "default-deny", "", 1);
  expect_one("api-1", "web-1", "icmp", "deny", 8, "default-deny", "", 1);
  expect_one("web-1", "api-1", "tcp", "deny", 8080, "default-deny", "", 2);  // after the change
  // Every remembered (allowed) connection ended — cut, expired or at the
  // stop — with its packets and bytes per direction, named by its start.
  std::size_t allowed_starts = 0;
  std::size_t ends = 0;
  for (const auto& r : records) {
    if (r.value("type", "") != "flow") continue;
    if (r.value("event", "") == "end") {
      ++ends;
      EXPECT_GE(r["packets"].value("orig", 0), 1) << r.dump();
      EXPECT_GT(r["bytes"].value("orig", 0), 0) << r.dump();
    } else if (r.value("verdict", "") != "deny") {
      ++allowed_starts;
    }
  }
  EXPECT_EQ(ends, allowed_starts);
  auto ended = [&](const std::string& src, const std::string& dst, const std::string& proto,
                   int port, int orig, int reply) {
    for (const auto& r : records) {
      if (r.value("event", "") != "end" || r.value("proto", "") != proto) continue;
      if (r["src"].value("name", "") != src || r["dst"].value("name", "") != dst) continue;
      const int p = proto == "icmp" ? r["dst"].value("icmpType", -1) : r["dst"].value("port", -1);
      if (p == port && r["packets"].value("orig", 0) >= orig &&
          r["packets"].value("reply", 0) >= reply && r.value("verdict", "") == "allow") {
        return true;
      }
    }
    return false;
  };
  // The cut session: handshake and exchange both ways; the UDP echo; a ping.
  EXPECT_TRUE(ended("web-1", "api-1", "tcp", 8080, 3, 2));
  EXPECT_TRUE(ended("api-1", "db-1", "udp", 5353, 1, 1));
  EXPECT_TRUE(ended("web-1", "api-1", "icmp", 8, 1, 1));
  // While flushed, denies are logged under generation 0 (no policy).
  EXPECT_FALSE(find_flows(records, "api-1", "db-1", "tcp", "deny", 5432).empty());
  for (const auto& r : find_flows(records, "api-1", "db-1", "tcp", "deny", 5432)) {
    EXPECT_EQ(r.value("generation", -1), 0) << r.dump();
    EXPECT_EQ(r["rule"].value("kind", ""), "default-deny") << r.dump();
  }
  // Tiers and the policy records of both generations.
  const auto allowed = find_flows(records, "web-1", "api-1", "tcp", "allow", 8080);
  ASSERT_FALSE(allowed.empty());
  EXPECT_EQ(allowed.front()["src"].value("tier", ""), "web");
  EXPECT_EQ(allowed.front()["dst"].value("tier", ""), "api");
  int policies = 0;
  for (const auto& r : records) policies += r.value("type", "") == "policy" ? 1 : 0;
  EXPECT_EQ(policies, 2);

  const auto verify = run_argv({kTierctl, "audit", "verify", flow_dir.string(), "--pubkey",
                                (lab.dir / "flowlog.key.pub").string()});
  EXPECT_TRUE(verify.ok()) << verify.out << verify.err;
  std::printf(
      "flow log: %zu records, %llu packets in flow records; counters after the policy change: %s\n",
      records.size(), static_cast<unsigned long long>(flow_count),
      [&] {
        std::string line;
        for (const char* k :
             {"rx_frames_total", "ip_allowed_total", "policy_dropped_total", "policy_cut_total",
              "events_enqueued_total", "event_packets_total", "events_folded_total"}) {
          line += std::string(k) + "=" +
                  std::to_string(
                      static_cast<long long>(metric(m2, std::string("tierwall_dpdk_") + k))) +
                  " ";
        }
        return line;
      }()
          .c_str());
  if (HasFailure()) std::cerr << "tierwalld log:\n" << log;
}

// Two nodes, each running its own `tierwalld --dataplane dpdk` in its own
// namespace with a container port and an overlay uplink (af_packet on a
// veth pair between the nodes, VXLAN-GBP). Each agent's inventory knows
// only its own container, and each node's containerCidrs only its own half
// of the shared /24: the sender sees the remote container as world, the
// receiver decides the remote source by the tier in the GBP tag. The same
// policy runs on both nodes: its `*-out` flows let each tier reach the
// other node, its tier-to-tier flows decide what the receiver accepts.
constexpr const char* kOvlA = "10.80.0.1";    // container behind node A, tier a
constexpr const char* kOvlB = "10.80.0.129";  // container behind node B, tier b

constexpr const char* kOverlayPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: overlay-agents}
spec:
  mode: enforce
  tiers:
    - {name: a, level: 10}
    - {name: b, level: 20}
  assignments:
    - {name: a, match: {labels: {role: a}}, tier: a}
    - {name: b, match: {labels: {role: b}}, tier: b}
  flows:
    - name: a-out
      from: {tier: a}
      to: {world: ["10.80.0.0/24"]}
      ports: [tcp/8080, tcp/9090, udp/5353, icmp/echo-request]
    - name: a-to-b
      from: {tier: a}
      to: {tier: b}
      ports: [tcp/8080, udp/5353, icmp/echo-request]
    - name: b-out
      from: {tier: b}
      to: {world: ["10.80.0.0/24"]}
      ports: [tcp/8081]
    - name: b-to-a
      from: {tier: b}
      to: {tier: a}
      ports: [tcp/8081]
)";

std::string overlay_inventory(const std::string& node, const std::string& node_address,
                              const std::string& endpoint, const std::string& role,
                              const std::string& address) {
  return "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: " + node + ", addresses: [" +
         node_address + "]}\nendpoints:\n  - {name: " + endpoint + ", labels: {role: " + role +
         "}, addresses: [" + address + "]}\n";
}

std::string overlay_agent_config(const std::string& container_cidr, const std::string& local_vtep,
                                 const std::string& peer_vtep, const std::string& peer_mac) {
  return "dataplane: dpdk\ncontainerCidrs: [" + container_cidr +
         "]\n"
         "dpdk:\n"
         "  ports:\n"
         "    - {devargs: \"net_af_packet0,iface=c0\", name: c0}\n"
         "    - devargs: \"net_af_packet1,iface=uplink\"\n"
         "      name: uplink\n"
         "      overlay:\n"
         "        localVtep: " +
         local_vtep +
         "\n"
         "        vni: 4242\n"
         "        peers: [{vtep: " +
         peer_vtep + ", mac: \"" + peer_mac +
         "\"}]\n"
         "  idleSleepUs: 50\n"
         "  flowTableCapacity: 4096\n";
}

struct OverlayLab {
  TempDir tmp{"tierwalld-dpdk-ovl"};  // destroyed last: after both agents are stopped
  const fs::path& dir = tmp.path();
  NetNs cont_a{"cont-a"};
  NetNs cont_b{"cont-b"};
  NetNs node_a{"node-a"};
  NetNs node_b{"node-b"};
};

// One node's agent: its files under `dir`, started in `ns`.
struct OverlayAgent {
  std::string name;
  NetNs* ns = nullptr;
  fs::path dir;
  int metrics_port = 0;
  pid_t pid = -1;

  std::string log() const { return read_text(dir / "tierwalld.log"); }
  std::string metrics() const {
    auto r = in_netns(*ns, [&] { return http_get(metrics_port, "/metrics"); });
    return r ? r->body : std::string();
  }
  double metric(const std::string& series) const {
    return metric_value(metrics(), series).value_or(-1);
  }
  bool ready() const {
    auto r = in_netns(*ns, [&] { return http_get(metrics_port, "/readyz"); });
    return r && r->status == 200;
  }
};

// An agent restart (SIGTERM, start again) keeps an established connection
// and opens no hole. While the agent is down nothing crosses the DPDK ports
// (the namespaces have no other path): fail closed. The restarted agent has
// no flow state, so the connection's next packet from its initiator is
// decided afresh (the policy allows web -> api tcp/8080 in its own
// direction) and remembered, and the echo comes back on that flow. What the
// policy denies stays denied, whatever was remembered before.
TEST_F(TierwalldDpdk, RestartKeepsEstablishedConnectionsAndOpensNoHole) {
  Lab lab;
  auto agent_log = [&] { return read_text(lab.dir / "tierwalld.log"); };
  wire(lab);
  const int metrics_port = free_loopback_port();
  ASSERT_NE(metrics_port, 0);
  pid_t pid = start_agent(lab, metrics_port);
  ASSERT_TRUE(wait_until([&] { return ready(lab, metrics_port); }, Millis{10000})) << agent_log();

  TcpServer api8080(lab.api, kApi, 8080);
  TcpServer web8080(lab.web, kWeb, 8080);
  TcpSession session(lab.web, kApi, 8080, kPass);
  ASSERT_TRUE(session.exchange(kPass)) << agent_log();
  // A flow api -> web the policy denies, tried while web -> api is live.
  EXPECT_EQ(tcp_probe(lab.api, kWeb, 8080, kDrop), Outcome::kTimeout);

  lab.node.stop(pid, Millis{10000});
  EXPECT_NE(agent_log().find("flow log closed"), std::string::npos) << agent_log();
  // Down: nothing forwards, not even what the policy allows.
  EXPECT_EQ(tcp_probe(lab.web, kApi, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.web, kApi, kDrop), Outcome::kTimeout);

  pid = start_agent(lab, metrics_port);
  ASSERT_TRUE(wait_until([&] { return ready(lab, metrics_port); }, Millis{10000})) << agent_log();
  // The same connection carries data again (TCP retransmits what was sent
  // while the agent was down; the probe waits for its own byte's echo).
  EXPECT_EQ(session.exchange_probe(Millis{5000}), Outcome::kOk) << agent_log();
  EXPECT_EQ(session.exchange_probe(kPass), Outcome::kOk);
  // No hole: denied before the restart, denied after it.
  EXPECT_EQ(tcp_probe(lab.api, kWeb, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.web, kDb, 5432, kDrop), Outcome::kTimeout);
  EXPECT_EQ(web8080.accepted(), 0U);
  EXPECT_EQ(tcp_probe(lab.web, kApi, 8080, kPass), Outcome::kOk);
  lab.node.stop(pid, Millis{10000});
  const std::string log = agent_log();
  EXPECT_EQ(log.find("Sanitizer"), std::string::npos) << log;
  EXPECT_EQ(log.find("runtime error"), std::string::npos) << log;
}

TEST_F(TierwalldDpdk, TwoAgentsAcrossAnOverlayDecideByTheTag) {
  OverlayLab lab;

  // Containers on one /24 across the overlay (MTU 1450: VXLAN adds 50
  // bytes), offloads off for af_packet; the ports' interfaces carry no IPv6.
  veth(lab.cont_a, "eth0", lab.node_a, "c0");
  veth(lab.cont_b, "eth0", lab.node_b, "c0");
  veth(lab.node_a, "uplink", lab.node_b, "uplink");
  addr(lab.cont_a, "eth0", std::string(kOvlA) + "/24");
  addr(lab.cont_b, "eth0", std::string(kOvlB) + "/24");
  for (NetNs* ns : {&lab.cont_a, &lab.cont_b}) {
    sysctl(*ns, "net.ipv6.conf.eth0.disable_ipv6", "1");
    ns->check("ip link set eth0 mtu 1450 && ethtool -K eth0 tx off tso off gso off");
  }
  for (NetNs* ns : {&lab.node_a, &lab.node_b}) {
    sysctl(*ns, "net.ipv6.conf.c0.disable_ipv6", "1");
    sysctl(*ns, "net.ipv6.conf.uplink.disable_ipv6", "1");
    ns->check("ethtool -K c0 gro off; ethtool -K uplink gro off tx off tso off gso off");
    wait_link_running(*ns, "c0");
    wait_link_running(*ns, "uplink");
  }
  auto uplink_mac = [](const NetNs& ns) {
    std::string mac = ns.check("cat /sys/class/net/uplink/address").out;
    return trim(mac);
  };
  const std::string mac_a = uplink_mac(lab.node_a);
  const std::string mac_b = uplink_mac(lab.node_b);

  OverlayAgent a{"node-a", &lab.node_a, lab.dir / "a"};
  OverlayAgent b{"node-b", &lab.node_b, lab.dir / "b"};
  struct Setup {
    OverlayAgent* agent;
    std::string inventory;
    std::string config;
  };
  const Setup setups[] = {
      {&a, overlay_inventory("node-a", "10.80.0.126", "a-1", "a", kOvlA),
       overlay_agent_config("10.80.0.0/25", "192.168.77.1", "192.168.77.2", mac_b)},
      {&b, overlay_inventory("node-b", "10.80.0.254", "b-1", "b", kOvlB),
       overlay_agent_config("10.80.0.128/25", "192.168.77.2", "192.168.77.1", mac_a)},
  };
  for (const Setup& s : setups) {
    OverlayAgent& agent = *s.agent;
    fs::create_directories(agent.dir / "policy");
    replace_file(agent.dir / "policy" / "policy.yaml", kOverlayPolicy);
    replace_file(agent.dir / "inventory.yaml", s.inventory);
    replace_file(agent.dir / "agent.yaml", s.config);
    agent.metrics_port = free_loopback_port();
    ASSERT_NE(agent.metrics_port, 0);
    agent.pid = agent.ns->spawn(
        "exec " + kTierwalld + " --config " + (agent.dir / "agent.yaml").string() + " --policy " +
            (agent.dir / "policy").string() + " --inventory " +
            (agent.dir / "inventory.yaml").string() + " --node-name " + agent.name +
            " --flow-log " + (agent.dir / "flows").string() + " --flow-log-key " +
            (agent.dir / "flowlog.key").string() +
            " --api-socket '' --metrics 127.0.0.1:" + std::to_string(agent.metrics_port),
        (agent.dir / "tierwalld.log").string());
  }
  for (const OverlayAgent* agent : {&a, &b}) {
    ASSERT_TRUE(wait_until([&] { return agent->ready(); }, Millis{10000})) << agent->name << ":\n"
                                                                           << agent->log();
    EXPECT_NE(agent->log().find("DPDK overlay uplink uplink: VXLAN-GBP VNI 4242"),
              std::string::npos)
        << agent->log();
  }
  auto both = [&] {
    return "node A:\n" + a.metrics() + "\nnode B:\n" + b.metrics() + "\nlogs:\n" + a.log() +
           b.log();
  };

  TcpServer b8080(lab.cont_b, kOvlB, 8080);
  TcpServer b9090(lab.cont_b, kOvlB, 9090);
  TcpServer b7070(lab.cont_b, kOvlB, 7070);
  UdpEchoServer b5353(lab.cont_b, kOvlB, 5353);
  TcpServer a8081(lab.cont_a, kOvlA, 8081);
  TcpServer a8080(lab.cont_a, kOvlA, 8080);

  // A -> B: let out by A (a-out), decided by the tag on B (a-to-b).
  EXPECT_EQ(ping_probe(lab.cont_a, kOvlB, kPass), Outcome::kOk) << both();
  EXPECT_EQ(tcp_probe(lab.cont_a, kOvlB, 8080, kPass), Outcome::kOk) << both();
  EXPECT_EQ(udp_probe(lab.cont_a, kOvlB, 5353, kPass), Outcome::kOk) << both();
  // tcp/9090: A lets it out, B's policy has no a -> b tcp/9090.
  const double b_dropped = b.metric("tierwall_dpdk_policy_dropped_total");
  EXPECT_EQ(tcp_probe(lab.cont_a, kOvlB, 9090, kDrop), Outcome::kTimeout);
  EXPECT_GE(b.metric("tierwall_dpdk_policy_dropped_total") - b_dropped, 1) << both();
  // tcp/7070: no rule on A, the sender drops it.
  const double a_dropped = a.metric("tierwall_dpdk_policy_dropped_total");
  EXPECT_EQ(tcp_probe(lab.cont_a, kOvlB, 7070, kDrop), Outcome::kTimeout);
  EXPECT_GE(a.metric("tierwall_dpdk_policy_dropped_total") - a_dropped, 1) << both();
  // B -> A: tcp/8081 decided by the tag on A (b-to-a); tcp/8080 and ping
  // have no b-out flow.
  EXPECT_EQ(tcp_probe(lab.cont_b, kOvlA, 8081, kPass), Outcome::kOk) << both();
  EXPECT_EQ(tcp_probe(lab.cont_b, kOvlA, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.cont_b, kOvlA, kDrop), Outcome::kTimeout);
  EXPECT_GE(b8080.accepted(), 1U);
  EXPECT_GE(b5353.received(), 1U);
  EXPECT_GE(a8081.accepted(), 1U);
  EXPECT_EQ(b9090.accepted(), 0U);
  EXPECT_EQ(b7070.accepted(), 0U);
  EXPECT_EQ(a8080.accepted(), 0U);

  // The receivers decided by the tag: ping, tcp/8080, udp/5353 and tcp/9090
  // on B, tcp/8081 on A; everything crossed the uplinks encapsulated.
  const std::string mb = b.metrics();
  const std::string ma = a.metrics();
  EXPECT_GE(metric_value(mb, "tierwall_dpdk_overlay_by_tag_total").value_or(-1), 4) << mb;
  EXPECT_GE(metric_value(ma, "tierwall_dpdk_overlay_by_tag_total").value_or(-1), 1) << ma;
  for (const std::string* m : {&ma, &mb}) {
    EXPECT_GT(metric_value(*m, "tierwall_dpdk_overlay_decapsulated_total").value_or(-1), 0) << *m;
    EXPECT_GT(metric_value(*m, "tierwall_dpdk_overlay_encapsulated_total").value_or(-1), 0) << *m;
    EXPECT_EQ(metric_value(*m, "tierwall_dpdk_overlay_encap_failed_total").value_or(-1), 0) << *m;
    for (const char* reason : {"not_vxlan", "wrong_destination", "untrusted_peer", "wrong_vni",
                               "unknown_tag", "spoofed"}) {
      EXPECT_EQ(metric_value(*m, std::string("tierwall_dpdk_overlay_refused_total{reason=\"") +
                                     reason + "\"}")
                    .value_or(-1),
                0)
          << reason << "\n"
          << *m;
    }
    EXPECT_EQ(metric_value(*m, "tierwall_dpdk_malformed_total").value_or(-1), 0) << *m;
    EXPECT_EQ(metric_value(*m, "tierwall_dpdk_events_lost_packets_total").value_or(-1), 0) << *m;
  }

  // Frames forged onto the underlay (from node A's end of the uplink, so
  // that they reach node B): an untrusted outer source and another VNI are
  // refused by B and counted per reason in its /metrics.
  {
    using namespace tierwall::dataplane::dpdk;
    RawSocket inject(lab.node_a, "uplink");
    RawSocket::Frame inner(60, 0);  // a non-IP inner frame (local experimental ethertype)
    std::fill_n(inner.begin(), 6, 0xff);
    inner[6] = 0x02;
    inner[11] = 0x01;
    inner[12] = 0x88;
    inner[13] = 0xb5;
    VxlanGbpParams forged;
    ASSERT_TRUE(parse_mac(mac_b, forged.dst_mac));
    ASSERT_TRUE(parse_mac(mac_a, forged.src_mac));
    forged.src_ip = *tierwall::IpAddress::parse("192.168.77.66");
    forged.dst_ip = *tierwall::IpAddress::parse("192.168.77.2");
    forged.vni = 4242;
    VxlanGbpParams other_vni = forged;
    other_vni.src_ip = *tierwall::IpAddress::parse("192.168.77.1");  // the trusted peer
    other_vni.vni = 4243;
    auto encap = [&](const VxlanGbpParams& p) {
      RawSocket::Frame out(inner.size() + vxlan_overhead(p));
      EXPECT_EQ(encap_vxlan_gbp(out, inner, p), out.size());
      return out;
    };
    for (int i = 0; i < 3; ++i) {
      inject.send(encap(forged));
      inject.send(encap(other_vni));
    }
    const auto refused = [&](const char* reason) {
      return b.metric(std::string("tierwall_dpdk_overlay_refused_total{reason=\"") + reason +
                      "\"}");
    };
    EXPECT_TRUE(wait_until(
        [&] { return refused("untrusted_peer") == 3 && refused("wrong_vni") == 3; }, Millis{3000}))
        << b.metrics();
  }

  auto summary = [](const std::string& m) {
    std::string line;
    for (const char* k :
         {"rx_frames_total", "ip_allowed_total", "policy_dropped_total",
          "overlay_decapsulated_total", "overlay_encapsulated_total", "overlay_by_tag_total"}) {
      line += std::string(k) + "=" +
              std::to_string(static_cast<long long>(
                  metric_value(m, std::string("tierwall_dpdk_") + k).value_or(-1))) +
              " ";
    }
    return line;
  };
  std::printf("node A: %s\nnode B: %s\n", summary(ma).c_str(), summary(mb).c_str());

  lab.node_a.stop(a.pid, Millis{10000});
  lab.node_b.stop(b.pid, Millis{10000});
  for (const OverlayAgent* agent : {&a, &b}) {
    const std::string log = agent->log();
    EXPECT_NE(log.find("flow log closed"), std::string::npos) << log;
    EXPECT_EQ(log.find("Sanitizer"), std::string::npos) << log;
    EXPECT_EQ(log.find("runtime error"), std::string::npos) << log;
  }

  // The flow logs: every flow record says dpdk; the sender's and the
  // receiver's decisions name their rules. The receiver does not know the
  // remote container: its records name only the local endpoint.
  const auto records_a = flow_records(a.dir / "flows");
  const auto records_b = flow_records(b.dir / "flows");
  for (const auto* records : {&records_a, &records_b}) {
    ASSERT_FALSE(records->empty());
    for (const auto& r : *records) {
      if (r.value("type", "") == "flow") {
        EXPECT_EQ(r.value("dataplane", ""), "dpdk") << r.dump();
      }
      EXPECT_NE(r.value("type", ""), "loss") << r.dump();
    }
  }
  auto decided = [](const std::vector<json>& records, const std::string& local_side,
                    const std::string& local_name, const std::string& proto, int port,
                    const std::string& verdict, const std::string& rule) {
    for (const auto& r : records) {
      if (r.value("type", "") != "flow" || r.value("event", "") != "start") continue;
      if (r[local_side].value("name", "") != local_name || r.value("proto", "") != proto) continue;
      const int p = proto == "icmp" ? r["dst"].value("icmpType", -1) : r["dst"].value("port", -1);
      if (p == port && r.value("verdict", "") == verdict && r["rule"].value("name", "") == rule) {
        return true;
      }
    }
    return false;
  };
  // Node B (receiver of A's connections): by the tag, rule a-to-b.
  EXPECT_TRUE(decided(records_b, "dst", "b-1", "tcp", 8080, "allow", "a-to-b"));
  EXPECT_TRUE(decided(records_b, "dst", "b-1", "udp", 5353, "allow", "a-to-b"));
  EXPECT_TRUE(decided(records_b, "dst", "b-1", "icmp", 8, "allow", "a-to-b"));
  EXPECT_TRUE(decided(records_b, "dst", "b-1", "tcp", 9090, "deny", ""));
  // Node A (sender): let out by a-out, tcp/7070 denied; tcp/8081 from B's
  // container allowed by the tag (b-to-a).
  EXPECT_TRUE(decided(records_a, "src", "a-1", "tcp", 9090, "allow", "a-out"));
  EXPECT_TRUE(decided(records_a, "src", "a-1", "tcp", 7070, "deny", ""));
  EXPECT_TRUE(decided(records_a, "dst", "a-1", "tcp", 8081, "allow", "b-to-a"));
  if (HasFailure()) std::cerr << both();
}

// Bad DPDK settings stop the agent at start with exit 3 and a reason.
TEST_F(TierwalldDpdk, UnusablePortIsReportedAtStart) {
  Lab lab;
  replace_file(lab.dir / "policy.yaml", policy(true));
  replace_file(lab.dir / "agent.yaml", R"(dataplane: dpdk
dpdk:
  ports: [{devargs: "net_af_packet0,iface=no-such-if"}]
)");
  const auto r =
      lab.node.run("exec " + kTierwalld + " --config " + (lab.dir / "agent.yaml").string() +
                       " --policy " + (lab.dir / "policy.yaml").string() + " --api-socket '' 2>&1",
                   Millis{20000});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("DPDK dataplane not started"), std::string::npos)
      << r.out << r.err;
}

// A bad overlay uplink is refused with its location before anything starts
// (exit 1, as any invalid configuration); an uplink on a missing interface
// stops the agent at start like any unusable port (exit 3).
TEST_F(TierwalldDpdk, BadOverlayUplinkIsRefused) {
  Lab lab;
  replace_file(lab.dir / "policy.yaml", policy(true));
  const std::string run = "exec " + kTierwalld + " --config " + (lab.dir / "agent.yaml").string() +
                          " --policy " + (lab.dir / "policy.yaml").string() +
                          " --api-socket '' 2>&1";
  replace_file(lab.dir / "agent.yaml", R"(dataplane: dpdk
dpdk:
  ports:
    - {devargs: "net_af_packet0,iface=c0"}
    - devargs: "net_af_packet1,iface=uplink"
      overlay: {localVtep: 192.168.77.1, vni: 1, peers: [{vtep: "fd00::2", mac: "02:00:00:00:00:02"}]}
)");
  const auto bad = lab.node.run(run, Millis{20000});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE((bad.out + bad.err)
                .find("agent.yaml:6:65: error: overlay peer fd00::2 is IPv6 but localVtep "
                      "192.168.77.1 is IPv4"),
            std::string::npos)
      << bad.out << bad.err;

  replace_file(lab.dir / "agent.yaml", R"(dataplane: dpdk
dpdk:
  ports:
    - {devargs: "net_null0"}
    - devargs: "net_af_packet1,iface=no-such-uplink"
      overlay: {localVtep: 192.168.77.1, vni: 1, peers: [{vtep: 192.168.77.2, mac: "02:00:00:00:00:02"}]}
)");
  const auto missing = lab.node.run(run, Millis{20000});
  EXPECT_EQ(missing.exit_code, 3) << missing.out << missing.err;
  EXPECT_NE((missing.out + missing.err).find("DPDK dataplane not started"), std::string::npos)
      << missing.out << missing.err;
}

}  // namespace
