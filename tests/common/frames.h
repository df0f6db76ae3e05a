// Test frames built top-down from headers: each function returns one header
// followed by its payload, with lengths and the IPv4 header checksum filled
// in (L4 checksums are left zero). Shared by the DPDK parser's fixture table
// and the DPDK bridge's pcap fixture test.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "tierwall/dataplane/address.h"

namespace tierwall::testkit::frames {

using Bytes = std::vector<std::uint8_t>;
using Mac = std::array<std::uint8_t, 6>;

inline constexpr Mac kDstMac = {0x02, 0, 0, 0, 0, 0x02};
inline constexpr Mac kSrcMac = {0x02, 0, 0, 0, 0, 0x01};

inline void put16(Bytes& b, std::size_t at, std::uint32_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}
inline void append(Bytes& b, const Bytes& tail) { b.insert(b.end(), tail.begin(), tail.end()); }
inline Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) append(out, p);
  return out;
}

inline IpAddress ip(const char* text) { return IpAddress::parse(text).value(); }
inline Bytes addr(const char* text) {
  const IpAddress a = ip(text);
  return Bytes(a.bytes.begin(), a.bytes.begin() + static_cast<std::ptrdiff_t>(a.size()));
}

inline Bytes eth(std::uint16_t type, const Bytes& payload, const Mac& dst = kDstMac,
                 const Mac& src = kSrcMac) {
  Bytes b(dst.begin(), dst.end());
  b.insert(b.end(), src.begin(), src.end());
  b.resize(14);
  put16(b, 12, type);
  append(b, payload);
  return b;
}
// A tag: TPID of the tag itself is the enclosing ethertype; this writes the
// TCI and the next ethertype.
inline Bytes tag(std::uint16_t vlan, std::uint16_t next, const Bytes& payload) {
  Bytes b(4);
  put16(b, 0, 0x2000U | vlan);  // PCP 1
  put16(b, 2, next);
  append(b, payload);
  return b;
}

inline std::uint16_t checksum(const std::uint8_t* p, std::size_t n) {
  std::uint32_t acc = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) acc += (std::uint32_t{p[i]} << 8) | p[i + 1];
  if (n % 2 != 0) acc += std::uint32_t{p[n - 1]} << 8;
  while (acc >> 16 != 0) acc = (acc & 0xffffU) + (acc >> 16);
  return static_cast<std::uint16_t>(~acc);
}

struct V4 {
  std::uint8_t proto = 6;
  const char* src = "10.0.0.1";
  const char* dst = "10.0.0.2";
  Bytes options = {};
  std::uint16_t frag = 0;  // flags + offset field
  std::uint16_t id = 0x1234;
};
inline Bytes ipv4(const V4& h, const Bytes& payload) {
  Bytes b(20);
  b[0] = static_cast<std::uint8_t>(0x40U | ((20 + h.options.size()) / 4));
  put16(b, 2, static_cast<std::uint32_t>(20 + h.options.size() + payload.size()));
  put16(b, 4, h.id);
  put16(b, 6, h.frag);
  b[8] = 64;
  b[9] = h.proto;
  const Bytes s = addr(h.src), d = addr(h.dst);
  std::copy(s.begin(), s.end(), b.begin() + 12);
  std::copy(d.begin(), d.end(), b.begin() + 16);
  append(b, h.options);
  put16(b, 10, checksum(b.data(), b.size()));
  append(b, payload);
  return b;
}
inline Bytes ipv6(std::uint8_t next, const Bytes& payload, const char* src = "fd00::1",
                  const char* dst = "fd00::2") {
  Bytes b(8);
  b[0] = 0x60;
  put16(b, 4, static_cast<std::uint32_t>(payload.size()));
  b[6] = next;
  b[7] = 64;
  append(b, addr(src));
  append(b, addr(dst));
  append(b, payload);
  return b;
}
// Hop-by-hop, routing or destination options: 8 bytes (PadN inside).
inline Bytes ext8(std::uint8_t next, const Bytes& payload) {
  Bytes b = {next, 0, 1, 4, 0, 0, 0, 0};
  append(b, payload);
  return b;
}
inline Bytes frag6(std::uint8_t next, std::uint16_t offset, bool more, std::uint32_t id,
                   const Bytes& payload) {
  Bytes b = {next, 0, 0, 0, 0, 0, 0, 0};
  put16(b, 2, static_cast<std::uint32_t>(offset) | (more ? 1U : 0U));
  put16(b, 4, id >> 16);
  put16(b, 6, id & 0xffffU);
  append(b, payload);
  return b;
}
inline Bytes tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags, std::size_t data = 0,
                 std::uint8_t doff = 5) {
  Bytes b(std::max<std::size_t>(20, std::size_t{doff} * 4) + data);
  put16(b, 0, sport);
  put16(b, 2, dport);
  b[12] = static_cast<std::uint8_t>(doff << 4);
  b[13] = flags;
  return b;
}
inline Bytes udp(std::uint16_t sport, std::uint16_t dport, const Bytes& payload) {
  Bytes b(8);
  put16(b, 0, sport);
  put16(b, 2, dport);
  put16(b, 4, static_cast<std::uint32_t>(8 + payload.size()));
  append(b, payload);
  return b;
}
inline Bytes sctp(std::uint16_t sport, std::uint16_t dport) {
  Bytes b(12 + 16);  // common header + an INIT chunk's worth of bytes
  put16(b, 0, sport);
  put16(b, 2, dport);
  b[12] = 1;
  return b;
}
inline Bytes icmp(std::uint8_t type, std::uint8_t code, std::uint16_t id, std::size_t size = 8) {
  Bytes b(size);
  b[0] = type;
  b[1] = code;
  if (size >= 6) put16(b, 4, id);
  return b;
}
inline Bytes vxlan(std::uint8_t flags0, std::uint8_t flags1, std::uint16_t group, std::uint32_t vni,
                   const Bytes& inner) {
  Bytes b = {flags0, flags1, 0, 0, 0, 0, 0, 0};
  put16(b, 2, group);
  b[4] = static_cast<std::uint8_t>(vni >> 16);
  b[5] = static_cast<std::uint8_t>(vni >> 8);
  b[6] = static_cast<std::uint8_t>(vni);
  append(b, inner);
  return b;
}

inline constexpr std::uint8_t kSyn = 0x02;
inline constexpr std::uint8_t kTcp = 6, kUdp = 17, kIcmp = 1, kIcmp6 = 58, kSctp = 132;

}  // namespace tierwall::testkit::frames
