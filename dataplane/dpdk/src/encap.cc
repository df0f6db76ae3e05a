// See encap.h. Headers are written field by field in network order; the
// IPv4 header checksum and the IPv6 UDP checksum use checksum.h.
#include "tierwall/dataplane/dpdk/encap.h"

#include <cstring>

#include "checksum.h"

namespace tierwall::dataplane::dpdk {

namespace {

constexpr std::size_t kEthHeader = 14;
constexpr std::size_t kIpv4Header = 20;
constexpr std::size_t kIpv6Header = 40;
constexpr std::size_t kUdpHeader = 8;
constexpr std::size_t kVxlanHeader = 8;
constexpr std::size_t kMaxIpLength = 65535;
constexpr std::uint8_t kProtoUdp = 17;

void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// True when the parameters and the inner frame's length can be encoded.
bool encodable(std::span<const std::uint8_t> inner, const VxlanGbpParams& params) {
  const std::size_t udp_length = kUdpHeader + kVxlanHeader + inner.size();
  // IPv4 total length and IPv6 payload length (= UDP length) are 16 bits.
  const std::size_t ip_length = params.dst_ip.is_v4() ? kIpv4Header + udp_length : udp_length;
  return params.src_ip.family == params.dst_ip.family && params.vni <= 0xffffffU &&
         inner.size() >= kEthHeader && ip_length <= kMaxIpLength;
}

}  // namespace

std::size_t vxlan_overhead(const VxlanGbpParams& params) {
  return params.dst_ip.is_v4() ? kVxlanOverheadV4 : kVxlanOverheadV6;
}

std::uint16_t vxlan_source_port(const PacketInfo& inner) {
  std::uint64_t h = 0;
  h = mix(h, load64(inner.src.bytes.data()));
  h = mix(h, load64(inner.src.bytes.data() + 8));
  h = mix(h, load64(inner.dst.bytes.data()));
  h = mix(h, load64(inner.dst.bytes.data() + 8));
  h = mix(h, (std::uint64_t{inner.protocol} << 32) | (std::uint64_t{inner.src_port} << 16) |
                 inner.dst_port);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return static_cast<std::uint16_t>(0xc000U | (h & 0x3fffU));
}

std::size_t write_vxlan_gbp_headers(std::span<std::uint8_t> out,
                                    std::span<const std::uint8_t> inner,
                                    const VxlanGbpParams& params) {
  const bool v4 = params.dst_ip.is_v4();
  const std::size_t overhead = vxlan_overhead(params);
  const std::size_t udp_length = kUdpHeader + kVxlanHeader + inner.size();
  const std::size_t ip_header = v4 ? kIpv4Header : kIpv6Header;
  if (!encodable(inner, params) || out.size() < overhead) return 0;

  std::uint8_t* p = out.data();
  std::memcpy(p, params.dst_mac.data(), 6);
  std::memcpy(p + 6, params.src_mac.data(), 6);
  put16(p + 12, v4 ? 0x0800U : 0x86DDU);
  std::uint8_t* ip = p + kEthHeader;
  std::uint8_t* udp = ip + ip_header;
  std::uint8_t* vx = udp + kUdpHeader;

  if (v4) {
    ip[0] = 0x45;
    ip[1] = params.tos;
    put16(ip + 2, static_cast<std::uint32_t>(kIpv4Header + udp_length));
    put16(ip + 4, 0);       // identification: unused with DF (RFC 6864)
    put16(ip + 6, 0x4000);  // DF
    ip[8] = params.ttl;
    ip[9] = kProtoUdp;
    put16(ip + 10, 0);
    std::memcpy(ip + 12, params.src_ip.bytes.data(), 4);
    std::memcpy(ip + 16, params.dst_ip.bytes.data(), 4);
    put16(ip + 10, detail::fold(detail::sum16(ip, kIpv4Header, 0)));
  } else {
    ip[0] = static_cast<std::uint8_t>(0x60U | (params.tos >> 4));
    ip[1] = static_cast<std::uint8_t>((params.tos & 0x0fU) << 4);
    ip[2] = 0;  // flow label 0: the UDP source port carries the entropy
    ip[3] = 0;
    put16(ip + 4, static_cast<std::uint32_t>(udp_length));
    ip[6] = kProtoUdp;
    ip[7] = params.ttl;
    std::memcpy(ip + 8, params.src_ip.bytes.data(), 16);
    std::memcpy(ip + 24, params.dst_ip.bytes.data(), 16);
  }

  put16(udp, params.src_port);
  put16(udp + 2, params.dst_port);
  put16(udp + 4, static_cast<std::uint32_t>(udp_length));
  put16(udp + 6, 0);  // IPv4: no checksum (RFC 7348 §5)

  vx[0] = params.gbp ? 0x88 : 0x08;  // G | I, or I only
  vx[1] = 0;
  if (params.gbp && params.dont_learn) vx[1] |= 0x40;
  if (params.gbp && params.policy_applied) vx[1] |= 0x08;
  put16(vx + 2, params.gbp ? params.group_id : 0U);
  vx[4] = static_cast<std::uint8_t>(params.vni >> 16);
  vx[5] = static_cast<std::uint8_t>(params.vni >> 8);
  vx[6] = static_cast<std::uint8_t>(params.vni);
  vx[7] = 0;

  if (!v4) {
    // RFC 8200 §8.1: pseudo-header (addresses, upper-layer length, next
    // header) + UDP header + VXLAN header + inner frame; 0 is sent as 0xffff.
    std::uint32_t acc = detail::sum16(ip + 8, 32, 0);
    acc += static_cast<std::uint32_t>(udp_length) + kProtoUdp;  // udp_length <= 65535
    acc = detail::sum16(udp, kUdpHeader + kVxlanHeader, acc);
    acc = detail::sum16(inner.data(), inner.size(), acc);
    std::uint16_t sum = detail::fold(acc);
    if (sum == 0) sum = 0xffff;
    put16(udp + 6, sum);
  }
  return overhead;
}

std::size_t encap_vxlan_gbp(std::span<std::uint8_t> out, std::span<const std::uint8_t> inner,
                            const VxlanGbpParams& params) {
  const std::size_t overhead = vxlan_overhead(params);
  if (!encodable(inner, params) || out.size() < overhead || out.size() - overhead < inner.size()) {
    return 0;
  }
  // Move the inner frame first, so that an inner frame already in `out`
  // (in place, ahead of its final position) is not overwritten by headers.
  const std::span<std::uint8_t> moved = out.subspan(overhead, inner.size());
  std::memmove(moved.data(), inner.data(), inner.size());
  const std::size_t written = write_vxlan_gbp_headers(out, moved, params);
  return written == 0 ? 0 : written + inner.size();
}

}  // namespace tierwall::dataplane::dpdk
