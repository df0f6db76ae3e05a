// The DPDK dataplane's VXLAN-GBP overlay end to end: two "node" network
// namespaces, each with its own Bridge (two Bridges in one process, one EAL,
// one thread each) between an af_packet port towards a container namespace
// and an af_packet uplink; the uplinks are a veth pair between the nodes,
// carried as VXLAN-GBP. Real TCP, UDP and ICMP from the container on node A
// to the one on node B, decided on both nodes: node B does not know A's
// container and decides by the tag alone, and node B's deny holds although
// node A's (leaky) generation lets the traffic out. Captures on the uplinks
// check the G bit and the group ids; frames injected onto the uplink from an
// untrusted source, with another VNI, or with a spoofed tag are refused and
// counted. A second case puts the Linux kernel's own VXLAN-GBP device in
// place of node B: nft in that namespace counts the mark the kernel derives
// from our group id, and sets the marks that node A then decides by.
// docs/dpdk.md, "Overlay".
#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <linux/if_packet.h>
#include <memory>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tests/common/dpdk.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/bridge.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/dpdk/port.h"
#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/raw_socket.h"

namespace {

using namespace tierwall;
using namespace tierwall::testsupport;
using namespace tierwall::dataplane::dpdk;
using tierwall::Cidr;
using Bytes = std::vector<std::uint8_t>;

constexpr Millis kPass{3000};
constexpr Millis kDrop{600};

constexpr const char* kAddrA = "10.78.0.1";  // container behind node A, tier a
constexpr const char* kAddrB = "10.78.0.2";  // container behind node B, tier b
constexpr const char* kVtepA = "192.168.77.1";
constexpr const char* kVtepB = "192.168.77.2";
constexpr std::uint32_t kVni = 4242;
// TierIds in the compiled policy: 0 quarantine, 1 a, 2 b.
constexpr std::uint16_t kGroupA = 2;
constexpr std::uint16_t kGroupB = 3;

// Node A runs a leaky variant (it lets a -> b tcp/9090 out); node B's
// policy denies it. Everything else is the same policy on both nodes.
std::string policy_yaml(bool leaky) {
  std::string p = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: overlay}
spec:
  tiers:
    - {name: a, level: 10}
    - {name: b, level: 20}
  assignments:
    - {name: a, match: {labels: {role: a}}, tier: a}
    - {name: b, match: {labels: {role: b}}, tier: b}
)";
  if (!leaky) {
    p += R"(  denies:
    - name: no-a-to-b-9090
      from: {tier: a}
      to: {tier: b}
      ports: [tcp/9090]
)";
  }
  p += R"(  flows:
    - name: a-to-b
      from: {tier: a}
      to: {tier: b}
      ports: [tcp/8080, udp/5353, icmp/echo-request, icmpv6/echo-request]
    - name: b-to-a
      from: {tier: b}
      to: {tier: a}
      ports: [tcp/8081]
)";
  if (leaky) {
    p += R"(    - name: a-to-b-9090
      from: {tier: a}
      to: {tier: b}
      ports: [tcp/9090]
)";
  }
  return p;
}

// Node A knows both containers. Node B knows only its own (and b-2, an
// address no container uses: a known endpoint of tier b to spoof).
constexpr const char* kInventoryA = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [10.78.0.251]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.78.0.1]}
  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2]}
)";
constexpr const char* kInventoryB = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-b, addresses: [10.78.0.252]}
endpoints:
  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2]}
  - {name: b-2, labels: {role: b}, addresses: [10.78.0.3]}
)";

std::unique_ptr<const Generation> generation(bool leaky, const char* inventory) {
  return testkit::dpdk_generation(policy_yaml(leaky), inventory, 1,
                                  {*Cidr::parse("10.78.0.0/24"), *Cidr::parse("fd00:78::/64")});
}

std::string describe(const BridgeCounters& c) {
  std::ostringstream s;
  s << "rx=" << c.rx << " tx=" << c.tx << " tx_failed=" << c.tx_failed
    << " forwarded=" << c.forwarded << " flooded=" << c.flooded << " filtered=" << c.filtered
    << " non_ip=" << c.non_ip << " ip_allowed=" << c.ip_allowed
    << " policy_dropped=" << c.policy_dropped << " malformed=" << c.malformed
    << " decap=" << c.overlay_decapsulated << " encap=" << c.overlay_encapsulated
    << " encap_failed=" << c.overlay_encap_failed << " by_tag=" << c.overlay_by_tag
    << " refused=" << c.overlay_refused << " (";
  for (std::size_t r = 0; r < kOverlayRefusalCount; ++r) {
    s << (r ? " " : "") << to_string(static_cast<OverlayRefusal>(r)) << "="
      << c.overlay_refused_by[r];
  }
  s << ")";
  return s.str();
}

std::uint64_t refused(const BridgeCounters& c, OverlayRefusal r) {
  return c.overlay_refused_by[static_cast<std::size_t>(r)];
}

MacAddress read_mac(const NetNs& ns, const std::string& dev) {
  std::string text = ns.check("cat /sys/class/net/" + dev + "/address").out;
  text.erase(text.find_last_not_of(" \n") + 1);
  MacAddress m{};
  if (!parse_mac(text, m)) throw std::runtime_error("bad MAC " + text);
  return m;
}

void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// Ethernet / IPv4 (valid header checksum) / UDP (checksum 0: none) with a
// short payload: a frame the receiving kernel accepts.
Bytes inner_udp(const MacAddress& src_mac, const MacAddress& dst_mac, const char* src,
                const char* dst, std::uint16_t sport, std::uint16_t dport) {
  const std::string payload = "injected";
  Bytes b(14 + 20 + 8 + payload.size(), 0);
  std::copy(dst_mac.begin(), dst_mac.end(), b.begin());
  std::copy(src_mac.begin(), src_mac.end(), b.begin() + 6);
  put16(&b[12], 0x0800);
  std::uint8_t* h = &b[14];
  h[0] = 0x45;
  put16(h + 2, static_cast<std::uint32_t>(20 + 8 + payload.size()));
  put16(h + 6, 0x4000);
  h[8] = 64;
  h[9] = 17;
  const auto s = IpAddress::parse(src).value();
  const auto d = IpAddress::parse(dst).value();
  std::copy_n(s.bytes.begin(), 4, h + 12);
  std::copy_n(d.bytes.begin(), 4, h + 16);
  std::uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += (std::uint32_t{h[i]} << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  put16(h + 10, ~sum & 0xffffU);
  std::uint8_t* u = h + 20;
  put16(u, sport);
  put16(u + 2, dport);
  put16(u + 4, static_cast<std::uint32_t>(8 + payload.size()));
  std::copy(payload.begin(), payload.end(), u + 8);
  return b;
}

Bytes encap(const Bytes& inner, const VxlanGbpParams& p) {
  Bytes out(inner.size() + vxlan_overhead(p));
  if (encap_vxlan_gbp(out, inner, p) != out.size()) throw std::runtime_error("encap");
  return out;
}

// One node: a namespace with the container port and the uplink, a Bridge
// on its own thread. Destroyed in reverse order even when a check fails:
// the thread stops, then the Bridge and ports go (the namespaces belong to
// the Lab and outlive them).
struct Node {
  GenerationStore store;
  std::unique_ptr<Port> container_port;
  std::unique_ptr<Port> uplink;
  std::unique_ptr<Bridge> bridge;
  std::atomic<bool> stop{false};
  std::thread worker;

  ~Node() { halt(); }
  void halt() {
    stop.store(true);
    if (worker.joinable()) worker.join();
    bridge.reset();
    container_port.reset();
    uplink.reset();
    store.reclaim();
  }
  BridgeCounters counters() const { return bridge->counters(); }
};

struct Lab {
  NetNs node_a{"node-a"};
  NetNs node_b{"node-b"};
  NetNs cont_a{"cont-a"};
  NetNs cont_b{"cont-b"};
  Node a;
  Node b;
};

class DpdkVxlanGbp : public testkit::DpdkNetnsTest {};

std::string next_vdev() {
  static std::atomic<unsigned> serial{0};
  return "net_af_packet_ovl" + std::to_string(serial.fetch_add(1));
}

// Opens the node's two ports and starts its Bridge with the overlay uplink
// towards `peer_vtep` / `peer_mac`.
void start_node(Node& node, const NetNs& ns, const char* local_vtep,
                const std::vector<OverlayPeer>& peers, std::unique_ptr<const Generation> g) {
  std::string error;
  node.container_port = in_netns(
      ns, [&] { return Port::open_vdev(next_vdev() + ",iface=c0", PortOptions{}, error); });
  ASSERT_TRUE(node.container_port) << error;
  node.uplink = in_netns(
      ns, [&] { return Port::open_vdev(next_vdev() + ",iface=uplink", PortOptions{}, error); });
  ASSERT_TRUE(node.uplink) << error;
  ASSERT_TRUE(g);
  node.store.publish(std::move(g));

  BridgeOverlay overlay;
  overlay.port = 1;
  overlay.config.local_vtep = IpAddress::parse(local_vtep).value();
  ASSERT_TRUE(parse_mac(node.uplink->mac(), overlay.config.local_mac)) << node.uplink->mac();
  overlay.config.vni = kVni;
  overlay.config.peers = peers;
  BridgeOptions options;
  options.idle_sleep_us = 50;
  options.overlays = {overlay};
  Port* ports[] = {node.container_port.get(), node.uplink.get()};
  node.bridge = std::make_unique<Bridge>(ports, node.store, options);
  node.worker = std::thread([&node] { node.bridge->run(node.stop); });
}

void start_node(Node& node, const NetNs& ns, const char* local_vtep, const char* peer_vtep,
                const MacAddress& peer_mac, std::unique_ptr<const Generation> g) {
  start_node(node, ns, local_vtep, {{IpAddress::parse(peer_vtep).value(), peer_mac}}, std::move(g));
}

// A container's eth0 with MTU `mtu` (the overlay adds 50 bytes; 70 and 1430
// over IPv6), checksum and segmentation offloads off (af_packet needs
// complete, MTU-sized frames).
void prepare_container(NetNs& cont, int mtu = 1450) {
  cont.check("ip link set eth0 mtu " + std::to_string(mtu) +
             " && ethtool -K eth0 tx off tso off gso off");
}

// A node's c0 and uplink, where its af_packet ports go: no IPv6 chatter,
// GRO off (and the uplink's TX offloads); returns once both are running.
void prepare_node(NetNs& node) {
  sysctl(node, "net.ipv6.conf.c0.disable_ipv6", "1");
  sysctl(node, "net.ipv6.conf.uplink.disable_ipv6", "1");
  node.check("ethtool -K c0 gro off; ethtool -K uplink gro off tx off tso off gso off");
  wait_link_running(node, "c0");
  wait_link_running(node, "uplink");
}

// Two nodes linked by their uplinks, a container behind each (see
// prepare_container and prepare_node). With `v6`, the containers also get
// fd00:78::1 and ::2; without, their IPv6 is off (no MLD reports or router
// solicitations reaching the policy at random moments and disturbing the
// per-probe drop counts).
void build_topology(Lab& lab, int mtu = 1450, bool v6 = false) {
  veth(lab.cont_a, "eth0", lab.node_a, "c0");
  veth(lab.cont_b, "eth0", lab.node_b, "c0");
  veth(lab.node_a, "uplink", lab.node_b, "uplink");
  addr(lab.cont_a, "eth0", std::string(kAddrA) + "/24");
  addr(lab.cont_b, "eth0", std::string(kAddrB) + "/24");
  if (v6) {
    addr(lab.cont_a, "eth0", "fd00:78::1/64");
    addr(lab.cont_b, "eth0", "fd00:78::2/64");
  }
  for (NetNs* ns : {&lab.cont_a, &lab.cont_b}) {
    prepare_container(*ns, mtu);
    if (!v6) sysctl(*ns, "net.ipv6.conf.eth0.disable_ipv6", "1");
  }
  for (NetNs* ns : {&lab.node_a, &lab.node_b}) prepare_node(*ns);
}

struct Tagged {
  std::size_t ip = 0;      // VXLAN frames with an inner IP packet from `src`
  std::size_t right = 0;   // ... with the G and A bits and the expected group
  std::size_t non_ip = 0;  // VXLAN frames with a non-IP inner frame (ARP) or IPv6 ND
  std::size_t non_ip_untagged = 0;
};

Tagged inspect(const std::vector<Bytes>& frames, const char* outer_src, const char* inner_src,
               std::uint16_t group) {
  Tagged t;
  const auto outer = IpAddress::parse(outer_src).value();
  const auto inner = IpAddress::parse(inner_src).value();
  for (const Bytes& f : frames) {
    const PacketInfo p = parse_packet(f);
    if (!p.has(kFlagVxlan) || p.outer_src != outer || p.vni != kVni) continue;
    const bool nd = p.protocol == 58 && p.icmp_type >= 133 && p.icmp_type <= 137;
    if (p.status == ParseStatus::NotIp || nd) {
      ++t.non_ip;
      if (!p.has(kFlagGbp)) ++t.non_ip_untagged;
      continue;
    }
    if (p.status != ParseStatus::Ok || p.src != inner) continue;
    ++t.ip;
    if (p.has(kFlagGbp) && p.has(kFlagGbpPolicyApplied) && p.group_id == group) ++t.right;
  }
  return t;
}

TEST_F(DpdkVxlanGbp, TwoNodesEnforceTiersAcrossTheOverlay) {
  Lab lab;
  build_topology(lab);
  const MacAddress up_a = read_mac(lab.node_a, "uplink");
  const MacAddress up_b = read_mac(lab.node_b, "uplink");
  const MacAddress cont_a_mac = read_mac(lab.cont_a, "eth0");
  const MacAddress cont_b_mac = read_mac(lab.cont_b, "eth0");

  // Node B alone would deny A's container by its address (unknown there,
  // so quarantined): what passes below passes by the tag.
  const auto b_view = generation(false, kInventoryB);
  ASSERT_TRUE(b_view);
  const auto ip = [](const char* s) { return IpAddress::parse(s).value(); };
  ASSERT_EQ(b_view->classify(ip(kAddrA), ip(kAddrB), 6, 8080).verdict, dataplane::Verdict::Deny);
  ASSERT_EQ(b_view->classify(ip(kAddrA), ip(kAddrB), 17, 5353).verdict, dataplane::Verdict::Deny);

  RawSocket capture_b(lab.node_b, "uplink");  // what A sends to B
  RawSocket capture_a(lab.node_a, "uplink");  // what B sends to A
  start_node(lab.a, lab.node_a, kVtepA, kVtepB, up_b, generation(true, kInventoryA));
  start_node(lab.b, lab.node_b, kVtepB, kVtepA, up_a, generation(false, kInventoryB));

  TcpServer b8080(lab.cont_b, kAddrB, 8080);
  TcpServer b9090(lab.cont_b, kAddrB, 9090);
  TcpServer b7070(lab.cont_b, kAddrB, 7070);
  TcpServer a8080(lab.cont_a, kAddrA, 8080);
  UdpEchoServer b5353(lab.cont_b, kAddrB, 5353);

  // Allowed: ARP crosses first (flooded, head-end replicated, untagged),
  // then ICMP, TCP and UDP tagged with tier a, decided on B by the tag.
  EXPECT_EQ(ping_probe(lab.cont_a, kAddrB, kPass), Outcome::kOk)
      << "A: " << describe(lab.a.counters()) << "\nB: " << describe(lab.b.counters());
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 8080, kPass), Outcome::kOk)
      << "A: " << describe(lab.a.counters()) << "\nB: " << describe(lab.b.counters());
  EXPECT_EQ(udp_probe(lab.cont_a, kAddrB, 5353, kPass), Outcome::kOk)
      << "A: " << describe(lab.a.counters()) << "\nB: " << describe(lab.b.counters());
  EXPECT_GE(b8080.accepted(), 1U);
  const BridgeCounters b_allowed = lab.b.counters();
  EXPECT_GE(b_allowed.overlay_by_tag, 3U) << describe(b_allowed);

  // tcp/9090: node A's leaky generation lets it out, node B's deny holds.
  const BridgeCounters a0 = lab.a.counters();
  const BridgeCounters b0 = lab.b.counters();
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 9090, kDrop), Outcome::kTimeout);
  const BridgeCounters a1 = lab.a.counters();
  const BridgeCounters b1 = lab.b.counters();
  EXPECT_EQ(b9090.accepted(), 0U);
  EXPECT_GE(a1.overlay_encapsulated - a0.overlay_encapsulated, 1U) << describe(a1);
  EXPECT_EQ(a1.policy_dropped, a0.policy_dropped) << describe(a1);
  EXPECT_GE(b1.policy_dropped - b0.policy_dropped, 1U) << describe(b1);
  EXPECT_GE(b1.overlay_by_tag - b0.overlay_by_tag, 1U) << describe(b1);

  // tcp/7070: no rule; the sender already drops it.
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 7070, kDrop), Outcome::kTimeout);
  EXPECT_EQ(b7070.accepted(), 0U);
  EXPECT_GE(lab.a.counters().policy_dropped - a1.policy_dropped, 1U);
  // B -> A: no b -> a flow (and A's container is unknown to B).
  EXPECT_EQ(tcp_probe(lab.cont_b, kAddrA, 8080, kDrop), Outcome::kTimeout);
  EXPECT_EQ(ping_probe(lab.cont_b, kAddrA, kDrop), Outcome::kTimeout);
  EXPECT_EQ(a8080.accepted(), 0U);

  // On the wire: A's frames carry group 2 (tier a), B's replies group 3
  // (tier b), with G and A bits; ARP goes untagged.
  const Tagged a_to_b = inspect(capture_b.drain(), kVtepA, kAddrA, kGroupA);
  const Tagged b_to_a = inspect(capture_a.drain(), kVtepB, kAddrB, kGroupB);
  EXPECT_GE(a_to_b.ip, 6U);
  EXPECT_EQ(a_to_b.right, a_to_b.ip);
  EXPECT_GE(b_to_a.ip, 3U);
  EXPECT_EQ(b_to_a.right, b_to_a.ip);
  EXPECT_GE(a_to_b.non_ip + b_to_a.non_ip, 2U);  // ARP request and reply
  EXPECT_EQ(a_to_b.non_ip_untagged, a_to_b.non_ip);
  std::printf("on the wire: A->B %zu tagged IP frames (group %u), B->A %zu (group %u), %zu ARP\n",
              a_to_b.ip, kGroupA, b_to_a.ip, kGroupB, a_to_b.non_ip + b_to_a.non_ip);

  // Injected onto the uplink (from node A's end): untrusted outer source,
  // another VNI, a tag that contradicts what B knows. Each is refused and
  // counted; the same frame from the trusted peer passes (positive control).
  RawSocket inject(lab.node_a, "uplink");
  const Bytes inner = inner_udp(cont_a_mac, cont_b_mac, kAddrA, kAddrB, 40001, 5353);
  VxlanGbpParams good;
  good.dst_mac = up_b;
  good.src_mac = up_a;
  good.src_ip = ip(kVtepA);
  good.dst_ip = ip(kVtepB);
  good.vni = kVni;
  good.group_id = kGroupA;
  good.policy_applied = true;
  VxlanGbpParams untrusted = good;
  untrusted.src_ip = ip("192.168.77.66");
  VxlanGbpParams other_vni = good;
  other_vni.vni = kVni + 1;
  const Bytes spoof_inner = inner_udp(cont_a_mac, cont_b_mac, "10.78.0.3", kAddrB, 40002, 5353);

  const BridgeCounters before = lab.b.counters();
  const std::size_t received_before = b5353.received();
  for (int i = 0; i < 3; ++i) {
    inject.send(encap(inner, untrusted));
    inject.send(encap(inner, other_vni));
    inject.send(encap(spoof_inner, good));  // b-2 is tier b, tagged as a
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const BridgeCounters after = lab.b.counters();
  EXPECT_EQ(refused(after, OverlayRefusal::UntrustedPeer) -
                refused(before, OverlayRefusal::UntrustedPeer),
            3U)
      << describe(after);
  EXPECT_EQ(refused(after, OverlayRefusal::WrongVni) - refused(before, OverlayRefusal::WrongVni),
            3U)
      << describe(after);
  EXPECT_EQ(refused(after, OverlayRefusal::Spoofed) - refused(before, OverlayRefusal::Spoofed), 3U)
      << describe(after);
  EXPECT_EQ(b5353.received(), received_before);
  inject.send(encap(inner, good));
  for (int i = 0; i < 50 && b5353.received() == received_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(b5353.received(), received_before + 1) << describe(lab.b.counters());

  const BridgeCounters fa = lab.a.counters();
  const BridgeCounters fb = lab.b.counters();
  EXPECT_EQ(fa.malformed + fb.malformed, 0U);
  EXPECT_EQ(fa.overlay_encap_failed + fb.overlay_encap_failed, 0U);
  EXPECT_GT(fb.overlay_decapsulated, 0U);
  EXPECT_GT(fa.overlay_decapsulated, 0U);
  std::printf("node A: %s\nnode B: %s\n", describe(fa).c_str(), describe(fb).c_str());
}

// An nft table this test creates in one of its namespaces, deleted on any
// exit (the namespace's deletion would drop it too).
class NftTable {
 public:
  NftTable(const NetNs& ns, std::string name, const std::string& body)
      : ns_(ns), name_(std::move(name)) {
    ns_.check("nft -f - <<'EOF'\ntable inet " + name_ + " {\n" + body + "\n}\nEOF");
  }
  ~NftTable() { ns_.run("nft delete table inet " + name_); }
  NftTable(const NftTable&) = delete;
  NftTable& operator=(const NftTable&) = delete;

  // Packets counted by the named counter.
  std::uint64_t packets(const std::string& counter) const {
    const std::string out = ns_.check("nft list counter inet " + name_ + " " + counter).out;
    const auto at = out.find("packets ");
    if (at == std::string::npos) throw std::runtime_error("no counter " + counter + ": " + out);
    return std::stoull(out.substr(at + 8));
  }

 private:
  const NetNs& ns_;
  std::string name_;
};

// Node B replaced by the kernel: `ip link add ... type vxlan ... gbp` in a
// namespace. The kernel maps a received group id (with the D and A bits as
// 0x400000 and 0x80000) to skb->mark, and sends skb->mark's low 16 bits
// (and those bits) as the group id.
TEST_F(DpdkVxlanGbp, InteroperatesWithTheKernelsVxlanGbp) {
  struct KernelLab {
    NetNs node_a{"node-a"};
    NetNs cont_a{"cont-a"};
    NetNs kernel{"kernel"};
    Node a;
  } lab;
  veth(lab.cont_a, "eth0", lab.node_a, "c0");
  veth(lab.node_a, "uplink", lab.kernel, "uplink");
  addr(lab.cont_a, "eth0", std::string(kAddrA) + "/24");
  prepare_container(lab.cont_a);
  prepare_node(lab.node_a);
  const MacAddress up_a = read_mac(lab.node_a, "uplink");
  const MacAddress up_k = read_mac(lab.kernel, "uplink");
  char neigh[18];
  std::snprintf(neigh, sizeof neigh, "%02x:%02x:%02x:%02x:%02x:%02x", up_a[0], up_a[1], up_a[2],
                up_a[3], up_a[4], up_a[5]);
  // The kernel's VTEP: 10.78.0.2 is b-1 (known to node A), .5 and .6 are
  // not known to node A; .7 neither, and it sends untagged.
  addr(lab.kernel, "uplink", std::string(kVtepB) + "/24");
  lab.kernel.check("ethtool -K uplink tx off tso off gso off gro off");
  lab.kernel.check(std::string("ip neigh replace ") + kVtepA + " lladdr " + neigh +
                   " dev uplink nud permanent");
  lab.kernel.check("ip link add vx0 type vxlan id " + std::to_string(kVni) + " local " + kVtepB +
                   " remote " + kVtepA + " dstport 4789 gbp dev uplink");
  // No IPv6 on vx0: the kernel's own MLD reports would cross with stray
  // marks as group ids (refused by node A as unknown tags).
  sysctl(lab.kernel, "net.ipv6.conf.vx0.disable_ipv6", "1");
  lab.kernel.check("ethtool -K vx0 tx off tso off gso off; ip link set vx0 up");
  for (const char* a : {kAddrB, "10.78.0.5", "10.78.0.6", "10.78.0.7"}) {
    addr(lab.kernel, "vx0", std::string(a) + "/24");
  }
  sysctl(lab.kernel, "net.ipv6.conf.uplink.disable_ipv6", "1");
  wait_link_running(lab.kernel, "uplink");
  const NftTable nft(lab.kernel, "tierwall-test-gbp", R"(
  counter from_tier_a {}
  counter from_tier_a_enforced {}
  counter untagged_in {}
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "vx0" meta mark and 0xffff == 2 counter name from_tier_a
    iifname "vx0" meta mark 0x80002 counter name from_tier_a_enforced
    iifname "vx0" meta mark 0 counter name untagged_in
  }
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "vx0" ip saddr 10.78.0.5 meta mark set 3
    oifname "vx0" ip saddr 10.78.0.6 meta mark set 1
  })");

  start_node(lab.a, lab.node_a, kVtepA, kVtepB, up_k, generation(true, kInventoryA));
  TcpServer k8080(lab.kernel, kAddrB, 8080);
  TcpServer a8081(lab.cont_a, kAddrA, 8081);

  // Ours -> the kernel: tagged 2 (tier a) with the A bit; the kernel's mark
  // says so.
  EXPECT_EQ(ping_probe(lab.cont_a, kAddrB, kPass), Outcome::kOk) << describe(lab.a.counters());
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 8080, kPass), Outcome::kOk) << describe(lab.a.counters());
  const std::uint64_t tagged = nft.packets("from_tier_a");
  EXPECT_GE(tagged, 4U);  // echo request, SYN, ACK, data...
  EXPECT_EQ(nft.packets("from_tier_a_enforced"), tagged);
  EXPECT_EQ(nft.packets("untagged_in"), 0U);  // only ARP went untagged (not IP)
  // The kernel -> ours: the mark nft sets is the group id node A decides by.
  const BridgeCounters before = lab.a.counters();
  EXPECT_EQ(tcp_probe(lab.kernel, kAddrA, 8081, kPass, "10.78.0.5"), Outcome::kOk)
      << describe(lab.a.counters());  // tagged b: b -> a tcp/8081
  EXPECT_EQ(tcp_probe(lab.kernel, kAddrA, 8081, kDrop, "10.78.0.6"), Outcome::kTimeout);
  EXPECT_EQ(tcp_probe(lab.kernel, kAddrA, 8081, kDrop, "10.78.0.7"), Outcome::kTimeout);
  const BridgeCounters after = lab.a.counters();
  EXPECT_EQ(a8081.accepted(), 1U);
  EXPECT_GE(after.overlay_by_tag - before.overlay_by_tag, 2U) << describe(after);
  EXPECT_GE(after.policy_dropped - before.policy_dropped, 2U) << describe(after);
  EXPECT_EQ(after.overlay_refused, refused(after, OverlayRefusal::NotVxlan)) << describe(after);
  std::printf("kernel: %llu packets marked 0x80002 (group 2, A bit); node A: %s\n",
              static_cast<unsigned long long>(tagged), describe(after).c_str());
}

// An IPv6 underlay (VTEPs fd00:77::1 and ::2, 70 bytes of headers, the
// outer UDP checksum computed) carrying IPv6 containers: neighbour
// discovery crosses untagged (multicast solicitations head-end
// replicated), ICMPv6 and TCP are tagged and decided by the tag on node B.
TEST_F(DpdkVxlanGbp, Ipv6UnderlayCarriesIpv6Containers) {
  constexpr const char* kInventoryA6 = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [10.78.0.251]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.78.0.1, "fd00:78::1"]}
  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2, "fd00:78::2"]}
)";
  constexpr const char* kInventoryB6 = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-b, addresses: [10.78.0.252]}
endpoints:
  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2, "fd00:78::2"]}
)";
  constexpr const char* kVtep6A = "fd00:77::1";
  constexpr const char* kVtep6B = "fd00:77::2";
  Lab lab;
  build_topology(lab, 1430, true);
  const MacAddress up_a = read_mac(lab.node_a, "uplink");
  const MacAddress up_b = read_mac(lab.node_b, "uplink");
  RawSocket capture_b(lab.node_b, "uplink");
  start_node(lab.a, lab.node_a, kVtep6A, kVtep6B, up_b, generation(true, kInventoryA6));
  start_node(lab.b, lab.node_b, kVtep6B, kVtep6A, up_a, generation(false, kInventoryB6));
  TcpServer b8080(lab.cont_b, "fd00:78::2", 8080);
  TcpServer b9090(lab.cont_b, "fd00:78::2", 9090);
  TcpServer b8080v4(lab.cont_b, kAddrB, 8080);

  EXPECT_EQ(ping_probe(lab.cont_a, "fd00:78::2", kPass), Outcome::kOk)
      << "A: " << describe(lab.a.counters()) << "\nB: " << describe(lab.b.counters());
  EXPECT_EQ(tcp_probe(lab.cont_a, "fd00:78::2", 8080, kPass), Outcome::kOk)
      << "A: " << describe(lab.a.counters()) << "\nB: " << describe(lab.b.counters());
  EXPECT_EQ(tcp_probe(lab.cont_a, "fd00:78::2", 9090, kDrop), Outcome::kTimeout);
  EXPECT_EQ(b9090.accepted(), 0U);
  // IPv4 over the same IPv6 underlay.
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 8080, kPass), Outcome::kOk);

  const Tagged a_to_b = inspect(capture_b.drain(), kVtep6A, "fd00:78::1", kGroupA);
  EXPECT_GE(a_to_b.ip, 4U);
  EXPECT_EQ(a_to_b.right, a_to_b.ip);
  EXPECT_GE(a_to_b.non_ip, 1U);  // neighbour discovery
  EXPECT_EQ(a_to_b.non_ip_untagged, a_to_b.non_ip);
  const BridgeCounters fb = lab.b.counters();
  EXPECT_GE(fb.overlay_by_tag, 3U) << describe(fb);  // echo, tcp/8080, tcp/9090
  EXPECT_GE(fb.policy_dropped, 1U) << describe(fb);
  EXPECT_EQ(fb.overlay_refused, 0U) << describe(fb);
  EXPECT_EQ(fb.malformed + lab.a.counters().malformed, 0U);
  std::printf("IPv6 underlay: A->B %zu tagged IPv6 frames (group %u); node B: %s\n", a_to_b.ip,
              kGroupA, describe(fb).c_str());
}

// Three nodes on one underlay (a Linux bridge in its own namespace): node A
// has two peers. Its broadcasts (ARP) are head-end replicated to both; once
// the containers' MACs are learned, unicast goes to the one peer behind
// which the destination was learned. B and C each know only their own
// container and decide A's by the tag.
TEST_F(DpdkVxlanGbp, HeadEndReplicationToSeveralPeers) {
  constexpr const char* kInventoryA3 = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [10.78.0.251]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.78.0.1]}
  - {name: b-1, labels: {role: b}, addresses: [10.78.0.2]}
  - {name: c-1, labels: {role: b}, addresses: [10.78.0.4]}
)";
  constexpr const char* kInventoryC = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-c, addresses: [10.78.0.253]}
endpoints:
  - {name: c-1, labels: {role: b}, addresses: [10.78.0.4]}
)";
  constexpr const char* kAddrC = "10.78.0.4";
  constexpr const char* kVtepC = "192.168.77.3";
  struct ThreeNodes {
    NetNs underlay{"underlay"};
    NetNs node_a{"node-a"};
    NetNs node_b{"node-b"};
    NetNs node_c{"node-c"};
    NetNs cont_a{"cont-a"};
    NetNs cont_b{"cont-b"};
    NetNs cont_c{"cont-c"};
    Node a;
    Node b;
    Node c;
  } lab;
  bridge(lab.underlay, "br0");
  const std::pair<NetNs*, NetNs*> nodes[] = {
      {&lab.node_a, &lab.cont_a}, {&lab.node_b, &lab.cont_b}, {&lab.node_c, &lab.cont_c}};
  const char* addrs[] = {kAddrA, kAddrB, kAddrC};
  const char* ports[] = {"ua", "ub", "uc"};
  for (int i = 0; i < 3; ++i) {
    NetNs& node = *nodes[i].first;
    NetNs& cont = *nodes[i].second;
    veth(cont, "eth0", node, "c0");
    veth(node, "uplink", lab.underlay, ports[i]);
    attach(lab.underlay, ports[i], "br0");
    addr(cont, "eth0", std::string(addrs[i]) + "/24");
    prepare_container(cont);
    prepare_node(node);
  }
  const MacAddress up_a = read_mac(lab.node_a, "uplink");
  const MacAddress up_b = read_mac(lab.node_b, "uplink");
  const MacAddress up_c = read_mac(lab.node_c, "uplink");
  const auto ip = [](const char* s) { return IpAddress::parse(s).value(); };
  RawSocket capture_b(lab.node_b, "uplink");
  RawSocket capture_c(lab.node_c, "uplink");
  start_node(lab.a, lab.node_a, kVtepA, {{ip(kVtepB), up_b}, {ip(kVtepC), up_c}},
             generation(true, kInventoryA3));  // leaky: tcp/9090 is C's to deny
  start_node(lab.b, lab.node_b, kVtepB, kVtepA, up_a, generation(false, kInventoryB));
  start_node(lab.c, lab.node_c, kVtepC, kVtepA, up_a, generation(false, kInventoryC));
  TcpServer b8080(lab.cont_b, kAddrB, 8080);
  TcpServer c8080(lab.cont_c, kAddrC, 8080);

  EXPECT_EQ(ping_probe(lab.cont_a, kAddrB, kPass), Outcome::kOk) << describe(lab.a.counters());
  EXPECT_EQ(ping_probe(lab.cont_a, kAddrC, kPass), Outcome::kOk) << describe(lab.a.counters());
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrB, 8080, kPass), Outcome::kOk);
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrC, 8080, kPass), Outcome::kOk);
  EXPECT_EQ(tcp_probe(lab.cont_a, kAddrC, 9090, kDrop), Outcome::kTimeout);  // C's deny

  // What reached B and C with their own outer destination MAC, by the
  // inner frame's target: ARP requests (target address at byte 38 of the
  // inner frame) and IP packets.
  struct Seen {
    std::size_t arp_for_b = 0, arp_for_c = 0, ip_to_b = 0, ip_to_c = 0;
  };
  const auto seen = [&](const std::vector<Bytes>& frames, const MacAddress& mine) {
    Seen r;
    for (const Bytes& f : frames) {
      if (!std::equal(mine.begin(), mine.end(), f.begin())) continue;
      const PacketInfo p = parse_packet(f);
      if (!p.has(kFlagVxlan) || p.outer_src != ip(kVtepA)) continue;
      const std::size_t in = p.inner_l2_offset;
      if (p.status == ParseStatus::NotIp && f.size() >= in + 42 && f[in + 12] == 0x08 &&
          f[in + 13] == 0x06) {
        const IpAddress target =
            IpAddress::v4((std::uint32_t{f[in + 38]} << 24) | (std::uint32_t{f[in + 39]} << 16) |
                          (std::uint32_t{f[in + 40]} << 8) | f[in + 41]);
        r.arp_for_b += target == ip(kAddrB);
        r.arp_for_c += target == ip(kAddrC);
      } else if (p.status == ParseStatus::Ok && p.src == ip(kAddrA)) {
        r.ip_to_b += p.dst == ip(kAddrB);
        r.ip_to_c += p.dst == ip(kAddrC);
      }
    }
    return r;
  };
  const Seen at_b = seen(capture_b.drain(), up_b);
  const Seen at_c = seen(capture_c.drain(), up_c);
  // Broadcasts reach both peers, including the one not asked.
  EXPECT_GE(at_b.arp_for_b, 1U);
  EXPECT_GE(at_b.arp_for_c, 1U);
  EXPECT_GE(at_c.arp_for_b, 1U);
  EXPECT_GE(at_c.arp_for_c, 1U);
  // Unicast goes to the peer the destination was learned behind only.
  EXPECT_GE(at_b.ip_to_b, 4U);
  EXPECT_EQ(at_b.ip_to_c, 0U);
  EXPECT_GE(at_c.ip_to_c, 4U);
  EXPECT_EQ(at_c.ip_to_b, 0U);
  const BridgeCounters fb = lab.b.counters();
  const BridgeCounters fc = lab.c.counters();
  EXPECT_GE(fb.overlay_by_tag, 2U) << describe(fb);
  EXPECT_GE(fc.overlay_by_tag, 3U) << describe(fc);
  EXPECT_GE(fc.policy_dropped, 1U) << describe(fc);
  std::printf(
      "three nodes: at B %zu ARP (for C: %zu), %zu IP; at C %zu ARP (for B: %zu), %zu IP\n"
      "node A: %s\n",
      at_b.arp_for_b + at_b.arp_for_c, at_b.arp_for_c, at_b.ip_to_b,
      at_c.arp_for_b + at_c.arp_for_c, at_c.arp_for_b, at_c.ip_to_c,
      describe(lab.a.counters()).c_str());
}

}  // namespace
