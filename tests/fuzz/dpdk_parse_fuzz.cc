// libFuzzer harness for the DPDK dataplane's packet parser (parser.h) and
// VXLAN-GBP encapsulation (encap.h): received frames are untrusted, and the
// parser must never read outside them, whatever the headers claim.
//
// Input format: one Ethernet frame. Its first byte also picks the parse
// options (VXLAN port 4789, 8472 or off; IPv4 checksum verification), so
// that every path stays reachable. Seeds (tests/fuzz/corpus-dpdk) are
// frames of the unit test fixtures: IPv4/IPv6 TCP, UDP, ICMP, SCTP,
// extension headers, fragments, VLAN tags, VXLAN with and without GBP.
//
// Invariants beyond "no crash, no UB" (a violation traps):
//   - the frame is parsed from an exact-size heap copy, so ASan sees any
//     read past its end;
//   - on Ok: l3_offset <= l4_offset <= payload_offset <= l3_end <= size,
//     IP version 4 or 6, both addresses of that family;
//   - on Ok/NonFirstFragment of a VXLAN frame: the outer offsets precede
//     the inner Ethernet header;
//   - parsing is deterministic;
//   - parse_packet's two walks agree (parser.cc): the general walk alone
//     gives parse_packet's result, field by field, on every frame; and
//     when the fast path takes a frame, its result is that one and Ok;
//   - encap round trip: a decided untagged frame (Ok, not VXLAN), encapsulated with
//     VXLAN-GBP over IPv4 and IPv6, parses back to the same inner fields,
//     the group id and the VNI;
//   - overlay ingress (overlay.h): on any frame that is not malformed,
//     Overlay::check_ingress reads only inside the frame and accepts only
//     VXLAN from the configured peer; the round trip's frame is accepted
//     exactly when its VNI is the overlay's, refused as wrong_vni otherwise.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace dpdk = tierwall::dataplane::dpdk;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

constexpr std::uint32_t kOverlayVni = 60;  // the round trip's VNI for 60-byte frames

// The receiving node of the round trip: 192.0.2.2 / 2001:db8::2, trusting
// 192.0.2.1 / 2001:db8::1. Its MAC's first byte is also the selector byte
// of frames sent to it: 0x0c (VXLAN port 4789, IPv4 receiver) and 0x1c
// (4789, IPv6 receiver), so that seeds reach the accepting path.
constexpr std::array<std::uint8_t, 6> kMacV4 = {0x0c, 0, 0, 0, 0, 2};
constexpr std::array<std::uint8_t, 6> kMacV6 = {0x1c, 0, 0, 0, 0, 2};

const dpdk::Overlay& receiver(bool v6) {
  static const auto make = [](bool six) {
    dpdk::OverlayConfig c;
    c.local_vtep = *tierwall::IpAddress::parse(six ? "2001:db8::2" : "192.0.2.2");
    c.local_mac = six ? kMacV6 : kMacV4;
    c.vni = kOverlayVni;
    c.peers = {
        {*tierwall::IpAddress::parse(six ? "2001:db8::1" : "192.0.2.1"), {2, 0, 0, 0, 0, 1}}};
    c.mac_capacity = 16;
    std::string error;
    auto o = dpdk::Overlay::create(c, error);
    check(o != nullptr);
    return o;
  };
  static const auto v4 = make(false);
  static const auto v6_overlay = make(true);
  return v6 ? *v6_overlay : *v4;
}

void check_ingress(std::span<const std::uint8_t> frame, const dpdk::PacketInfo& info, bool v6) {
  const dpdk::OverlayIngress r = receiver(v6).check_ingress(frame, info);
  if (r.accepted) {
    check(info.has(dpdk::kFlagVxlan) && info.vni == kOverlayVni && r.peer == 0);
    check(info.outer_src == *tierwall::IpAddress::parse(v6 ? "2001:db8::1" : "192.0.2.1"));
  } else {
    check(static_cast<std::size_t>(r.refusal) < dpdk::kOverlayRefusalCount);
  }
}

bool same_inner(const dpdk::PacketInfo& a, const dpdk::PacketInfo& b, std::size_t shift) {
  return a.status == b.status && a.src == b.src && a.dst == b.dst && a.protocol == b.protocol &&
         a.ip_version == b.ip_version && a.src_port == b.src_port && a.dst_port == b.dst_port &&
         a.tcp_flags == b.tcp_flags && a.icmp_type == b.icmp_type && a.icmp_code == b.icmp_code &&
         a.l4_offset + shift == b.l4_offset && a.payload_offset + shift == b.payload_offset &&
         a.l3_end + shift == b.l3_end;
}

void round_trip(std::span<const std::uint8_t> frame, const dpdk::PacketInfo& info, bool v6) {
  dpdk::VxlanGbpParams params;
  params.src_mac = {2, 0, 0, 0, 0, 1};
  params.dst_mac = v6 ? kMacV6 : kMacV4;
  params.src_ip = *tierwall::IpAddress::parse(v6 ? "2001:db8::1" : "192.0.2.1");
  params.dst_ip = *tierwall::IpAddress::parse(v6 ? "2001:db8::2" : "192.0.2.2");
  params.src_port = dpdk::vxlan_source_port(info);
  params.vni = frame.size() & 0xffffffU;
  params.group_id = static_cast<std::uint16_t>(frame.size() * 7919U);
  const std::size_t overhead = dpdk::vxlan_overhead(params);
  const std::size_t size = overhead + frame.size();
  auto out = std::make_unique<std::uint8_t[]>(size);
  const std::size_t written = dpdk::encap_vxlan_gbp({out.get(), size}, frame, params);
  // Only an inner frame too long for the outer IP length is refused.
  if (written == 0) {
    check(frame.size() + (v6 ? 16U : 36U) > 65535);
    return;
  }
  check(written == size);
  const dpdk::PacketInfo back = dpdk::parse_packet({out.get(), size});
  check(back.has(dpdk::kFlagVxlan) && back.has(dpdk::kFlagGbp));
  check(back.group_id == params.group_id && back.vni == params.vni);
  check(back.outer_src == params.src_ip);
  check(back.inner_l2_offset == overhead);
  check(same_inner(info, back, overhead));
  const dpdk::OverlayIngress in = receiver(v6).check_ingress({out.get(), size}, back);
  check(in.accepted == (params.vni == kOverlayVni));
  check(in.accepted || in.refusal == dpdk::OverlayRefusal::WrongVni);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  dpdk::ParseOptions options;
  const std::uint8_t selector = data[0];
  options.vxlan_port = (selector & 3U) == 1 ? 8472 : (selector & 3U) == 2 ? 0 : dpdk::kVxlanPort;
  options.verify_ipv4_checksum = (selector & 4U) != 0;

  // An exact-size copy: a read one byte past the frame is an ASan report.
  auto copy = std::make_unique<std::uint8_t[]>(size);
  std::memcpy(copy.get(), data, size);
  const std::span<const std::uint8_t> frame(copy.get(), size);

  const dpdk::PacketInfo info = dpdk::parse_packet(frame, options);
  check(static_cast<std::size_t>(info.status) < dpdk::kParseStatusCount);

  const dpdk::PacketInfo again = dpdk::parse_packet(frame, options);
  check(std::memcmp(&info.status, &again.status, sizeof info.status) == 0 &&
        same_inner(info, again, 0) && info.flags == again.flags && info.vni == again.vni);

  check(dpdk::detail::parse_packet_general(frame, options) == info);
  dpdk::PacketInfo fast;
  if (dpdk::detail::parse_packet_fast(frame, options, fast)) {
    check(fast == info && info.status == dpdk::ParseStatus::Ok);
  }

  if (info.status == dpdk::ParseStatus::Ok) {
    check(info.l3_offset <= info.l4_offset && info.l4_offset <= info.payload_offset &&
          info.payload_offset <= info.l3_end && info.l3_end <= size);
    check(info.ip_version == 4 || info.ip_version == 6);
    const auto family =
        info.ip_version == 4 ? tierwall::IpAddress::Family::V4 : tierwall::IpAddress::Family::V6;
    check(info.src.family == family && info.dst.family == family);
  }
  if (info.has(dpdk::kFlagVxlan)) {
    check(info.outer_l3_offset < info.outer_l4_offset &&
          info.outer_l4_offset + 16U == info.inner_l2_offset && info.inner_l2_offset <= size);
    if (info.status == dpdk::ParseStatus::Ok) check(info.inner_l2_offset < info.l3_offset);
  }
  if (!dpdk::is_malformed(info.status)) check_ingress(frame, info, (selector & 16U) != 0);
  if (info.status == dpdk::ParseStatus::NonFirstFragment) {
    check(info.has(dpdk::kFlagFragment) && info.fragment_offset != 0 && info.l3_end <= size);
  }

  // Round trip through the encapsulation. Restricted to the default VXLAN
  // port: the encapsulated frame is parsed with default options.
  // A tagged inner frame is refused on decapsulation (RFC 7348 §6).
  if (info.status == dpdk::ParseStatus::Ok && !info.has(dpdk::kFlagVxlan) && info.vlan_count == 0 &&
      options.vxlan_port == dpdk::kVxlanPort && !options.verify_ipv4_checksum) {
    round_trip(frame, info, (selector & 8U) != 0);
  }
  return 0;
}
