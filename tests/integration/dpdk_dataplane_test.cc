// DpdkDataplane (tw_dpdk_dataplane) on a real EAL with af_packet ports
// between two namespaces, driven as the agent drives it: apply, an endpoint
// update that turns a quarantined address into an endpoint, flush (fail
// closed) and re-apply, and a deny flood through a 64-slot event ring
// without draining: the lost events are counted, and after the stop every
// packet an event stood for is either drained or counted lost, exactly.
// Overlay uplinks are checked at open and name their port when bad. Two
// workers split the connections between them and each keeps both
// directions of its own. docs/dpdk.md, "In the agent".
#include "tierwall/dataplane/dpdk/dpdk_dataplane.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/dpdk.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/testsupport/netns.h"

namespace {

using namespace tierwall;
using namespace tierwall::testsupport;
using dataplane::dpdk::DpdkDataplane;
using dataplane::dpdk::DpdkDataplaneConfig;
using dataplane::dpdk::DpdkStats;
using dataplane::dpdk::FlowEventRecord;
using dataplane::dpdk::FlowEventType;
using dataplane::dpdk::OverlayConfig;

constexpr Millis kPass{3000};
constexpr Millis kDrop{600};
constexpr const char* kAddrA = "10.78.0.1";
constexpr const char* kAddrB = "10.78.0.2";

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: dpdk-dataplane}
spec:
  tiers:
    - {name: a, level: 10}
    - {name: b, level: 20}
  assignments:
    - {name: a, match: {labels: {role: a}}, tier: a}
    - {name: b, match: {labels: {role: b}}, tier: b}
  flows:
    - {name: a-to-b, from: {tier: a}, to: {tier: b}, ports: [tcp/8080, icmp/echo-request]}
)";

std::string inventory(bool with_b) {
  std::string s = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node, addresses: [10.78.0.254]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.78.0.1]}
)";
  if (with_b) s += "  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2]}\n";
  return s;
}

dataplane::RuleSet rules(bool with_b) {
  return testkit::compile_yaml(kPolicy, inventory(with_b), 1, {*Cidr::parse("10.78.0.0/24")})
      .value_or(dataplane::RuleSet{});
}

std::string describe(const DpdkStats& s) {
  std::ostringstream o;
  o << "rx=" << s.bridge.rx << " ip_allowed=" << s.bridge.ip_allowed
    << " policy_dropped=" << s.bridge.policy_dropped << " cut=" << s.bridge.policy_cut
    << " no_generation=" << s.bridge.no_generation << " inserts=" << s.flows.inserts
    << " events=" << s.events.events << " starts=" << s.events.starts
    << " denies=" << s.events.denies << " cuts=" << s.events.cuts << " ends=" << s.events.ends
    << " packets=" << s.events.packets << " lost=" << s.events.lost
    << " rate_limited=" << s.events.rate_limited << " folded=" << s.events.folded
    << " ring=" << s.ring_used << "/" << s.ring_capacity << " generation=" << s.generation;
  return o.str();
}

// Namespaces a and b, each linked to an af_packet port (pa, pb) in sw.
struct Lab {
  NetNs a{"a"};
  NetNs b{"b"};
  NetNs sw{"dpdk"};
  std::unique_ptr<DpdkDataplane> dp;
  Lab() {
    af_packet_link(a, std::string(kAddrA) + "/24", sw, "pa");
    af_packet_link(b, std::string(kAddrB) + "/24", sw, "pb");
  }
  ~Lab() { dp.reset(); }  // the forwarding workers and ports before the namespaces
  // The two ports as devices net_af_packet<n> and <n + 1>, polled gently.
  static DpdkDataplaneConfig config(int n) {
    DpdkDataplaneConfig c;
    c.ports = {{"net_af_packet" + std::to_string(n) + ",iface=pa", "a", std::nullopt},
               {"net_af_packet" + std::to_string(n + 1) + ",iface=pb", "b", std::nullopt}};
    c.idle_sleep_us = 50;
    c.flow_capacity = 1024;
    return c;
  }
};

class DpdkDataplaneTest : public testkit::DpdkNetnsTest {};

TEST_F(DpdkDataplaneTest, AppliesUpdatesFlushesAndAccountsEveryEvent) {
  Lab lab;
  DpdkDataplaneConfig config = Lab::config(20);
  config.event_ring_size = 64;
  config.events.deny_events_per_second = 1'000'000;  // no rate limit here
  config.events.fold_window_ns = 100'000'000;
  std::string error;
  lab.dp = in_netns(lab.sw, [&] { return DpdkDataplane::open(config, error); });
  ASSERT_TRUE(lab.dp) << error;
  EXPECT_EQ(lab.dp->stats().ring_capacity, 64U);

  std::vector<FlowEventRecord> drained;
  auto drain = [&] {
    lab.dp->drain_events([&](const FlowEventRecord& e) { drained.push_back(e); });
  };

  TcpServer b8080(lab.b, kAddrB, 8080);

  // Before any apply: IP is dropped.
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kDrop), Outcome::kTimeout);
  EXPECT_GT(lab.dp->stats().bridge.no_generation, 0U) << describe(lab.dp->stats());

  // b is not an endpoint yet: quarantined, denied.
  const auto without_b = rules(false);
  ASSERT_TRUE(without_b.policy);
  ASSERT_FALSE(lab.dp->apply(without_b));
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kDrop), Outcome::kTimeout);

  // The endpoint update makes b an endpoint of tier b: allowed.
  const auto with_b = rules(true);
  ASSERT_TRUE(with_b.policy);
  const auto b_id = with_b.endpoints->find(*IpAddress::parse(kAddrB));
  ASSERT_TRUE(b_id);
  const auto* entry = with_b.endpoints->entry(*b_id);
  ASSERT_NE(entry, nullptr);
  dataplane::EndpointChange change;
  change.id = *b_id;
  change.addresses = {*IpAddress::parse(kAddrB)};
  change.tier = entry->tier;
  const auto sel = with_b.endpoints->selectors(*entry);
  change.selectors.assign(sel.begin(), sel.end());
  ASSERT_FALSE(lab.dp->update_endpoints(std::span(&change, 1)));
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kPass), Outcome::kOk) << describe(lab.dp->stats());
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk);
  EXPECT_GE(b8080.accepted(), 1U);

  // Flush: fail closed, every IP packet denied; a new apply restores.
  ASSERT_FALSE(lab.dp->flush());
  EXPECT_EQ(lab.dp->stats().generation, 0U);
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kDrop), Outcome::kTimeout);
  ASSERT_FALSE(lab.dp->apply(with_b));
  EXPECT_EQ(lab.dp->stats().generation, 1U);
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk);
  drain();

  // 300 denied UDP datagrams to distinct ports (300 deny events once their
  // fold windows close) into a 64-slot ring that nobody drains.
  lab.a.check(
      "bash -c 'for p in $(seq 6001 6300); do echo x > /dev/udp/10.78.0.2/$p; done' || true",
      Millis{20000});
  std::this_thread::sleep_for(Millis{400});  // the fold windows close
  const DpdkStats flooded = lab.dp->stats();
  EXPECT_GE(flooded.bridge.policy_dropped, 300U) << describe(flooded);
  EXPECT_GT(flooded.events.lost, 0U) << describe(flooded);
  EXPECT_EQ(flooded.ring_used, 64U) << describe(flooded);

  // Stop: the remembered flows end while the ring is drained, so their ends
  // wait for room instead of being lost; every packet an event stood for is
  // either drained or counted lost.
  const std::uint64_t lost_before_stop = lab.dp->stats().events.lost;
  lab.dp->stop([&](const FlowEventRecord& e) { drained.push_back(e); });
  const DpdkStats s = lab.dp->stats();
  std::uint64_t drained_packets = 0;
  std::size_t starts = 0;
  std::size_t ends = 0;
  for (const auto& e : drained) {
    drained_packets += e.count;
    starts += e.type == FlowEventType::Start ? 1 : 0;
    ends += e.type == FlowEventType::End ? 1 : 0;
  }
  EXPECT_EQ(drained.size(), s.events.events) << describe(s);
  EXPECT_EQ(drained_packets, s.events.packets) << describe(s);
  EXPECT_EQ(s.drained, drained.size());
  // starts + ends (every remembered flow ended) + denied and cut packets.
  EXPECT_EQ(s.events.packets + s.events.lost + s.events.rate_limited,
            2 * s.flows.inserts + s.bridge.policy_dropped)
      << describe(s);
  EXPECT_EQ(s.events.rate_limited, 0U);
  EXPECT_GE(starts, 1U);
  EXPECT_EQ(ends, s.flows.inserts) << describe(s);  // none lost at the stop
  EXPECT_EQ(s.events.lost, lost_before_stop);
  std::printf("dataplane: %s\n", describe(s).c_str());
}

// Overlay uplinks are checked when the dataplane opens, with the port's own
// MAC: a bad one is an error naming the port, and nothing is left running
// (net_null ports that receive nothing, `no-rx=1`: a null port's RX would
// otherwise hand the uplink zero-filled frames, which it refuses, and the
// refusal count below would race the lcore).
TEST_F(DpdkDataplaneTest, OverlayUplinksAreCheckedAtOpen) {
  OverlayConfig overlay;
  overlay.local_vtep = IpAddress::parse("192.168.77.1").value();
  overlay.vni = 4242;
  overlay.peers = {{IpAddress::parse("fd00:77::2").value(), {0x02, 0, 0, 0, 0x77, 0x02}}};
  DpdkDataplaneConfig config;
  config.ports = {{"net_null30,no-rx=1", "c0", std::nullopt},
                  {"net_null31,no-rx=1", "uplink", overlay}};
  config.idle_sleep_us = 50;
  config.flow_capacity = 1024;
  std::string error;
  EXPECT_FALSE(DpdkDataplane::open(config, error));
  EXPECT_NE(error.find("port uplink: overlay: peer fd00:77::2 is not in the local VTEP's family"),
            std::string::npos)
      << error;

  // Every port an uplink: nothing to bridge to.
  overlay.peers = {{IpAddress::parse("192.168.77.2").value(), {0x02, 0, 0, 0, 0x77, 0x02}}};
  config.ports = {{"net_null32,no-rx=1", "uplink", overlay}};
  error.clear();
  EXPECT_FALSE(DpdkDataplane::open(config, error));
  EXPECT_NE(error.find("every port is an overlay uplink"), std::string::npos) << error;

  // An uplink with two workers: its queues are spread by the outer header.
  overlay.peers = {{IpAddress::parse("192.168.77.2").value(), {0x02, 0, 0, 0, 0x77, 0x02}}};
  config.ports = {{"net_null30,no-rx=1", "c0", std::nullopt},
                  {"net_null31,no-rx=1", "uplink", overlay}};
  config.workers = 2;
  error.clear();
  EXPECT_FALSE(DpdkDataplane::open(config, error));
  EXPECT_NE(error.find("an overlay uplink needs workers: 1"), std::string::npos) << error;
  config.workers = 1;

  // A good uplink opens (the device names are free again: the failed opens
  // closed their ports).
  config.ports = {{"net_null30,no-rx=1", "c0", std::nullopt},
                  {"net_null31,no-rx=1", "uplink", overlay}};
  error.clear();
  auto dp = DpdkDataplane::open(config, error);
  ASSERT_TRUE(dp) << error;
  EXPECT_EQ(dp->port_count(), 2U);
  EXPECT_EQ(dp->stats().bridge.overlay_refused, 0U);
  dp->stop();
}

// Two forwarding workers: af_packet opens two queues per port (qpairs=2,
// added by the port) in a fanout group, and the kernel's symmetric flow hash
// puts both directions of a connection on the same queue index of either
// port. Every allowed connection works, which it would not if a reply
// reached the other worker: that worker has no flow for it and the policy
// denies b -> a. Both workers carry connections; denies still hold.
TEST_F(DpdkDataplaneTest, TwoWorkersSplitConnectionsAndKeepBothDirections) {
  Lab lab;
  DpdkDataplaneConfig config = Lab::config(24);
  config.workers = 2;
  std::string error;
  lab.dp = in_netns(lab.sw, [&] { return DpdkDataplane::open(config, error); });
  ASSERT_TRUE(lab.dp) << error;
  ASSERT_FALSE(lab.dp->apply(rules(true)));

  TcpServer b8080(lab.b, kAddrB, 8080);
  TcpServer a8080(lab.a, kAddrA, 8080);
  constexpr int kConnections = 40;
  int ok = 0;
  for (int i = 0; i < kConnections; ++i) {
    const Outcome o = tcp_probe(lab.a, kAddrB, 8080, kPass);
    EXPECT_EQ(o, Outcome::kOk) << "connection " << i << ": " << describe(lab.dp->stats());
    ok += o == Outcome::kOk ? 1 : 0;
  }
  EXPECT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk);
  // Denied either way: b -> a (no flow) and a -> b on another port.
  EXPECT_EQ(tcp_probe(lab.b, kAddrA, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.a, kAddrB, 9090, kDrop), Outcome::kTimeout);
  EXPECT_EQ(a8080.accepted(), 0U);

  const DpdkStats s = lab.dp->stats();
  ASSERT_EQ(s.workers.size(), 2U);
  std::uint64_t rx = 0;
  std::uint64_t inserts = 0;
  for (std::size_t w = 0; w < s.workers.size(); ++w) {
    const auto& ws = s.workers[w];
    // With 40 connections hashed over two queues, each worker gets some
    // (all on one: 2^-39).
    EXPECT_GT(ws.flows.inserts, 0U) << "worker " << w << ": " << describe(s);
    EXPECT_GT(ws.flows.hits, 0U) << "worker " << w;
    rx += ws.bridge.rx;
    inserts += ws.flows.inserts;
    std::printf("worker %zu: rx=%llu inserts=%llu hits=%llu dropped=%llu\n", w,
                static_cast<unsigned long long>(ws.bridge.rx),
                static_cast<unsigned long long>(ws.flows.inserts),
                static_cast<unsigned long long>(ws.flows.hits),
                static_cast<unsigned long long>(ws.bridge.policy_dropped));
  }
  EXPECT_EQ(rx, s.bridge.rx);
  EXPECT_EQ(inserts, s.flows.inserts);
  // Every connection (and the ping) remembered once: no reply was taken for
  // a new connection on the other worker.
  EXPECT_EQ(s.flows.inserts, static_cast<std::uint64_t>(ok) + 1) << describe(s);
  EXPECT_GE(s.bridge.policy_dropped, 2U) << describe(s);

  // Both workers end their flows into the one ring at the stop: every
  // connection's start and end is drained, and the events add up over the
  // workers.
  std::vector<FlowEventRecord> drained;
  lab.dp->stop([&](const FlowEventRecord& e) { drained.push_back(e); });
  const DpdkStats end = lab.dp->stats();
  std::size_t starts = 0;
  std::size_t ends = 0;
  std::uint64_t events = 0;
  // Flow ids are distinct across the workers (the flow log pairs a start
  // and its end by the id), and every end names a start.
  std::map<std::uint32_t, int> start_ids;
  for (const auto& e : drained) {
    starts += e.type == FlowEventType::Start ? 1 : 0;
    ends += e.type == FlowEventType::End ? 1 : 0;
    if (e.type == FlowEventType::Start) ++start_ids[e.flow_id];
  }
  for (const auto& [id, n] : start_ids) {
    EXPECT_NE(id, 0U);
    EXPECT_EQ(n, 1) << "flow id " << id << " started " << n << " times";
  }
  for (const auto& e : drained) {
    if (e.type == FlowEventType::End) {
      EXPECT_EQ(start_ids.count(e.flow_id), 1U) << e.flow_id;
    }
  }
  for (const auto& w : end.workers) events += w.events.events;
  EXPECT_EQ(drained.size(), end.events.events) << describe(end);
  EXPECT_EQ(events, end.events.events);
  EXPECT_EQ(end.events.lost, 0U) << describe(end);
  EXPECT_EQ(starts, end.flows.inserts) << describe(end);
  EXPECT_EQ(ends, end.flows.inserts) << describe(end);
}

// The worker count is checked, and a port that cannot give every worker a
// queue is an error naming it.
TEST_F(DpdkDataplaneTest, WorkerCountMustFitThePorts) {
  DpdkDataplaneConfig config;
  config.ports = {{"net_null33,no-rx=1", "c0", std::nullopt}};
  config.workers = 0;
  std::string error;
  EXPECT_FALSE(DpdkDataplane::open(config, error));
  EXPECT_NE(error.find("1 to 16 forwarding workers, not 0"), std::string::npos) << error;

  NetNs sw{"dpdk"};
  NetNs a{"a"};
  af_packet_link(a, std::string(kAddrA) + "/24", sw, "pa");
  config.workers = 2;
  config.ports = {{"net_af_packet26,iface=pa,qpairs=1", "a", std::nullopt}};
  error.clear();
  EXPECT_FALSE(in_netns(sw, [&] { return DpdkDataplane::open(config, error); }));
  EXPECT_NE(error.find("port net_af_packet26 has at most 1 RX and 1 TX queues; 2 workers need 2"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("qpairs="), std::string::npos) << error;

  // Without qpairs= the port asks af_packet for one queue per worker.
  config.ports = {{"net_af_packet26,iface=pa", "a", std::nullopt}};
  error.clear();
  auto dp = in_netns(sw, [&] { return DpdkDataplane::open(config, error); });
  ASSERT_TRUE(dp) << error;
  EXPECT_EQ(dp->stats().workers.size(), 2U);
  dp->stop();
  dp.reset();
}

}  // namespace
