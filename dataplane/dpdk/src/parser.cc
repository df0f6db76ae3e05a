// See parser.h. Two walks give the same PacketInfo for every frame:
//
//   - the fast path (fast_walk, then fast_info) takes the frames most
//     traffic is made of: Ethernet (untagged, or one or two VLAN tags),
//     IPv4 without options and not a fragment or IPv6 without extension
//     headers, a valid TCP or UDP header; and VXLAN whose outer (untagged)
//     and inner frames are such. It checks everything before it writes
//     anything and declines (FastShape::None) at the first doubt, including
//     for every malformed frame, so it only ever produces `Ok`; then it
//     writes every field of the result once (no zero-fill first), with no
//     call in between;
//   - the general walk (Walk) takes everything else, and everything the fast
//     path declined, from scratch.
//
// tests/unit/dpdk_parser_test.cc checks fast == general == the parser as it
// was before the fast path, field by field, on mutated and truncated frames
// of every kind; the fuzzer (tests/fuzz/dpdk_parse_fuzz.cc) checks fast ==
// general on whatever it finds.
//
// The general walk keeps one invariant: `end` is the exclusive limit of the
// innermost region that encloses the header being read (the frame, then the
// IP packet by its total/payload length, then the UDP datagram by its length
// for VXLAN), and every read at `off` is preceded by a check that
// `end - off` covers it. Regions only shrink, so a header can never be read
// past the frame, whatever the lengths claim. The fast path keeps the same
// one with fewer checks: one length check covers Ethernet, IPv4 and UDP
// (each VLAN tag and the IPv6 header check for their extra bytes), and the
// IP and UDP lengths are checked against the region before they bound the
// L4 header, the VXLAN header and the inner frame.
#include "tierwall/dataplane/dpdk/parser.h"

#include <bit>
#include <cstring>
#include <type_traits>

#include "checksum.h"

namespace tierwall::dataplane::dpdk {

static_assert(kParseStatusCount == static_cast<std::size_t>(ParseStatus::UnsupportedEncap) + 1);
static_assert(std::is_trivially_copyable_v<PacketInfo> && std::is_standard_layout_v<PacketInfo>);

namespace {

constexpr std::size_t kMaxFrame = 65535;  // offsets are 16-bit (mbuf data_len)
constexpr std::size_t kEthHeader = 14;
constexpr std::size_t kVlanTag = 4;
constexpr std::size_t kIpv4Header = 20;
constexpr std::size_t kIpv6Header = 40;
constexpr std::size_t kFragHeader = 8;
constexpr std::size_t kTcpHeader = 20;
constexpr std::size_t kUdpHeader = 8;
constexpr std::size_t kSctpHeader = 12;
constexpr std::size_t kIcmpHeader = 8;  // every ICMP and ICMPv6 message has 8
constexpr std::size_t kVxlanHeader = 8;
constexpr std::size_t kMaxIpLength = 65535;

constexpr std::uint16_t kEtherIpv4 = 0x0800;
constexpr std::uint16_t kEtherIpv6 = 0x86DD;
constexpr std::uint16_t kEtherVlan = 0x8100;  // 802.1Q C-tag
constexpr std::uint16_t kEtherQinQ = 0x88A8;  // 802.1ad S-tag

constexpr std::uint8_t kProtoHopByHop = 0;
constexpr std::uint8_t kProtoIcmp = 1;
constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoUdp = 17;
constexpr std::uint8_t kProtoRouting = 43;
constexpr std::uint8_t kProtoFragment = 44;
constexpr std::uint8_t kProtoEsp = 50;
constexpr std::uint8_t kProtoAh = 51;
constexpr std::uint8_t kProtoIcmpv6 = 58;
constexpr std::uint8_t kProtoNoNext = 59;
constexpr std::uint8_t kProtoDstOpts = 60;
constexpr std::uint8_t kProtoSctp = 132;

constexpr std::uint8_t kVxlanFlagG = 0x80;  // first byte
constexpr std::uint8_t kVxlanFlagI = 0x08;  // first byte
constexpr std::uint8_t kGbpFlagD = 0x40;    // second byte
constexpr std::uint8_t kGbpFlagA = 0x08;    // second byte

// Unaligned big-endian loads: one load and a byte swap each.
std::uint16_t be16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap16(v);
  return v;
}
std::uint32_t be32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  return v;
}
std::uint16_t u16(std::size_t v) { return static_cast<std::uint16_t>(v); }

void set_address(IpAddress& a, IpAddress::Family family, const std::uint8_t* p, std::size_t n) {
  a.family = family;
  a.bytes = {};
  std::memcpy(a.bytes.data(), p, n);
}

// IPv4 options (RFC 791 §3.1): EOL ends the list, NOP is one byte, every
// other option carries a length >= 2 that must stay inside the options.
bool ipv4_options_valid(const std::uint8_t* o, std::size_t len) {
  std::size_t i = 0;
  while (i < len) {
    const std::uint8_t type = o[i];
    if (type == 0) return true;
    if (type == 1) {
      ++i;
      continue;
    }
    if (len - i < 2) return false;
    const std::size_t opt_len = o[i + 1];
    if (opt_len < 2 || opt_len > len - i) return false;
    i += opt_len;
  }
  return true;
}

class Walk {
 public:
  Walk(const std::uint8_t* p, const ParseOptions& options, PacketInfo& out)
      : p_(p), options_(options), out_(out) {}

  ParseStatus ethernet(std::size_t off, std::size_t end, bool inner) {
    if (end - off < kEthHeader) return ParseStatus::Truncated;
    std::uint16_t type = be16(p_ + off + 12);
    off += kEthHeader;
    while (type == kEtherVlan || type == kEtherQinQ) {
      if (inner || out_.vlan_count == 2) return ParseStatus::UnsupportedEncap;
      if (end - off < kVlanTag) return ParseStatus::Truncated;
      out_.vlan_id[out_.vlan_count++] = be16(p_ + off) & 0x0fffU;
      type = be16(p_ + off + 2);
      off += kVlanTag;
    }
    if (type == kEtherIpv4) return ipv4(off, end, inner);
    if (type == kEtherIpv6) return ipv6(off, end, inner);
    return ParseStatus::NotIp;
  }

 private:
  ParseStatus ipv4(std::size_t off, std::size_t end, bool inner) {
    if (end - off < kIpv4Header) return ParseStatus::Truncated;
    const std::uint8_t* h = p_ + off;
    if ((h[0] >> 4) != 4) return ParseStatus::BadIpHeader;
    const std::size_t ihl = std::size_t{h[0] & 0x0fU} * 4;
    const std::size_t total = be16(h + 2);
    if (ihl < kIpv4Header || total < ihl) return ParseStatus::BadIpHeader;
    if (total > end - off) return ParseStatus::Truncated;
    if (ihl > kIpv4Header && !ipv4_options_valid(h + kIpv4Header, ihl - kIpv4Header)) {
      return ParseStatus::BadIpHeader;
    }
    if (options_.verify_ipv4_checksum && detail::fold(detail::sum16(h, ihl, 0)) != 0) {
      return ParseStatus::BadIpChecksum;
    }
    out_.ip_version = 4;
    set_address(out_.src, IpAddress::Family::V4, h + 12, 4);
    set_address(out_.dst, IpAddress::Family::V4, h + 16, 4);
    out_.protocol = h[9];
    out_.l3_offset = u16(off);
    out_.l3_end = u16(off + total);
    const std::size_t l4 = off + ihl;
    out_.l4_offset = out_.payload_offset = u16(l4);

    const std::uint16_t frag = be16(h + 6);
    const std::size_t frag_offset = std::size_t{frag & 0x1fffU} * 8;
    const bool more = (frag & 0x2000U) != 0;
    if (frag_offset != 0 || more) {
      const std::size_t payload = total - ihl;
      out_.flags |= more ? kFlagFragment | kFlagMoreFragments : kFlagFragment;
      out_.fragment_id = be16(h + 4);
      out_.fragment_offset = u16(frag_offset);
      if (frag_offset + payload > kMaxIpLength) return ParseStatus::BadFragment;
      if (more && payload % 8 != 0) return ParseStatus::BadFragment;
      if (frag_offset != 0) return non_first_fragment(frag_offset);
    }
    return l4_header(l4, off + total, inner);
  }

  ParseStatus ipv6(std::size_t off, std::size_t end, bool inner) {
    if (end - off < kIpv6Header) return ParseStatus::Truncated;
    const std::uint8_t* h = p_ + off;
    if ((h[0] >> 4) != 6) return ParseStatus::BadIpHeader;
    const std::size_t payload = be16(h + 4);
    if (payload == 0) return ParseStatus::BadIpHeader;
    if (payload > end - off - kIpv6Header) return ParseStatus::Truncated;
    out_.ip_version = 6;
    set_address(out_.src, IpAddress::Family::V6, h + 8, 16);
    set_address(out_.dst, IpAddress::Family::V6, h + 24, 16);
    out_.l3_offset = u16(off);
    const std::size_t limit = off + kIpv6Header + payload;
    out_.l3_end = u16(limit);

    std::size_t cur = off + kIpv6Header;
    std::uint8_t next = h[6];
    std::size_t count = 0;
    bool seen_fragment = false;
    for (;;) {
      if (next == kProtoHopByHop || next == kProtoRouting || next == kProtoDstOpts ||
          next == kProtoAh) {
        if (next == kProtoHopByHop && count != 0) return ParseStatus::BadExtHeader;
        if (++count > options_.max_ext_headers) return ParseStatus::TooManyExtHeaders;
        if (limit - cur < 2) return ParseStatus::BadExtHeader;
        const std::size_t units = p_[cur + 1];
        const std::size_t len = next == kProtoAh ? (units + 2) * 4 : (units + 1) * 8;
        if (len > limit - cur) return ParseStatus::BadExtHeader;
        next = p_[cur];
        cur += len;
      } else if (next == kProtoFragment) {
        if (++count > options_.max_ext_headers) return ParseStatus::TooManyExtHeaders;
        if (seen_fragment || limit - cur < kFragHeader) return ParseStatus::BadExtHeader;
        seen_fragment = true;
        const std::uint16_t field = be16(p_ + cur + 2);
        const std::size_t frag_offset = field & 0xfff8U;
        const bool more = (field & 1U) != 0;
        const std::uint32_t id = be32(p_ + cur + 4);
        next = p_[cur];
        cur += kFragHeader;
        // An atomic fragment (offset 0, M clear; RFC 6946) is a whole packet.
        if (frag_offset != 0 || more) {
          const std::size_t fragment = limit - cur;
          out_.flags |= more ? kFlagFragment | kFlagMoreFragments : kFlagFragment;
          out_.fragment_id = id;
          out_.fragment_offset = u16(frag_offset);
          if (frag_offset + fragment > kMaxIpLength) return ParseStatus::BadFragment;
          if (more && fragment % 8 != 0) return ParseStatus::BadFragment;
          if (frag_offset != 0) {
            out_.protocol = next;
            out_.l4_offset = out_.payload_offset = u16(cur);
            return non_first_fragment(frag_offset);
          }
        }
      } else {
        break;
      }
    }
    out_.protocol = next;
    out_.l4_offset = out_.payload_offset = u16(cur);
    if (next == kProtoEsp || next == kProtoNoNext) return ParseStatus::Ok;
    return l4_header(cur, limit, inner);
  }

  ParseStatus non_first_fragment(std::size_t frag_offset) const {
    // RFC 1858 §3.2: a TCP fragment at offset 8 can rewrite the flags of
    // the first fragment's header after it was decided.
    if (out_.protocol == kProtoTcp && frag_offset == 8) return ParseStatus::BadFragment;
    return ParseStatus::NonFirstFragment;
  }

  // The L4 header at `off` of an IP packet ending at `end`.
  ParseStatus l4_header(std::size_t off, std::size_t end, bool inner) {
    const std::size_t avail = end - off;
    // A first fragment must carry its whole L4 header (RFC 1858, RFC 7112).
    const ParseStatus short_header =
        out_.has(kFlagFragment) ? ParseStatus::BadFragment : ParseStatus::BadL4;
    const std::uint8_t* h = p_ + off;
    switch (out_.protocol) {
      case kProtoTcp: {
        if (avail < kTcpHeader) return short_header;
        const std::size_t data_offset = static_cast<std::size_t>(h[12] >> 4) * 4;
        if (data_offset < kTcpHeader) return ParseStatus::BadL4;
        if (data_offset > avail) return short_header;
        ports(h);
        out_.tcp_flags = h[13];
        out_.payload_offset = u16(off + data_offset);
        return ParseStatus::Ok;
      }
      case kProtoUdp: {
        if (avail < kUdpHeader) return short_header;
        const std::size_t length = be16(h + 4);
        // A fragment's UDP length covers the whole datagram.
        if (length < kUdpHeader || (!out_.has(kFlagFragment) && length > avail)) {
          return ParseStatus::BadL4;
        }
        ports(h);
        out_.payload_offset = u16(off + kUdpHeader);
        if (!inner && options_.vxlan_port != 0 && out_.dst_port == options_.vxlan_port) {
          if (out_.has(kFlagFragment)) return ParseStatus::UnsupportedEncap;
          return vxlan(off, off + length);
        }
        return ParseStatus::Ok;
      }
      case kProtoSctp:
        if (avail < kSctpHeader) return short_header;
        ports(h);
        out_.payload_offset = u16(off + kSctpHeader);
        return ParseStatus::Ok;
      case kProtoIcmp:
      case kProtoIcmpv6: {
        const bool v4 = out_.ip_version == 4;
        if (v4 != (out_.protocol == kProtoIcmp)) return ParseStatus::Ok;  // not parsed
        if (avail < kIcmpHeader) return short_header;
        out_.flags |= kFlagIcmp;
        out_.icmp_type = h[0];
        out_.icmp_code = h[1];
        const bool echo = v4 ? (h[0] == 0 || h[0] == 8) : (h[0] == 128 || h[0] == 129);
        if (echo) out_.icmp_id = be16(h + 4);
        out_.payload_offset = u16(off + kIcmpHeader);
        return ParseStatus::Ok;
      }
      default:
        return ParseStatus::Ok;
    }
  }

  void ports(const std::uint8_t* h) {
    out_.flags |= kFlagPorts;
    out_.src_port = be16(h);
    out_.dst_port = be16(h + 2);
  }

  // The VXLAN header after the UDP header at `udp`; `end` is the UDP end.
  ParseStatus vxlan(std::size_t udp, std::size_t end) {
    const std::size_t off = udp + kUdpHeader;
    if (end - off < kVxlanHeader) return ParseStatus::BadVxlan;
    const std::uint8_t* h = p_ + off;
    if ((h[0] & kVxlanFlagI) == 0) return ParseStatus::BadVxlan;
    const std::size_t inner = off + kVxlanHeader;
    out_.outer_src = out_.src;
    out_.outer_l3_offset = out_.l3_offset;
    out_.outer_l4_offset = u16(udp);
    out_.inner_l2_offset = u16(inner);
    out_.vni = be32(h + 4) >> 8;
    std::uint8_t flags = kFlagVxlan;
    if ((h[0] & kVxlanFlagG) != 0) {
      flags |= kFlagGbp;
      if ((h[1] & kGbpFlagD) != 0) flags |= kFlagGbpDontLearn;
      if ((h[1] & kGbpFlagA) != 0) flags |= kFlagGbpPolicyApplied;
      out_.group_id = be16(h + 2);
    }
    // The outer packet is not a fragment (checked) and leaves only the
    // fields above; the inner one starts from zero.
    out_.flags = flags;
    out_.src = out_.dst = IpAddress{};
    out_.src_port = out_.dst_port = 0;
    out_.ip_version = out_.protocol = 0;
    out_.l3_offset = out_.l4_offset = out_.payload_offset = out_.l3_end = 0;
    return ethernet(inner, end, true);
  }

  const std::uint8_t* p_;
  const ParseOptions& options_;
  PacketInfo& out_;
};

// ------------------------------------------------------------ fast path

// Always inlined: the fast path is one function with no call in it.
#define TW_PARSER_INLINE [[gnu::always_inline]] inline

// The header's 16-bit field as it is in memory, to compare with net16().
TW_PARSER_INLINE std::uint16_t raw16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
constexpr std::uint16_t net16(std::uint16_t host) {
  if constexpr (std::endian::native == std::endian::little) return __builtin_bswap16(host);
  return host;
}

// Whether a 20-byte IPv4 header's checksum holds, as
// fold(sum16(h, 20, 0)) == 0 decides it: five 32-bit words in host order,
// summed in 64 bits and folded to 16 (end-around carries keep the sum mod
// 0xffff, and a non-zero sum non-zero). Little-endian loads only multiply it
// by 2^8 mod 0xffff (RFC 1071 §2(B)), which leaves it 0xffff, the valid
// header's, or not.
TW_PARSER_INLINE bool ipv4_header_sum_ok(const std::uint8_t* h) {
  std::uint64_t acc = 0;
  for (std::size_t i = 0; i < kIpv4Header; i += 4) {
    std::uint32_t w;
    std::memcpy(&w, h + i, sizeof w);
    acc += w;
  }
  acc = (acc & 0xffffffffU) + (acc >> 32);
  acc = (acc & 0xffffU) + (acc >> 16);
  acc = (acc & 0xffffU) + (acc >> 16);
  acc = (acc & 0xffffU) + (acc >> 16);
  return acc == 0xffffU;
}

// What the fast path found of one IP packet and its L4 header.
struct FastIp {
  std::size_t l3 = 0;       // IP header
  std::size_t l4 = 0;       // TCP or UDP header
  std::size_t payload = 0;  // after it
  std::size_t end = 0;      // l3 + IP total length (IPv6: header + payload)
  std::size_t udp_end = 0;  // UDP only: l4 + UDP length
  std::uint8_t protocol = 0;
};

// The VLAN tags of a tagged frame on the fast path.
struct FastTags {
  std::uint16_t vlan_id[2] = {0, 0};
  std::uint8_t vlan_count = 0;
};

// The IPv`V` packet at `l3` (its ethertype checked) of a frame ending at
// `end`, with end - l3 >= kIpv4Header + kUdpHeader: true when it is IPv4
// with IHL 5 that is not a fragment, or IPv6 whose next header is TCP or
// UDP, and its TCP or UDP header is whole and its lengths hold: then the
// general walk finds exactly this (and Ok, unless it goes on into VXLAN).
// False otherwise, and for every packet the general walk finds malformed.
// Reads nothing outside [l3, end).
template <int V>
TW_PARSER_INLINE bool fast_ip(const std::uint8_t* p, std::size_t l3, std::size_t end,
                              bool verify_ipv4_checksum, FastIp& r) {
  const std::uint8_t* h = p + l3;
  std::size_t l4 = 0;
  std::size_t limit = 0;  // the IP packet's end
  if constexpr (V == 4) {
    // Version 4, IHL 5; neither MF nor an offset (DF may be set). The
    // total length covers a UDP header at least and stays in the frame.
    const std::size_t total = be16(h + 2);
    if (h[0] != 0x45 || (raw16(h + 6) & net16(0x3fff)) != 0) return false;
    if (total < kIpv4Header + kUdpHeader || total > end - l3) return false;
    if (verify_ipv4_checksum && !ipv4_header_sum_ok(h)) return false;
    r.protocol = h[9];
    l4 = l3 + kIpv4Header;
    limit = l3 + total;
  } else {
    if (end - l3 < kIpv6Header + kUdpHeader) return false;
    const std::size_t payload = be16(h + 4);
    if ((h[0] >> 4) != 6 || payload < kUdpHeader || payload > end - l3 - kIpv6Header) {
      return false;
    }
    r.protocol = h[6];  // an extension header goes the general way
    l4 = l3 + kIpv6Header;
    limit = l4 + payload;
  }
  // At least kUdpHeader bytes of IP payload, inside the frame.
  const std::size_t avail = limit - l4;
  const std::uint8_t* t = p + l4;
  if (r.protocol == kProtoTcp) {
    if (avail < kTcpHeader) return false;
    const std::size_t data_offset = static_cast<std::size_t>(t[12] >> 4) * 4;
    if (data_offset < kTcpHeader || data_offset > avail) return false;
    r.payload = l4 + data_offset;
  } else if (r.protocol == kProtoUdp) {
    const std::size_t length = be16(t + 4);
    if (length < kUdpHeader || length > avail) return false;
    r.payload = l4 + kUdpHeader;
    r.udp_end = l4 + length;
  } else {
    return false;
  }
  r.l3 = l3;
  r.l4 = l4;
  r.end = limit;
  return true;
}

// The Ethernet frame at [off, end) on the fast path: 4 or 6 (the IP
// version) when it is untagged and its IP packet is fast_ip's, else 0.
// (Tagged frames: fast_tagged.)
TW_PARSER_INLINE int fast_frame(const std::uint8_t* p, std::size_t off, std::size_t end,
                                bool verify_ipv4_checksum, FastIp& r) {
  // The shortest frame of the fast path: Ethernet, IPv4, UDP.
  if (end - off < kEthHeader + kIpv4Header + kUdpHeader) return 0;
  const std::uint16_t type = raw16(p + off + 12);
  if (type == net16(kEtherIpv4)) {
    return fast_ip<4>(p, off + kEthHeader, end, verify_ipv4_checksum, r) ? 4 : 0;
  }
  if (type == net16(kEtherIpv6)) {
    return fast_ip<6>(p, off + kEthHeader, end, verify_ipv4_checksum, r) ? 6 : 0;
  }
  return 0;
}

// What the fast path found of a VXLAN frame besides its inner packet.
struct FastVxlan {
  FastIp outer;
  std::size_t inner_l2 = 0;
  std::uint32_t vni = 0;
  std::uint16_t group_id = 0;
  std::uint8_t flags = 0;  // kFlagVxlan and the GBP flags
};

// The frames the fast path takes: the IP version of the packet described
// and, for VXLAN, of the outer packet.
enum class FastShape : std::uint8_t {
  None,
  V4,
  V6,
  TaggedV4,
  TaggedV6,
  V4InV4,
  V6InV4,
  V4InV6,
  V6InV6
};

TW_PARSER_INLINE bool is_vxlan(const std::uint8_t* p, const FastIp& ip,
                               const ParseOptions& options) {
  return ip.protocol == kProtoUdp && options.vxlan_port != 0 &&
         be16(p + ip.l4 + 2) == options.vxlan_port;
}

// A frame of `size` >= kEthHeader + kIpv4Header + kUdpHeader bytes whose
// ethertype `type` is a 802.1Q/802.1ad TPID: TaggedV4 or TaggedV6 when one
// or two tags are followed by fast_ip's IP packet, not VXLAN (a tagged
// VXLAN frame goes the general way); else None.
TW_PARSER_INLINE FastShape fast_tagged(std::uint16_t type, const std::uint8_t* p, std::size_t size,
                                       const ParseOptions& options, FastIp& ip, FastTags& tags) {
  std::size_t l3 = kEthHeader;
  // Each tag is checked for the room of the tag, IPv4 and UDP headers.
  do {
    if (tags.vlan_count == 2 || size - l3 < kVlanTag + kIpv4Header + kUdpHeader) {
      return FastShape::None;
    }
    tags.vlan_id[tags.vlan_count++] = be16(p + l3) & 0x0fffU;
    type = raw16(p + l3 + 2);
    l3 += kVlanTag;
  } while (type == net16(kEtherVlan) || type == net16(kEtherQinQ));
  int version = 0;
  if (type == net16(kEtherIpv4)) {
    version = fast_ip<4>(p, l3, size, options.verify_ipv4_checksum, ip) ? 4 : 0;
  } else if (type == net16(kEtherIpv6)) {
    version = fast_ip<6>(p, l3, size, options.verify_ipv4_checksum, ip) ? 6 : 0;
  }
  if (version == 0 || is_vxlan(p, ip, options)) return FastShape::None;
  return version == 4 ? FastShape::TaggedV4 : FastShape::TaggedV6;
}

// The fast path over a whole frame: its shape (None: the general walk
// decides), the packet described in `ip`, the VLAN tags in `tags`, the
// VXLAN outer part in `vx`.
TW_PARSER_INLINE FastShape fast_walk(const std::uint8_t* p, std::size_t size,
                                     const ParseOptions& options, FastIp& ip, FastTags& tags,
                                     FastVxlan& vx) {
  if (size > kMaxFrame || size < kEthHeader + kIpv4Header + kUdpHeader) return FastShape::None;
  const int outer = fast_frame(p, 0, size, options.verify_ipv4_checksum, ip);
  if (outer == 0) {
    const std::uint16_t type = raw16(p + 12);
    if (type != net16(kEtherVlan) && type != net16(kEtherQinQ)) return FastShape::None;
    return fast_tagged(type, p, size, options, ip, tags);
  }
  if (!is_vxlan(p, ip, options)) return outer == 4 ? FastShape::V4 : FastShape::V6;
  // VXLAN: its header inside the UDP datagram, the I flag, then an inner
  // frame of the fast path's shape inside the datagram.
  vx.outer = ip;
  const std::size_t off = ip.l4 + kUdpHeader;
  if (ip.udp_end - off < kVxlanHeader) return FastShape::None;
  const std::uint8_t* v = p + off;
  if ((v[0] & kVxlanFlagI) == 0) return FastShape::None;
  vx.inner_l2 = off + kVxlanHeader;
  const int inner = fast_frame(p, vx.inner_l2, vx.outer.udp_end, options.verify_ipv4_checksum, ip);
  if (inner == 0) return FastShape::None;
  vx.vni = be32(v + 4) >> 8;
  vx.flags = kFlagVxlan;
  if ((v[0] & kVxlanFlagG) != 0) {
    vx.flags |= kFlagGbp;
    if ((v[1] & kGbpFlagD) != 0) vx.flags |= kFlagGbpDontLearn;
    if ((v[1] & kGbpFlagA) != 0) vx.flags |= kFlagGbpPolicyApplied;
    vx.group_id = be16(v + 2);
  }
  if (outer == 4) return inner == 4 ? FastShape::V4InV4 : FastShape::V6InV4;
  return inner == 4 ? FastShape::V4InV6 : FastShape::V6InV6;
}

// The source address of an IPv`V` header at `h`; the destination follows.
template <int V>
constexpr std::size_t kSrcAddress = V == 4 ? 12 : 8;
template <int V>
constexpr std::size_t kDstAddress = V == 4 ? 16 : 24;

template <int V>
TW_PARSER_INLINE void set_fast_address(IpAddress& a, const std::uint8_t* p) {
  if constexpr (V == 4) {
    a.family = IpAddress::Family::V4;
    a.bytes = {};
    std::memcpy(a.bytes.data(), p, 4);
  } else {
    a.family = IpAddress::Family::V6;
    std::memcpy(a.bytes.data(), p, 16);
  }
}

// The result of the fast path for an IPv`V` packet, inside an IPv`Outer`
// VXLAN packet (0: no VXLAN). Every field is written once, in order: the
// compiler merges neighbouring stores, and the zero-fill of the default
// member initializers is dead (all of it overwritten).
template <int V, int Outer, bool Tagged = false>
TW_PARSER_INLINE PacketInfo fast_info(const std::uint8_t* p, const FastIp& ip, const FastTags& tags,
                                      const FastVxlan& vx) {
  PacketInfo out;
  const std::uint8_t* t = p + ip.l4;
  set_fast_address<V>(out.src, p + ip.l3 + kSrcAddress<V>);
  set_fast_address<V>(out.dst, p + ip.l3 + kDstAddress<V>);
  if constexpr (Outer != 0) {
    set_fast_address<Outer>(out.outer_src, p + vx.outer.l3 + kSrcAddress<Outer>);
  } else {
    out.outer_src = IpAddress{};
  }
  out.vni = Outer != 0 ? vx.vni : 0;
  out.fragment_id = 0;
  out.fragment_offset = 0;
  out.vlan_id[0] = Tagged ? tags.vlan_id[0] : 0;
  out.vlan_id[1] = Tagged ? tags.vlan_id[1] : 0;
  out.src_port = be16(t);
  out.dst_port = be16(t + 2);
  out.icmp_id = 0;
  out.group_id = Outer != 0 ? vx.group_id : 0;
  out.outer_l3_offset = Outer != 0 ? u16(vx.outer.l3) : 0;
  out.outer_l4_offset = Outer != 0 ? u16(vx.outer.l4) : 0;
  out.inner_l2_offset = Outer != 0 ? u16(vx.inner_l2) : 0;
  out.l3_offset = u16(ip.l3);
  out.l4_offset = u16(ip.l4);
  out.payload_offset = u16(ip.payload);
  out.l3_end = u16(ip.end);
  out.status = ParseStatus::Ok;
  out.flags = Outer != 0 ? static_cast<std::uint8_t>(vx.flags | kFlagPorts) : kFlagPorts;
  out.vlan_count = Tagged ? tags.vlan_count : 0;
  out.ip_version = V;
  out.protocol = ip.protocol;
  out.tcp_flags = ip.protocol == kProtoTcp ? t[13] : 0;
  out.icmp_type = 0;
  out.icmp_code = 0;
  return out;
}

#undef TW_PARSER_INLINE

// Out of line: the fast path's frame stays free of the general walk's
// registers and stack.
[[gnu::noinline]] PacketInfo parse_general(std::span<const std::uint8_t> frame,
                                           const ParseOptions& options) {
  PacketInfo out;
  if (frame.size() > kMaxFrame) {
    out.status = ParseStatus::UnsupportedEncap;
    return out;
  }
  out.status = Walk(frame.data(), options, out).ethernet(0, frame.size(), false);
  return out;
}

}  // namespace

std::string_view to_string(ParseStatus status) {
  switch (status) {
    case ParseStatus::Ok:
      return "ok";
    case ParseStatus::NotIp:
      return "not_ip";
    case ParseStatus::NonFirstFragment:
      return "non_first_fragment";
    case ParseStatus::Truncated:
      return "truncated";
    case ParseStatus::BadIpHeader:
      return "bad_ip_header";
    case ParseStatus::BadIpChecksum:
      return "bad_ip_checksum";
    case ParseStatus::BadExtHeader:
      return "bad_ext_header";
    case ParseStatus::TooManyExtHeaders:
      return "too_many_ext_headers";
    case ParseStatus::BadFragment:
      return "bad_fragment";
    case ParseStatus::BadL4:
      return "bad_l4";
    case ParseStatus::BadVxlan:
      return "bad_vxlan";
    case ParseStatus::UnsupportedEncap:
      return "unsupported_encap";
  }
  return "unknown";
}

PacketInfo parse_packet(std::span<const std::uint8_t> frame, const ParseOptions& options) {
  const std::uint8_t* p = frame.data();
  FastIp ip;
  FastTags tags;
  FastVxlan vx;
  switch (fast_walk(p, frame.size(), options, ip, tags, vx)) {
    case FastShape::V4:
      return fast_info<4, 0>(p, ip, tags, vx);
    case FastShape::V6:
      return fast_info<6, 0>(p, ip, tags, vx);
    case FastShape::TaggedV4:
      return fast_info<4, 0, true>(p, ip, tags, vx);
    case FastShape::TaggedV6:
      return fast_info<6, 0, true>(p, ip, tags, vx);
    case FastShape::V4InV4:
      return fast_info<4, 4>(p, ip, tags, vx);
    case FastShape::V6InV4:
      return fast_info<6, 4>(p, ip, tags, vx);
    case FastShape::V4InV6:
      return fast_info<4, 6>(p, ip, tags, vx);
    case FastShape::V6InV6:
      return fast_info<6, 6>(p, ip, tags, vx);
    case FastShape::None:
      break;
  }
  return parse_general(frame, options);
}

namespace detail {

PacketInfo parse_packet_general(std::span<const std::uint8_t> frame, const ParseOptions& options) {
  return parse_general(frame, options);
}

bool parse_packet_fast(std::span<const std::uint8_t> frame, const ParseOptions& options,
                       PacketInfo& out) {
  FastIp ip;
  FastTags tags;
  FastVxlan vx;
  if (fast_walk(frame.data(), frame.size(), options, ip, tags, vx) == FastShape::None) {
    return false;
  }
  out = parse_packet(frame, options);  // the same walk again, then the result
  return true;
}

}  // namespace detail

}  // namespace tierwall::dataplane::dpdk
