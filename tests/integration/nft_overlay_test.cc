// The tier on the wire: two nodes joined by a kernel VXLAN-GBP overlay, each
// enforcing with its own NftBackend that knows only its own container.
//
//   ca (10.88.1.10) ─veth─ nodeA ══ vx0 (10.200.0.1) ═ VXLAN-GBP over ul0 ═ vx0 (10.200.0.2) ══
//   nodeB ─veth─ cb (10.88.2.10)
//                          172.31.0.1 ───────────── underlay veth ───────────── 172.31.0.2
//                                                                    rogue (172.31.1.66) ─veth─
//                                                                    nodeB (172.31.1.1)
//
// Node A tags what its container sends with the container's tier; node B has
// never heard of ca, so it decides by that tag. Every probe from ca to cb
// (real TCP with an echo, UDP, ICMP) must pass or be dropped as
// dataplane::decide_tagged() says for ca's tier, and is never more
// permissive than decide() on ca's full identity. Then the trust model: VXLAN
// from an underlay address that is not a peer is dropped and counted; a
// sender cannot choose its tag (SO_MARK from a container or from the node);
// a container sending from an address not its own gains nothing. Finally
// churn: a tier change on the sending node is set elements only (its tag
// map entry included) and retags at once, and a connection cut by a
// re-apply on either node carries on.
//
// Namespaces (and with them every link and table) are removed by the NetNs
// guards, also when a test fails. Root is required: without it the test
// skips, except under CI, where it fails.
#include <arpa/inet.h>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

#include "tests/common/compile.h"
#include "tests/common/probes.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall {
namespace {

using dataplane::nft::gbp_tag;
using dataplane::nft::NftBackend;
using testsupport::in_netns;
using testsupport::Millis;
using testsupport::NetNs;
using testsupport::Outcome;

constexpr Millis kPass{1500};
constexpr Millis kPassRetry{3000};
constexpr Millis kDrop{400};

constexpr const char* kCa = "10.88.1.10";
constexpr const char* kCb = "10.88.2.10";
constexpr const char* kCa6 = "fd00:88:1::10";
constexpr const char* kCb6 = "fd00:88:2::10";
constexpr std::uint16_t kInjectPort = 7000;  // only injected datagrams go there

const char* const kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: overlay}
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
    - {name: dev-never-db, from: {labels: {env: dev}}, to: {tier: db}, ports: [tcp/5432]}
  flows:
    - name: web-to-db
      from: {tier: web}
      to: {tier: db}
      ports: [tcp/5432, tcp/443, udp/5000, udp/7000, icmp/echo-request, icmpv6/echo-request]
    - {name: ops-to-db, from: {tier: web, labels: {team: ops}}, to: {tier: db}, ports: [tcp/22]}
    - {name: api-to-db, from: {tier: api}, to: {tier: db}, ports: [tcp/8080, udp/6000]}
)";

using testkit::diag_text;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

using Kind = testkit::ProbeKind;
using testkit::Probe;
using testkit::proto_port;
using testkit::run_probe;

// A UDP datagram with SO_MARK set, sent from `ns`; true when the echo
// server answered within `timeout`.
bool udp_echo_marked(const NetNs& ns, const std::string& dst, std::uint16_t port,
                     std::uint32_t mark, Millis timeout) {
  return in_netns(ns, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    if (::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
      ::close(fd);
      throw std::runtime_error("SO_MARK: " + std::string(std::strerror(errno)));
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, dst.c_str(), &to.sin_addr);
    bool answered = false;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      const char token[] = "marked";
      while (!answered && std::chrono::steady_clock::now() < deadline) {
        (void)::send(fd, token, sizeof token, 0);
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 150) > 0) {
          char buf[64];
          answered = ::recv(fd, buf, sizeof buf, 0) == static_cast<ssize_t>(sizeof token);
        }
      }
    }
    ::close(fd);
    return answered;
  });
}

std::uint16_t ip_checksum(const std::uint8_t* data, std::size_t len) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < len; i += 2)
    sum += static_cast<std::uint32_t>(data[i] << 8 | data[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// IPv4 + UDP (checksum 0: none) carrying `payload`.
std::vector<std::uint8_t> ipv4_udp(const std::string& src, const std::string& dst,
                                   std::uint16_t dport, const std::string& payload) {
  std::vector<std::uint8_t> p(28 + payload.size(), 0);
  const auto total = static_cast<std::uint16_t>(p.size());
  p[0] = 0x45;
  p[2] = static_cast<std::uint8_t>(total >> 8);
  p[3] = static_cast<std::uint8_t>(total);
  p[8] = 64;
  p[9] = proto::kUdp;
  ::inet_pton(AF_INET, src.c_str(), &p[12]);
  ::inet_pton(AF_INET, dst.c_str(), &p[16]);
  const std::uint16_t c = ip_checksum(p.data(), 20);
  p[10] = static_cast<std::uint8_t>(c >> 8);
  p[11] = static_cast<std::uint8_t>(c);
  const auto udp_len = static_cast<std::uint16_t>(8 + payload.size());
  p[20] = 0x9c;  // source port 40000
  p[21] = 0x40;
  p[22] = static_cast<std::uint8_t>(dport >> 8);
  p[23] = static_cast<std::uint8_t>(dport);
  p[24] = static_cast<std::uint8_t>(udp_len >> 8);
  p[25] = static_cast<std::uint8_t>(udp_len);
  std::memcpy(&p[28], payload.data(), payload.size());
  return p;
}

// Sends `packet` (a whole IPv4 packet, source address included) from `ns`
// through a raw socket.
void send_raw(const NetNs& ns, const std::vector<std::uint8_t>& packet, const std::string& dst) {
  in_netns(ns, [&] {
    const int fd = ::socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) throw std::runtime_error("raw socket: " + std::string(std::strerror(errno)));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    ::inet_pton(AF_INET, dst.c_str(), &to.sin_addr);
    for (int i = 0; i < 3; ++i) {
      (void)::sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<const sockaddr*>(&to),
                     sizeof to);
    }
    ::close(fd);
  });
}

// Sends a VXLAN-GBP datagram (VNI 42, group id `tag`) from `from_addr` in
// `ns` to `to_addr`:4789, carrying an Ethernet frame to `inner_mac` with
// `inner` as its IPv4 packet.
void send_vxlan(const NetNs& ns, const std::string& from_addr, const std::string& to_addr,
                std::uint16_t tag, const std::array<std::uint8_t, 6>& inner_mac,
                const std::vector<std::uint8_t>& inner) {
  std::vector<std::uint8_t> d = {
      0x88, 0x00, static_cast<std::uint8_t>(tag >> 8), static_cast<std::uint8_t>(tag), 0x00, 0x00,
      42,   0x00};
  d.insert(d.end(), inner_mac.begin(), inner_mac.end());
  for (int b : {0x02, 0x00, 0x00, 0x00, 0x00, 0x66}) d.push_back(static_cast<std::uint8_t>(b));
  d.push_back(0x08);
  d.push_back(0x00);
  d.insert(d.end(), inner.begin(), inner.end());
  in_netns(ns, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, from_addr.c_str(), &local.sin_addr);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(4789);
    ::inet_pton(AF_INET, to_addr.c_str(), &to.sin_addr);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
      ::close(fd);
      throw std::runtime_error("bind: " + std::string(std::strerror(errno)));
    }
    for (int i = 0; i < 3; ++i) {
      (void)::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    }
    ::close(fd);
  });
}

std::array<std::uint8_t, 6> mac_of(const NetNs& ns, const std::string& dev) {
  const std::string text = ns.check("cat /sys/class/net/" + dev + "/address").out;
  std::array<std::uint8_t, 6> mac{};
  unsigned v[6] = {};
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
    throw std::runtime_error("no MAC for " + dev + ": " + text);
  for (int i = 0; i < 6; ++i) mac[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v[i]);
  return mac;
}

// One node: its namespace, its container, its backend and what it knows.
struct Node {
  Node(const std::string& label, const std::string& container_label)
      : ns(label), container(container_label) {}
  NetNs ns;
  NetNs container;
  std::unique_ptr<NftBackend> backend;
  std::unique_ptr<compiler::Compilation> compilation;
  dataplane::RuleSet rules;
};

class NftOverlay : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = testsupport::netns_unavailable_reason()) {
      if (std::getenv("CI") != nullptr) FAIL() << *why;
      GTEST_SKIP() << *why;
    }
    a_ = std::make_unique<Node>("nodeA", "ca");
    b_ = std::make_unique<Node>("nodeB", "cb");
    rogue_ = std::make_unique<NetNs>("rogue");
    testsupport::veth(a_->ns, "ul0", b_->ns, "ul0");
    testsupport::addr(a_->ns, "ul0", "172.31.0.1/24");
    testsupport::addr(b_->ns, "ul0", "172.31.0.2/24");
    for (Node* n : {a_.get(), b_.get()}) {
      const bool is_a = n == a_.get();
      const std::string local = is_a ? "172.31.0.1" : "172.31.0.2";
      const std::string remote = is_a ? "172.31.0.2" : "172.31.0.1";
      const auto vxlan =
          n->ns.run("ip link add vx0 type vxlan id 42 local " + local + " remote " + remote +
                    " dstport 4789 gbp nolearning dev ul0 && ip link set vx0 up");
      if (!vxlan.ok()) {
        const std::string why = "cannot create a vxlan-gbp device: " + vxlan.err;
        if (std::getenv("CI") != nullptr) FAIL() << why;
        GTEST_SKIP() << why;
      }
      testsupport::addr(n->ns, "vx0", is_a ? "10.200.0.1/24" : "10.200.0.2/24");
      testsupport::addr(n->ns, "vx0", is_a ? "fd00:200::1/64" : "fd00:200::2/64");
      const std::string subnet = is_a ? "10.88.1" : "10.88.2";
      testsupport::veth(n->ns, "ct0", n->container, "eth0");
      testsupport::addr(n->ns, "ct0", subnet + ".1/24");
      testsupport::addr(n->container, "eth0", subnet + ".10/24");
      testsupport::route(n->container, "default via " + subnet + ".1");
      const std::string subnet6 = is_a ? "fd00:88:1::" : "fd00:88:2::";
      testsupport::addr(n->ns, "ct0", subnet6 + "1/64");
      testsupport::addr(n->container, "eth0", subnet6 + "10/64");
      testsupport::route(n->container, "default via " + subnet6 + "1");
      testsupport::route(n->ns, std::string(is_a ? "fd00:88:2::/64 via fd00:200::2"
                                                 : "fd00:88:1::/64 via fd00:200::1"));
      testsupport::sysctl(n->ns, "net.ipv6.conf.all.forwarding", "1");
      testsupport::route(
          n->ns, std::string(is_a ? "10.88.2.0/24 via 10.200.0.2" : "10.88.1.0/24 via 10.200.0.1"));
      testsupport::sysctl(n->ns, "net.ipv4.ip_forward", "1");
      for (const char* c : {"all", "default", "ul0", "vx0", "ct0"})
        testsupport::sysctl(n->ns, std::string("net.ipv4.conf.") + c + ".rp_filter", "0");
      testsupport::wait_link_running(n->ns, "ct0");
      testsupport::wait_link_running(n->ns, "vx0");
    }
    testsupport::veth(*rogue_, "eth0", b_->ns, "rg0");
    testsupport::addr(*rogue_, "eth0", "172.31.1.66/24");
    testsupport::addr(b_->ns, "rg0", "172.31.1.1/24");
    testsupport::route(*rogue_, "172.31.0.0/24 via 172.31.1.1");
    testsupport::wait_link_running(b_->ns, "rg0");

    for (int port : {22, 80, 443, 5432, 8080})
      tcp_servers_.push_back(std::make_unique<testsupport::TcpServer>(
          b_->container, "::", static_cast<std::uint16_t>(port)));
    for (int port : {53, 5000, 6000, 7000})
      udp_servers_.push_back(std::make_unique<testsupport::UdpEchoServer>(
          b_->container, "::", static_cast<std::uint16_t>(port)));
    tcp_servers_.push_back(std::make_unique<testsupport::TcpServer>(a_->container, "::", 443));

    // Without any ruleset the overlay carries everything.
    ASSERT_EQ(testsupport::ping_probe(a_->container, kCb, kPassRetry), Outcome::kOk)
        << "the overlay does not carry traffic";

    ASSERT_EQ(testsupport::ping_probe(a_->container, kCb6, kPassRetry), Outcome::kOk)
        << "the overlay does not carry IPv6";

    ASSERT_NO_FATAL_FAILURE(open(
        *a_, "web-1", {kCa, kCa6}, "role: web, env: dev, team: ops",
        {"10.88.1.1", "10.200.0.1", "172.31.0.1", "fd00:88:1::1", "fd00:200::1"}, "172.31.0.2"));
    ASSERT_NO_FATAL_FAILURE(
        open(*b_, "db-1", {kCb, kCb6}, "role: db",
             {"10.88.2.1", "10.200.0.2", "172.31.0.2", "172.31.1.1", "fd00:88:2::1", "fd00:200::2"},
             "172.31.0.1"));
  }

  void TearDown() override {
    for (Node* n : {a_.get(), b_.get()}) {
      if (n != nullptr) n->backend.reset();
    }
    tcp_servers_.clear();
    udp_servers_.clear();
    rogue_.reset();
    b_.reset();
    a_.reset();
  }

  // Compiles the policy with an inventory holding only this node's own
  // container and opens the node's backend (not applied yet).
  void open(Node& n, const std::string& name, const std::vector<std::string>& addresses,
            const std::string& labels, const std::vector<std::string>& node_addresses,
            const std::string& peer) {
    std::ostringstream inv;
    inv << "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: " << n.ns.label()
        << ", addresses: [";
    for (std::size_t i = 0; i < node_addresses.size(); ++i)
      inv << (i > 0 ? ", " : "") << '"' << node_addresses[i] << '"';
    inv << "]}\nendpoints:\n  - {name: " << name << ", labels: {" << labels << "}, addresses: [";
    for (std::size_t i = 0; i < addresses.size(); ++i)
      inv << (i > 0 ? ", " : "") << '"' << addresses[i] << '"';
    inv << "]}\n";
    policy::Diagnostics diags;
    auto p = policy::parse_policy(kPolicy, "policy.yaml", diags);
    auto i = identity::parse_inventory(inv.str(), "inventory.yaml", diags);
    ASSERT_TRUE(p && i) << diag_text(diags);
    n.compilation = std::make_unique<compiler::Compilation>(*p, 1);
    n.rules = dataplane::RuleSet{
        n.compilation->policy(),
        n.compilation->bind_all(*i, {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("fd00:88::/32")})};
    NftBackend::Config config;
    for (const auto& a : node_addresses) config.local_addresses.push_back(ip(a));
    config.plan.overlay.devices = {"vx0"};
    config.plan.overlay.peers = {ip(peer)};
    auto opened = in_netns(n.ns, [&] { return NftBackend::open(config); });
    ASSERT_TRUE(std::holds_alternative<std::unique_ptr<NftBackend>>(opened))
        << std::get<std::string>(opened);
    n.backend = std::move(std::get<std::unique_ptr<NftBackend>>(opened));
  }

  static void apply(Node& n) {
    const auto err = in_netns(n.ns, [&] { return n.backend->apply(n.rules); });
    ASSERT_FALSE(err) << n.ns.label() << ": " << err->message;
  }

  static bool passes(dataplane::Verdict v) { return v != dataplane::Verdict::Deny; }

  // A probe from `from` to `dst` must pass exactly when `pass`.
  static void expect_probe(const NetNs& from, const std::string& dst, Probe p, bool pass,
                           const std::string& why) {
    Outcome o = run_probe(from, dst, p, pass ? kPass : kDrop);
    if (pass && o != Outcome::kOk) o = run_probe(from, dst, p, kPassRetry);
    if (pass) {
      EXPECT_EQ(o, Outcome::kOk) << from.label() << " -> " << dst << " " << describe(p) << ": "
                                 << why;
    } else {
      EXPECT_EQ(o, Outcome::kTimeout)
          << from.label() << " -> " << dst << " " << describe(p) << ": " << why;
    }
  }

  std::unique_ptr<Node> a_;
  std::unique_ptr<Node> b_;
  std::unique_ptr<NetNs> rogue_;
  std::vector<std::unique_ptr<testsupport::TcpServer>> tcp_servers_;
  std::vector<std::unique_ptr<testsupport::UdpEchoServer>> udp_servers_;
};

TEST_F(NftOverlay, ReceiverEnforcesOnTheTagAsTheEvaluatorSays) {
  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  const auto& policy = *b_->rules.policy;
  const auto web = *policy.find_tier("web");
  const auto ca_tier = dataplane::resolve(*a_->rules.endpoints, ip(kCa)).tier;
  ASSERT_EQ(ca_tier, web);
  // Node B has never heard of ca: only the tag tells it ca's tier.
  ASSERT_FALSE(b_->rules.endpoints->find(ip(kCa)));
  // ca as node A knows it (labels included); its endpoint id is node A's,
  // not comparable with node B's.
  int allowed = 0;
  int denied = 0;
  int conservative = 0;
  for (bool v6 : {false, true}) {
    const std::string to = v6 ? kCb6 : kCb;
    auto src_full = dataplane::resolve(*a_->rules.endpoints, ip(v6 ? kCa6 : kCa));
    src_full.endpoint = dataplane::kUnknownEndpoint;
    const auto dst = dataplane::resolve(*b_->rules.endpoints, ip(to));
    const Probe cases[] = {{Kind::kTcp, 5432}, {Kind::kTcp, 443},  {Kind::kTcp, 22},
                           {Kind::kTcp, 80},   {Kind::kTcp, 8080}, {Kind::kUdp, 5000},
                           {Kind::kUdp, 53},   {Kind::kUdp, 6000}, {Kind::kPing, 0}};
    for (const Probe& p : cases) {
      const auto [protocol, port] = proto_port(p, v6);
      const auto want = dataplane::decide_tagged(policy, ca_tier, dst, protocol, port);
      const auto full = dataplane::decide(policy, src_full, dst, protocol, port);
      // The tag never lets through what the full identity would not.
      if (passes(want.verdict)) {
        EXPECT_TRUE(passes(full.verdict)) << describe(p);
      }
      if (passes(want.verdict) != passes(full.verdict)) ++conservative;
      const std::string why = "decide_tagged: " + std::string(dataplane::to_string(want.verdict)) +
                              " by rule " + std::to_string(want.rule_id());
      expect_probe(a_->container, to, p, passes(want.verdict), why);
      (passes(want.verdict) ? allowed : denied)++;
    }
  }
  EXPECT_GE(allowed, 6);
  EXPECT_GE(denied, 8);
  EXPECT_EQ(conservative, 2) << "tcp/22: ops-to-db needs a selector a tag cannot carry";

  // The selector-guarded deny held on node B, which decided it by the tag.
  const auto* guard = policy.find_rule("dev-never-db");
  ASSERT_NE(guard, nullptr);
  const auto counters = in_netns(b_->ns, [&] { return b_->backend->rule_counters(); });
  ASSERT_TRUE(counters.contains(guard->id));
  EXPECT_GT(counters.at(guard->id).first, 0U);
  // Node A left the decision to node B (it does not know cb).
  const auto a_counters = in_netns(a_->ns, [&] { return a_->backend->rule_counters(); });
  EXPECT_EQ(a_counters.contains(guard->id) ? a_counters.at(guard->id).first : 0U, 0U);

  if (std::getenv("TIERWALL_SHOW_LISTING") != nullptr) {
    std::cout << "==== node A\n" << a_->ns.run("nft list ruleset").out;
  }
  // nft reads the overlay objects back as the syntax tierwall renders.
  const std::string listing = b_->ns.check("nft list table inet tierwall").out;
  if (std::getenv("TIERWALL_SHOW_LISTING") != nullptr) std::cout << listing;
  for (const char* line :
       {"type ipv4_addr : mark", "elements = { 10.88.2.10 : 0x00000004 }", "elements = { \"vx0\" }",
        "type ifname", "iifname != @ovl oifname @ovl jump ovl_tag",
        "meta mark set ip saddr map @tag4", "meta mark set ip6 saddr map @tag6",
        "iifname @ovl jump ovl_check",
        "udp dport 4789 ip saddr != @peer4 counter name \"ovl_untrusted\" drop"}) {
    EXPECT_NE(listing.find(line), std::string::npos) << line << "\n" << listing;
  }

  // The other way: db -> web, decided on node A by db's tag.
  const auto db = *policy.find_tier("db");
  const auto back = dataplane::decide_tagged(
      *a_->rules.policy, db, dataplane::resolve(*a_->rules.endpoints, ip(kCa)), proto::kTcp, 443);
  expect_probe(b_->container, kCa, {Kind::kTcp, 443}, passes(back.verdict), "db -> web");
  EXPECT_EQ(in_netns(b_->ns, [&] { return b_->backend->overlay_counters(); }).at("ovl_spoof"), 0U);
}

TEST_F(NftOverlay, VxlanFromAnUntrustedAddressIsDroppedAndCounted) {
  const auto mac = mac_of(b_->ns, "vx0");
  const auto inner = ipv4_udp(kCa, kCb, kInjectPort, "injected");
  const auto& injected = *udp_servers_.back();  // port 7000
  // Control: with no ruleset on node B the injected frame reaches cb.
  send_vxlan(*rogue_, "172.31.1.66", "172.31.0.2", gbp_tag(0), mac, inner);
  for (int i = 0; i < 50 && injected.received() == 0; ++i) std::this_thread::sleep_for(Millis{20});
  ASSERT_GT(injected.received(), 0U) << "the injection does not reach cb even without tierwall";
  std::this_thread::sleep_for(Millis{300});  // the other copies of the control
  const std::size_t before = injected.received();

  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  const auto web = *b_->rules.policy->find_tier("web");
  send_vxlan(*rogue_, "172.31.1.66", "172.31.0.2", gbp_tag(web), mac, inner);
  std::this_thread::sleep_for(Millis{400});
  EXPECT_EQ(injected.received(), before);
  const auto counters = in_netns(b_->ns, [&] { return b_->backend->overlay_counters(); });
  EXPECT_GE(counters.at("ovl_untrusted"), 1U);
  // The trusted peer still gets through: web -> db udp/7000 is allowed.
  expect_probe(a_->container, kCb, {Kind::kUdp, kInjectPort}, true, "web-to-db");
}

TEST_F(NftOverlay, ASenderCannotChooseItsTag) {
  const auto api = *b_->rules.policy->find_tier("api");
  // Control: with node B enforcing and node A not, the node's own packet
  // marked with api's tag crosses as api and is let through (api-to-db).
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  ASSERT_TRUE(udp_echo_marked(a_->ns, kCb, 6000, gbp_tag(api), kPassRetry))
      << "a marked packet is not taken for its tag: the test proves nothing";

  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  // Node A overwrites the mark: its own packets cross untagged (world at B).
  EXPECT_FALSE(udp_echo_marked(a_->ns, kCb, 6000, gbp_tag(api), kDrop));
  // The container (web) marking its packets as api gains nothing either...
  EXPECT_FALSE(udp_echo_marked(a_->container, kCb, 6000, gbp_tag(api), kDrop));
  // ...while what web may do still works with the same kind of socket.
  EXPECT_TRUE(udp_echo_marked(a_->container, kCb, 5000, gbp_tag(api), kPassRetry));

  // Sending from addresses not its own: an unknown container address is
  // tagged quarantine, an outside address crosses untagged (world); node B
  // lets neither reach udp/5000, which web may reach.
  auto& five = *udp_servers_[1];  // port 5000
  const std::size_t before = five.received();
  for (const char* spoofed : {"10.88.9.9", "198.51.100.9"})
    send_raw(a_->container, ipv4_udp(spoofed, kCb, 5000, "spoofed"), kCb);
  std::this_thread::sleep_for(Millis{400});
  EXPECT_EQ(five.received(), before);
  const auto& policy = *b_->rules.policy;
  const auto dst = dataplane::resolve(*b_->rules.endpoints, ip(kCb));
  EXPECT_EQ(
      dataplane::decide_tagged(policy, dataplane::kQuarantineTier, dst, proto::kUdp, 5000).verdict,
      dataplane::Verdict::Deny);
  const auto world = dataplane::resolve(*b_->rules.endpoints, ip("198.51.100.9"));
  EXPECT_EQ(dataplane::decide(policy, world, dst, proto::kUdp, 5000).verdict,
            dataplane::Verdict::Deny);
}

// A node cannot tell a remote container from an unknown local one in a
// conntrack entry: re-applying cuts the connection on both nodes (judged
// with the remote end as quarantine), and its next packets are decided
// again by the ruleset (the tag on node B, deferral on node A), so the
// connection carries on.
TEST_F(NftOverlay, ConnectionsAcrossTheOverlayCarryOnAfterACut) {
  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  testsupport::TcpSession session(a_->container, kCb, 443, kPassRetry);
  ASSERT_EQ(session.exchange_probe(kPassRetry), Outcome::kOk);
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  EXPECT_GE(b_->backend->last_cut(), 1U);
  EXPECT_EQ(session.exchange_probe(kPassRetry), Outcome::kOk);
  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  EXPECT_GE(a_->backend->last_cut(), 1U);
  EXPECT_EQ(session.exchange_probe(kPassRetry), Outcome::kOk);
}

// Endpoint churn with an overlay: ca changing tier on node A is one batch of
// set elements (its tier sets and its tag map entry), no rule changes, and
// node B at once decides ca's packets as the new tier.
TEST_F(NftOverlay, ATierChangeRetagsWithElementsOnly) {
  ASSERT_NO_FATAL_FAILURE(apply(*a_));
  ASSERT_NO_FATAL_FAILURE(apply(*b_));
  expect_probe(a_->container, kCb, {Kind::kUdp, 5000}, true, "web-to-db");
  expect_probe(a_->container, kCb, {Kind::kUdp, 6000}, false, "web may not use api-to-db");
  const auto before = in_netns(a_->ns, [&] { return a_->backend->kernel_counts(); });
  ASSERT_TRUE(before);

  identity::Endpoint ep;
  ep.name = "web-1";
  ep.labels = identity::Labels(std::vector<std::pair<std::string, std::string>>{{"role", "api"}});
  ep.addresses = {ip(kCa), ip(kCa6)};
  const compiler::EndpointBinding binding = a_->compilation->bind(ep);
  const auto api = *a_->rules.policy->find_tier("api");
  ASSERT_EQ(binding.tier, api);
  dataplane::EndpointChange change;
  change.id = 0;  // the inventory's only endpoint
  change.addresses = ep.addresses;
  change.tier = binding.tier;
  change.selectors = binding.selectors;
  const std::vector<dataplane::EndpointChange> changes{change};
  const auto err = in_netns(a_->ns, [&] { return a_->backend->update_endpoints(changes); });
  ASSERT_FALSE(err) << err->message;

  const auto after = in_netns(a_->ns, [&] { return a_->backend->kernel_counts(); });
  ASSERT_TRUE(after);
  EXPECT_EQ(after->rules, before->rules);
  EXPECT_EQ(after->chains, before->chains);
  const std::string tags = a_->ns.check("nft list map inet tierwall tag4").out;
  char want[64];
  std::snprintf(want, sizeof want, "10.88.1.10 : 0x%08x", static_cast<unsigned>(gbp_tag(api)));
  EXPECT_NE(tags.find(want), std::string::npos) << tags;
  for (const char* to : {kCb, kCb6}) {
    expect_probe(a_->container, to, {Kind::kUdp, 6000}, true, "api-to-db after the change");
    expect_probe(a_->container, to, {Kind::kUdp, 5000}, false, "api may not use web-to-db");
  }
}

}  // namespace
}  // namespace tierwall
