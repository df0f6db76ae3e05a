// The nftables dataplane enforcing a hand-written policy on real traffic.
//
// A BridgeLab node (br0: c0 web, c1 api, c2 api/dev, c3 unknown; br1: d0 db;
// an uplink to a world namespace) runs NftBackend in its own namespace with
// br_netfilter on, so bridged, routed, local and forwarded traffic all meet
// the inet hooks. Real TCP (with an echo: replies pass, so the firewall is
// stateful), UDP and ICMP probes, IPv4 and IPv6, check every enforcement
// point: container<->container on one bridge and across bridges (forward),
// container->host (input), host->container (output), container<->world
// (forward); a guardrail deny, a staged deny, host flows, world flows with
// CIDRs, quarantine of unknown containers from their first packet,
// connection cutting on policy, tier and label changes, and the per-rule
// counters.
//
// Allowed means the probe's echo came back (Outcome::kOk). Denied means a
// silent drop: a timeout; from the node itself a drop in `output` may also
// surface at once as EPERM (Outcome::kUnreachable). An allowed probe that
// times out is retried once (scheduling hiccups on small CI machines); a
// denied expectation is never retried.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "tests/common/compile.h"
#include "tests/common/probes.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall {
namespace {

using dataplane::RuleId;
using dataplane::nft::NftBackend;
using testkit::diag_text;
using testsupport::BridgeLab;
using testsupport::BridgeLabOptions;
using testsupport::in_netns;
using testsupport::Millis;
using testsupport::NetNs;
using testsupport::Outcome;

constexpr Millis kPass{1500};       // first try of a probe that must pass
constexpr Millis kPassRetry{3000};  // its one retry
constexpr Millis kDrop{400};        // a probe that must be dropped
constexpr Millis kSession{1000};    // TcpSession connect / exchange

// Extra world addresses outside the `web-to-world` CIDRs.
constexpr const char* kFarWorldV4 = "203.0.113.5";
constexpr const char* kFarWorldV6 = "2001:db8:200::5";

// The policy under test. `extra` is appended to `flows` (to make a new
// generation that still allows what this one allows); `freeze` adds a
// guardrail that revokes api -> db tcp/5432.
std::string policy_yaml(bool freeze = false, bool extra = false) {
  std::string p = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: enforcement}
spec:
  tiers:
    - {name: web, level: 10}
    - {name: api, level: 20}
    - {name: db, level: 30}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: api, match: {labels: {role: api}}, tier: api}
    - {name: db, match: {labels: {role: db}}, tier: db}
  denies:
    - {name: dev-never-db, from: {labels: {env: dev}}, to: {tier: db}}
    - {name: no-host-ssh, from: {}, to: {host: true}, ports: [tcp/22]}
    - name: staged-api-db-ping
      from: {tier: api}
      to: {tier: db}
      ports: [icmp/echo-request, icmpv6/echo-request]
      audit: true
)";
  if (freeze) {
    p += "    - {name: freeze-db, from: {tier: api}, to: {tier: db}, ports: [tcp/5432]}\n";
  }
  p += R"(  flows:
    - name: web-to-api
      from: {tier: web}
      to: {tier: api}
      ports: [tcp/80, icmp/echo-request, icmpv6/echo-request]
    - name: api-to-db
      from: {tier: api}
      to: {tier: db}
      ports: [tcp/5432, udp/5000, icmp/echo-request, icmpv6/echo-request]
    - {name: dns, from: {tier: [web, api, db, quarantine]}, to: {host: true}, ports: [udp/53]}
    - {name: api-admin, from: {tier: api}, to: {host: true}, ports: [tcp/22, tcp/443]}
    - {name: bootstrap, from: {tier: quarantine}, to: {host: true}, ports: [tcp/8443]}
    - {name: health, from: {host: true}, to: {tier: [web, api]}, ports: [tcp/8080]}
    - {name: world-to-web, from: {world: [0.0.0.0/0, "::/0"]}, to: {tier: web}, ports: [tcp/443]}
    - name: web-to-world
      from: {tier: web}
      to: {world: [198.51.100.0/24, "2001:db8:100::/48"]}
      ports: [tcp/443]
)";
  if (extra)
    p += "    - {name: db-metrics, from: {tier: db}, to: {host: true}, ports: [tcp/9100]}\n";
  return p;
}

using Kind = testkit::ProbeKind;
using testkit::Probe;
using testkit::run_probe;
constexpr Probe tcp(std::uint16_t port) { return {Kind::kTcp, port}; }
constexpr Probe udp(std::uint16_t port) { return {Kind::kUdp, port}; }
constexpr Probe ping() { return {Kind::kPing, 0}; }

// One expected outcome.
struct Expect {
  const NetNs* from = nullptr;
  std::string dst;
  Probe probe;
  bool pass = false;
  std::string source = {};  // bind this source address (world aliases)
};

constexpr std::uint16_t kTcpPorts[] = {22, 80, 443, 5432, 8080, 8443, 9100};
constexpr std::uint16_t kUdpPorts[] = {53, 5000};

class NftEnforcement : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    lab_.emplace(
        BridgeLabOptions{.br0_containers = 4, .br1_containers = 1, .bridge_nf_call = true});
    BridgeLab& lab = *lab_;
    // World addresses outside 198.51.100.0/24 and 2001:db8:100::/48.
    testsupport::addr(lab.world, lab.world_ifname, std::string(kFarWorldV4) + "/24");
    testsupport::addr(lab.world, lab.world_ifname, std::string(kFarWorldV6) + "/64");
    testsupport::route(lab.node, "203.0.113.0/24 via " + lab.world_v4);
    testsupport::route(lab.node, "2001:db8:200::/64 via " + lab.world_v6);

    // Echo servers on every port the tests use, in every namespace, on the
    // dual-stack wildcard: a drop is then the firewall, never a missing server.
    for (const NetNs* ns : lab.namespaces()) {
      for (std::uint16_t port : kTcpPorts)
        tcp_servers_.push_back(std::make_unique<testsupport::TcpServer>(*ns, "::", port));
      for (std::uint16_t port : kUdpPorts) {
        udp_servers_.push_back(std::make_unique<testsupport::UdpEchoServer>(*ns, "::", port));
      }
    }

    std::ostringstream inv;
    inv << "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: node, addresses: ["
        << lab.br0_v4 << ", " << lab.br1_v4 << ", " << lab.uplink_v4 << ", \"" << lab.br0_v6
        << "\", \"" << lab.br1_v6 << "\", \"" << lab.uplink_v6 << "\"]}\nendpoints:\n";
    auto endpoint = [&](const BridgeLab::Container& c, const std::string& name,
                        const std::string& labels) {
      inv << "  - {name: " << name << ", labels: {" << labels << "}, addresses: [" << c.v4 << ", \""
          << c.v6 << "\"]}\n";
    };
    endpoint(c0(), "web-1", "role: web, env: prod");
    endpoint(c1(), "api-1", "role: api, env: prod");
    endpoint(c2(), "api-dev", "role: api, env: dev");
    endpoint(d0(), "db-1", "role: db, env: prod");
    // c3 is deliberately missing: an unknown container.
    policy::Diagnostics diags;
    auto inventory = identity::parse_inventory(inv.str(), "inventory.yaml", diags);
    ASSERT_TRUE(inventory) << diag_text(diags) << inv.str();
    inventory_ = std::move(*inventory);

    NftBackend::Config config;
    for (const std::string& a :
         {lab.br0_v4, lab.br1_v4, lab.uplink_v4, lab.br0_v6, lab.br1_v6, lab.uplink_v6}) {
      config.local_addresses.push_back(*IpAddress::parse(a));
    }
    auto opened = in_netns(lab.node, [&] { return NftBackend::open(config); });
    ASSERT_TRUE(std::holds_alternative<std::unique_ptr<NftBackend>>(opened))
        << std::get<std::string>(opened);
    backend_ = std::move(std::get<std::unique_ptr<NftBackend>>(opened));
    ASSERT_NO_FATAL_FAILURE(apply(policy_yaml()));
  }

  void TearDown() override {
    backend_.reset();
    tcp_servers_.clear();
    udp_servers_.clear();
    lab_.reset();
  }

  const BridgeLab::Container& c0() const { return lab_->br0_containers[0]; }
  const BridgeLab::Container& c1() const { return lab_->br0_containers[1]; }
  const BridgeLab::Container& c2() const { return lab_->br0_containers[2]; }
  const BridgeLab::Container& c3() const { return lab_->br0_containers[3]; }
  const BridgeLab::Container& d0() const { return lab_->br1_containers[0]; }
  static const std::string& ip_of(const BridgeLab::Container& c, bool v6) {
    return v6 ? c.v6 : c.v4;
  }
  std::string br0(bool v6) const { return v6 ? lab_->br0_v6 : lab_->br0_v4; }
  std::string br1(bool v6) const { return v6 ? lab_->br1_v6 : lab_->br1_v4; }
  std::string uplink(bool v6) const { return v6 ? lab_->uplink_v6 : lab_->uplink_v4; }
  std::string world(bool v6) const { return v6 ? lab_->world_v6 : lab_->world_v4; }
  static std::string far_world(bool v6) { return v6 ? kFarWorldV6 : kFarWorldV4; }

  // Compiles `yaml` against the current inventory and applies it (in the
  // node namespace: the connection cut talks ctnetlink from the caller's).
  void apply(const std::string& yaml) {
    policy::Diagnostics diags;
    auto p = policy::parse_policy(yaml, "policy.yaml", diags);
    ASSERT_TRUE(p) << diag_text(diags) << yaml;
    compilation_ = std::make_unique<compiler::Compilation>(*p, ++generation_);
    const std::vector<Cidr> cidrs = {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("10.89.0.0/16"),
                                     *Cidr::parse("fd00:88::/64"), *Cidr::parse("fd00:89::/64")};
    rules_ = dataplane::RuleSet{compilation_->policy(), compilation_->bind_all(inventory_, cidrs)};
    const auto err = in_netns(lab_->node, [&] { return backend_->apply(rules_); });
    ASSERT_FALSE(err) << err->message;
  }

  // Adds or replaces an inventory endpoint and pushes only its change.
  void upsert_endpoint(const std::string& name, const BridgeLab::Container& c,
                       std::vector<std::pair<std::string, std::string>> labels) {
    identity::Endpoint ep;
    ep.name = name;
    ep.labels = identity::Labels(std::move(labels));
    ep.addresses = {*IpAddress::parse(c.v4), *IpAddress::parse(c.v6)};
    std::size_t index = inventory_.endpoints.size();
    for (std::size_t i = 0; i < inventory_.endpoints.size(); ++i) {
      if (inventory_.endpoints[i].name == name) index = i;
    }
    if (index == inventory_.endpoints.size()) {
      inventory_.endpoints.push_back(ep);
    } else {
      inventory_.endpoints[index] = ep;
    }
    const compiler::EndpointBinding b = compilation_->bind(ep);
    dataplane::EndpointChange change;
    change.id = static_cast<dataplane::EndpointId>(index);
    change.addresses = ep.addresses;
    change.tier = b.tier;
    change.selectors = b.selectors;
    const std::vector<dataplane::EndpointChange> changes{change};
    const auto err = in_netns(lab_->node, [&] { return backend_->update_endpoints(changes); });
    ASSERT_FALSE(err) << err->message;
  }

  RuleId rule(const std::string& name) const {
    const dataplane::Rule* r = compilation_->policy()->find_rule(name);
    EXPECT_NE(r, nullptr) << name;
    return r == nullptr ? 0 : r->id;
  }

  std::map<RuleId, std::uint64_t> packets() {
    std::map<RuleId, std::uint64_t> out;
    for (const auto& [id, value] :
         in_netns(lab_->node, [&] { return backend_->rule_counters(); })) {
      out[id] = value.first;
    }
    return out;
  }

  std::string where(const Expect& e) const {
    return e.from->label() + (e.source.empty() ? "" : "[" + e.source + "]") + " -> " + e.dst + " " +
           describe(e.probe);
  }

  // Runs every expectation concurrently and reports each miss.
  void check(const std::vector<Expect>& expects) {
    std::vector<Outcome> got(expects.size(), Outcome::kError);
    std::vector<std::thread> threads;
    threads.reserve(expects.size());
    for (std::size_t i = 0; i < expects.size(); ++i) {
      threads.emplace_back([&, i] {
        const Expect& e = expects[i];
        if (e.pass) {
          got[i] = run_probe(*e.from, e.dst, e.probe, kPass, e.source);
          if (got[i] == Outcome::kTimeout)
            got[i] = run_probe(*e.from, e.dst, e.probe, kPassRetry, e.source);
        } else {
          got[i] = run_probe(*e.from, e.dst, e.probe, kDrop, e.source);
        }
      });
    }
    for (auto& t : threads) t.join();
    for (std::size_t i = 0; i < expects.size(); ++i) {
      const Expect& e = expects[i];
      if (e.pass) {
        EXPECT_EQ(got[i], Outcome::kOk) << where(e) << " must pass";
      } else {
        // A drop in the node's own output may fail the send with EPERM.
        const bool dropped = got[i] == Outcome::kTimeout ||
                             (e.from == &lab_->node && got[i] == Outcome::kUnreachable);
        EXPECT_TRUE(dropped) << where(e) << " must be dropped, got " << got[i];
      }
    }
  }

  std::optional<BridgeLab> lab_;
  std::vector<std::unique_ptr<testsupport::TcpServer>> tcp_servers_;
  std::vector<std::unique_ptr<testsupport::UdpEchoServer>> udp_servers_;
  identity::Inventory inventory_;
  std::unique_ptr<compiler::Compilation> compilation_;
  dataplane::RuleSet rules_;
  std::uint64_t generation_ = 0;
  std::unique_ptr<NftBackend> backend_;
};

TEST_F(NftEnforcement, ContainerToContainerOnOneBridge) {
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    // web -> api: tcp/80 and ping only.
    x.push_back({&c0().ns, ip_of(c1(), v6), tcp(80), true});
    x.push_back({&c0().ns, ip_of(c1(), v6), ping(), true});
    x.push_back({&c0().ns, ip_of(c2(), v6), tcp(80), true});
    x.push_back({&c0().ns, ip_of(c1(), v6), tcp(443), false});
    x.push_back({&c0().ns, ip_of(c1(), v6), udp(5000), false});
    // Flows are directed: api -> web has none.
    x.push_back({&c1().ns, ip_of(c0(), v6), tcp(80), false});
    x.push_back({&c1().ns, ip_of(c0(), v6), ping(), false});
    // Same tier, intraTier: deny (the default).
    x.push_back({&c1().ns, ip_of(c2(), v6), tcp(80), false});
  }
  check(x);
}

TEST_F(NftEnforcement, ContainerToContainerAcrossBridges) {
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c1().ns, ip_of(d0(), v6), tcp(5432), true});
    x.push_back({&c1().ns, ip_of(d0(), v6), udp(5000), true});
    // A staged deny only audits: the ping passes.
    x.push_back({&c1().ns, ip_of(d0(), v6), ping(), true});
    x.push_back({&c1().ns, ip_of(d0(), v6), tcp(80), false});
    // The guardrail beats the flow: api/dev never reaches db.
    x.push_back({&c2().ns, ip_of(d0(), v6), tcp(5432), false});
    x.push_back({&c2().ns, ip_of(d0(), v6), udp(5000), false});
    x.push_back({&c2().ns, ip_of(d0(), v6), ping(), false});
    x.push_back({&c0().ns, ip_of(d0(), v6), tcp(5432), false});
    x.push_back({&d0().ns, ip_of(c1(), v6), tcp(80), false});
    x.push_back({&d0().ns, ip_of(c1(), v6), tcp(5432), false});
    x.push_back({&d0().ns, ip_of(c0(), v6), ping(), false});
  }
  check(x);
}

TEST_F(NftEnforcement, ContainerToHost) {
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c0().ns, br0(v6), udp(53), true});
    x.push_back({&c0().ns, br1(v6), udp(53), true});  // every node address is the host
    x.push_back({&c0().ns, br0(v6), tcp(22), false});
    x.push_back({&c0().ns, br0(v6), tcp(443), false});
    x.push_back({&c0().ns, br0(v6), ping(), false});
    x.push_back({&c1().ns, br0(v6), tcp(443), true});
    x.push_back({&c1().ns, uplink(v6), tcp(443), true});
    x.push_back({&c1().ns, br0(v6), tcp(22), false});  // guardrail before api-admin
    x.push_back({&c1().ns, br0(v6), udp(5000), false});
    x.push_back({&d0().ns, br1(v6), udp(53), true});
    x.push_back({&d0().ns, br1(v6), tcp(22), false});
    x.push_back({&d0().ns, br1(v6), tcp(443), false});
  }
  check(x);
}

TEST_F(NftEnforcement, HostToContainer) {
  const NetNs* node = &lab_->node;
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({node, ip_of(c0(), v6), tcp(8080), true});
    x.push_back({node, ip_of(c1(), v6), tcp(8080), true});
    x.push_back({node, ip_of(d0(), v6), tcp(8080), false});
    x.push_back({node, ip_of(c0(), v6), tcp(80), false});
    x.push_back({node, ip_of(c0(), v6), udp(53), false});
    x.push_back({node, ip_of(c0(), v6), ping(), false});
  }
  check(x);
}

TEST_F(NftEnforcement, ContainerToWorldAndWorldToContainer) {
  const NetNs* w = &lab_->world;
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c0().ns, world(v6), tcp(443), true});
    x.push_back({&c0().ns, far_world(v6), tcp(443), false});  // outside the flow's CIDRs
    x.push_back({&c0().ns, world(v6), tcp(80), false});
    x.push_back({&c0().ns, world(v6), ping(), false});
    x.push_back({&c1().ns, world(v6), tcp(443), false});
    x.push_back({&d0().ns, world(v6), udp(53), false});
    x.push_back({w, ip_of(c0(), v6), tcp(443), true});
    x.push_back({w, ip_of(c0(), v6), tcp(443), true, far_world(v6)});
    x.push_back({w, ip_of(c0(), v6), tcp(80), false});
    x.push_back({w, ip_of(c1(), v6), tcp(443), false});
    x.push_back({w, ip_of(d0(), v6), ping(), false});
    // Host <-> world is not the policy's business (docs/nftables.md).
    x.push_back({w, uplink(v6), tcp(22), true});
    x.push_back({&lab_->node, world(v6), tcp(443), true});
  }
  check(x);
}

TEST_F(NftEnforcement, RepliesOfAllowedConnectionsPass) {
  // Many round trips on one connection: every reply is established traffic
  // in the direction no flow allows.
  for (bool v6 : {false, true}) {
    testsupport::TcpSession web_api(c0().ns, ip_of(c1(), v6), 80, kSession);
    testsupport::TcpSession api_db(c1().ns, ip_of(d0(), v6), 5432, kSession);
    testsupport::TcpSession health(lab_->node, ip_of(c0(), v6), 8080, kSession);
    testsupport::TcpSession inbound(lab_->world, ip_of(c0(), v6), 443, kSession);
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(web_api.exchange(kSession)) << v6 << " " << i;
      EXPECT_TRUE(api_db.exchange(kSession)) << v6 << " " << i;
      EXPECT_TRUE(health.exchange(kSession)) << v6 << " " << i;
      EXPECT_TRUE(inbound.exchange(kSession)) << v6 << " " << i;
    }
  }
}

TEST_F(NftEnforcement, UnknownContainerIsQuarantinedUntilInventoried) {
  const NetNs* node = &lab_->node;
  const NetNs* w = &lab_->world;
  // From its first packet: quarantine, allowed only where a flow selects it.
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c3().ns, br0(v6), udp(53), true});  // dns selects `tier: quarantine`
    x.push_back({&c3().ns, br0(v6), tcp(443), false});
    x.push_back({&c3().ns, ip_of(c1(), v6), tcp(80), false});
    x.push_back({&c3().ns, ip_of(d0(), v6), tcp(5432), false});
    x.push_back({&c3().ns, world(v6), tcp(443), false});
    x.push_back({&c0().ns, ip_of(c3(), v6), tcp(80), false});
    x.push_back({node, ip_of(c3(), v6), tcp(8080), false});
    x.push_back({w, ip_of(c3(), v6), tcp(443), false});
  }
  check(x);

  // Reported by the identity source as a web container: allowed per tier.
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("web-2", c3(), {{"role", "web"}, {"env", "prod"}}));
  x.clear();
  for (bool v6 : {false, true}) {
    x.push_back({&c3().ns, br0(v6), udp(53), true});
    x.push_back({&c3().ns, ip_of(c1(), v6), tcp(80), true});
    x.push_back({&c3().ns, world(v6), tcp(443), true});
    x.push_back({node, ip_of(c3(), v6), tcp(8080), true});
    x.push_back({w, ip_of(c3(), v6), tcp(443), true});
    x.push_back({&c3().ns, ip_of(c1(), v6), tcp(443), false});
    x.push_back({&c3().ns, ip_of(d0(), v6), tcp(5432), false});
    x.push_back({&c3().ns, br0(v6), tcp(443), false});
    x.push_back({&c0().ns, ip_of(c3(), v6), tcp(80), false});  // web -> web: intraTier deny
  }
  check(x);
}

TEST_F(NftEnforcement, PolicyChangeKeepsAllowedConnectionsAndCutsRevokedOnes) {
  std::vector<std::unique_ptr<testsupport::TcpSession>> api_db;
  std::vector<std::unique_ptr<testsupport::TcpSession>> web_api;
  for (bool v6 : {false, true}) {
    api_db.push_back(
        std::make_unique<testsupport::TcpSession>(c1().ns, ip_of(d0(), v6), 5432, kSession));
    web_api.push_back(
        std::make_unique<testsupport::TcpSession>(c0().ns, ip_of(c1(), v6), 80, kSession));
  }
  for (auto& s : api_db) EXPECT_TRUE(s->exchange(kSession));
  for (auto& s : web_api) EXPECT_TRUE(s->exchange(kSession));

  // A new generation that still allows both: nothing is cut.
  ASSERT_NO_FATAL_FAILURE(apply(policy_yaml(false, true)));
  EXPECT_EQ(backend_->last_cut(), 0U);
  for (auto& s : api_db) EXPECT_TRUE(s->exchange(kSession));
  for (auto& s : web_api) EXPECT_TRUE(s->exchange(kSession));

  // A generation that revokes api -> db tcp/5432 cuts those connections at
  // once (conntrack entries deleted), and only those.
  ASSERT_NO_FATAL_FAILURE(apply(policy_yaml(true, true)));
  EXPECT_GE(backend_->last_cut(), api_db.size());
  const auto before = packets();
  for (auto& s : api_db) EXPECT_EQ(s->exchange_probe(kDrop), Outcome::kTimeout);
  for (auto& s : web_api) EXPECT_TRUE(s->exchange(kSession));
  // The cut flow's next packet was judged anew, by the new guardrail.
  const auto after = packets();
  const RuleId freeze = rule("freeze-db");
  EXPECT_GT(after.at(freeze), before.count(freeze) != 0 ? before.at(freeze) : 0U);
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c1().ns, ip_of(d0(), v6), tcp(5432), false});
    x.push_back({&c1().ns, ip_of(d0(), v6), udp(5000), true});
  }
  check(x);
}

TEST_F(NftEnforcement, TierChangeCutsConnections) {
  std::vector<std::unique_ptr<testsupport::TcpSession>> web_api;
  for (bool v6 : {false, true}) {
    web_api.push_back(
        std::make_unique<testsupport::TcpSession>(c0().ns, ip_of(c1(), v6), 80, kSession));
  }
  for (auto& s : web_api) EXPECT_TRUE(s->exchange(kSession));

  // Relabelling c2 (api/dev -> api/prod) keeps its tier: c0 -> c1 untouched.
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("api-dev", c2(), {{"role", "api"}, {"env", "prod"}}));
  for (auto& s : web_api) EXPECT_TRUE(s->exchange(kSession));

  // c1 moves from api to db: web -> db has no flow, its connections go.
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("api-1", c1(), {{"role", "db"}, {"env", "prod"}}));
  EXPECT_GE(backend_->last_cut(), web_api.size());
  for (auto& s : web_api) EXPECT_EQ(s->exchange_probe(kDrop), Outcome::kTimeout);
  std::vector<Expect> x;
  for (bool v6 : {false, true}) {
    x.push_back({&c0().ns, ip_of(c1(), v6), tcp(80), false});
    x.push_back({&lab_->node, ip_of(c1(), v6), tcp(8080), false});  // health: web and api only
    x.push_back({&c2().ns, ip_of(c1(), v6), tcp(5432), true});      // api -> db now
  }
  check(x);

  // And back to api: allowed again.
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("api-1", c1(), {{"role", "api"}, {"env", "prod"}}));
  x.clear();
  for (bool v6 : {false, true}) {
    x.push_back({&c0().ns, ip_of(c1(), v6), tcp(80), true});
    x.push_back({&c2().ns, ip_of(c1(), v6), tcp(5432), false});
  }
  check(x);
}

// The unknown container's first identity is a tier change (quarantine ->
// web): what quarantine allowed and web does not is cut.
TEST_F(NftEnforcement, FirstIdentityCutsWhatQuarantineAllowed) {
  std::vector<std::unique_ptr<testsupport::TcpSession>> bootstrap;
  for (bool v6 : {false, true}) {
    bootstrap.push_back(
        std::make_unique<testsupport::TcpSession>(c3().ns, br0(v6), 8443, kSession));
  }
  for (auto& s : bootstrap) EXPECT_TRUE(s->exchange(kSession));
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("web-2", c3(), {{"role", "web"}, {"env", "prod"}}));
  EXPECT_GE(backend_->last_cut(), bootstrap.size());
  for (auto& s : bootstrap) EXPECT_EQ(s->exchange_probe(kDrop), Outcome::kTimeout);
  std::vector<Expect> x;
  for (bool v6 : {false, true}) x.push_back({&c3().ns, br0(v6), tcp(8443), false});
  check(x);
}

// A relabel that brings an endpoint under a guardrail (env: dev never
// reaches db) revokes its db connections although its tier stays api: the
// new state denies them, so they are cut like after a policy change.
TEST_F(NftEnforcement, RelabelUnderAGuardrailCutsConnections) {
  std::vector<std::unique_ptr<testsupport::TcpSession>> api_db;
  for (bool v6 : {false, true}) {
    api_db.push_back(
        std::make_unique<testsupport::TcpSession>(c1().ns, ip_of(d0(), v6), 5432, kSession));
  }
  for (auto& s : api_db) EXPECT_TRUE(s->exchange(kSession));
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("api-1", c1(), {{"role", "api"}, {"env", "dev"}}));
  EXPECT_GE(backend_->last_cut(), api_db.size());
  for (auto& s : api_db) EXPECT_EQ(s->exchange_probe(kDrop), Outcome::kTimeout);
  std::vector<Expect> x;
  for (bool v6 : {false, true}) x.push_back({&c1().ns, ip_of(d0(), v6), tcp(5432), false});
  check(x);
}

TEST_F(NftEnforcement, CountersCountTheDecidingRules) {
  const NetNs* node = &lab_->node;
  const NetNs* w = &lab_->world;
  struct Case {
    Expect expect;
    RuleId rule;
  };
  std::vector<Case> cases;
  for (bool v6 : {false, true}) {
    cases.push_back({{&c0().ns, ip_of(c1(), v6), tcp(80), true}, rule("web-to-api")});
    cases.push_back({{&c1().ns, ip_of(d0(), v6), tcp(5432), true}, rule("api-to-db")});
    cases.push_back({{&c1().ns, ip_of(d0(), v6), ping(), true}, rule("staged-api-db-ping")});
    cases.push_back({{&c2().ns, ip_of(d0(), v6), tcp(5432), false}, rule("dev-never-db")});
    cases.push_back({{&c0().ns, br0(v6), udp(53), true}, rule("dns")});
    cases.push_back({{&c3().ns, br0(v6), udp(53), true}, rule("dns")});
    cases.push_back({{&c1().ns, br0(v6), tcp(22), false}, rule("no-host-ssh")});
    cases.push_back({{&c1().ns, br0(v6), tcp(443), true}, rule("api-admin")});
    cases.push_back({{node, ip_of(c0(), v6), tcp(8080), true}, rule("health")});
    cases.push_back({{w, ip_of(c0(), v6), tcp(443), true}, rule("world-to-web")});
    cases.push_back({{&c0().ns, world(v6), tcp(443), true}, rule("web-to-world")});
    cases.push_back({{&c1().ns, ip_of(c0(), v6), tcp(80), false}, dataplane::kRuleDefaultDeny});
  }
  std::map<RuleId, std::uint64_t> want;
  std::vector<Expect> x;
  for (const Case& c : cases) {
    ++want[c.rule];
    x.push_back(c.expect);
  }
  const auto before = packets();
  for (const auto& [id, n] : want) EXPECT_EQ(before.count(id), 1U) << "no counter for rule " << id;
  check(x);
  const auto after = packets();
  for (const auto& [id, n] : want) {
    const std::uint64_t b = before.count(id) != 0 ? before.at(id) : 0;
    const std::uint64_t a = after.count(id) != 0 ? after.at(id) : 0;
    // Each probe's first packet is decided by the rule; retransmissions of
    // dropped probes count again.
    const dataplane::Rule* r = compilation_->policy()->find_rule(id);
    EXPECT_GE(a - b, n) << "rule " << id << " " << (r != nullptr ? r->origin.name : "default-deny");
  }
  // A rule that decides nothing keeps its counter at zero.
  EXPECT_EQ(after.at(dataplane::kRuleIntraTier), 0U) << "intraTier: deny in this policy";
}

TEST_F(NftEnforcement, CountersSurviveReapplyingTheSameGeneration) {
  check({{&c1().ns, ip_of(c0(), false), tcp(80), false}});  // default-deny, counted
  const auto before = packets();
  ASSERT_GT(before.at(dataplane::kRuleDefaultDeny), 0U);
  // Drift repair, a retry or a resume replace the table with the same
  // generation: the counters carry on from where they were.
  const auto err = in_netns(lab_->node, [&] { return backend_->apply(rules_); });
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(packets(), before);
  check({{&c1().ns, ip_of(c0(), false), tcp(80), false}});
  EXPECT_GT(packets().at(dataplane::kRuleDefaultDeny), before.at(dataplane::kRuleDefaultDeny));
  // A new generation has rules of its own: its counters start at zero.
  ASSERT_NO_FATAL_FAILURE(apply(policy_yaml()));
  EXPECT_EQ(packets().at(dataplane::kRuleDefaultDeny), 0U);
}

TEST_F(NftEnforcement, ForeignCommitsDoNotFailUpdatesOrApplies) {
  // Another nftables writer (netavark, another firewall) commits to its own
  // table between our generation read and our commit: the kernel refuses
  // our batch (ERESTART) and it must be sent again, not reported.
  dataplane::nft::NftBackend::Config config;
  for (const std::string& a :
       {lab_->br0_v4, lab_->br1_v4, lab_->uplink_v4, lab_->br0_v6, lab_->br1_v6, lab_->uplink_v6}) {
    config.local_addresses.push_back(*IpAddress::parse(a));
  }
  int foreign = 0;
  config.before_commit = [&] {
    if (foreign++ % 2 == 0) {  // every first attempt loses the race
      lab_->node.check("nft add table inet twforeign" + std::to_string(foreign));
    }
  };
  auto opened = in_netns(lab_->node, [&] { return dataplane::nft::NftBackend::open(config); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<dataplane::nft::NftBackend>>(opened));
  backend_ = std::move(std::get<std::unique_ptr<dataplane::nft::NftBackend>>(opened));
  ASSERT_NO_FATAL_FAILURE(apply(policy_yaml()));
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("web-2", c3(), {{"role", "web"}, {"env", "prod"}}));
  ASSERT_NO_FATAL_FAILURE(upsert_endpoint("web-2", c3(), {{"role", "api"}, {"env", "prod"}}));
  EXPECT_EQ(foreign, 6);  // three commits, each sent twice
  for (int i = 1; i <= foreign; i += 2) {
    lab_->node.run("nft delete table inet twforeign" + std::to_string(i));
  }
  // The endpoint is enforced in its new tier.
  check({{&c3().ns, ip_of(d0(), false), tcp(5432), true}});
}

}  // namespace
}  // namespace tierwall
