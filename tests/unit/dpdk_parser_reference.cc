// The DPDK packet parser as it was before the fast path (commit fd2a8cb,
// dataplane/dpdk/src/parser.cc), frozen: the reference that
// dpdk_parser_test.cc's differential tests hold parse_packet to, field by
// field, on mutated and truncated frames. Test-only; do not "fix" it
// without fixing the parser the same way (a change of the parser's
// semantics is a change of both, on purpose).
#include "tests/unit/dpdk_parser_reference.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace tierwall::dataplane::dpdk::reference {

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

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((std::uint32_t{p[0]} << 8) | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
std::uint16_t u16(std::size_t v) { return static_cast<std::uint16_t>(v); }

// detail::sum16 and detail::fold (checksum.h) as they were.
std::uint32_t sum16(const std::uint8_t* p, std::size_t len, std::uint32_t acc) {
  std::size_t i = 0;
  for (; i + 1 < len; i += 2) {
    acc += (std::uint32_t{p[i]} << 8) | p[i + 1];
    acc = (acc & 0xffffU) + (acc >> 16);
  }
  if (i < len) acc += std::uint32_t{p[i]} << 8;
  return acc;
}
std::uint16_t fold(std::uint32_t acc) {
  while ((acc >> 16) != 0) acc = (acc & 0xffffU) + (acc >> 16);
  return static_cast<std::uint16_t>(~acc & 0xffffU);
}

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
    if (options_.verify_ipv4_checksum && fold(sum16(h, ihl, 0)) != 0) {
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

}  // namespace

PacketInfo parse_packet_reference(std::span<const std::uint8_t> frame,
                                  const ParseOptions& options) {
  PacketInfo out;
  if (frame.size() > kMaxFrame) {
    out.status = ParseStatus::UnsupportedEncap;
    return out;
  }
  out.status = Walk(frame.data(), options, out).ethernet(0, frame.size(), false);
  return out;
}

}  // namespace tierwall::dataplane::dpdk::reference
