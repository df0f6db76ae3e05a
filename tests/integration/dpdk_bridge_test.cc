// The DPDK forwarding path end to end: two network namespaces (A, B) whose
// veth peers sit in a third namespace where af_packet ports are opened, a
// Bridge (tw_dpdk_forward) between the two ports enforcing a compiled policy,
// real TCP/UDP/ICMP between A and B, and a new generation cutting an
// established connection. docs/dpdk.md, "Forwarding".
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/dpdk/bridge.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/port.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace {

using namespace tierwall;
using namespace tierwall::testsupport;
using dataplane::dpdk::Bridge;
using dataplane::dpdk::BridgeCounters;
using dataplane::dpdk::BridgeOptions;
using dataplane::dpdk::Eal;
using dataplane::dpdk::GenerationStore;
using dataplane::dpdk::Port;
using dataplane::dpdk::PortOptions;
using tierwall::Cidr;

constexpr Millis kPass{3000};  // a probe that must pass (first packets flood, ARP)
constexpr Millis kDrop{600};   // a probe that must be dropped

constexpr const char* kAddrA = "10.77.0.1";
constexpr const char* kAddrB = "10.77.0.2";

std::string policy_yaml(bool allow_8080) {
  std::string p = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: dpdk-bridge}
spec:
  tiers:
    - {name: a, level: 10}
    - {name: b, level: 20}
  assignments:
    - {name: a, match: {labels: {role: a}}, tier: a}
    - {name: b, match: {labels: {role: b}}, tier: b}
  flows:
    - name: a-to-b
      from: {tier: a}
      to: {tier: b}
)";
  p += allow_8080 ? "      ports: [tcp/8080, icmp/echo-request]\n"
                  : "      ports: [icmp/echo-request]\n";
  return p;
}

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node, addresses: [10.77.0.254]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.77.0.1]}
  - {name: b-1, labels: {role: b}, addresses: [10.77.0.2]}
)";

std::string diag_text(const policy::Diagnostics& d) {
  std::ostringstream s;
  d.print(s);
  return s.str();
}

// Compiles the policy and builds its Generation; fails the test on error.
std::unique_ptr<const dataplane::dpdk::Generation> generation(bool allow_8080,
                                                              std::uint64_t serial) {
  policy::Diagnostics diags;
  auto p = policy::parse_policy(policy_yaml(allow_8080), "policy.yaml", diags);
  auto inv = identity::parse_inventory(kInventory, "inventory.yaml", diags);
  if (!p || !inv) {
    ADD_FAILURE() << diag_text(diags);
    return nullptr;
  }
  const dataplane::RuleSet rules =
      compiler::compile(*p, *inv, serial, {*Cidr::parse("10.77.0.0/24")});
  auto built = dataplane::dpdk::build_generation(rules);
  if (!built.generation) ADD_FAILURE() << built.error;
  return std::move(built.generation);
}

std::string describe(const BridgeCounters& c) {
  std::ostringstream s;
  s << "rx=" << c.rx << " tx=" << c.tx << " tx_failed=" << c.tx_failed
    << " forwarded=" << c.forwarded << " flooded=" << c.flooded << " filtered=" << c.filtered
    << " non_ip=" << c.non_ip << " ip_allowed=" << c.ip_allowed
    << " policy_dropped=" << c.policy_dropped << " policy_cut=" << c.policy_cut
    << " no_generation=" << c.no_generation << " malformed=" << c.malformed
    << " learned=" << c.learned;
  return s.str();
}

// Every resource of one run, destroyed in reverse order even when an
// assertion returns early: the bridge thread stops first, then the ports
// close, then the namespaces go.
struct Lab {
  NetNs a{"a"};
  NetNs b{"b"};
  NetNs sw{"dpdk"};
  GenerationStore store;
  std::unique_ptr<Port> port_a;
  std::unique_ptr<Port> port_b;
  std::unique_ptr<Bridge> bridge;
  std::atomic<bool> stop{false};
  std::thread worker;

  ~Lab() {
    stop.store(true);
    if (worker.joinable()) worker.join();
    bridge.reset();
    port_a.reset();
    port_b.reset();
  }
};

class DpdkBridge : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = netns_unavailable_reason()) GTEST_SKIP() << *reason;
    const std::string err = Eal::init(Eal::default_args());
    ASSERT_TRUE(err.empty()) << err;
  }
};

TEST_F(DpdkBridge, EnforcesPolicyOnRealTraffic) {
  Lab lab;
  veth(lab.a, "eth0", lab.sw, "pa");
  veth(lab.b, "eth0", lab.sw, "pb");
  addr(lab.a, "eth0", std::string(kAddrA) + "/24");
  addr(lab.b, "eth0", std::string(kAddrB) + "/24");
  // Checksums must be complete in the frames af_packet captures: with TX
  // checksum offload the kernel hands over CHECKSUM_PARTIAL packets, which
  // the other side drops once re-sent by the bridge. TSO/GSO off keeps every
  // frame within the MTU (af_packet frames are 2048 bytes).
  for (NetNs* ns : {&lab.a, &lab.b}) {
    ns->check("ethtool -K eth0 tx off tso off gso off");
  }
  lab.sw.check("ethtool -K pa gro off; ethtool -K pb gro off");
  wait_link_running(lab.sw, "pa");
  wait_link_running(lab.sw, "pb");

  static std::atomic<unsigned> serial{0};
  const unsigned n = serial.fetch_add(2);
  std::string error;
  lab.port_a = in_netns(lab.sw, [&] {
    return Port::open_vdev("net_af_packet" + std::to_string(n) + ",iface=pa", PortOptions{}, error);
  });
  ASSERT_TRUE(lab.port_a) << error;
  lab.port_b = in_netns(lab.sw, [&] {
    return Port::open_vdev("net_af_packet" + std::to_string(n + 1) + ",iface=pb", PortOptions{},
                           error);
  });
  ASSERT_TRUE(lab.port_b) << error;

  auto g1 = generation(true, 1);
  ASSERT_TRUE(g1);
  lab.store.publish(std::move(g1));

  BridgeOptions options;
  options.idle_sleep_us = 50;
  Port* ports[] = {lab.port_a.get(), lab.port_b.get()};
  lab.bridge = std::make_unique<Bridge>(ports, lab.store, options);
  lab.worker = std::thread([&lab] { lab.bridge->run(lab.stop); });

  TcpServer b8080(lab.b, kAddrB, 8080);
  TcpServer b9090(lab.b, kAddrB, 9090);
  TcpServer a8080(lab.a, kAddrA, 8080);
  UdpEchoServer b5000(lab.b, kAddrB, 5000);

  // ICMP first: ARP (non-IP) must cross the bridge for anything to work.
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk) << describe(lab.bridge->counters());
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kPass), Outcome::kOk)
      << describe(lab.bridge->counters());
  const BridgeCounters before_denied = lab.bridge->counters();
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 9090, kDrop), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.b, kAddrA, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(udp_probe(lab.a, kAddrB, 5000, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.b, kAddrA, kDrop), Outcome::kTimeout);  // no b -> a flow
  EXPECT_EQ(b9090.accepted(), 0U);
  EXPECT_EQ(a8080.accepted(), 0U);
  EXPECT_EQ(b5000.received(), 0U);
  EXPECT_GE(b8080.accepted(), 1U);

  const BridgeCounters c = lab.bridge->counters();
  EXPECT_GT(c.forwarded, 0U) << describe(c);
  EXPECT_GT(c.non_ip, 0U) << describe(c);  // ARP
  EXPECT_GT(c.ip_allowed, 0U) << describe(c);
  // At least one dropped packet for each of the four denied probes.
  EXPECT_GE(c.policy_dropped - before_denied.policy_dropped, 4U) << describe(c);
  EXPECT_EQ(c.malformed, 0U) << describe(c);
  EXPECT_EQ(c.no_generation, 0U) << describe(c);
  EXPECT_GE(c.learned, 2U) << describe(c);
  EXPECT_LE(c.tx + c.tx_failed, c.rx + c.flooded) << describe(c);
  EXPECT_GE(lab.port_a->stats().ipackets, 1U);
  EXPECT_GE(lab.port_b->stats().opackets, 1U);

  // An established connection, then a generation without a -> b tcp/8080:
  // the flow is re-checked on its next packet and cut; new ones are refused.
  TcpSession session(lab.a, kAddrB, 8080, kPass);
  ASSERT_TRUE(session.exchange(kPass)) << describe(lab.bridge->counters());
  auto g2 = generation(false, 2);
  ASSERT_TRUE(g2);
  lab.store.publish(std::move(g2));
  EXPECT_EQ(session.exchange_probe(kDrop), Outcome::kTimeout) << describe(lab.bridge->counters());
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk);  // still allowed
  const BridgeCounters after = lab.bridge->counters();
  EXPECT_GE(after.policy_cut, 1U) << describe(after);
  EXPECT_GE(lab.bridge->flows().counters().cuts, 1U);
  std::printf("bridge counters: %s\n", describe(after).c_str());
  lab.store.reclaim();
}

}  // namespace
