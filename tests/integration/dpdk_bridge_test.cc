// The DPDK forwarding path end to end: two network namespaces (A, B) whose
// veth peers sit in a third namespace where af_packet ports are opened, a
// Bridge (tw_dpdk_forward) between the two ports enforcing a compiled policy,
// real TCP/UDP/ICMP between A and B, a new generation cutting an
// established connection, and 1,000 generation swaps under traffic that let
// nothing through which both generations deny. docs/dpdk.md, "Forwarding".
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <netinet/in.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tests/common/dpdk.h"
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

// a -> b is allowed on `ports` (a YAML flow list body).
std::string policy_yaml(const std::string& ports) {
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
  p += "      ports: [" + ports + "]\n";
  return p;
}

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node, addresses: [10.77.0.254]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.77.0.1]}
  - {name: b-1, labels: {role: b}, addresses: [10.77.0.2]}
)";

// Compiles the policy and builds its Generation; fails the test on error.
std::unique_ptr<const dataplane::dpdk::Generation> generation(const std::string& ports,
                                                              std::uint64_t serial) {
  return testkit::dpdk_generation(policy_yaml(ports), kInventory, serial,
                                  {*Cidr::parse("10.77.0.0/24")});
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

// Wires A and B to the switch namespace, opens the two af_packet ports and
// starts the bridge on its own thread with `first` published.
void start(Lab& lab, std::unique_ptr<const dataplane::dpdk::Generation> first) {
  af_packet_link(lab.a, std::string(kAddrA) + "/24", lab.sw, "pa");
  af_packet_link(lab.b, std::string(kAddrB) + "/24", lab.sw, "pb");

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

  ASSERT_TRUE(first);
  lab.store.publish(std::move(first));

  BridgeOptions options;
  options.idle_sleep_us = 50;
  Port* ports[] = {lab.port_a.get(), lab.port_b.get()};
  lab.bridge = std::make_unique<Bridge>(ports, lab.store, options);
  lab.worker = std::thread([&lab] { lab.bridge->run(lab.stop); });
}

constexpr const char* kPorts8080 = "tcp/8080, icmp/echo-request";
constexpr const char* kPortsEcho = "icmp/echo-request";

TEST_F(DpdkBridge, EnforcesPolicyOnRealTraffic) {
  Lab lab;
  start(lab, generation(kPorts8080, 1));
  if (HasFatalFailure()) return;

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
  auto g2 = generation(kPortsEcho, 2);
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

// Sends UDP datagrams from `from` (bound to `source`) to address:port until
// stopped, one every `gap`, from one socket (one flow). sent() counts the
// datagrams the kernel accepted.
class UdpStream {
 public:
  UdpStream(const NetNs& from, const std::string& source, const std::string& address,
            std::uint16_t port, std::chrono::microseconds gap)
      : thread_([this, &from, source, address, port, gap] {
          in_netns(from, [&] { loop(source, address, port, gap); });
        }) {}
  ~UdpStream() { stop(); }
  UdpStream(const UdpStream&) = delete;
  UdpStream& operator=(const UdpStream&) = delete;

  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::size_t sent() const { return sent_.load(); }

 private:
  void loop(const std::string& source, const std::string& address, std::uint16_t port,
            std::chrono::microseconds gap) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, source.c_str(), &local.sin_addr);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0) {
      const char payload[64] = "tierwall swap test";
      while (!stop_.load()) {
        if (::sendto(fd, payload, sizeof payload, 0, reinterpret_cast<const sockaddr*>(&to),
                     sizeof to) > 0) {
          ++sent_;
        }
        std::this_thread::sleep_for(gap);
      }
    }
    ::close(fd);
  }

  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> sent_{0};
  std::thread thread_;
};

// Live updates under traffic (issue: 1,000 generation swaps while
// forwarding). Two generations alternate: both allow a -> b udp/6000 and
// deny a -> b udp/5000 and everything b -> a; only the even one allows
// a -> b udp/7000. Four UDP streams run through the bridge during the
// swaps. Not one datagram of the streams both generations deny may reach
// its receiver; the stream both allow keeps flowing; the flip-flopping one
// passes under one generation and is cut under the other. Every retired
// generation is reclaimed (ASan in CI checks that none leaks).
TEST_F(DpdkBridge, ThousandGenerationSwapsUnderTraffic) {
  constexpr int kSwaps = 1000;
  constexpr const char* kEven = "udp/6000, udp/7000, icmp/echo-request";
  constexpr const char* kOdd = "udp/6000, icmp/echo-request";
  policy::Diagnostics diags;
  auto even = policy::parse_policy(policy_yaml(kEven), "even.yaml", diags);
  auto odd = policy::parse_policy(policy_yaml(kOdd), "odd.yaml", diags);
  auto inv = identity::parse_inventory(kInventory, "inventory.yaml", diags);
  ASSERT_TRUE(even && odd && inv) << testkit::diag_text(diags);
  const std::vector<Cidr> cidrs{*Cidr::parse("10.77.0.0/24")};
  auto build = [&](int i) {
    const dataplane::RuleSet rules = compiler::compile(i % 2 == 0 ? *even : *odd, *inv,
                                                       static_cast<std::uint64_t>(i + 1), cidrs);
    auto built = dataplane::dpdk::build_generation(rules);
    EXPECT_TRUE(built.generation) << built.error;
    return std::move(built.generation);
  };

  Lab lab;
  start(lab, build(0));
  if (HasFatalFailure()) return;
  UdpEchoServer b5000(lab.b, kAddrB, 5000);  // denied by both
  UdpEchoServer a5001(lab.a, kAddrA, 5001);  // denied by both (b -> a)
  UdpEchoServer b6000(lab.b, kAddrB, 6000);  // allowed by both
  UdpEchoServer b7000(lab.b, kAddrB, 7000);  // allowed by the even generations only
  // ARP first, so that the streams start on resolved neighbours.
  ASSERT_EQ(ping_probe(lab.a, kAddrB, kPass), Outcome::kOk) << describe(lab.bridge->counters());

  const BridgeCounters before = lab.bridge->counters();
  const std::chrono::microseconds gap{250};
  std::size_t max_waiting = 0;
  std::size_t sent_deny_ab = 0, sent_deny_ba = 0, sent_allow = 0, sent_flip = 0;
  {
    UdpStream deny_ab(lab.a, kAddrA, kAddrB, 5000, gap);
    UdpStream deny_ba(lab.b, kAddrB, kAddrA, 5001, gap);
    UdpStream allow(lab.a, kAddrA, kAddrB, 6000, gap);
    UdpStream flip(lab.a, kAddrA, kAddrB, 7000, gap);
    for (int i = 1; i <= kSwaps; ++i) {
      auto g = build(i);
      ASSERT_TRUE(g);
      max_waiting = std::max(max_waiting, lab.store.publish(std::move(g)));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (UdpStream* s : {&deny_ab, &deny_ba, &allow, &flip}) s->stop();
    sent_deny_ab = deny_ab.sent();
    sent_deny_ba = deny_ba.sent();
    sent_allow = allow.sent();
    sent_flip = flip.sent();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const BridgeCounters after = lab.bridge->counters();
  std::printf(
      "swaps: %d; sent deny a->b %zu, deny b->a %zu, allow %zu, flip %zu; received %zu, %zu, "
      "%zu, %zu; generations waiting at most %zu; %s\n",
      kSwaps, sent_deny_ab, sent_deny_ba, sent_allow, sent_flip, b5000.received(), a5001.received(),
      b6000.received(), b7000.received(), max_waiting, describe(after).c_str());

  ASSERT_GT(sent_deny_ab, 1000U);
  ASSERT_GT(sent_deny_ba, 1000U);
  EXPECT_EQ(b5000.received(), 0U) << "a denied datagram went through";
  EXPECT_EQ(a5001.received(), 0U) << "a denied datagram went through";
  // The stream both generations allow kept flowing through every swap
  // (af_packet and a busy CI machine may lose a few).
  EXPECT_GE(b6000.received() * 10, sent_allow * 9) << describe(after);
  // The flip-flopping stream passed at times and was cut at times.
  EXPECT_GT(b7000.received(), 0U);
  EXPECT_LT(b7000.received(), sent_flip);
  EXPECT_GT(after.policy_cut - before.policy_cut, 0U) << describe(after);
  EXPECT_GE(after.policy_dropped - before.policy_dropped, sent_deny_ab / 2) << describe(after);
  EXPECT_EQ(after.no_generation, 0U);
  EXPECT_EQ(after.malformed, 0U);

  // Every replaced generation is freed once the lcore passed a quiescent
  // state; none stays behind.
  EXPECT_LT(max_waiting, 64U);
  lab.stop.store(true);
  lab.worker.join();
  lab.store.synchronize();
  EXPECT_EQ(lab.store.reclaim(), 0U);
}

}  // namespace
