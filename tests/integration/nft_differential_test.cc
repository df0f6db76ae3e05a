// The nftables dataplane against the reference evaluator, on real traffic.
//
// For generated policies and inventories (tests/common/random_policy.h) a
// BridgeLab carries the generated endpoints on br0 (container i has the
// i-th endpoint's addresses), one extra container that no identity source
// knows (quarantine), the node (the `host`) and a world namespace holding
// the generated world addresses. NftBackend applies each generated RuleSet
// in the node; then every (source, destination, probe) with a container on
// a policed side is sent for real, IPv4 and IPv6, and the outcome must be
// what dataplane::decide() says: allow/audit => the echo comes back, deny =>
// the packet is dropped. One lab serves every seed, so each seed's apply is
// also an atomic replacement of the previous generation's table.
//
// The DPDK dataplane is held to the same cases: each seed's RuleSet is also
// built into a dpdk::Generation, and every case's first frame is parsed by
// the DPDK parser and goes through a dpdk::FlowTable. Its verdict must equal
// both the evaluator and what the kernel really did with that case, so the
// two dataplanes are compared with each other on identical inputs, not only
// each with the evaluator. (tests/integration/dpdk_bridge_test.cc carries
// real traffic through the DPDK bridge itself.)
//
// Expected passes get a generous timeout and one retry (a busy 2-CPU CI
// machine); expected drops get a short one and never a retry, so a miss can
// only make a real pass look like a drop, never the other way round.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "tests/common/compile.h"
#include "tests/common/frames.h"
#include "tests/common/probes.h"
#include "tests/common/random_policy.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/flow_table.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/dataplane/nft/conntrack.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall {
namespace {

using dataplane::nft::NftBackend;
using testsupport::BridgeLab;
using testsupport::BridgeLabOptions;
using testsupport::in_netns;
using testsupport::Millis;
using testsupport::NetNs;
using testsupport::Outcome;
using Entity = dataplane::PeerMatch::Entity;
using Clock = std::chrono::steady_clock;

// Seeds whose policies between them cover guardrails, staged denies, host
// and world rules, quarantine selectors, intraTier allow and audit tiers.
constexpr std::uint32_t kSeeds[] = {15, 23, 52, 53};
constexpr int kEndpoints = 8;
constexpr int kWorkers = 64;  // probes in flight; most of them wait for a drop

constexpr Millis kPass{2000};
constexpr Millis kPassRetry{4000};
constexpr Millis kDrop{250};

constexpr std::uint16_t kTcpPorts[] = {80, 443, 5432, 8080, 4000};
constexpr std::uint16_t kUdpPorts[] = {53, 5000};

using Kind = testkit::ProbeKind;
using testkit::Probe;
using testkit::proto_port;
using testkit::run_probe;

std::vector<Probe> probes() {
  std::vector<Probe> out;
  for (std::uint16_t p : kTcpPorts) out.push_back({Kind::kTcp, p});
  for (std::uint16_t p : kUdpPorts) out.push_back({Kind::kUdp, p});
  out.push_back({Kind::kPing, 0});
  return out;
}

// The first frame of a probe, as it would reach a DPDK port: Ethernet,
// IPv4 or IPv6, then a TCP SYN, a UDP datagram or an ICMP/ICMPv6 echo
// request. Each case gets its own source port (echo identifier) so that no
// two cases share a flow.
testkit::frames::Bytes first_frame(const std::string& src, const std::string& dst, Probe p, bool v6,
                                   std::uint16_t source_port) {
  namespace f = testkit::frames;
  f::Bytes l4;
  std::uint8_t protocol = 0;
  switch (p.kind) {
    case Kind::kTcp:
      l4 = f::tcp(source_port, p.port, f::kSyn);
      protocol = f::kTcp;
      break;
    case Kind::kUdp:
      l4 = f::udp(source_port, p.port, f::Bytes(8));
      protocol = f::kUdp;
      break;
    case Kind::kPing:
      l4 = f::icmp(v6 ? 128 : 8, 0, source_port);
      protocol = v6 ? f::kIcmp6 : f::kIcmp;
      break;
  }
  if (v6) return f::eth(0x86DD, f::ipv6(protocol, l4, src.c_str(), dst.c_str()));
  return f::eth(0x0800, f::ipv4({.proto = protocol, .src = src.c_str(), .dst = dst.c_str()}, l4));
}

// One address a probe can start from or go to.
struct Peer {
  const NetNs* ns = nullptr;
  std::string address;
  std::string label;  // "e3", "unknown", "node", "world"
  bool node = false;  // the host itself: `host` on either side
};

struct Case {
  const Peer* src = nullptr;
  const Peer* dst = nullptr;
  Probe probe;
  bool v6 = false;
  dataplane::Decision want;
};

class NftDifferential : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  }
};

TEST_F(NftDifferential, KernelVerdictsEqualTheReferenceEvaluator) {
  const auto shape = testkit::generate_case(kSeeds[0], kEndpoints);
  // Container i carries endpoint i; one more container is unknown.
  BridgeLab lab(BridgeLabOptions{
      .br0_containers = kEndpoints + 1, .br1_containers = 0, .bridge_nf_call = true});
  for (int i = 0; i < kEndpoints; ++i) {
    const auto& c = lab.br0_containers[static_cast<std::size_t>(i)];
    ASSERT_EQ(c.v4, shape.endpoint_v4[static_cast<std::size_t>(i)]);
    ASSERT_EQ(c.v6, shape.endpoint_v6[static_cast<std::size_t>(i)]);
  }
  ASSERT_EQ(std::vector<std::string>{lab.br0_v4}, shape.node_v4);
  ASSERT_EQ(std::vector<std::string>{lab.br0_v6}, shape.node_v6);
  const auto& unknown = lab.br0_containers.back();

  // The generated world addresses live in the world namespace, routed by
  // the node through the uplink.
  for (const auto& a : shape.world_v4) testsupport::addr(lab.world, lab.world_ifname, a + "/24");
  for (const auto& a : shape.world_v6) testsupport::addr(lab.world, lab.world_ifname, a + "/64");
  for (const std::string net : {"203.0.113.0/24", "192.0.2.0/24"}) {
    testsupport::route(lab.node, net + " via " + lab.world_v4);
  }
  testsupport::route(lab.node, "2001:db8:200::/64 via " + lab.world_v6);

  std::vector<std::unique_ptr<testsupport::TcpServer>> tcp_servers;
  std::vector<std::unique_ptr<testsupport::UdpEchoServer>> udp_servers;
  for (const NetNs* ns : lab.namespaces()) {
    for (std::uint16_t port : kTcpPorts) {
      tcp_servers.push_back(std::make_unique<testsupport::TcpServer>(*ns, "::", port));
    }
    for (std::uint16_t port : kUdpPorts) {
      udp_servers.push_back(std::make_unique<testsupport::UdpEchoServer>(*ns, "::", port));
    }
  }

  // Peers per family: endpoints, the unknown container, the node (by its
  // br0 address, the one the generated inventory names), the world.
  std::vector<Peer> peers[2];
  for (bool v6 : {false, true}) {
    auto& list = peers[v6 ? 1 : 0];
    for (int i = 0; i < kEndpoints; ++i) {
      const auto& c = lab.br0_containers[static_cast<std::size_t>(i)];
      list.push_back({&c.ns, v6 ? c.v6 : c.v4, "e" + std::to_string(i), false});
    }
    list.push_back({&unknown.ns, v6 ? unknown.v6 : unknown.v4, "unknown", false});
    list.push_back({&lab.node, v6 ? lab.br0_v6 : lab.br0_v4, "node", true});
    for (const auto& a : v6 ? shape.world_v6 : shape.world_v4)
      list.push_back({&lab.world, a, "world", false});
  }

  NftBackend::Config config;
  for (const std::string& a :
       {lab.br0_v4, lab.br1_v4, lab.uplink_v4, lab.br0_v6, lab.br1_v6, lab.uplink_v6}) {
    config.local_addresses.push_back(*IpAddress::parse(a));
  }
  auto opened = in_netns(lab.node, [&] { return NftBackend::open(config); });
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<NftBackend>>(opened))
      << std::get<std::string>(opened);
  std::unique_ptr<NftBackend> backend = std::move(std::get<std::unique_ptr<NftBackend>>(opened));

  std::size_t compared = 0;
  std::size_t passed = 0;
  std::size_t dpdk_compared = 0;
  std::uint64_t generation = 0;
  for (std::uint32_t seed : kSeeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const auto started = Clock::now();
    const auto gen = testkit::generate_case(seed, kEndpoints);
    const auto compiled = testkit::compile_yaml(
        gen.policy_yaml, gen.inventory_yaml, ++generation,
        {*Cidr::parse(gen.container_cidr4), *Cidr::parse(gen.container_cidr6)});
    ASSERT_TRUE(compiled) << gen.policy_yaml;
    const dataplane::RuleSet& rules = *compiled;

    // Apply, then forget every connection of the previous seed: an entry
    // left established would pass a probe with the same tuple unjudged.
    const auto err = in_netns(lab.node, [&]() -> std::optional<dataplane::DataplaneError> {
      auto e = backend->apply(rules);
      if (!e) dataplane::nft::ct_delete_if([](const dataplane::nft::CtEntry&) { return true; });
      return e;
    });
    ASSERT_FALSE(err) << err->message;

    // Resolve like the kernel's hooks (and NftBackend::cut): the node's own
    // address is the host on either side; out of scope when no side is a
    // container; self traffic never reaches a hook.
    std::vector<Case> cases;
    for (bool v6 : {false, true}) {
      for (const Peer& s : peers[v6 ? 1 : 0]) {
        for (const Peer& d : peers[v6 ? 1 : 0]) {
          if (s.ns == d.ns) continue;
          auto as_peer = [&](const Peer& p) {
            const IpAddress a = *IpAddress::parse(p.address);
            if (p.node)
              return dataplane::ResolvedPeer{
                  Entity::Host, a, dataplane::kUnknownEndpoint, dataplane::kQuarantineTier, {}};
            return dataplane::resolve(*rules.endpoints, a);
          };
          const dataplane::ResolvedPeer src = as_peer(s);
          const dataplane::ResolvedPeer dst = as_peer(d);
          if (src.entity != Entity::Endpoint && dst.entity != Entity::Endpoint) continue;
          for (const Probe& p : probes()) {
            const auto [protocol, port] = proto_port(p, v6);
            cases.push_back(
                {&s, &d, p, v6, dataplane::decide(*rules.policy, src, dst, protocol, port)});
          }
        }
      }
    }
    // The unknown container must really be unknown to this inventory.
    ASSERT_EQ(dataplane::resolve(*rules.endpoints, *IpAddress::parse(unknown.v4)).endpoint,
              dataplane::kUnknownEndpoint);

    std::vector<Outcome> got(cases.size(), Outcome::kError);
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&] {
        for (std::size_t i = next++; i < cases.size(); i = next++) {
          const Case& c = cases[i];
          const bool pass = c.want.verdict != dataplane::Verdict::Deny;
          // Bind the source: the world and the node have several addresses.
          const std::string& source = c.src->address;
          Outcome o = run_probe(*c.src->ns, c.dst->address, c.probe, pass ? kPass : kDrop, source);
          if (pass && o == Outcome::kTimeout) {
            o = run_probe(*c.src->ns, c.dst->address, c.probe, kPassRetry, source);
          }
          got[i] = o;
        }
      });
    }
    for (auto& t : workers) t.join();

    std::size_t mismatches = 0;
    std::size_t seed_passed = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const bool want_pass = c.want.verdict != dataplane::Verdict::Deny;
      // A drop in the node's own output may fail the send with EPERM.
      const bool dropped =
          got[i] == Outcome::kTimeout || (c.src->node && got[i] == Outcome::kUnreachable);
      const bool ok = want_pass ? got[i] == Outcome::kOk : dropped;
      if (got[i] == Outcome::kOk) ++seed_passed;
      if (ok) continue;
      if (++mismatches <= 25) {
        const dataplane::Rule* r = c.want.rule;
        ADD_FAILURE() << c.src->label << " " << c.src->address << " -> " << c.dst->label << " "
                      << c.dst->address << " " << describe(c.probe) << ": evaluator says "
                      << dataplane::to_string(c.want.verdict) << " (rule " << c.want.rule_id()
                      << (r != nullptr ? " " + r->origin.name : std::string()) << "), kernel "
                      << got[i];
      }
    }
    // The DPDK decision core on the same cases: equal to the evaluator
    // (verdict and deciding rule) and to the kernel's outcome.
    auto built = dataplane::dpdk::build_generation(rules);
    ASSERT_TRUE(built.generation) << built.error;
    dataplane::dpdk::FlowTable flows(
        dataplane::dpdk::FlowTableOptions{.capacity = 1U << 14, .timeouts = {}});
    std::size_t dpdk_mismatches = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[i];
      const auto frame = first_frame(c.src->address, c.dst->address, c.probe, c.v6,
                                     static_cast<std::uint16_t>(20000 + i));
      const auto info = dataplane::dpdk::parse_packet(frame);
      ASSERT_EQ(info.status, dataplane::dpdk::ParseStatus::Ok) << describe(c.probe);
      const auto r = flows.process(*built.generation, dataplane::dpdk::flow_packet(info), 1);
      const bool dpdk_pass = r.pass();
      const bool kernel_pass = got[i] == Outcome::kOk;
      const bool same_rule =
          r.decision.verdict == c.want.verdict && r.decision.rule_id == c.want.rule_id();
      ++dpdk_compared;
      if (same_rule && dpdk_pass == kernel_pass) continue;
      if (++dpdk_mismatches <= 25) {
        ADD_FAILURE() << "dpdk: " << c.src->label << " " << c.src->address << " -> " << c.dst->label
                      << " " << c.dst->address << " " << describe(c.probe) << ": dpdk "
                      << dataplane::to_string(r.decision.verdict) << " (rule " << r.decision.rule_id
                      << "), evaluator " << dataplane::to_string(c.want.verdict) << " (rule "
                      << c.want.rule_id() << "), kernel " << got[i];
      }
    }
    EXPECT_EQ(dpdk_mismatches, 0U) << "seed " << seed;
    if (mismatches > 0) {
      ADD_FAILURE() << mismatches << " of " << cases.size() << " cases differ for seed " << seed
                    << "; policy:\n"
                    << gen.policy_yaml << "inventory:\n"
                    << gen.inventory_yaml;
    }
    compared += cases.size();
    passed += seed_passed;
    std::cout << "[ seed " << seed << " ] " << cases.size() << " cases, " << seed_passed
              << " passed, " << cases.size() - seed_passed << " dropped, "
              << std::chrono::duration_cast<Millis>(Clock::now() - started).count() << " ms\n";
  }
  std::cout << "[ compared ] " << compared << " kernel outcomes with the evaluator (" << passed
            << " passed, " << compared - passed << " dropped) over " << std::size(kSeeds)
            << " generated policies\n";
  std::cout
      << "[ compared ] " << dpdk_compared
      << " DPDK verdicts (parsed frame -> flow table) with the kernel outcome and the evaluator\n";
  EXPECT_GT(passed, 0U);
  EXPECT_GT(compared - passed, 0U);

  backend.reset();
  tcp_servers.clear();
  udp_servers.clear();
}

}  // namespace
}  // namespace tierwall
