// The DPDK dataplane's VXLAN-GBP overlay component (tw_dpdk_overlay), without
// an EAL: configuration checks, peer trust on ingress (a table of frames and
// the verdict each gets), inner-MAC learning, the tier <-> group id mapping
// and the source checks a receiver makes, and encapsulation round trips
// through parse_packet from one node's Overlay to its peer's.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace tierwall::dataplane::dpdk {
namespace {

using Bytes = std::vector<std::uint8_t>;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// Ethernet / IPv4 / UDP with `payload` zero bytes (checksums left 0: the
// parser does not need them).
Bytes inner_udp(const MacAddress& src_mac, const MacAddress& dst_mac, const char* src,
                const char* dst, std::uint16_t sport, std::uint16_t dport,
                std::size_t payload = 8) {
  Bytes b(14 + 20 + 8 + payload, 0);
  std::copy(dst_mac.begin(), dst_mac.end(), b.begin());
  std::copy(src_mac.begin(), src_mac.end(), b.begin() + 6);
  put16(&b[12], 0x0800);
  std::uint8_t* h = &b[14];
  h[0] = 0x45;
  put16(h + 2, static_cast<std::uint32_t>(20 + 8 + payload));
  h[8] = 64;
  h[9] = 17;
  const IpAddress s = ip(src);
  const IpAddress d = ip(dst);
  std::copy_n(s.bytes.begin(), 4, h + 12);
  std::copy_n(d.bytes.begin(), 4, h + 16);
  std::uint8_t* u = h + 20;
  put16(u, sport);
  put16(u + 2, dport);
  put16(u + 4, static_cast<std::uint32_t>(8 + payload));
  return b;
}

Bytes arp(const MacAddress& src_mac) {
  Bytes b(14 + 28, 0);
  std::fill_n(b.begin(), 6, 0xff);
  std::copy(src_mac.begin(), src_mac.end(), b.begin() + 6);
  put16(&b[12], 0x0806);
  return b;
}

Bytes encap(const Bytes& inner, const VxlanGbpParams& params) {
  Bytes out(inner.size() + vxlan_overhead(params));
  EXPECT_EQ(encap_vxlan_gbp(out, inner, params), out.size());
  return out;
}

const MacAddress kMacA = {0x02, 0, 0, 0, 0, 0x0a};  // node A's uplink
const MacAddress kMacB = {0x02, 0, 0, 0, 0, 0x0b};  // node B's uplink
const MacAddress kMacC = {0x02, 0, 0, 0, 0, 0x0c};  // node C's uplink
const MacAddress kMacX = {0x02, 0, 0, 0, 0, 0x99};  // a stranger
const MacAddress kCont1 = {0x0a, 0, 0, 0, 1, 1};    // containers
const MacAddress kCont2 = {0x0a, 0, 0, 0, 2, 2};

// Node B's view: peers A (index 0) and C (index 1).
OverlayConfig config_b() {
  OverlayConfig c;
  c.local_vtep = ip("192.168.77.2");
  c.local_mac = kMacB;
  c.vni = 4242;
  c.peers = {{ip("192.168.77.1"), kMacA}, {ip("192.168.77.3"), kMacC}};
  return c;
}
// Node A's view: peer B.
OverlayConfig config_a() {
  OverlayConfig c;
  c.local_vtep = ip("192.168.77.1");
  c.local_mac = kMacA;
  c.vni = 4242;
  c.peers = {{ip("192.168.77.2"), kMacB}};
  return c;
}

std::unique_ptr<Overlay> make(const OverlayConfig& c) {
  std::string error;
  auto o = Overlay::create(c, error);
  EXPECT_TRUE(o) << error;
  return o;
}

// What node A's Overlay would send to B.
VxlanGbpParams a_to_b(std::uint16_t group = 3) {
  const auto a = make(config_a());
  return a->encap_params(0, group, 0xc123);
}

TEST(DpdkOverlay, ParsesMacs) {
  MacAddress m{};
  EXPECT_TRUE(parse_mac("02:00:AB:cd:0e:ff", m));
  EXPECT_EQ(m, (MacAddress{0x02, 0x00, 0xab, 0xcd, 0x0e, 0xff}));
  EXPECT_FALSE(parse_mac("02:00:ab:cd:0e", m));
  EXPECT_FALSE(parse_mac("02-00-ab-cd-0e-ff", m));
  EXPECT_FALSE(parse_mac("02:00:ab:cd:0e:fg", m));
}

TEST(DpdkOverlay, RejectsBadConfigurations) {
  std::string error;
  OverlayConfig c = config_b();
  c.peers.clear();
  EXPECT_FALSE(Overlay::create(c, error));
  c = config_b();
  c.peers.push_back({ip("fd00::3"), kMacC});
  EXPECT_FALSE(Overlay::create(c, error));
  EXPECT_NE(error.find("family"), std::string::npos) << error;
  c = config_b();
  c.peers.push_back(c.peers[0]);
  EXPECT_FALSE(Overlay::create(c, error));
  EXPECT_NE(error.find("twice"), std::string::npos) << error;
  c = config_b();
  c.peers.push_back({c.local_vtep, kMacB});
  EXPECT_FALSE(Overlay::create(c, error));
  c = config_b();
  c.vni = 1U << 24;
  EXPECT_FALSE(Overlay::create(c, error));
  c = config_b();
  c.udp_port = 0;
  EXPECT_FALSE(Overlay::create(c, error));
  // Many peers: every one is found, strangers are not.
  c = config_b();
  c.peers.clear();
  for (int i = 0; i < 200; ++i) {
    c.peers.push_back({IpAddress::v4(0x0a000000U + static_cast<std::uint32_t>(i) * 7U), kMacA});
  }
  const auto o = make(c);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(o->find_peer(IpAddress::v4(0x0a000000U + static_cast<std::uint32_t>(i) * 7U)), i);
  }
  EXPECT_EQ(o->find_peer(IpAddress::v4(0x0a000001U)), Overlay::kNoPeer);
  EXPECT_EQ(o->find_peer(ip("fd00::1")), Overlay::kNoPeer);
}

struct IngressCase {
  const char* what;
  Bytes frame;
  bool accepted;
  OverlayRefusal refusal;
  std::uint16_t peer;
};

TEST(DpdkOverlay, IngressAcceptsOnlyTrustedPeersOnOurVni) {
  const auto b = make(config_b());
  const Bytes inner = inner_udp(kCont1, kCont2, "10.78.0.1", "10.78.0.2", 40000, 5353);
  std::vector<IngressCase> cases;
  cases.push_back({"from peer A", encap(inner, a_to_b()), true, {}, 0});
  VxlanGbpParams from_c = a_to_b();
  from_c.src_ip = ip("192.168.77.3");
  from_c.src_mac = kMacC;
  cases.push_back({"from peer C", encap(inner, from_c), true, {}, 1});
  VxlanGbpParams untagged = a_to_b();
  untagged.gbp = false;
  cases.push_back({"plain VXLAN from a peer", encap(inner, untagged), true, {}, 0});
  VxlanGbpParams stranger = a_to_b();
  stranger.src_ip = ip("192.168.77.99");
  stranger.src_mac = kMacX;
  cases.push_back(
      {"untrusted outer source", encap(inner, stranger), false, OverlayRefusal::UntrustedPeer, 0});
  VxlanGbpParams vni = a_to_b();
  vni.vni = 4243;
  cases.push_back({"another VNI", encap(inner, vni), false, OverlayRefusal::WrongVni, 0});
  VxlanGbpParams dst_ip = a_to_b();
  dst_ip.dst_ip = ip("192.168.77.5");
  cases.push_back(
      {"not our VTEP address", encap(inner, dst_ip), false, OverlayRefusal::WrongDestination, 0});
  VxlanGbpParams dst_mac = a_to_b();
  dst_mac.dst_mac = kMacX;
  cases.push_back(
      {"not our MAC", encap(inner, dst_mac), false, OverlayRefusal::WrongDestination, 0});
  VxlanGbpParams port = a_to_b();
  port.dst_port = 8472;
  cases.push_back(
      {"VXLAN to another UDP port", encap(inner, port), false, OverlayRefusal::NotVxlan, 0});
  VxlanGbpParams v6 = a_to_b();
  v6.src_ip = ip("fd00:77::1");
  v6.dst_ip = ip("fd00:77::2");
  cases.push_back({"IPv6 underlay to an IPv4 VTEP", encap(inner, v6), false,
                   OverlayRefusal::WrongDestination, 0});
  Bytes bare = inner;
  std::copy(kMacB.begin(), kMacB.end(), bare.begin());
  cases.push_back({"plain IP", bare, false, OverlayRefusal::NotVxlan, 0});
  cases.push_back({"ARP", arp(kMacA), false, OverlayRefusal::NotVxlan, 0});

  for (const IngressCase& c : cases) {
    const PacketInfo info = parse_packet(c.frame, b->parse_options({}));
    ASSERT_FALSE(is_malformed(info.status)) << c.what << ": " << to_string(info.status);
    const OverlayIngress r = b->check_ingress(c.frame, info);
    EXPECT_EQ(r.accepted, c.accepted) << c.what;
    if (c.accepted) {
      EXPECT_EQ(r.peer, c.peer) << c.what;
    } else {
      EXPECT_EQ(r.refusal, c.refusal) << c.what << ": got " << to_string(r.refusal);
    }
  }
}

TEST(DpdkOverlay, Ipv6Underlay) {
  OverlayConfig c;
  c.local_vtep = ip("fd00:77::2");
  c.local_mac = kMacB;
  c.vni = 7;
  c.peers = {{ip("fd00:77::1"), kMacA}};
  const auto b = make(c);
  OverlayConfig ca = c;
  ca.local_vtep = ip("fd00:77::1");
  ca.local_mac = kMacA;
  ca.peers = {{ip("fd00:77::2"), kMacB}};
  const auto a = make(ca);
  const Bytes inner = inner_udp(kCont1, kCont2, "10.78.0.1", "10.78.0.2", 40000, 5353);
  const Bytes frame = encap(inner, a->encap_params(0, 2, 0xc001));
  ASSERT_EQ(frame.size(), inner.size() + kVxlanOverheadV6);
  const PacketInfo info = parse_packet(frame, b->parse_options({}));
  ASSERT_EQ(info.status, ParseStatus::Ok);
  const OverlayIngress r = b->check_ingress(frame, info);
  EXPECT_TRUE(r.accepted) << to_string(r.refusal);
  EXPECT_EQ(info.group_id, 2);
}

TEST(DpdkOverlay, LearnsInnerMacsBehindPeers) {
  OverlayConfig c = config_b();
  c.mac_capacity = 16;
  c.mac_ageing_ns = 100;
  const auto b = make(c);
  EXPECT_EQ(b->lookup(kCont1.data(), 0), Overlay::kNoPeer);
  EXPECT_TRUE(b->learn(kCont1.data(), 0, 10));
  EXPECT_EQ(b->lookup(kCont1.data(), 20), 0);
  EXPECT_TRUE(b->learn(kCont1.data(), 1, 30));  // moved behind C
  EXPECT_EQ(b->lookup(kCont1.data(), 40), 1);
  EXPECT_EQ(b->lookup(kCont1.data(), 131), Overlay::kNoPeer);  // aged out
  EXPECT_EQ(b->lookup(kCont2.data(), 40), Overlay::kNoPeer);
  // A full table refuses new MACs while its entries are live, and reuses
  // aged ones.
  int learned = 0;
  for (int i = 0; i < 64; ++i) {
    const MacAddress m = {0x0a, 1, 0, 0, 0, static_cast<std::uint8_t>(i)};
    learned += b->learn(m.data(), 0, 200) ? 1 : 0;
  }
  EXPECT_LE(learned, 16);
  EXPECT_GE(learned, 1);
  const MacAddress late = {0x0a, 2, 0, 0, 0, 1};
  EXPECT_TRUE(b->learn(late.data(), 1, 400));
  EXPECT_EQ(b->lookup(late.data(), 401), 1);
}

TEST(DpdkOverlay, GroupIdsAreTierPlusOne) {
  EXPECT_EQ(group_of_tier(kQuarantineTier), 1);
  EXPECT_EQ(group_of_tier(2), 3);
  EXPECT_EQ(tier_of_group(3), 2);
  EXPECT_EQ(tier_of_group(group_of_tier(0xfffd)), 0xfffd);
  for (std::size_t r = 0; r < kOverlayRefusalCount; ++r) {
    EXPECT_NE(to_string(static_cast<OverlayRefusal>(r)), "unknown");
  }
}

// tiers: 0 quarantine, 1 a, 2 b. Endpoints a-1 10.78.0.1 (a), b-1
// 10.78.0.2 (b); node 10.78.0.254; container network 10.78.0.0/24.
std::unique_ptr<const Generation> node_generation() {
  auto pol = std::make_shared<CompiledPolicy>();
  pol->tiers = {{"quarantine", -1, Mode::Enforce, false},
                {"a", 10, Mode::Enforce, true},
                {"b", 20, Mode::Enforce, true}};
  auto eps = std::make_shared<EndpointTable>();
  const IpAddress a1[] = {ip("10.78.0.1")};
  const IpAddress b1[] = {ip("10.78.0.2")};
  EXPECT_TRUE(eps->upsert(0, a1, 1, {}));
  EXPECT_TRUE(eps->upsert(1, b1, 2, {}));
  eps->set_node_addresses({ip("10.78.0.254")});
  eps->set_container_cidrs({*Cidr::parse("10.78.0.0/24")});
  auto built = build_generation(RuleSet{pol, eps});
  EXPECT_TRUE(built.generation) << built.error;
  return std::move(built.generation);
}

PacketInfo received(const char* src, std::uint16_t group, bool gbp = true) {
  const auto b = make(config_b());
  VxlanGbpParams p = a_to_b(group);
  p.gbp = gbp;
  const Bytes frame = encap(inner_udp(kCont1, kCont2, src, "10.78.0.2", 40000, 5353), p);
  return parse_packet(frame, b->parse_options({}));
}

TEST(DpdkOverlay, ReceiverChecksTheTagAgainstWhatItKnows) {
  const auto g = node_generation();
  ASSERT_TRUE(g);
  struct Case {
    const char* what;
    PacketInfo info;
    SourceCheck::Kind kind;
    OverlayRefusal refusal;
    std::uint16_t src_tag;
  };
  using K = SourceCheck::Kind;
  const Case cases[] = {
      {"untagged: by address", received("10.78.0.1", 0, false), K::ByAddress, {}, 0},
      {"G bit, group 0: by address", received("10.78.0.9", 0), K::ByAddress, {}, 0},
      {"known, its own tier", received("10.78.0.1", 2), K::ByAddress, {}, 0},
      {"known, another tier", received("10.78.0.1", 3), K::Refused, OverlayRefusal::Spoofed, 0},
      {"this node's address", received("10.78.0.254", 2), K::Refused, OverlayRefusal::Spoofed, 0},
      {"unknown in the container network", received("10.78.0.9", 3), K::ByTag, {}, 3},
      {"unknown outside it", received("203.0.113.9", 2), K::ByTag, {}, 2},
      {"quarantine tag", received("10.78.0.9", 1), K::ByTag, {}, 1},
      {"a group naming no tier", received("10.78.0.9", 4), K::Refused, OverlayRefusal::UnknownTag,
       0},
  };
  for (const Case& c : cases) {
    ASSERT_EQ(c.info.status, ParseStatus::Ok) << c.what;
    const SourceCheck r = check_source(*g, c.info);
    EXPECT_EQ(r.kind, c.kind) << c.what;
    if (c.kind == K::Refused) {
      EXPECT_EQ(r.refusal, c.refusal) << c.what;
    }
    EXPECT_EQ(r.src_tag, c.src_tag) << c.what;
  }
}

TEST(DpdkOverlay, SenderTagsWithTheSourceTier) {
  const auto g = node_generation();
  ASSERT_TRUE(g);
  EXPECT_EQ(egress_group(*g, ip("10.78.0.1")), 2);    // a
  EXPECT_EQ(egress_group(*g, ip("10.78.0.2")), 3);    // b
  EXPECT_EQ(egress_group(*g, ip("10.78.0.77")), 1);   // unknown container: quarantine
  EXPECT_EQ(egress_group(*g, ip("10.78.0.254")), 0);  // host: untagged
  EXPECT_EQ(egress_group(*g, ip("8.8.8.8")), 0);      // world: untagged
}

TEST(DpdkOverlay, EncapsulationRoundTripsToThePeer) {
  const auto a = make(config_a());
  const auto b = make(config_b());
  const Bytes inner = inner_udp(kCont1, kCont2, "10.78.0.1", "10.78.0.2", 40000, 5353, 100);
  const PacketInfo inner_info = parse_packet(inner);
  ASSERT_EQ(inner_info.status, ParseStatus::Ok);
  for (const std::uint16_t group : {std::uint16_t{0}, std::uint16_t{1}, std::uint16_t{2}}) {
    const VxlanGbpParams p = a->encap_params(0, group, vxlan_source_port(inner_info));
    const Bytes frame = encap(inner, p);
    ASSERT_EQ(frame.size(), inner.size() + kVxlanOverheadV4);
    // Outer Ethernet: to B's MAC from A's.
    EXPECT_TRUE(std::equal(kMacB.begin(), kMacB.end(), frame.begin()));
    EXPECT_TRUE(std::equal(kMacA.begin(), kMacA.end(), frame.begin() + 6));
    const PacketInfo info = parse_packet(frame, b->parse_options({}));
    ASSERT_EQ(info.status, ParseStatus::Ok);
    EXPECT_TRUE(info.has(kFlagVxlan));
    EXPECT_EQ(info.vni, 4242U);
    EXPECT_EQ(info.outer_src, ip("192.168.77.1"));
    EXPECT_EQ(info.has(kFlagGbp), group != 0) << group;
    EXPECT_EQ(info.has(kFlagGbpPolicyApplied), group != 0) << group;
    EXPECT_FALSE(info.has(kFlagGbpDontLearn));
    EXPECT_EQ(info.group_id, group);
    EXPECT_EQ(info.src, inner_info.src);
    EXPECT_EQ(info.dst, inner_info.dst);
    EXPECT_EQ(info.src_port, 40000);
    EXPECT_EQ(info.dst_port, 5353);
    EXPECT_EQ(info.inner_l2_offset, kVxlanOverheadV4);
    // The UDP source port spreads flows over the dynamic range.
    EXPECT_GE((frame[34] << 8) | frame[35], 0xc000);
    const OverlayIngress r = b->check_ingress(frame, info);
    EXPECT_TRUE(r.accepted) << to_string(r.refusal);
    EXPECT_EQ(r.peer, 0);
    // What B forwards after decapsulation is A's inner frame, byte for byte.
    EXPECT_TRUE(std::equal(inner.begin(), inner.end(), frame.begin() + info.inner_l2_offset));
  }
}

}  // namespace
}  // namespace tierwall::dataplane::dpdk
