// The DPDK dataplane's packet parser: one received frame (the bytes of an
// rte_mbuf's first segment) to the fields a decision needs, as a plain
// value. Ethernet, up to two 802.1Q/802.1ad tags, IPv4 (options, fragments),
// IPv6 (extension headers, fragments), TCP, UDP, SCTP, ICMP, ICMPv6, and
// VXLAN (RFC 7348) with the Group Based Policy extension
// (draft-smith-vxlan-group-policy): for VXLAN, the inner packet is the one
// described, the outer one leaves its VNI, group id and offsets.
// docs/dpdk.md has the statuses, the fragment policy and the measured cost.
//
// Contract: `frame` is untrusted. The parser never reads outside it: every
// header is bounds-checked against the innermost length that encloses it
// (frame, IP total/payload length, UDP length) before a byte is read. It
// never allocates, throws, logs or calls the system. Every frame gets a
// status; anything but Ok/NonFirstFragment/NotIp is a malformed frame that
// the caller counts (per status) and drops. On Ok, the offsets satisfy
//   l3_offset <= l4_offset <= payload_offset <= l3_end <= frame.size().
// Fields past the point where parsing stopped keep their zero defaults.
//
// Threads: pure functions of their arguments.
// Costs: O(headers) — a bounded number of header reads (at most
// `max_ext_headers` IPv6 extension headers, IPv4 options only when the IHL
// says so). The common frames (Ethernet with at most two VLAN tags, IPv4
// without options and not a fragment or IPv6 without extension headers,
// TCP or UDP; VXLAN of such frames) take a fast path with no call in it,
// a few nanoseconds; the others a general walk, which gives the same
// result for those too. docs/dpdk.md has the figures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/evaluator.h"

namespace tierwall::dataplane::dpdk {

inline constexpr std::uint16_t kVxlanPort = 4789;  // IANA, RFC 7348

// Why a frame was (not) decided. Counted per value by the caller.
enum class ParseStatus : std::uint8_t {
  Ok,                 // IP packet with its L4 fields (or an L4 we do not parse)
  NotIp,              // ARP, LLDP, 802.3 length frames...: for the L2 bridge
  NonFirstFragment,   // IP fragment with offset > 0: no L4; fragment table
  Truncated,          // the frame ends before a header, or before the IP
                      // total/payload length it claims
  BadIpHeader,        // version, IHL < 5, total length < IHL, bad options,
                      // IPv6 payload length 0 (jumbograms unsupported)
  BadIpChecksum,      // only with ParseOptions::verify_ipv4_checksum
  BadExtHeader,       // an IPv6 extension header runs past the payload,
                      // hop-by-hop not first, two fragment headers
  TooManyExtHeaders,  // more than ParseOptions::max_ext_headers
  BadFragment,        // offset + length > 65535, a non-final fragment not a
                      // multiple of 8, a first fragment that cuts its L4
                      // header, a TCP fragment at offset 8 (RFC 1858)
  BadL4,              // TCP data offset, UDP length, L4 header past the IP
                      // payload
  BadVxlan,           // VXLAN header short or its I flag clear
  UnsupportedEncap,   // > 2 VLAN tags, a tagged inner frame (RFC 7348 §6),
                      // a fragmented VXLAN packet, frame > 65535 bytes
};
inline constexpr std::size_t kParseStatusCount = 12;
std::string_view to_string(ParseStatus status);

// True for the statuses of malformed frames (counted and dropped).
constexpr bool is_malformed(ParseStatus s) { return s >= ParseStatus::Truncated; }

struct ParseOptions {
  std::uint16_t vxlan_port = kVxlanPort;  // 0: never decapsulate
  std::uint8_t max_ext_headers = 8;       // IPv6 extension headers walked
  bool verify_ipv4_checksum = false;      // NICs usually do it (ol_flags)
};

// PacketInfo::flags.
inline constexpr std::uint8_t kFlagVxlan = 0x01;             // decapsulated
inline constexpr std::uint8_t kFlagGbp = 0x02;               // G bit: group_id valid
inline constexpr std::uint8_t kFlagGbpDontLearn = 0x04;      // GBP D bit
inline constexpr std::uint8_t kFlagGbpPolicyApplied = 0x08;  // GBP A bit
inline constexpr std::uint8_t kFlagFragment = 0x10;          // offset > 0 or MF
inline constexpr std::uint8_t kFlagMoreFragments = 0x20;     // MF / M
inline constexpr std::uint8_t kFlagPorts = 0x40;             // TCP, UDP or SCTP ports set
inline constexpr std::uint8_t kFlagIcmp = 0x80;              // icmp type/code set

// What the parser found. Plain, trivially copyable. Offsets are from the
// start of the frame; for VXLAN, l3/l4/payload/l3_end describe the inner
// packet and outer_* the outer one.
struct PacketInfo {
  IpAddress src;  // inner (or only) packet
  IpAddress dst;
  IpAddress outer_src;                // VXLAN only: the sending VTEP (see trust note)
  std::uint32_t vni = 0;              // VXLAN only
  std::uint32_t fragment_id = 0;      // IPv4 identification or IPv6 fragment id
  std::uint16_t fragment_offset = 0;  // bytes
  std::uint16_t vlan_id[2] = {0, 0};  // outer frame's tags, outermost first
  std::uint16_t src_port = 0;         // TCP/UDP/SCTP
  std::uint16_t dst_port = 0;
  std::uint16_t icmp_id = 0;          // ICMP/ICMPv6 echo request/reply
  std::uint16_t group_id = 0;         // VXLAN-GBP Group Policy ID (kFlagGbp)
  std::uint16_t outer_l3_offset = 0;  // VXLAN only
  std::uint16_t outer_l4_offset = 0;  // VXLAN only: the outer UDP header
  std::uint16_t inner_l2_offset = 0;  // VXLAN only: the inner Ethernet header
  std::uint16_t l3_offset = 0;
  std::uint16_t l4_offset = 0;       // after IPv4 options / IPv6 ext headers
  std::uint16_t payload_offset = 0;  // after the L4 header (= l4_offset if unparsed)
  std::uint16_t l3_end = 0;          // l3_offset + IP total length
  ParseStatus status = ParseStatus::Truncated;
  std::uint8_t flags = 0;
  std::uint8_t vlan_count = 0;
  std::uint8_t ip_version = 0;  // 4 or 6
  std::uint8_t protocol = 0;    // L4 protocol after extension headers
  std::uint8_t tcp_flags = 0;
  std::uint8_t icmp_type = 0;
  std::uint8_t icmp_code = 0;

  [[nodiscard]] bool has(std::uint8_t flag) const { return (flags & flag) != 0; }

  friend bool operator==(const PacketInfo&, const PacketInfo&) = default;
};

PacketInfo parse_packet(std::span<const std::uint8_t> frame, const ParseOptions& options = {});

// parse_packet's two walks on their own, for the differential tests and the
// fuzzer: parse_packet(f, o) is parse_packet_fast's result when it returns
// true, parse_packet_general(f, o) otherwise, and the two must agree on
// every frame the fast path takes. Same contract as parse_packet.
namespace detail {
PacketInfo parse_packet_general(std::span<const std::uint8_t> frame, const ParseOptions& options);
// True when the fast path takes `frame` (then `out` is the result), false
// when it leaves it to the general walk (then `out` is untouched).
bool parse_packet_fast(std::span<const std::uint8_t> frame, const ParseOptions& options,
                       PacketInfo& out);
}  // namespace detail

// The reference evaluator's input for a decided packet: port is the
// destination port for tcp/udp/sctp, the ICMP type for icmp/icmpv6.
inline Connection to_connection(const PacketInfo& p) {
  std::uint16_t port = 0;
  if (p.has(kFlagPorts)) port = p.dst_port;
  if (p.has(kFlagIcmp)) port = p.icmp_type;
  return Connection{p.src, p.dst, p.protocol, port};
}

}  // namespace tierwall::dataplane::dpdk
