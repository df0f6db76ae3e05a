// VXLAN-GBP encapsulation for the DPDK dataplane's egress path: outer
// Ethernet / IPv4 or IPv6 / UDP / VXLAN headers with the Group Based Policy
// extension (draft-smith-vxlan-group-policy), so that the receiving node
// learns the source tier from the group id. parse_packet() (parser.h) on
// the result gives back the inner packet, the VNI and the group id.
//
// Wire format of the VXLAN-GBP header (8 bytes, network order):
//   byte 0: G (0x80) | I (0x08)       byte 1: D (0x40) | A (0x08)
//   bytes 2-3: Group Policy ID        bytes 4-6: VNI, byte 7: reserved
//
// Contract: pure byte writers; they never write outside `out`, never
// allocate, throw or log. They return the number of bytes written, or 0
// (and write nothing) when the parameters are invalid (address families
// differ, VNI > 24 bits, inner frame shorter than an Ethernet header or too
// long for the outer IP length) or `out` is too small.
// Costs: O(1) for IPv4 (the UDP checksum is 0, RFC 7348); O(inner bytes)
// for IPv6, whose UDP checksum is computed over the whole datagram.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace tierwall::dataplane::dpdk {

inline constexpr std::size_t kVxlanOverheadV4 = 14 + 20 + 8 + 8;  // 50
inline constexpr std::size_t kVxlanOverheadV6 = 14 + 40 + 8 + 8;  // 70

struct VxlanGbpParams {
  std::array<std::uint8_t, 6> dst_mac{};
  std::array<std::uint8_t, 6> src_mac{};
  IpAddress src_ip;                 // the local VTEP; same family as dst_ip
  IpAddress dst_ip;                 // the peer VTEP
  std::uint16_t src_port = 0xc000;  // entropy: vxlan_source_port(inner info)
  std::uint16_t dst_port = kVxlanPort;
  std::uint32_t vni = 0;  // 24 bits
  std::uint16_t group_id = 0;
  bool gbp = true;              // G bit; false writes plain VXLAN
  bool dont_learn = false;      // GBP D bit
  bool policy_applied = false;  // GBP A bit: the sender already enforced
  std::uint8_t ttl = 64;        // IPv4 TTL / IPv6 hop limit
  std::uint8_t tos = 0;         // IPv4 TOS / IPv6 traffic class
};

// Header bytes that precede the inner frame (kVxlanOverheadV4 or V6).
std::size_t vxlan_overhead(const VxlanGbpParams& params);

// A UDP source port in the dynamic range 49152-65535 (RFC 7348 §5) from a
// hash of the inner 5-tuple, so that ECMP and RSS spread the flows of one
// tunnel; every packet of a flow gets the same port.
std::uint16_t vxlan_source_port(const PacketInfo& inner);

// Writes the vxlan_overhead(params) header bytes to the front of `out`, for
// an inner frame `inner` that the caller places right after them (as
// rte_pktmbuf_prepend does); `inner` is only read (lengths, IPv6 checksum).
std::size_t write_vxlan_gbp_headers(std::span<std::uint8_t> out,
                                    std::span<const std::uint8_t> inner,
                                    const VxlanGbpParams& params);

// Writes the headers and a copy of `inner` to `out` (the two may overlap).
std::size_t encap_vxlan_gbp(std::span<std::uint8_t> out, std::span<const std::uint8_t> inner,
                            const VxlanGbpParams& params);

}  // namespace tierwall::dataplane::dpdk
