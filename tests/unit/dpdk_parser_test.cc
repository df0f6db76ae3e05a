#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tests/common/frames.h"
#include "tests/unit/dpdk_parser_reference.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace tierwall::dataplane::dpdk {
namespace {

using namespace testkit::frames;  // NOLINT(google-build-using-namespace): the fixture DSL

// Common frames, reused by several rows.
Bytes v4_tcp() { return eth(0x0800, ipv4({}, tcp(40000, 443, kSyn))); }
Bytes v6_udp() { return eth(0x86DD, ipv6(kUdp, udp(5353, 53, Bytes(12)))); }
Bytes vxlan_v4(std::uint8_t flags0, std::uint8_t flags1, std::uint16_t group, const Bytes& inner,
               std::uint16_t port = kVxlanPort) {
  return eth(0x0800, ipv4({.proto = kUdp, .src = "192.168.1.10", .dst = "192.168.1.20"},
                          udp(50123, port, vxlan(flags0, flags1, group, 42, inner))));
}

// ------------------------------------------------------------ fixture table

struct Expect {
  ParseStatus status = ParseStatus::Ok;
  std::uint8_t ip_version = 0;
  std::uint8_t protocol = 0;
  const char* src = nullptr;
  const char* dst = nullptr;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  std::uint8_t flags = 0;
  std::uint8_t tcp_flags = 0;
  std::uint8_t icmp_type = 0;
  std::uint8_t icmp_code = 0;
  std::uint16_t icmp_id = 0;
  std::uint32_t vni = 0;
  std::uint16_t group_id = 0;
  std::uint8_t vlan_count = 0;
  std::uint16_t vlan0 = 0;
  std::uint16_t vlan1 = 0;
  std::uint16_t l4_offset = 0;
  std::uint16_t fragment_offset = 0;
  std::uint32_t fragment_id = 0;
};

struct Fixture {
  std::string name;
  Bytes frame;
  Expect expect;
  ParseOptions options = {};
};

std::vector<Fixture> fixtures() {
  const std::uint8_t kFrag = kFlagFragment, kMf = kFlagMoreFragments, kPorts = kFlagPorts;
  const std::uint8_t kVx = kFlagVxlan, kGbp = kFlagGbp;
  // VXLAN flags: I only; G|I. GBP flags byte: D|A.
  const std::uint8_t kI = 0x08, kGI = 0x88, kDA = 0x48;
  const Bytes inner_v4 =
      eth(0x0800, ipv4({.src = "10.1.0.5", .dst = "10.2.0.7"}, tcp(33000, 5432, kSyn)));
  const Bytes inner_v6 =
      eth(0x86DD, ipv6(kUdp, udp(1000, 2000, Bytes(4)), "fd00:a::1", "fd00:b::2"));
  Bytes too_many;  // nine destination options headers before TCP
  {
    Bytes l4 = tcp(1, 2, kSyn);
    for (int i = 0; i < 9; ++i) l4 = ext8(i == 0 ? kTcp : 60, l4);
    too_many = eth(0x86DD, ipv6(60, l4));
  }
  return {
      // Plain IPv4.
      {"ipv4 tcp syn", v4_tcp(),
       {.ip_version = 4, .protocol = kTcp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 40000, .dst_port = 443, .flags = kPorts, .tcp_flags = kSyn,
        .l4_offset = 34}},
      {"ipv4 udp", eth(0x0800, ipv4({.proto = kUdp}, udp(5000, 53, Bytes(20)))),
       {.ip_version = 4, .protocol = kUdp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 5000, .dst_port = 53, .flags = kPorts, .l4_offset = 34}},
      {"ipv4 icmp echo", eth(0x0800, ipv4({.proto = kIcmp}, icmp(8, 0, 0x77, 64))),
       {.ip_version = 4, .protocol = kIcmp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .flags = kFlagIcmp, .icmp_type = 8, .icmp_id = 0x77, .l4_offset = 34}},
      {"ipv4 icmp port unreachable", eth(0x0800, ipv4({.proto = kIcmp}, icmp(3, 3, 0, 36))),
       {.ip_version = 4, .protocol = kIcmp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .flags = kFlagIcmp, .icmp_type = 3, .icmp_code = 3, .l4_offset = 34}},
      {"ipv4 options (nop, nop, router alert, eol)",
       eth(0x0800, ipv4({.options = {1, 1, 0x94, 4, 0, 0, 0, 0}}, tcp(1, 22, 0x10))),
       {.ip_version = 4, .protocol = kTcp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 1, .dst_port = 22, .flags = kPorts, .tcp_flags = 0x10, .l4_offset = 42}},
      {"ipv4 sctp", eth(0x0800, ipv4({.proto = kSctp}, sctp(2905, 2905))),
       {.ip_version = 4, .protocol = kSctp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 2905, .dst_port = 2905, .flags = kPorts, .l4_offset = 34}},
      {"ipv4 gre: protocol only", eth(0x0800, ipv4({.proto = 47}, Bytes(8))),
       {.ip_version = 4, .protocol = 47, .src = "10.0.0.1", .dst = "10.0.0.2",
        .l4_offset = 34}},
      // IPv4 fragments.
      {"ipv4 first fragment", eth(0x0800, ipv4({.proto = kUdp, .frag = 0x2000},
                                               udp(7000, 8000, Bytes(1472)))),
       {.ip_version = 4, .protocol = kUdp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 7000, .dst_port = 8000, .flags = kFrag | kMf | kPorts, .l4_offset = 34,
        .fragment_id = 0x1234}},
      {"ipv4 non-first fragment", eth(0x0800, ipv4({.proto = kUdp, .frag = 185}, Bytes(100))),
       {.status = ParseStatus::NonFirstFragment, .ip_version = 4, .protocol = kUdp,
        .src = "10.0.0.1", .dst = "10.0.0.2", .flags = kFrag, .l4_offset = 34,
        .fragment_offset = 1480, .fragment_id = 0x1234}},
      {"ipv4 first fragment cutting the tcp header",
       eth(0x0800, ipv4({.frag = 0x2000}, Bytes(16))), {.status = ParseStatus::BadFragment}},
      {"ipv4 tcp fragment at offset 8 (rfc 1858)",
       eth(0x0800, ipv4({.frag = 1}, Bytes(16))), {.status = ParseStatus::BadFragment}},
      {"ipv4 non-final fragment not a multiple of 8",
       eth(0x0800, ipv4({.proto = kUdp, .frag = 0x2000}, udp(1, 2, Bytes(3)))),
       {.status = ParseStatus::BadFragment}},
      {"ipv4 fragment past 65535", eth(0x0800, ipv4({.proto = kUdp, .frag = 0x1fff}, Bytes(16))),
       {.status = ParseStatus::BadFragment}},
      // VLAN tags.
      {"802.1q tagged ipv4 tcp", eth(0x8100, tag(100, 0x0800, ipv4({}, tcp(40000, 443, kSyn)))),
       {.ip_version = 4, .protocol = kTcp, .src = "10.0.0.1", .dst = "10.0.0.2",
        .src_port = 40000, .dst_port = 443, .flags = kPorts, .tcp_flags = kSyn,
        .vlan_count = 1, .vlan0 = 100, .l4_offset = 38}},
      {"qinq (802.1ad + 802.1q) ipv6 udp",
       eth(0x88A8, tag(10, 0x8100, tag(4094, 0x86DD, ipv6(kUdp, udp(5353, 53, Bytes(12)))))),
       {.ip_version = 6, .protocol = kUdp, .src = "fd00::1", .dst = "fd00::2",
        .src_port = 5353, .dst_port = 53, .flags = kPorts, .vlan_count = 2, .vlan0 = 10,
        .vlan1 = 4094, .l4_offset = 62}},
      {"three vlan tags",
       eth(0x8100, tag(1, 0x8100, tag(2, 0x8100, tag(3, 0x0800, ipv4({}, tcp(1, 2, 0)))))),
       {.status = ParseStatus::UnsupportedEncap}},
      // IPv6.
      {"ipv6 tcp", eth(0x86DD, ipv6(kTcp, tcp(50000, 80, kSyn | 0x10, 10, 8))),
       {.ip_version = 6, .protocol = kTcp, .src = "fd00::1", .dst = "fd00::2",
        .src_port = 50000, .dst_port = 80, .flags = kPorts, .tcp_flags = kSyn | 0x10,
        .l4_offset = 54}},
      {"ipv6 udp", v6_udp(),
       {.ip_version = 6, .protocol = kUdp, .src = "fd00::1", .dst = "fd00::2",
        .src_port = 5353, .dst_port = 53, .flags = kPorts, .l4_offset = 54}},
      {"ipv6 hop-by-hop + routing + first fragment + udp",
       eth(0x86DD,
           ipv6(0, ext8(43, ext8(44, frag6(kUdp, 0, true, 0xabcdef01, udp(9, 10, Bytes(16))))))),
       {.ip_version = 6, .protocol = kUdp, .src = "fd00::1", .dst = "fd00::2", .src_port = 9,
        .dst_port = 10, .flags = kFrag | kMf | kPorts, .l4_offset = 78,
        .fragment_id = 0xabcdef01}},
      {"ipv6 non-first fragment",
       eth(0x86DD, ipv6(0, ext8(44, frag6(kUdp, 1448, false, 7, Bytes(40))))),
       {.status = ParseStatus::NonFirstFragment, .ip_version = 6, .protocol = kUdp,
        .src = "fd00::1", .dst = "fd00::2", .flags = kFrag, .l4_offset = 70,
        .fragment_offset = 1448, .fragment_id = 7}},
      {"ipv6 atomic fragment is a whole packet",
       eth(0x86DD, ipv6(44, frag6(kTcp, 0, false, 9, tcp(1, 2, kSyn)))),
       {.ip_version = 6, .protocol = kTcp, .src = "fd00::1", .dst = "fd00::2", .src_port = 1,
        .dst_port = 2, .flags = kPorts, .tcp_flags = kSyn, .l4_offset = 62}},
      {"ipv6 destination options + ah + tcp",
       eth(0x86DD, ipv6(60, ext8(51, cat({{kTcp, 4, 0, 0, 0, 0, 0, 1}, Bytes(16),
                                          tcp(1000, 22, kSyn)})))),
       {.ip_version = 6, .protocol = kTcp, .src = "fd00::1", .dst = "fd00::2",
        .src_port = 1000, .dst_port = 22, .flags = kPorts, .tcp_flags = kSyn, .l4_offset = 86}},
      {"ipv6 esp stops the walk", eth(0x86DD, ipv6(50, Bytes(32))),
       {.ip_version = 6, .protocol = 50, .src = "fd00::1", .dst = "fd00::2", .l4_offset = 54}},
      {"ipv6 no next header", eth(0x86DD, ipv6(0, ext8(59, Bytes(8)))),
       {.ip_version = 6, .protocol = 59, .src = "fd00::1", .dst = "fd00::2", .l4_offset = 62}},
      {"icmpv6 echo request", eth(0x86DD, ipv6(kIcmp6, icmp(128, 0, 0x4242, 16))),
       {.ip_version = 6, .protocol = kIcmp6, .src = "fd00::1", .dst = "fd00::2",
        .flags = kFlagIcmp, .icmp_type = 128, .icmp_id = 0x4242, .l4_offset = 54}},
      {"icmpv6 neighbour solicitation",
       eth(0x86DD, ipv6(kIcmp6, icmp(135, 0, 0, 24), "fe80::1", "ff02::1:ff00:2")),
       {.ip_version = 6, .protocol = kIcmp6, .src = "fe80::1", .dst = "ff02::1:ff00:2",
        .flags = kFlagIcmp, .icmp_type = 135, .l4_offset = 54}},
      {"ipv6 sctp", eth(0x86DD, ipv6(kSctp, sctp(36412, 36412))),
       {.ip_version = 6, .protocol = kSctp, .src = "fd00::1", .dst = "fd00::2",
        .src_port = 36412, .dst_port = 36412, .flags = kPorts, .l4_offset = 54}},
      // VXLAN: the inner packet is described.
      {"vxlan-gbp (D, A) ipv4 outer, ipv4 tcp inner", vxlan_v4(kGI, kDA, 1234, inner_v4),
       {.ip_version = 4, .protocol = kTcp, .src = "10.1.0.5", .dst = "10.2.0.7",
        .src_port = 33000, .dst_port = 5432,
        .flags = kVx | kGbp | kFlagGbpDontLearn | kFlagGbpPolicyApplied | kPorts,
        .tcp_flags = kSyn, .vni = 42, .group_id = 1234, .l4_offset = 50 + 34}},
      {"vxlan without gbp, ipv6 udp inner (group field ignored)",
       vxlan_v4(kI, 0, 999, inner_v6),
       {.ip_version = 6, .protocol = kUdp, .src = "fd00:a::1", .dst = "fd00:b::2",
        .src_port = 1000, .dst_port = 2000, .flags = kVx | kPorts, .vni = 42,
        .l4_offset = 50 + 54}},
      {"vxlan-gbp over ipv6 outer, ipv6 inner",
       eth(0x86DD, ipv6(kUdp, udp(49999, kVxlanPort, vxlan(kGI, 0, 7, 0xabcdef, inner_v6)),
                        "2001:db8::a", "2001:db8::b")),
       {.ip_version = 6, .protocol = kUdp, .src = "fd00:a::1", .dst = "fd00:b::2",
        .src_port = 1000, .dst_port = 2000, .flags = kVx | kGbp | kPorts, .vni = 0xabcdef,
        .group_id = 7, .l4_offset = 70 + 54}},
      {"vxlan carrying arp", vxlan_v4(kGI, 0, 5, eth(0x0806, Bytes(28))),
       {.status = ParseStatus::NotIp, .flags = kVx | kGbp, .vni = 42, .group_id = 5}},
      {"vxlan-shaped udp to another port is plain udp", vxlan_v4(kGI, 0, 5, inner_v4, 4790),
       {.ip_version = 4, .protocol = kUdp, .src = "192.168.1.10", .dst = "192.168.1.20",
        .src_port = 50123, .dst_port = 4790, .flags = kPorts, .l4_offset = 34}},
      {"vxlan port configured (8472)", vxlan_v4(kI, 0, 0, inner_v4, 8472),
       {.ip_version = 4, .protocol = kTcp, .src = "10.1.0.5", .dst = "10.2.0.7",
        .src_port = 33000, .dst_port = 5432, .flags = kVx | kPorts, .tcp_flags = kSyn,
        .vni = 42, .l4_offset = 50 + 34},
       {.vxlan_port = 8472}},
      {"vxlan disabled (port 0)", vxlan_v4(kI, 0, 0, inner_v4),
       {.ip_version = 4, .protocol = kUdp, .src = "192.168.1.10", .dst = "192.168.1.20",
        .src_port = 50123, .dst_port = kVxlanPort, .flags = kPorts, .l4_offset = 34},
       {.vxlan_port = 0}},
      {"vxlan i flag clear", vxlan_v4(0x80, 0, 5, inner_v4), {.status = ParseStatus::BadVxlan}},
      {"vxlan header short",
       eth(0x0800, ipv4({.proto = kUdp}, udp(1, kVxlanPort, {0x08, 0, 0, 0}))),
       {.status = ParseStatus::BadVxlan}},
      {"vxlan inner frame tagged", vxlan_v4(kI, 0, 0, eth(0x8100, tag(5, 0x0800, Bytes(20)))),
       {.status = ParseStatus::UnsupportedEncap}},
      {"vxlan outer first fragment",
       eth(0x0800, ipv4({.proto = kUdp, .frag = 0x2000},
                        udp(1, kVxlanPort, vxlan(kI, 0, 0, 1, cat({inner_v4, Bytes(2)}))))),
       {.status = ParseStatus::UnsupportedEncap}},
      {"vxlan inner truncated ipv4",
       vxlan_v4(kI, 0, 0, eth(0x0800, Bytes{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6})),
       {.status = ParseStatus::Truncated}},
      // Not IP.
      {"arp", eth(0x0806, Bytes(28)), {.status = ParseStatus::NotIp}},
      {"802.3 length frame (llc)", eth(0x0026, Bytes(38)), {.status = ParseStatus::NotIp}},
      {"empty frame", Bytes{}, {.status = ParseStatus::Truncated}},
      // Bad IP headers.
      {"ipv4 ihl 4", [] {
         Bytes f = v4_tcp();
         f[14] = 0x44;
         return f;
       }(), {.status = ParseStatus::BadIpHeader}},
      {"ipv4 total length > frame", [] {
         Bytes f = v4_tcp();
         put16(f, 16, 41);
         return f;
       }(), {.status = ParseStatus::Truncated}},
      {"ipv4 total length < ihl", [] {
         Bytes f = v4_tcp();
         put16(f, 16, 19);
         return f;
       }(), {.status = ParseStatus::BadIpHeader}},
      {"ipv4 ethertype with version 6", [] {
         Bytes f = v4_tcp();
         f[14] = 0x65;
         return f;
       }(), {.status = ParseStatus::BadIpHeader}},
      {"ipv4 option length past the options",
       eth(0x0800, ipv4({.options = {1, 0x44, 12, 5}}, tcp(1, 2, 0))),
       {.status = ParseStatus::BadIpHeader}},
      {"ipv4 bad checksum, verified", [] {
         Bytes f = v4_tcp();
         f[24] ^= 0xff;
         return f;
       }(), {.status = ParseStatus::BadIpChecksum}, {.verify_ipv4_checksum = true}},
      {"ipv4 bad checksum, not verified (offload)", [] {
         Bytes f = v4_tcp();
         f[24] ^= 0xff;
         return f;
       }(), {.ip_version = 4, .protocol = kTcp, .src = "10.0.0.1", .dst = "10.0.0.2",
             .src_port = 40000, .dst_port = 443, .flags = kPorts, .tcp_flags = kSyn,
             .l4_offset = 34}},
      {"ipv6 payload length > frame", [] {
         Bytes f = v6_udp();
         put16(f, 18, 21);
         return f;
       }(), {.status = ParseStatus::Truncated}},
      {"ipv6 payload length shorter than the udp header", [] {
         Bytes f = v6_udp();
         put16(f, 18, 6);
         return f;
       }(), {.status = ParseStatus::BadL4}},
      {"ipv6 payload length cutting an extension header",
       [] {
         Bytes f = eth(0x86DD, ipv6(0, ext8(kTcp, tcp(1, 2, 0))));
         put16(f, 18, 4);
         return f;
       }(),
       {.status = ParseStatus::BadExtHeader}},
      {"ipv6 payload length 0 (jumbogram)", [] {
         Bytes f = v6_udp();
         put16(f, 18, 0);
         return f;
       }(), {.status = ParseStatus::BadIpHeader}},
      {"ipv6 hop-by-hop not first", eth(0x86DD, ipv6(60, ext8(0, ext8(kTcp, tcp(1, 2, 0))))),
       {.status = ParseStatus::BadExtHeader}},
      {"ipv6 two fragment headers",
       eth(0x86DD, ipv6(44, frag6(44, 0, true, 1, frag6(kUdp, 0, true, 1, Bytes(16))))),
       {.status = ParseStatus::BadExtHeader}},
      {"ipv6 nine extension headers", too_many, {.status = ParseStatus::TooManyExtHeaders}},
      // Bad L4.
      {"tcp data offset 4", eth(0x0800, ipv4({}, tcp(1, 2, 0, 0, 4))),
       {.status = ParseStatus::BadL4}},
      {"tcp data offset past the packet", [] {
         Bytes f = v4_tcp();
         f[46] = 0xf0;  // 60-byte header in a 20-byte segment
         return f;
       }(), {.status = ParseStatus::BadL4}},
      {"tcp header short", eth(0x0800, ipv4({}, Bytes(12))), {.status = ParseStatus::BadL4}},
      {"udp length 4", [] {
         Bytes f = eth(0x0800, ipv4({.proto = kUdp}, udp(1, 2, Bytes(4))));
         put16(f, 38, 4);
         return f;
       }(), {.status = ParseStatus::BadL4}},
      {"udp length past the ip payload", [] {
         Bytes f = eth(0x0800, ipv4({.proto = kUdp}, udp(1, 2, Bytes(4))));
         put16(f, 38, 13);
         return f;
       }(), {.status = ParseStatus::BadL4}},
      {"icmp header short", eth(0x0800, ipv4({.proto = kIcmp}, icmp(8, 0, 0, 4))),
       {.status = ParseStatus::BadL4}},
      {"sctp header short", eth(0x86DD, ipv6(kSctp, Bytes(8))), {.status = ParseStatus::BadL4}},
  };
}

bool decided(ParseStatus s) { return s == ParseStatus::Ok || s == ParseStatus::NonFirstFragment; }

// The invariants every result keeps, whatever the input.
void expect_invariants(const PacketInfo& p, std::size_t size, const std::string& name) {
  if (p.status != ParseStatus::Ok) return;
  EXPECT_LE(p.l3_offset, p.l4_offset) << name;
  EXPECT_LE(p.l4_offset, p.payload_offset) << name;
  EXPECT_LE(p.payload_offset, p.l3_end) << name;
  EXPECT_LE(p.l3_end, size) << name;
  EXPECT_TRUE(p.ip_version == 4 || p.ip_version == 6) << name;
  EXPECT_EQ(p.src.family, p.dst.family) << name;
}

class ParserFixtures : public ::testing::TestWithParam<Fixture> {};

TEST_P(ParserFixtures, MatchesExpectedFields) {
  const Fixture& f = GetParam();
  const Expect& e = f.expect;
  const PacketInfo p = parse_packet(f.frame, f.options);
  ASSERT_EQ(to_string(p.status), to_string(e.status)) << f.name;
  expect_invariants(p, f.frame.size(), f.name);
  if (!decided(e.status) && e.flags == 0) return;  // malformed: the status is the contract
  EXPECT_EQ(p.flags, e.flags) << f.name;
  EXPECT_EQ(p.vni, e.vni) << f.name;
  EXPECT_EQ(p.group_id, e.group_id) << f.name;
  if (!decided(e.status)) return;
  EXPECT_EQ(p.ip_version, e.ip_version) << f.name;
  EXPECT_EQ(p.protocol, e.protocol) << f.name;
  EXPECT_EQ(p.src, ip(e.src)) << f.name;
  EXPECT_EQ(p.dst, ip(e.dst)) << f.name;
  EXPECT_EQ(p.src_port, e.src_port) << f.name;
  EXPECT_EQ(p.dst_port, e.dst_port) << f.name;
  EXPECT_EQ(p.tcp_flags, e.tcp_flags) << f.name;
  EXPECT_EQ(p.icmp_type, e.icmp_type) << f.name;
  EXPECT_EQ(p.icmp_code, e.icmp_code) << f.name;
  EXPECT_EQ(p.icmp_id, e.icmp_id) << f.name;
  EXPECT_EQ(p.vlan_count, e.vlan_count) << f.name;
  EXPECT_EQ(p.vlan_id[0], e.vlan0) << f.name;
  EXPECT_EQ(p.vlan_id[1], e.vlan1) << f.name;
  EXPECT_EQ(p.l4_offset, e.l4_offset) << f.name;
  EXPECT_EQ(p.fragment_offset, e.fragment_offset) << f.name;
  EXPECT_EQ(p.fragment_id, e.fragment_id) << f.name;
  if (p.has(kFlagVxlan)) {
    const bool outer_v4 = f.frame[12] == 0x08;
    EXPECT_EQ(p.outer_src, outer_v4 ? ip("192.168.1.10") : ip("2001:db8::a")) << f.name;
    EXPECT_EQ(p.outer_l3_offset, 14) << f.name;
  }
}

// Every strict prefix of a decided frame is Truncated: the IP total or
// payload length (outer, for VXLAN) always covers the whole frame here.
TEST_P(ParserFixtures, EveryPrefixIsTruncated) {
  const Fixture& f = GetParam();
  if (!decided(f.expect.status)) return;
  for (std::size_t n = 0; n < f.frame.size(); ++n) {
    // A copy of exactly n bytes, so that ASan catches a read past it.
    const Bytes prefix(f.frame.begin(), f.frame.begin() + static_cast<std::ptrdiff_t>(n));
    const PacketInfo p = parse_packet(prefix, f.options);
    ASSERT_EQ(to_string(p.status), "truncated") << f.name << " prefix " << n;
  }
}

// Ethernet pads short frames to 60 bytes; the padding is not IP.
TEST_P(ParserFixtures, PaddingAfterTheIpPacketIsIgnored) {
  const Fixture& f = GetParam();
  if (!decided(f.expect.status)) return;
  Bytes padded = f.frame;
  padded.resize(std::max<std::size_t>(padded.size() + 7, 60), 0xee);
  const PacketInfo a = parse_packet(f.frame, f.options);
  const PacketInfo b = parse_packet(padded, f.options);
  EXPECT_EQ(b.status, a.status) << f.name;
  EXPECT_EQ(b.l3_end, a.l3_end) << f.name;
  EXPECT_EQ(b.payload_offset, a.payload_offset) << f.name;
}

// Random corruptions of every fixture: no crash, no read past the copy
// (ASan), and the invariants hold.
TEST_P(ParserFixtures, MutationsKeepInvariants) {
  const Fixture& f = GetParam();
  if (f.frame.empty()) return;
  std::mt19937 rng(12345);
  for (int i = 0; i < 300; ++i) {
    Bytes m = f.frame;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) m[rng() % m.size()] = static_cast<std::uint8_t>(rng());
    m.resize(rng() % (m.size() + 1));
    const PacketInfo p = parse_packet(m, f.options);
    expect_invariants(p, m.size(), f.name);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ParserFixtures, ::testing::ValuesIn(fixtures()),
                         [](const ::testing::TestParamInfo<Fixture>& row) {
                           std::string name;
                           for (char c : row.param.name) {
                             const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                                (c >= '0' && c <= '9');
                             name += alnum ? c : '_';
                           }
                           return std::to_string(row.index) + "_" + name;
                         });

TEST(ParserStatus, EveryStatusHasAName) {
  for (std::size_t i = 0; i < kParseStatusCount; ++i) {
    EXPECT_NE(to_string(static_cast<ParseStatus>(i)), "unknown") << i;
  }
  EXPECT_FALSE(is_malformed(ParseStatus::NonFirstFragment));
  EXPECT_TRUE(is_malformed(ParseStatus::Truncated));
}

TEST(ParserConnection, FeedsTheReferenceEvaluator) {
  const Connection tcp_c = to_connection(parse_packet(v4_tcp()));
  EXPECT_EQ(tcp_c.protocol, kTcp);
  EXPECT_EQ(tcp_c.port, 443);
  EXPECT_EQ(tcp_c.src, ip("10.0.0.1"));
  const Connection icmp_c =
      to_connection(parse_packet(eth(0x86DD, ipv6(kIcmp6, icmp(128, 0, 9, 8)))));
  EXPECT_EQ(icmp_c.protocol, kIcmp6);
  EXPECT_EQ(icmp_c.port, 128);
}

// ------------------------------------------------------------ differential
//
// parse_packet has a fast path for the common frames and a general walk for
// everything else (parser.cc); both must give exactly the parser's results
// as they were before the fast path (dpdk_parser_reference.cc, frozen).
// On valid frames of every kind the fixtures and a random generator build,
// then on each of them truncated at every length, padded, and mutated
// (random bytes, small deltas that land on length fields' boundaries, bit
// flips), under several ParseOptions: parse_packet == reference, general
// walk == reference and, where the fast path takes the frame, fast ==
// general, field by field. Every frame is an exact-size copy, so that ASan
// reports a read one byte past it.

// The names of the fields that differ, "" when none does. It names every
// field of PacketInfo: one added there goes here too (and the check of
// operator== against it below fails until it does).
static_assert(sizeof(PacketInfo) == 96, "a PacketInfo field missing from differences()?");
std::string differences(const PacketInfo& a, const PacketInfo& b) {
  std::string out;
  const auto field = [&](const char* name, bool same) {
    if (same) return;
    if (!out.empty()) out += ", ";
    out += name;
  };
  field("status", a.status == b.status);
  field("src", a.src == b.src);
  field("dst", a.dst == b.dst);
  field("outer_src", a.outer_src == b.outer_src);
  field("vni", a.vni == b.vni);
  field("fragment_id", a.fragment_id == b.fragment_id);
  field("fragment_offset", a.fragment_offset == b.fragment_offset);
  field("vlan_id[0]", a.vlan_id[0] == b.vlan_id[0]);
  field("vlan_id[1]", a.vlan_id[1] == b.vlan_id[1]);
  field("src_port", a.src_port == b.src_port);
  field("dst_port", a.dst_port == b.dst_port);
  field("icmp_id", a.icmp_id == b.icmp_id);
  field("group_id", a.group_id == b.group_id);
  field("outer_l3_offset", a.outer_l3_offset == b.outer_l3_offset);
  field("outer_l4_offset", a.outer_l4_offset == b.outer_l4_offset);
  field("inner_l2_offset", a.inner_l2_offset == b.inner_l2_offset);
  field("l3_offset", a.l3_offset == b.l3_offset);
  field("l4_offset", a.l4_offset == b.l4_offset);
  field("payload_offset", a.payload_offset == b.payload_offset);
  field("l3_end", a.l3_end == b.l3_end);
  field("flags", a.flags == b.flags);
  field("vlan_count", a.vlan_count == b.vlan_count);
  field("ip_version", a.ip_version == b.ip_version);
  field("protocol", a.protocol == b.protocol);
  field("tcp_flags", a.tcp_flags == b.tcp_flags);
  field("icmp_type", a.icmp_type == b.icmp_type);
  field("icmp_code", a.icmp_code == b.icmp_code);
  return out;
}

std::string hex(const Bytes& b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t c : b) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// Random valid frames of every kind the parser knows, built with the
// fixture DSL.
class FrameGenerator {
 public:
  explicit FrameGenerator(std::uint32_t seed) : rng_(seed) {}

  Bytes frame() {
    const std::uint32_t kind = below(10);
    if (kind == 0) return eth(pick<std::uint16_t>({0x0806, 0x88CC, 0x0026}), Bytes(28 + below(20)));
    if (kind <= 2) return vxlan_frame();
    return tagged(ip_frame_payload());
  }

 private:
  std::uint32_t below(std::uint32_t n) { return static_cast<std::uint32_t>(rng_() % n); }
  bool chance(std::uint32_t one_in) { return below(one_in) == 0; }
  std::uint16_t vlan() { return static_cast<std::uint16_t>(below(4096)); }
  std::uint16_t port() {
    return chance(4) ? pick<std::uint16_t>({53, 80, 443, kVxlanPort, 8472})
                     : static_cast<std::uint16_t>(rng_());
  }
  template <typename T>
  T pick(std::initializer_list<T> values) {
    return *(values.begin() + below(static_cast<std::uint32_t>(values.size())));
  }

  Bytes l4(std::uint8_t proto, bool v6) {
    switch (proto) {
      case kTcp: {
        const std::uint8_t doff = static_cast<std::uint8_t>(5 + below(4));
        return tcp(port(), port(), static_cast<std::uint8_t>(rng_()), below(40), doff);
      }
      case kUdp:
        return udp(port(), port(), Bytes(below(40)));
      case kSctp:
        return sctp(port(), port());
      case kIcmp:
      case kIcmp6: {
        const std::uint8_t type =
            v6 ? pick<std::uint8_t>({128, 129, 135, 1}) : pick<std::uint8_t>({0, 8, 3, 11});
        return icmp(type, static_cast<std::uint8_t>(below(4)), static_cast<std::uint16_t>(rng_()),
                    8 + below(40));
      }
      default:
        return Bytes(below(40));
    }
  }

  std::uint8_t protocol(bool v6) {
    const std::uint32_t r = below(10);
    if (r < 4) return kTcp;
    if (r < 7) return kUdp;
    if (r == 7) return v6 ? kIcmp6 : kIcmp;
    if (r == 8) return kSctp;
    return pick<std::uint8_t>({47, 50, 59, v6 ? kIcmp : kIcmp6});
  }

  // (ethertype, IP packet).
  std::pair<std::uint16_t, Bytes> ip_packet() {
    const bool v6 = chance(2);
    const std::uint8_t proto = protocol(v6);
    Bytes payload = l4(proto, v6);
    if (!v6) {
      V4 h{.proto = proto};
      if (chance(6))
        h.options = pick<Bytes>({{1, 1, 1, 0}, {0x94, 4, 0, 0}, {1, 0x44, 8, 5, 0, 0, 0, 0}});
      if (chance(6)) {
        h.frag = pick<std::uint16_t>({0x4000, 0x2000, 1, 185, 0x2000 | 185});
        if ((h.frag & 0x2000) != 0) payload.resize((payload.size() + 7) / 8 * 8);
      }
      return {0x0800, ipv4(h, payload)};
    }
    std::uint8_t next = proto;
    if (chance(5)) {  // extension headers, innermost first
      const std::uint32_t n = 1 + below(3);
      for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint8_t ext = pick<std::uint8_t>({0, 43, 60, 44});
        if (ext == 44) {
          payload = frag6(next, static_cast<std::uint16_t>(chance(2) ? 0 : 8 * below(200)),
                          chance(2), static_cast<std::uint32_t>(rng_()), payload);
        } else {
          payload = ext8(next, payload);
        }
        next = ext;
      }
    }
    return {0x86DD, ipv6(next, payload)};
  }

  Bytes ip_frame_payload() {
    auto [type, packet] = ip_packet();
    type_ = type;
    return packet;
  }

  // Untagged, or one or two tags (outer frames only).
  Bytes tagged(const Bytes& packet) {
    const std::uint32_t tags = chance(3) ? 1 + below(2) : 0;
    if (tags == 0) return eth(type_, packet);
    if (tags == 1) return eth(pick<std::uint16_t>({0x8100, 0x88A8}), tag(vlan(), type_, packet));
    return eth(0x88A8, tag(below(4096) & 0xfffU, 0x8100, tag(vlan(), type_, packet)));
  }

  Bytes vxlan_frame() {
    Bytes inner = chance(8) ? eth(0x0806, Bytes(28)) : [&] {
      const Bytes packet = ip_frame_payload();
      return eth(type_, packet);
    }();
    if (chance(10)) inner = eth(0x8100, tag(5, 0x0800, ipv4({}, tcp(1, 2, kSyn))));
    const std::uint8_t flags0 = pick<std::uint8_t>({0x08, 0x88, 0x88, 0x80});
    const std::uint8_t flags1 = pick<std::uint8_t>({0, 0x40, 0x08, 0x48});
    const Bytes vx =
        vxlan(flags0, flags1, static_cast<std::uint16_t>(rng_()), below(1U << 24), inner);
    const std::uint16_t dport = chance(6) ? 8472 : kVxlanPort;
    const Bytes datagram = udp(static_cast<std::uint16_t>(49152 + below(16384)), dport, vx);
    if (chance(2)) {
      type_ = 0x0800;
      return tagged(ipv4({.proto = kUdp,
                          .src = "192.0.2.1",
                          .dst = "192.0.2.2",
                          .frag = static_cast<std::uint16_t>(chance(8) ? 0x2000 : 0x4000)},
                         datagram));
    }
    type_ = 0x86DD;
    return tagged(ipv6(kUdp, datagram, "2001:db8::1", "2001:db8::2"));
  }

  std::mt19937 rng_;
  std::uint16_t type_ = 0x0800;
};

class Differential {
 public:
  // Every option set a frame is parsed with.
  static std::vector<ParseOptions> option_sets() {
    return {{},
            {.vxlan_port = 0},
            {.vxlan_port = 8472},
            {.verify_ipv4_checksum = true},
            {.max_ext_headers = 1}};
  }

  void check(const Bytes& frame) {
    // An exact-size heap copy: ASan sees a read past its end.
    const Bytes exact(frame.begin(), frame.end());
    for (const ParseOptions& options : option_sets()) check(exact, options);
  }

  void check(const Bytes& frame, const ParseOptions& options) {
    ++parsed_;
    const PacketInfo want = reference::parse_packet_reference(frame, options);
    ++statuses_[static_cast<std::size_t>(want.status)];
    report("parse_packet", frame, options, parse_packet(frame, options), want);
    const PacketInfo general = detail::parse_packet_general(frame, options);
    report("general walk", frame, options, general, want);
    PacketInfo fast;
    if (detail::parse_packet_fast(frame, options, fast)) {
      ++fast_;
      report("fast path vs general walk", frame, options, fast, general);
      if (fast.has(kFlagVxlan)) ++fast_vxlan_;
    } else if (want.status == ParseStatus::Ok) {
      ++general_ok_;
    }
  }

  std::size_t parsed_ = 0;
  std::size_t fast_ = 0;
  std::size_t fast_vxlan_ = 0;
  std::size_t general_ok_ = 0;  // Ok frames the fast path left to the general walk
  std::size_t failures_ = 0;
  std::array<std::size_t, kParseStatusCount> statuses_{};

 private:
  void report(const char* what, const Bytes& frame, const ParseOptions& options,
              const PacketInfo& got, const PacketInfo& want) {
    const std::string diff = differences(got, want);
    EXPECT_EQ(got == want, diff.empty()) << "operator== disagrees with the fields";
    if (diff.empty()) return;
    if (++failures_ > 20) return;  // enough to see the pattern
    ADD_FAILURE() << what << ": " << diff << " differ (got status " << to_string(got.status)
                  << ", want " << to_string(want.status) << ") for the " << frame.size()
                  << "-byte frame " << hex(frame) << " with vxlan_port " << options.vxlan_port
                  << ", max_ext_headers " << int{options.max_ext_headers}
                  << ", verify_ipv4_checksum " << options.verify_ipv4_checksum;
  }
};

// The frame, every strict prefix of it, a padded copy, and mutants.
void check_with_mutants(Differential& d, const Bytes& frame, std::mt19937& rng, int mutants) {
  d.check(frame);
  for (std::size_t n = 0; n < frame.size(); ++n) {
    d.check(Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(n)));
  }
  Bytes padded = frame;
  padded.resize(std::max<std::size_t>(frame.size() + 1 + rng() % 16, 60), 0xee);
  d.check(padded);
  if (frame.empty()) return;
  for (int i = 0; i < mutants; ++i) {
    Bytes m = frame;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      std::uint8_t& b = m[rng() % m.size()];
      switch (rng() % 3) {
        case 0:  // any value
          b = static_cast<std::uint8_t>(rng());
          break;
        case 1:  // a small step: lengths one off, just in or just out
          b = static_cast<std::uint8_t>(b + static_cast<std::uint8_t>(rng() % 9) - 4);
          break;
        default:
          b ^= static_cast<std::uint8_t>(1U << (rng() % 8));
      }
    }
    if (rng() % 4 == 0) m.resize(rng() % (m.size() + 1));
    d.check(m);
  }
}

TEST(ParserDifferential, FastPathAndGeneralWalkAgreeWithTheReference) {
  Differential d;
  std::mt19937 rng(20240611);
  for (const Fixture& f : fixtures()) check_with_mutants(d, f.frame, rng, 200);
  FrameGenerator gen(7);
  for (int i = 0; i < 600; ++i) check_with_mutants(d, gen.frame(), rng, 60);
  // Longer than any mbuf: UnsupportedEncap, on both walks.
  Bytes huge = v4_tcp();
  huge.resize(65536, 0);
  d.check(huge);

  EXPECT_EQ(d.failures_, 0U) << "of " << d.parsed_ << " frames";
  // The corpus reaches what it is meant to: the fast path (plain and
  // VXLAN), Ok frames the fast path leaves to the general walk, and every
  // status.
  EXPECT_GT(d.fast_, d.parsed_ / 50) << d.parsed_;
  EXPECT_GT(d.fast_vxlan_, 1000U);
  EXPECT_GT(d.general_ok_, 1000U);
  for (std::size_t s = 0; s < kParseStatusCount; ++s) {
    EXPECT_GT(d.statuses_[s], 0U) << to_string(static_cast<ParseStatus>(s));
  }
}

// The frames the fast path is for take it; the others do not (the general
// walk decides them, as the differential test checks).
TEST(ParserDifferential, TheFastPathTakesTheCommonFrames) {
  const auto fast = [](const Bytes& frame, const ParseOptions& options = {}) {
    PacketInfo out;
    return detail::parse_packet_fast(frame, options, out);
  };
  const Bytes inner = v4_tcp();
  EXPECT_TRUE(fast(v4_tcp()));
  EXPECT_TRUE(fast(v4_tcp(), {.verify_ipv4_checksum = true}));
  EXPECT_TRUE(fast(v6_udp()));
  EXPECT_TRUE(fast(eth(0x86DD, ipv6(kTcp, tcp(1, 2, kSyn, 10, 8)))));
  EXPECT_TRUE(fast(eth(0x0800, ipv4({.proto = kUdp, .frag = 0x4000}, udp(1, 2, Bytes(4))))));
  EXPECT_TRUE(fast(vxlan_v4(0x88, 0x48, 7, inner)));
  EXPECT_TRUE(fast(vxlan_v4(0x08, 0, 0, v6_udp())));
  EXPECT_TRUE(fast(vxlan_v4(0x08, 0, 0, inner, 4790)));  // plain UDP to another port
  EXPECT_TRUE(fast(eth(0x8100, tag(100, 0x0800, ipv4({}, tcp(1, 2, kSyn))))));
  EXPECT_TRUE(fast(eth(0x88A8, tag(10, 0x8100, tag(20, 0x86DD, ipv6(kUdp, udp(1, 2, {})))))));
  // Left to the general walk.
  EXPECT_FALSE(
      fast(eth(0x8100, tag(1, 0x8100, tag(2, 0x8100, tag(3, 0x0800, ipv4({}, tcp(1, 2, 0))))))));
  EXPECT_FALSE(fast(eth(  // tagged VXLAN
      0x8100,
      tag(100, 0x0800, ipv4({.proto = kUdp}, udp(1, kVxlanPort, vxlan(8, 0, 0, 1, inner)))))));
  EXPECT_FALSE(fast(eth(0x0800, ipv4({.options = {1, 1, 1, 0}}, tcp(1, 2, kSyn)))));
  EXPECT_FALSE(fast(eth(0x0800, ipv4({.proto = kUdp, .frag = 0x2000}, udp(1, 2, Bytes(8))))));
  EXPECT_FALSE(fast(eth(0x0800, ipv4({.proto = kIcmp}, icmp(8, 0, 1)))));
  EXPECT_FALSE(fast(eth(0x86DD, ipv6(60, ext8(kTcp, tcp(1, 2, 0))))));
  EXPECT_FALSE(fast(vxlan_v4(0x08, 0, 0, eth(0x0800, ipv4({.proto = kIcmp}, icmp(8, 0, 1))))));
  EXPECT_FALSE(fast(eth(0x0806, Bytes(28))));
  Bytes bad_sum = v4_tcp();
  bad_sum[24] ^= 0xff;
  EXPECT_TRUE(fast(bad_sum));
  EXPECT_FALSE(fast(bad_sum, {.verify_ipv4_checksum = true}));
}

// ------------------------------------------------------------ encapsulation

VxlanGbpParams params_v4() {
  VxlanGbpParams p;
  p.dst_mac = {0x02, 0, 0, 0, 0, 0xbb};
  p.src_mac = {0x02, 0, 0, 0, 0, 0xaa};
  p.src_ip = ip("192.0.2.1");
  p.dst_ip = ip("192.0.2.2");
  p.vni = 0x123456;
  p.group_id = 0xbeef;
  return p;
}
VxlanGbpParams params_v6() {
  VxlanGbpParams p = params_v4();
  p.src_ip = ip("2001:db8::1");
  p.dst_ip = ip("2001:db8::2");
  return p;
}

struct RoundTrip {
  std::string name;
  VxlanGbpParams params;
  Bytes inner;
};

class EncapRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

TEST_P(EncapRoundTrip, ParseGivesBackTheInnerPacketAndGroup) {
  const RoundTrip& r = GetParam();
  VxlanGbpParams params = r.params;
  const PacketInfo inner = parse_packet(r.inner);
  ASSERT_EQ(inner.status, ParseStatus::Ok);
  params.src_port = vxlan_source_port(inner);
  Bytes out(vxlan_overhead(params) + r.inner.size());
  ASSERT_EQ(encap_vxlan_gbp(out, r.inner, params), out.size()) << r.name;

  const PacketInfo p = parse_packet(out, {.verify_ipv4_checksum = true});
  ASSERT_EQ(p.status, ParseStatus::Ok) << r.name << ": " << to_string(p.status);
  EXPECT_TRUE(p.has(kFlagVxlan));
  EXPECT_EQ(p.has(kFlagGbp), params.gbp);
  EXPECT_EQ(p.group_id, params.gbp ? params.group_id : 0);
  EXPECT_EQ(p.has(kFlagGbpPolicyApplied), params.gbp && params.policy_applied);
  EXPECT_EQ(p.has(kFlagGbpDontLearn), params.gbp && params.dont_learn);
  EXPECT_EQ(p.vni, params.vni);
  EXPECT_EQ(p.outer_src, params.src_ip);
  EXPECT_EQ(p.inner_l2_offset, vxlan_overhead(params));
  EXPECT_EQ(p.outer_l4_offset, vxlan_overhead(params) - 16);
  // The inner frame is byte for byte the original.
  EXPECT_TRUE(std::equal(r.inner.begin(), r.inner.end(),
                         out.begin() + static_cast<std::ptrdiff_t>(p.inner_l2_offset)));
  // And it parses to the same fields, shifted by the overhead.
  EXPECT_EQ(p.src, inner.src);
  EXPECT_EQ(p.dst, inner.dst);
  EXPECT_EQ(p.protocol, inner.protocol);
  EXPECT_EQ(p.src_port, inner.src_port);
  EXPECT_EQ(p.dst_port, inner.dst_port);
  EXPECT_EQ(p.l4_offset, inner.l4_offset + vxlan_overhead(params));
  EXPECT_EQ(p.l3_end, out.size());

  // Outer UDP: source port in the dynamic range; checksum 0 over IPv4,
  // valid over IPv6 (the pseudo-header sum of the datagram folds to 0).
  const std::size_t udp = p.outer_l4_offset;
  const std::uint16_t sport = static_cast<std::uint16_t>((out[udp] << 8) | out[udp + 1]);
  EXPECT_EQ(sport, params.src_port);
  EXPECT_GE(sport, 49152);
  const std::uint16_t sum = static_cast<std::uint16_t>((out[udp + 6] << 8) | out[udp + 7]);
  if (params.dst_ip.is_v4()) {
    EXPECT_EQ(sum, 0);
  } else {
    Bytes pseudo(out.begin() + 22, out.begin() + 54);  // source, destination
    const std::size_t len = out.size() - udp;
    pseudo.insert(pseudo.end(), {0, 0, static_cast<std::uint8_t>(len >> 8),
                                 static_cast<std::uint8_t>(len), 0, 0, 0, 17});
    pseudo.insert(pseudo.end(), out.begin() + static_cast<std::ptrdiff_t>(udp), out.end());
    EXPECT_EQ(checksum(pseudo.data(), pseudo.size()), 0) << r.name;
    EXPECT_NE(sum, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Encap, EncapRoundTrip,
                         ::testing::Values(RoundTrip{"v4_outer_v4_inner", params_v4(), v4_tcp()},
                                           RoundTrip{"v4_outer_v6_inner", params_v4(), v6_udp()},
                                           RoundTrip{"v6_outer_v4_inner", params_v6(), v4_tcp()},
                                           RoundTrip{"v6_outer_v6_inner_odd_length", params_v6(),
                                                     eth(0x86DD, ipv6(kUdp, udp(1, 2, Bytes(13))))},
                                           RoundTrip{"plain_vxlan",
                                                     [] {
                                                       VxlanGbpParams p = params_v4();
                                                       p.gbp = false;
                                                       return p;
                                                     }(),
                                                     v4_tcp()},
                                           RoundTrip{"gbp_d_and_a",
                                                     [] {
                                                       VxlanGbpParams p = params_v6();
                                                       p.dont_learn = p.policy_applied = true;
                                                       return p;
                                                     }(),
                                                     v4_tcp()}),
                         [](const ::testing::TestParamInfo<RoundTrip>& row) {
                           return row.param.name;
                         });

TEST(Encap, RejectsWhatItCannotEncode) {
  const Bytes inner = v4_tcp();
  Bytes out(200, 0x5a);
  VxlanGbpParams mixed = params_v4();
  mixed.dst_ip = ip("2001:db8::2");
  EXPECT_EQ(encap_vxlan_gbp(out, inner, mixed), 0U);
  VxlanGbpParams big_vni = params_v4();
  big_vni.vni = 1U << 24;
  EXPECT_EQ(encap_vxlan_gbp(out, inner, big_vni), 0U);
  EXPECT_EQ(encap_vxlan_gbp(std::span(out).first(inner.size() + 49), inner, params_v4()), 0U);
  EXPECT_EQ(encap_vxlan_gbp(out, std::span(inner).first(13), params_v4()), 0U);
  Bytes huge(65535 - 20 - 16 + 1);
  Bytes huge_out(huge.size() + 70);
  EXPECT_EQ(encap_vxlan_gbp(huge_out, huge, params_v4()), 0U);
  EXPECT_EQ(encap_vxlan_gbp(huge_out, std::span(huge).first(huge.size() - 1), params_v4()),
            huge.size() - 1 + 50);
  // Nothing was written by the rejected calls.
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::uint8_t b) { return b == 0x5a; }));
  EXPECT_EQ(write_vxlan_gbp_headers(std::span(out).first(49), inner, params_v4()), 0U);
}

TEST(Encap, InPlaceLikePrepend) {
  // The inner frame already sits at the start of the buffer (overlapping
  // where the headers go), as after rx; encap moves it and prepends.
  const Bytes inner = v6_udp();
  Bytes buf(inner.size() + kVxlanOverheadV4);
  std::copy(inner.begin(), inner.end(), buf.begin());
  ASSERT_EQ(encap_vxlan_gbp(buf, std::span(buf).first(inner.size()), params_v4()), buf.size());
  const PacketInfo p = parse_packet(buf);
  ASSERT_EQ(p.status, ParseStatus::Ok);
  EXPECT_TRUE(std::equal(inner.begin(), inner.end(), buf.begin() + kVxlanOverheadV4));
  EXPECT_EQ(p.group_id, 0xbeef);
}

TEST(Encap, SourcePortIsStablePerFlowAndSpreads) {
  PacketInfo a = parse_packet(v4_tcp());
  const std::uint16_t pa = vxlan_source_port(a);
  EXPECT_EQ(vxlan_source_port(a), pa);
  std::vector<bool> seen(16384);
  int distinct = 0;
  for (std::uint16_t port = 1; port <= 1000; ++port) {
    a.src_port = port;
    const std::uint16_t sp = vxlan_source_port(a);
    ASSERT_GE(sp, 49152);
    if (!seen[sp - 49152U]) ++distinct;
    seen[sp - 49152U] = true;
  }
  EXPECT_GT(distinct, 900);  // 1000 flows into 16384 ports: few collisions
}

}  // namespace
}  // namespace tierwall::dataplane::dpdk
