// Several nodes on one machine, one cluster: three "nodes" as network
// namespaces, each running its own tierwalld (inside its namespace, so each
// agent programs only its own namespace's nftables), with "containers"
// (namespaces behind a bridge of the node, routed between nodes), and a
// three-member etcd cluster in a hub namespace the nodes reach over veths:
//
//   hub: bridge "hub" 198.18.0.1/24, etcd m0..m2 on 198.18.0.1
//    ├── node-0 up0 198.18.0.10  cbr 10.88.0.1/24  web-0 .10, db-0 .11
//    ├── node-1 up0 198.18.0.11  cbr 10.88.1.1/24  web-1 .10, api-1 .11 (+ api-1b .12 later)
//    └── node-2 up0 198.18.0.12  cbr 10.88.2.1/24  db-2 .10, api-2 .11
//
// Addresses are from the benchmarking range 198.18.0.0/15 and private
// container networks, all inside namespaces the test makes; the root
// namespace is not touched. What it checks:
//   - a policy published with `tierctl apply --store` is enforced on every
//     node, and every cross-node connection is allowed or denied exactly as
//     the reference evaluator says (both nodes' tier sets hold both ends);
//   - policy updates reach every node (publish -> applied, p50/p99 printed);
//   - a killed etcd member leaves everything working, and so does a frozen
//     one (the member the agents' watches are on stops answering);
//   - the whole etcd cluster stopped: enforcement intact, every agent says
//     disconnected; a new endpoint on one node while etcd is down reaches
//     the others after etcd returns;
//   - an agent killed with SIGKILL: its endpoints expire on the other nodes
//     after its lease TTL;
//   - an agent as its own restricted etcd user over mutual TLS (second test).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/cluster_lab.h"
#include "tierwall/testsupport/etcd_cluster.h"
#include "tierwall/testsupport/netns.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tierwall::testsupport::EtcdCluster;
using tierwall::testsupport::EtcdClusterOptions;
using tierwall::testsupport::Millis;
using tierwall::testsupport::NetNs;
using tierwall::testsupport::Outcome;
using tierwall::testsupport::TcpServer;
using Container = tierwall::testsupport::ClusterContainer;
using Node = tierwall::testsupport::ClusterNode;
using Clock = std::chrono::steady_clock;

const std::string kTierwalld = TIERWALLD_BINARY;
const std::string kTierctl = TIERCTL_BINARY;
constexpr int kLeaseTtl = 3;  // seconds
constexpr std::uint16_t kApiPort = tierwall::testsupport::kClusterApiPort;
constexpr std::uint16_t kDbPort = tierwall::testsupport::kClusterDbPort;

// web -> api on 8080, api -> db on 5432; `extra` adds flows (policy updates).
std::string policy_text(const std::string& extra = {}) {
  return tierwall::testsupport::cluster_policy_text("cluster-test", extra);
}
const std::string kWebToDb =
    "    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432]}\n";

bool wait_until(const std::function<bool()>& pred, Millis timeout, Millis step = Millis{50}) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

void write_file(const fs::path& path, const std::string& text) {
  tierwall::testsupport::write_file_atomic(path, text);
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The three nodes of these tests and their six containers.
class ClusterLab : public tierwall::testsupport::ClusterLab {
 public:
  explicit ClusterLab(const fs::path& dir, bool overlay = false)
      : tierwall::testsupport::ClusterLab({dir, kTierwalld, kTierctl, 3, kLeaseTtl, overlay}) {}

  void build() {
    tierwall::testsupport::ClusterLab::build();
    add_container(*nodes[0], "web-0", "web");
    add_container(*nodes[0], "db-0", "db");
    add_container(*nodes[1], "web-1", "web");
    add_container(*nodes[1], "api-1", "api");
    add_container(*nodes[2], "db-2", "db");
    add_container(*nodes[2], "api-2", "api");
  }

  // As the library's, with tierctl's failure reported to the test.
  [[nodiscard]] json publish(const std::string& text, const std::string& store = {}) const {
    json r = tierwall::testsupport::ClusterLab::publish(text, store);
    EXPECT_FALSE(r.contains("error")) << r.value("error", "");
    return r;
  }
};

// The reference evaluator over every container of the cluster.
class Reference {
 public:
  Reference(const std::string& text, const std::vector<const Container*>& containers) {
    tierwall::policy::Diagnostics diags;
    auto policy = tierwall::policy::parse_policy(text, "policy.yaml", diags);
    if (!policy) throw std::runtime_error("reference policy does not load");
    compilation_ = std::make_unique<tierwall::compiler::Compilation>(*policy, 1);
    tierwall::identity::Inventory inv;
    for (const auto* c : containers) {
      tierwall::identity::Endpoint ep;
      ep.name = c->name;
      ep.labels.set("role", c->role);
      ep.addresses.push_back(*tierwall::IpAddress::parse(c->v4));
      inv.endpoints.push_back(std::move(ep));
    }
    rules_ = tierwall::dataplane::RuleSet{
        compilation_->policy(),
        compilation_->bind_all(inv, {*tierwall::Cidr::parse("10.88.0.0/16")})};
  }
  [[nodiscard]] bool allows(const Container& from, const Container& to, std::uint16_t port) const {
    tierwall::dataplane::Connection c;
    c.src = *tierwall::IpAddress::parse(from.v4);
    c.dst = *tierwall::IpAddress::parse(to.v4);
    c.protocol = 6;
    c.port = port;
    return tierwall::dataplane::decide(rules_, c).verdict != tierwall::dataplane::Verdict::Deny;
  }

 private:
  std::unique_ptr<tierwall::compiler::Compilation> compilation_;
  tierwall::dataplane::RuleSet rules_;
};

// Every cross-node pair on both ports, against the reference. Returns the
// number of connections checked.
int check_matrix(const ClusterLab& lab, const std::string& policy, const std::string& when) {
  const auto containers = lab.all_containers();
  const Reference ref(policy, containers);
  int checked = 0;
  for (const auto& a : lab.nodes) {
    for (const auto& b : lab.nodes) {
      if (a.get() == b.get()) continue;
      for (const auto& from : a->containers) {
        for (const auto& to : b->containers) {
          for (const std::uint16_t port : {kApiPort, kDbPort}) {
            const bool allowed = ref.allows(from, to, port);
            const auto got = tierwall::testsupport::tcp_probe(from.ns, to.v4, port,
                                                              allowed ? Millis{3000} : Millis{300});
            EXPECT_EQ(got == Outcome::kOk, allowed)
                << when << ": " << from.name << " (" << a->name << ") -> " << to.name << " ("
                << b->name << ") tcp/" << port << ": reference says "
                << (allowed ? "allow" : "deny") << ", got " << got;
            ++checked;
          }
        }
      }
    }
  }
  return checked;
}

std::optional<std::chrono::system_clock::time_point> applied_at(const Node& n,
                                                                const std::string& digest) {
  return ClusterLab::applied_at(n, digest);
}

bool knows_everything(const ClusterLab& lab, const Node& n) { return lab.knows_everything(n); }

// Publishes `policy`, sets `digest`, and waits until every node applied it
// and knows every container (use under ASSERT_NO_FATAL_FAILURE).
void publish_and_converge(ClusterLab& lab, const std::string& policy, std::string& digest) {
  const json published = lab.publish(policy);
  digest = published.value("digest", "");
  ASSERT_FALSE(digest.empty()) << published.dump();
  for (auto& n : lab.nodes) {
    ASSERT_TRUE(wait_until([&] { return applied_at(*n, digest).has_value(); }, Millis{15'000}))
        << n->name << " did not apply the published policy";
    ASSERT_TRUE(wait_until([&] { return knows_everything(lab, *n); }, Millis{10'000}))
        << n->name << "'s tier sets lack a remote endpoint:\n"
        << lab.nft_table(*n);
  }
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

class ClusterAgents : public ::testing::Test {
 protected:
  void SetUp() override {
    std::optional<std::string> why = tierwall::testsupport::netns_unavailable_reason();
    if (!why) why = EtcdCluster::unavailable_reason();
    if (why) {
      if (std::getenv("CI") != nullptr) FAIL() << "CI must run this test: " << *why;
      GTEST_SKIP() << *why;
    }
    char tmpl[] = "/tmp/tw-cluster-agents-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) {
      if (HasFailure()) {
        for (const char* n : {"node-0", "node-1", "node-2"}) {
          std::cerr << "--- " << n << " agent log (tail)\n";
          const auto log = read_file(dir_ / n / "agent.log");
          std::cerr << log.substr(log.size() > 6000 ? log.size() - 6000 : 0) << "\n";
        }
      }
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  fs::path dir_;
};

TEST_F(ClusterAgents, ThreeNodesFollowOneClusterThroughEtcdFailures) {
  ClusterLab lab(dir_);
  ASSERT_NO_THROW(lab.build());
  ASSERT_NO_THROW(lab.start_etcd());
  for (auto& n : lab.nodes) lab.start_agent(*n);

  // 1. The first publish reaches every node; each knows all six containers.
  std::string policy = policy_text();
  std::string digest;
  ASSERT_NO_FATAL_FAILURE(publish_and_converge(lab, policy, digest));
  for (auto& n : lab.nodes) {
    const json st = lab.status(*n);
    EXPECT_TRUE(st["cluster"].value("connected", false)) << st.dump();
    EXPECT_EQ(st["cluster"].value("remoteEndpoints", 0), 4) << st.dump();
    EXPECT_EQ(st["policy"].value("digest", ""), digest);
  }
  const int checked = check_matrix(lab, policy, "policy v1");
  std::cout << "policy v1: " << checked << " cross-node connections match the reference\n";

  // 2. Updates reach every node: publish -> applied, per node.
  std::vector<double> latencies_ms;
  for (int round = 0; round < 8; ++round) {
    const std::string text =
        policy_text("    - {name: round, from: {tier: web}, to: {tier: api}, ports: [tcp/" +
                    std::to_string(9000 + round) + "]}\n");
    const auto t0 = std::chrono::system_clock::now();
    const std::string d = lab.publish(text).value("digest", "");
    ASSERT_FALSE(d.empty());
    for (auto& n : lab.nodes) {
      std::optional<std::chrono::system_clock::time_point> at;
      ASSERT_TRUE(wait_until([&] { return (at = applied_at(*n, d)).has_value(); }, Millis{10'000},
                             Millis{10}))
          << n->name << " did not apply update " << round;
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(*at - t0).count());
    }
  }
  std::cout << "publish -> enforced on each node (tierctl apply --store start to the agent's "
               "policy-applied log line; "
            << latencies_ms.size() << " samples): p50 " << percentile(latencies_ms, 0.5)
            << " ms, p99 " << percentile(latencies_ms, 0.99) << " ms, max "
            << percentile(latencies_ms, 1.0) << " ms\n";

  // An update that changes verdicts: web may now reach db on 5432.
  policy = policy_text(kWebToDb);
  const std::string d2 = lab.publish(policy).value("digest", "");
  for (auto& n : lab.nodes) {
    ASSERT_TRUE(wait_until([&] { return applied_at(*n, d2).has_value(); }, Millis{10'000}));
  }
  check_matrix(lab, policy, "policy v2 (web-to-db)");

  // 3. One etcd member killed: publishing and following go on.
  lab.etcd->kill(0);
  policy = policy_text();
  const std::string d3 = lab.publish(policy).value("digest", "");
  ASSERT_FALSE(d3.empty());
  for (auto& n : lab.nodes) {
    EXPECT_TRUE(wait_until([&] { return applied_at(*n, d3).has_value(); }, Millis{15'000}))
        << n->name << " did not follow a publish with member 0 down";
    EXPECT_TRUE(wait_until([&] { return lab.status(*n)["cluster"].value("connected", false); },
                           Millis{15'000}))
        << n->name << " not connected with two members of three";
  }
  // web -> db is denied again on every node.
  EXPECT_NE(tierwall::testsupport::tcp_probe(lab.nodes[0]->containers[0].ns, "10.88.2.10", kDbPort,
                                             Millis{300}),
            Outcome::kOk);
  ASSERT_NO_THROW(lab.etcd->restart(0));

  // 3b. The member node-0's watches are on stops answering (frozen: its
  // connections stay open, nothing arrives). A publish through the other
  // two reaches every node all the same.
  const std::string watched = lab.status(*lab.nodes[0])["cluster"]["watching"].value("policy", "");
  const auto urls = lab.etcd->client_urls();
  const auto frozen_it = std::find(urls.begin(), urls.end(), watched);
  ASSERT_NE(frozen_it, urls.end()) << "node-0 watches " << watched;
  const int frozen = static_cast<int>(frozen_it - urls.begin());
  std::string others;
  for (const auto& u : urls) {
    if (u != watched) others += (others.empty() ? "" : ",") + u;
  }
  lab.etcd->pause(frozen);
  // Every publish below is new (a digest seen before would find its old
  // policy-applied line).
  policy = policy_text(
      kWebToDb + "    - {name: frozen, from: {tier: web}, to: {tier: api}, ports: [tcp/7001]}\n");
  const auto frozen_t0 = Clock::now();
  const std::string d4 = lab.publish(policy, others).value("digest", "");
  ASSERT_FALSE(d4.empty());
  for (auto& n : lab.nodes) {
    EXPECT_TRUE(wait_until([&] { return applied_at(*n, d4).has_value(); }, Millis{30'000}))
        << n->name << " did not follow a publish with the member it watched frozen";
  }
  std::cout
      << "member " << frozen << " frozen under node-0's watches: the publish reached every "
      << "node within "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - frozen_t0).count()
      << " ms\n";
  EXPECT_GE(lab.status(*lab.nodes[0])["cluster"].value("unresponsiveWatches", 0), 1);
  lab.etcd->resume(frozen);
  policy =
      policy_text("    - {name: thawed, from: {tier: web}, to: {tier: api}, ports: [tcp/7002]}\n");
  const std::string d5 = lab.publish(policy).value("digest", "");
  for (auto& n : lab.nodes) {
    ASSERT_TRUE(wait_until([&] { return applied_at(*n, d5).has_value(); }, Millis{15'000}));
  }

  // 4. The whole etcd cluster down: enforcement intact, status says so.
  for (int i = 0; i < 3; ++i) lab.etcd->kill(i);
  for (auto& n : lab.nodes) {
    EXPECT_TRUE(wait_until(
        [&] {
          const json st = lab.status(*n);
          return st.contains("cluster") && !st["cluster"].value("connected", true);
        },
        Millis{15'000}))
        << n->name << " does not report the store as disconnected";
    const json st = lab.status(*n);
    EXPECT_FALSE(st["cluster"].value("lastError", "").empty()) << st.dump();
    EXPECT_EQ(st["cluster"].value("remoteEndpoints", 0), 4) << "remote endpoints were dropped";
    EXPECT_EQ(st["policy"].value("digest", ""), d5);
  }
  check_matrix(lab, policy, "etcd down");
  // A new container on node-1 while etcd is down.
  Container& late = lab.add_container(*lab.nodes[1], "api-1b", "api");
  lab.write_inventory(*lab.nodes[1]);
  ASSERT_TRUE(
      wait_until([&] { return lab.nft_table(*lab.nodes[1]).find(late.v4) != std::string::npos; },
                 Millis{10'000}));
  ASSERT_NO_THROW(lab.etcd->restart_all());
  const auto back = Clock::now();
  for (auto& n : lab.nodes) {
    EXPECT_TRUE(wait_until([&] { return knows_everything(lab, *n); }, Millis{20'000}))
        << n->name << " did not learn " << late.name << " after etcd returned";
    EXPECT_TRUE(wait_until([&] { return lab.status(*n)["cluster"].value("connected", false); },
                           Millis{15'000}));
  }
  std::cout << "after etcd returned, every node knew the endpoint added meanwhile within "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - back).count()
            << " ms\n";
  // web-0 (node-0) -> api-1b (node-1) on 8080: allowed on both sides.
  EXPECT_EQ(tierwall::testsupport::tcp_probe(lab.nodes[0]->containers[0].ns, late.v4, kApiPort,
                                             Millis{3000}),
            Outcome::kOk);
  check_matrix(lab, policy, "after etcd returned");

  // 5. node-2's agent dies: its endpoints expire elsewhere after the lease.
  Node& dead = *lab.nodes[2];
  ::kill(dead.agent, SIGKILL);
  const auto killed = Clock::now();
  for (int i = 0; i < 2; ++i) {
    Node& n = *lab.nodes[static_cast<std::size_t>(i)];
    EXPECT_TRUE(wait_until(
        [&] {
          const std::string t = lab.nft_table(n);
          return t.find(dead.containers[0].v4) == std::string::npos &&
                 t.find(dead.containers[1].v4) == std::string::npos;
        },
        Millis{(kLeaseTtl + 10) * 1000}))
        << n.name << " still holds " << dead.name << "'s endpoints";
  }
  const auto expired_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  std::cout << dead.name << "'s endpoints expired on the other nodes " << expired_ms
            << " ms after its agent was killed (lease TTL " << kLeaseTtl << " s)\n";
  EXPECT_GE(expired_ms, 1000) << "expired before the lease could have";
  // api-1 (node-1) -> db-2 (node-2) on 5432 was allowed; node-1 now
  // quarantines the unknown address and denies it.
  EXPECT_NE(tierwall::testsupport::tcp_probe(lab.nodes[1]->containers[1].ns, "10.88.2.10", kDbPort,
                                             Millis{300}),
            Outcome::kOk);
  lab.nodes[2]->ns.stop(dead.agent);
  dead.agent = -1;
}

// One agent as its own etcd user (role tierwall-node-node-a, made by
// `tierctl store add-node`) over mutual TLS: everything it does (lists,
// watches, its lease, its own keys, the watchdog's probe) is within the
// role, and it follows the policy an author publishes.
// The tier on the wire across the etcd-coordinated cluster: the nodes'
// containers reach each other over kernel VXLAN-GBP devices, the agents tag
// what leaves through them with the source tier and check it on arrival
// (nft.overlay, docs/nftables.md "Overlay"). Every cross-node connection
// still matches the reference evaluator, the traffic really crossed the
// overlay, and no node saw a tag that disagrees with the address it came
// from (the spoof counter stays 0) while VXLAN from the peers was trusted.
TEST_F(ClusterAgents, OverlayCarriesTheTierAcrossTheCluster) {
  ClusterLab lab(dir_, /*overlay=*/true);
  ASSERT_NO_THROW(lab.build());
  ASSERT_NO_THROW(lab.start_etcd());
  for (auto& n : lab.nodes) lab.start_agent(*n);

  const std::string policy = policy_text();
  std::string digest;
  ASSERT_NO_FATAL_FAILURE(publish_and_converge(lab, policy, digest));
  for (auto& n : lab.nodes) {
    const std::string table = lab.nft_table(*n);
    EXPECT_NE(table.find(tierwall::testsupport::kClusterOverlayDevice), std::string::npos)
        << n->name << " has no overlay in its ruleset:\n"
        << table;
  }
  auto rx_packets = [&](const Node& n) {
    const auto out =
        n.ns.run("cat /sys/class/net/" + std::string(tierwall::testsupport::kClusterOverlayDevice) +
                 "/statistics/rx_packets")
            .out;
    return std::strtoull(out.c_str(), nullptr, 10);
  };
  std::vector<unsigned long long> before;
  for (auto& n : lab.nodes) before.push_back(rx_packets(*n));

  const int checked = check_matrix(lab, policy, "over the overlay");
  std::cout << "overlay: " << checked << " cross-node connections match the reference\n";

  for (std::size_t i = 0; i < lab.nodes.size(); ++i) {
    const Node& n = *lab.nodes[i];
    EXPECT_GT(rx_packets(n), before[i]) << n.name << " received nothing over the overlay";
    // Named counters of tierwall's table: tags that disagreed with a known
    // address, tags naming no tier, VXLAN from outside the peers.
    for (const char* counter : {"ovl_spoof", "ovl_badtag", "ovl_untrusted"}) {
      const auto out = n.ns.run(std::string("nft list counter inet tierwall ") + counter).out;
      EXPECT_NE(out.find("packets 0 "), std::string::npos) << n.name << " " << counter << ":\n"
                                                           << out;
    }
  }
}

TEST_F(ClusterAgents, AgentAsRestrictedNodeUserOverMutualTls) {
  NetNs node("node-a");
  EtcdClusterOptions eo;
  eo.tls = true;
  eo.client_cert_auth = true;
  eo.netns = node.name();
  std::unique_ptr<EtcdCluster> etcd;
  ASSERT_NO_THROW(etcd = std::make_unique<EtcdCluster>(eo));
  const std::string tls = " --store-ca " + etcd->ca_file() + " --store-cert " +
                          etcd->client_cert() + " --store-key " + etcd->client_key();
  write_file(dir_ / "root.pw", "root-secret\n");
  write_file(dir_ / "alice.pw", "alice-secret\n");
  write_file(dir_ / "node.pw", "node-secret\n");
  auto r = node.run(kTierctl + " store init-auth --store " + etcd->endpoints() + tls +
                    " --root-password-file " + (dir_ / "root.pw").string() +
                    " --author-user alice --author-password-file " + (dir_ / "alice.pw").string());
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  r = node.run(kTierctl + " store add-node node-a --password-file " + (dir_ / "node.pw").string() +
               " --store " + etcd->endpoints() + tls + " --store-user root --store-password-file " +
               (dir_ / "root.pw").string());
  ASSERT_TRUE(r.ok()) << r.out << r.err;

  using namespace tierwall::testsupport;
  bridge(node, "cbr");
  addr(node, "cbr", "10.88.0.1/24");
  write_file(dir_ / "inventory.yaml",
             "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: node-a}\nendpoints:\n"
             "  - {name: web-0, labels: {role: web}, addresses: [10.88.0.10]}\n");
  write_file(dir_ / "agent.yaml",
             "node: {name: node-a}\ncontainerCidrs: [10.88.0.0/16]\ninventory: inventory.yaml\n"
             "api: {socket: " +
                 (dir_ / "api.sock").string() +
                 "}\n"
                 "cluster:\n  store: [" +
                 etcd->endpoints() +
                 "]\n  user: tierwall-node-node-a\n  passwordFile: node.pw\n"
                 "  ca: " +
                 etcd->ca_file() + "\n  cert: " + etcd->client_cert() +
                 "\n  key: " + etcd->client_key() + "\n  leaseTtl: 5\n");
  fs::create_directories(dir_ / "node-0");  // TearDown prints node-0/agent.log on failure
  const pid_t agent = node.spawn(
      "exec " + kTierwalld + " --config " + (dir_ / "agent.yaml").string() + " --log-format json",
      (dir_ / "node-0" / "agent.log").string());
  fs::create_directories(dir_ / "policy");
  write_file(dir_ / "policy" / "policy.yaml", policy_text());
  r = node.run(kTierctl + " apply " + (dir_ / "policy").string() + " --store " + etcd->endpoints() +
               tls + " --store-user alice --store-password-file " + (dir_ / "alice.pw").string() +
               " -o json");
  ASSERT_TRUE(r.ok()) << r.out << r.err;
  const std::string digest = json::parse(r.out).value("digest", "");

  auto status = [&] {
    auto s = run_argv({kTierctl, "status", "-o", "json", "--socket", (dir_ / "api.sock").string()},
                      Millis{5000});
    try {
      return s.ok() ? json::parse(s.out) : json::object();
    } catch (const std::exception&) {
      return json::object();
    }
  };
  EXPECT_TRUE(wait_until(
      [&] {
        const json st = status();
        return st.contains("cluster") && st["cluster"].value("connected", false) &&
               st["policy"].value("digest", "") == digest &&
               st["cluster"].value("publishedEndpoints", 0) == 1;
      },
      Millis{20'000}))
      << status().dump() << "\n"
      << read_file(dir_ / "node-0" / "agent.log");
  // Its endpoint is in etcd under its lease; another node's shows up here.
  const auto got =
      etcd->etcdctl({"get", "--prefix", "/tierwall/default/endpoints/node-a/"}, "root:root-secret");
  EXPECT_NE(got.out.find("web-0"), std::string::npos) << got.out << got.err;
  const auto put = etcd->etcdctl(
      {"put", "/tierwall/default/endpoints/node-b/db-1",
       R"({"id":"db-1","name":"db-1","labels":{"role":"db"},"addresses":["10.88.1.10"]})"},
      "root:root-secret");
  ASSERT_TRUE(put.ok()) << put.err;
  EXPECT_TRUE(wait_until(
      [&] {
        return node.run("nft list set inet tierwall ep4").out.find("10.88.1.10") !=
               std::string::npos;
      },
      Millis{10'000}))
      << node.run("nft list table inet tierwall").out;
  const json st = status();
  EXPECT_EQ(st["cluster"].value("errors", 1), 0) << st.dump();
  node.stop(agent);
}

}  // namespace
