// See flow_events.h. The netlink walk is written out here, without libmnl,
// so that the parsers stay pure, bounds-checked byte readers that the
// fuzzer (tests/fuzz/nflog_parse_fuzz.cc) can build on their own.
#include "tierwall/dataplane/nft/flow_events.h"

#include <charconv>
#include <cstring>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <netinet/in.h>

namespace tierwall::dataplane::nft {

namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::size_t kNlmsgHeader = 16;  // sizeof(nlmsghdr)
constexpr std::size_t kNfgenmsg = 4;      // sizeof(nfgenmsg)
constexpr std::size_t kAttrHeader = 4;    // sizeof(nlattr)

constexpr std::size_t align4(std::size_t n) { return (n + 3U) & ~std::size_t{3}; }

std::uint16_t host16(const std::uint8_t* p) {
  std::uint16_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}
std::uint32_t host32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}
std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((std::uint32_t{p[0]} << 8) | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return (std::uint64_t{be32(p)} << 32) | be32(p + 4); }

// Calls fn(type, payload) for every attribute of `region`; false when an
// attribute header or length runs past the region (the walk stops there).
template <typename Fn>
bool for_each_attr(Bytes region, Fn&& fn) {
  std::size_t off = 0;
  while (region.size() - off >= kAttrHeader) {
    const std::uint16_t len = host16(region.data() + off);
    const auto type = static_cast<std::uint16_t>(host16(region.data() + off + 2) & NLA_TYPE_MASK);
    if (len < kAttrHeader || len > region.size() - off) return false;
    fn(type, region.subspan(off + kAttrHeader, len - kAttrHeader));
    off += std::min(align4(len), region.size() - off);
  }
  return true;
}

// Calls fn(type, body) for every netlink message of a datagram, body being
// the bytes after the nlmsghdr; false when a message header is truncated.
template <typename Fn>
bool for_each_message(Bytes datagram, Fn&& fn) {
  std::size_t off = 0;
  while (off < datagram.size()) {
    if (datagram.size() - off < kNlmsgHeader) return false;
    const std::uint32_t len = host32(datagram.data() + off);
    const std::uint16_t type = host16(datagram.data() + off + 4);
    if (len < kNlmsgHeader || len > datagram.size() - off) return false;
    fn(type, datagram.subspan(off + kNlmsgHeader, len - kNlmsgHeader));
    off += std::min(align4(len), datagram.size() - off);
  }
  return true;
}

std::optional<WallClock::time_point> from_ns(std::uint64_t ns) {
  if (ns == 0 || ns > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
  return WallClock::time_point(std::chrono::duration_cast<WallClock::duration>(
      std::chrono::nanoseconds(static_cast<std::int64_t>(ns))));
}

bool has_ports(std::uint8_t proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
         proto == IPPROTO_SCTP || proto == IPPROTO_DCCP;
}

void parse_l4(Bytes l4, RawFlowEvent& e) {
  if (has_ports(e.proto) && l4.size() >= 4) {
    e.sport = be16(l4.data());
    e.dport = be16(l4.data() + 2);
  } else if ((e.proto == IPPROTO_ICMP || e.proto == IPPROTO_ICMPV6) && l4.size() >= 2) {
    e.icmp_type = l4[0];
    e.icmp_code = l4[1];
  }
}

IpAddress address(IpAddress::Family family, const std::uint8_t* p) {
  IpAddress a;
  a.family = family;
  std::memcpy(a.bytes.data(), p, family == IpAddress::Family::V4 ? 4 : 16);
  return a;
}

bool parse_ipv4(Bytes p, RawFlowEvent& e) {
  if (p.size() < 20) return false;
  const std::size_t ihl = std::size_t{p[0] & 0x0fU} * 4;
  if (ihl < 20 || ihl > p.size()) return false;
  e.proto = p[9];
  e.src = address(IpAddress::Family::V4, p.data() + 12);
  e.dst = address(IpAddress::Family::V4, p.data() + 16);
  const std::uint16_t frag_offset = be16(p.data() + 6) & 0x1fffU;
  if (frag_offset == 0) parse_l4(p.subspan(ihl), e);
  return true;
}

bool parse_ipv6(Bytes p, RawFlowEvent& e) {
  if (p.size() < 40) return false;
  e.src = address(IpAddress::Family::V6, p.data() + 8);
  e.dst = address(IpAddress::Family::V6, p.data() + 24);
  std::uint8_t next = p[6];
  std::size_t off = 40;
  // A bounded walk over extension headers: a packet is allowed a handful.
  for (int hops = 0; hops < 8; ++hops) {
    std::size_t len = 0;
    if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
      if (p.size() - off < 2) break;
      len = (std::size_t{p[off + 1]} + 1) * 8;
    } else if (next == IPPROTO_AH) {
      if (p.size() - off < 2) break;
      len = (std::size_t{p[off + 1]} + 2) * 4;
    } else if (next == IPPROTO_FRAGMENT) {
      if (p.size() - off < 8) break;
      if ((be16(p.data() + off + 2) & 0xfff8U) != 0) {  // not the first fragment
        e.proto = p[off];
        return true;
      }
      len = 8;
    } else {
      e.proto = next;
      if (off <= p.size()) parse_l4(p.subspan(off), e);
      return true;
    }
    if (p.size() - off < len) {
      e.proto = p[off];  // the header the copy range cut off names the next one
      return true;
    }
    next = p[off];
    off += len;
  }
  e.proto = next;
  return true;
}

void parse_nflog_packet(Bytes body, std::vector<NflogMessage>& out) {
  NflogMessage m;
  m.event.kind = FlowEventKind::Start;
  if (body.size() < kNfgenmsg) {
    m.malformed = true;
    out.push_back(m);
    return;
  }
  Bytes payload;
  bool have_payload = false;
  const bool walked = for_each_attr(body.subspan(kNfgenmsg), [&](std::uint16_t type, Bytes v) {
    switch (type) {
      case NFULA_PREFIX: {
        std::string_view text(reinterpret_cast<const char*>(v.data()), v.size());
        if (auto tag = decode_prefix(text)) {
          m.ours = true;
          m.event.verdict = tag->verdict;
          m.event.rule = tag->rule;
          m.event.generation = tag->generation;
        }
        break;
      }
      case NFULA_SEQ:
        if (v.size() >= 4) {
          m.has_seq = true;
          m.seq = be32(v.data());
        } else {
          m.malformed = true;
        }
        break;
      case NFULA_TIMESTAMP: {
        // struct nfulnl_msg_packet_timestamp { be64 sec; be64 usec; }
        if (v.size() < 16) {
          m.malformed = true;
          break;
        }
        const std::uint64_t sec = be64(v.data());
        const std::uint64_t usec = be64(v.data() + 8);
        if (sec != 0 && sec < (std::uint64_t{1} << 33) && usec < 1'000'000) {
          if (auto t = from_ns(sec * 1'000'000'000U + usec * 1000U)) {
            m.event.time = *t;
            m.event.kernel_time = true;
          }
        }
        break;
      }
      case NFULA_PAYLOAD:
        payload = v;
        have_payload = true;
        break;
      default:
        break;
    }
  });
  if (!walked) m.malformed = true;
  if (!have_payload || !parse_ip_headers(payload, m.event)) m.malformed = true;
  out.push_back(m);
}

void parse_ct_tuple(Bytes tuple, RawFlowEvent& e, bool& ok) {
  bool have_src = false;
  bool have_dst = false;
  std::uint16_t icmp_id = 0;
  for_each_attr(tuple, [&](std::uint16_t type, Bytes v) {
    if (type == CTA_TUPLE_IP) {
      for_each_attr(v, [&](std::uint16_t t, Bytes a) {
        if ((t == CTA_IP_V4_SRC || t == CTA_IP_V4_DST) && a.size() >= 4) {
          (t == CTA_IP_V4_SRC ? e.src : e.dst) = address(IpAddress::Family::V4, a.data());
          (t == CTA_IP_V4_SRC ? have_src : have_dst) = true;
        } else if ((t == CTA_IP_V6_SRC || t == CTA_IP_V6_DST) && a.size() >= 16) {
          (t == CTA_IP_V6_SRC ? e.src : e.dst) = address(IpAddress::Family::V6, a.data());
          (t == CTA_IP_V6_SRC ? have_src : have_dst) = true;
        }
      });
    } else if (type == CTA_TUPLE_PROTO) {
      for_each_attr(v, [&](std::uint16_t t, Bytes a) {
        if (a.empty()) return;
        switch (t) {
          case CTA_PROTO_NUM:
            e.proto = a[0];
            break;
          case CTA_PROTO_SRC_PORT:
            if (a.size() >= 2) e.sport = be16(a.data());
            break;
          case CTA_PROTO_DST_PORT:
            if (a.size() >= 2) e.dport = be16(a.data());
            break;
          case CTA_PROTO_ICMP_TYPE:
          case CTA_PROTO_ICMPV6_TYPE:
            e.icmp_type = a[0];
            break;
          case CTA_PROTO_ICMP_CODE:
          case CTA_PROTO_ICMPV6_CODE:
            e.icmp_code = a[0];
            break;
          case CTA_PROTO_ICMP_ID:
          case CTA_PROTO_ICMPV6_ID:
            if (a.size() >= 2) icmp_id = be16(a.data());
            break;
          default:
            break;
        }
      });
    }
  });
  (void)icmp_id;  // the echo id is not part of a flow event
  if (!has_ports(e.proto)) {
    e.sport = 0;
    e.dport = 0;
  }
  ok = have_src && have_dst && e.src.family == e.dst.family;
}

void parse_counters(Bytes nest, std::uint64_t& packets, std::uint64_t& bytes) {
  for_each_attr(nest, [&](std::uint16_t t, Bytes a) {
    if (t == CTA_COUNTERS_PACKETS && a.size() >= 8) packets = be64(a.data());
    if (t == CTA_COUNTERS_BYTES && a.size() >= 8) bytes = be64(a.data());
    if (t == CTA_COUNTERS32_PACKETS && a.size() >= 4) packets = be32(a.data());
    if (t == CTA_COUNTERS32_BYTES && a.size() >= 4) bytes = be32(a.data());
  });
}

void parse_ct_message(Bytes body, bool destroy, std::vector<CtEventMessage>& out) {
  CtEventMessage m;
  m.destroy = destroy;
  m.event.kind = destroy ? FlowEventKind::End : FlowEventKind::Start;
  m.event.verdict = Verdict::Allow;
  if (body.size() < kNfgenmsg) {
    m.malformed = true;
    out.push_back(m);
    return;
  }
  bool tuple_ok = false;
  std::optional<WallClock::time_point> stop;
  const bool walked = for_each_attr(body.subspan(kNfgenmsg), [&](std::uint16_t type, Bytes v) {
    switch (type) {
      case CTA_TUPLE_ORIG:
        parse_ct_tuple(v, m.event, tuple_ok);
        break;
      case CTA_MARK:
        if (v.size() >= 4) m.mark = be32(v.data());
        break;
      case CTA_ID:
        if (v.size() >= 4) m.event.conntrack_id = be32(v.data());
        break;
      case CTA_COUNTERS_ORIG:
        m.event.counters = true;
        parse_counters(v, m.event.packets_orig, m.event.bytes_orig);
        break;
      case CTA_COUNTERS_REPLY:
        m.event.counters = true;
        parse_counters(v, m.event.packets_reply, m.event.bytes_reply);
        break;
      case CTA_TIMESTAMP:
        for_each_attr(v, [&](std::uint16_t t, Bytes a) {
          if (a.size() < 8) return;
          if (t == CTA_TIMESTAMP_START) m.event.started = from_ns(be64(a.data()));
          if (t == CTA_TIMESTAMP_STOP) stop = from_ns(be64(a.data()));
        });
        break;
      default:
        break;
    }
  });
  m.event.rule = m.mark & 0xffffU;
  const std::optional<WallClock::time_point> when = destroy ? stop : m.event.started;
  if (when) {
    m.event.time = *when;
    m.event.kernel_time = true;
  }
  m.malformed = !walked || !tuple_ok;
  out.push_back(m);
}

}  // namespace

std::string_view to_string(FlowEventKind kind) {
  switch (kind) {
    case FlowEventKind::Start:
      return "start";
    case FlowEventKind::End:
      return "end";
    case FlowEventKind::Loss:
      return "loss";
  }
  return "?";
}

std::string_view to_string(LossSource source) {
  return source == LossSource::Nflog ? "nflog" : "conntrack";
}

std::string_view to_string(LossReason reason) {
  return reason == LossReason::Enobufs ? "ENOBUFS" : "sequence gap";
}

std::optional<PrefixTag> decode_prefix(std::string_view prefix) {
  if (!prefix.empty() && prefix.back() == '\0') prefix.remove_suffix(1);
  if (prefix.size() < 8 || prefix.substr(0, 3) != "tw:" || prefix[4] != ':') return std::nullopt;
  PrefixTag tag;
  switch (prefix[3]) {
    case 'd':
      tag.verdict = Verdict::Deny;
      break;
    case 'a':
      tag.verdict = Verdict::Audit;
      break;
    case 'l':
      tag.verdict = Verdict::Allow;
      break;
    default:
      return std::nullopt;
  }
  const std::string_view rest = prefix.substr(5);
  const auto colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  const char* end = rest.data() + rest.size();
  auto r1 = std::from_chars(rest.data(), rest.data() + colon, tag.rule);
  auto r2 = std::from_chars(rest.data() + colon + 1, end, tag.generation);
  if (r1.ec != std::errc() || r1.ptr != rest.data() + colon || r2.ec != std::errc() ||
      r2.ptr != end) {
    return std::nullopt;
  }
  return tag;
}

bool parse_ip_headers(std::span<const std::uint8_t> packet, RawFlowEvent& event) {
  if (packet.empty()) return false;
  switch (packet[0] >> 4) {
    case 4:
      return parse_ipv4(packet, event);
    case 6:
      return parse_ipv6(packet, event);
    default:
      return false;
  }
}

bool parse_nflog_datagram(std::span<const std::uint8_t> datagram, std::vector<NflogMessage>& out) {
  constexpr std::uint16_t kPacket = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
  return for_each_message(datagram, [&](std::uint16_t type, Bytes body) {
    if (type == kPacket) parse_nflog_packet(body, out);
  });
}

bool parse_ct_datagram(std::span<const std::uint8_t> datagram, std::vector<CtEventMessage>& out) {
  constexpr std::uint16_t kNew = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
  constexpr std::uint16_t kDelete = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
  return for_each_message(datagram, [&](std::uint16_t type, Bytes body) {
    if (type == kNew || type == kDelete) parse_ct_message(body, type == kDelete, out);
  });
}

}  // namespace tierwall::dataplane::nft
