// See conntrack.h. Messages are built and parsed with libmnl directly; the
// transport (send, ACK collection, dump loop) is NftSocket's.
#include "tierwall/dataplane/nft/conntrack.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <optional>
#include <span>
#include <sys/socket.h>

#include <libmnl/libmnl.h>

#include "tierwall/dataplane/nft/netlink.h"

namespace tierwall::dataplane::nft {

namespace {

using Fam = IpAddress::Family;

constexpr std::uint16_t ct_type(int msg) {
  return static_cast<std::uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg);
}
constexpr std::size_t kDeleteMessageMax = 512;  // one tuple, generously
constexpr std::size_t kDeletesPerSend = 256;

bool has_ports(std::uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
    case IPPROTO_UDPLITE:
    case IPPROTO_SCTP:
    case IPPROTO_DCCP:
    case IPPROTO_GRE:  // GRE keys travel in the port attributes
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------
// Parsing

// Attribute table of one nest level: tb[type] for type <= Max.
template <std::size_t Max>
struct Attrs {
  std::array<const nlattr*, Max + 1> tb{};
  const nlattr* operator[](int type) const { return tb[static_cast<std::size_t>(type)]; }
};

template <std::size_t Max>
int collect_cb(const nlattr* attr, void* data) {
  auto* a = static_cast<Attrs<Max>*>(data);
  const std::uint16_t type = mnl_attr_get_type(attr);
  if (type <= Max) a->tb[type] = attr;
  return MNL_CB_OK;
}

template <std::size_t Max>
Attrs<Max> nested(const nlattr* nest) {
  Attrs<Max> a;
  if (nest != nullptr) mnl_attr_parse_nested(nest, collect_cb<Max>, &a);
  return a;
}

bool fits(const nlattr* a, std::size_t len) {
  return a != nullptr && mnl_attr_get_payload_len(a) >= len;
}

std::uint8_t get_u8(const nlattr* a) { return fits(a, 1) ? mnl_attr_get_u8(a) : 0; }
std::uint16_t get_be16(const nlattr* a) { return fits(a, 2) ? ntohs(mnl_attr_get_u16(a)) : 0; }
std::uint32_t get_be32(const nlattr* a) { return fits(a, 4) ? ntohl(mnl_attr_get_u32(a)) : 0; }

std::optional<IpAddress> get_address(const nlattr* a, Fam family) {
  const std::size_t len = family == Fam::V4 ? 4 : 16;
  if (!fits(a, len)) return std::nullopt;
  IpAddress ip;
  ip.family = family;
  std::memcpy(ip.bytes.data(), mnl_attr_get_payload(a), len);
  return ip;
}

bool parse_ip(const nlattr* nest, CtEntry& e) {
  const auto ip = nested<CTA_IP_MAX>(nest);
  const bool v4 = ip[CTA_IP_V4_SRC] != nullptr;
  const Fam f = v4 ? Fam::V4 : Fam::V6;
  auto src = get_address(ip[v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC], f);
  auto dst = get_address(ip[v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST], f);
  if (!src || !dst) return false;
  e.src = *src;
  e.dst = *dst;
  return true;
}

void parse_proto(const nlattr* nest, CtEntry& e) {
  const auto p = nested<CTA_PROTO_MAX>(nest);
  e.proto = get_u8(p[CTA_PROTO_NUM]);
  if (e.proto == IPPROTO_ICMP) {
    e.sport = get_be16(p[CTA_PROTO_ICMP_ID]);
    e.dport = get_u8(p[CTA_PROTO_ICMP_TYPE]);
    e.icmp_code = get_u8(p[CTA_PROTO_ICMP_CODE]);
  } else if (e.proto == IPPROTO_ICMPV6) {
    e.sport = get_be16(p[CTA_PROTO_ICMPV6_ID]);
    e.dport = get_u8(p[CTA_PROTO_ICMPV6_TYPE]);
    e.icmp_code = get_u8(p[CTA_PROTO_ICMPV6_CODE]);
  } else {
    e.sport = get_be16(p[CTA_PROTO_SRC_PORT]);
    e.dport = get_be16(p[CTA_PROTO_DST_PORT]);
  }
}

// One IPCTNL_MSG_CT_NEW dump message, or nullopt if it lacks a tuple.
std::optional<CtEntry> parse_entry(const nlmsghdr* nlh) {
  Attrs<CTA_MAX> top;
  if (mnl_attr_parse(nlh, sizeof(nfgenmsg), collect_cb<CTA_MAX>, &top) != MNL_CB_OK)
    return std::nullopt;
  const auto tuple = nested<CTA_TUPLE_MAX>(top[CTA_TUPLE_ORIG]);
  CtEntry e;
  if (!parse_ip(tuple[CTA_TUPLE_IP], e)) return std::nullopt;
  parse_proto(tuple[CTA_TUPLE_PROTO], e);
  e.mark = get_be32(top[CTA_MARK]);
  e.zone = get_be16(top[CTA_ZONE]);
  return e;
}

// ---------------------------------------------------------------------------
// Building

nlmsghdr* put_ct_header(char* buf, std::uint16_t type, std::uint8_t family, std::uint16_t flags) {
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = static_cast<std::uint16_t>(NLM_F_REQUEST | flags);
  auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = 0;
  return nlh;
}

void put_tuple(nlmsghdr* nlh, const CtEntry& e) {
  const bool v4 = e.src.is_v4();
  nlattr* tuple = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
  nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  mnl_attr_put(nlh, v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, e.src.size(), e.src.bytes.data());
  mnl_attr_put(nlh, v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, e.dst.size(), e.dst.bytes.data());
  mnl_attr_nest_end(nlh, ip);
  nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, e.proto);
  if (e.proto == IPPROTO_ICMP) {
    mnl_attr_put_u16(nlh, CTA_PROTO_ICMP_ID, htons(e.sport));
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMP_TYPE, static_cast<std::uint8_t>(e.dport));
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMP_CODE, e.icmp_code);
  } else if (e.proto == IPPROTO_ICMPV6) {
    mnl_attr_put_u16(nlh, CTA_PROTO_ICMPV6_ID, htons(e.sport));
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMPV6_TYPE, static_cast<std::uint8_t>(e.dport));
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMPV6_CODE, e.icmp_code);
  } else if (has_ports(e.proto)) {
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(e.sport));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(e.dport));
  }
  mnl_attr_nest_end(nlh, proto);
  mnl_attr_nest_end(nlh, tuple);
  if (e.zone != 0) mnl_attr_put_u16(nlh, CTA_ZONE, htons(e.zone));
}

// Deletes one chunk; returns how many the kernel deleted.
std::size_t delete_chunk(NftSocket& sock, std::span<const CtEntry> chunk, std::string* error) {
  std::vector<std::uint8_t> buf(chunk.size() * kDeleteMessageMax);
  std::size_t used = 0;
  for (const CtEntry& e : chunk) {
    char* at = reinterpret_cast<char*>(buf.data() + used);
    const std::uint8_t family = e.src.is_v4() ? AF_INET : AF_INET6;
    nlmsghdr* nlh = put_ct_header(at, ct_type(IPCTNL_MSG_CT_DELETE), family, NLM_F_ACK);
    nlh->nlmsg_seq = sock.next_seq();
    put_tuple(nlh, e);
    used += (nlh->nlmsg_len + 3U) & ~3U;
  }
  std::vector<Ack> acks;
  const int rc = sock.exchange(std::span<const std::uint8_t>(buf.data(), used), chunk.size(), acks);
  if (rc != 0 && error != nullptr && error->empty())
    *error = "conntrack delete: " + std::string(std::strerror(rc));
  std::size_t deleted = 0;
  for (const Ack& a : acks) {
    if (a.err == 0) {
      ++deleted;
    } else if (a.err != ENOENT && error != nullptr && error->empty()) {
      *error = "conntrack delete: " + std::string(std::strerror(a.err));
    }
  }
  return deleted;
}

}  // namespace

std::vector<CtEntry> ct_dump(std::string* error) {
  std::vector<CtEntry> out;
  auto sock = NftSocket::open(error);
  if (!sock) return out;
  int rc = EINTR;
  for (int attempt = 0; attempt < 5 && rc == EINTR; ++attempt) {
    out.clear();
    std::array<char, 256> buf{};
    nlmsghdr* nlh = put_ct_header(buf.data(), ct_type(IPCTNL_MSG_CT_GET), AF_UNSPEC, NLM_F_DUMP);
    rc = sock->request(nlh, [&](const nlmsghdr* reply) {
      if (reply->nlmsg_type != ct_type(IPCTNL_MSG_CT_NEW)) return;
      if (auto e = parse_entry(reply)) out.push_back(*e);
    });
  }
  if (rc != 0) {
    out.clear();
    if (error != nullptr) *error = "conntrack dump: " + std::string(std::strerror(rc));
  }
  return out;
}

std::size_t ct_delete(const std::vector<CtEntry>& entries, std::string* error) {
  if (entries.empty()) return 0;
  auto sock = NftSocket::open(error);
  if (!sock) return 0;
  std::size_t deleted = 0;
  for (std::size_t i = 0; i < entries.size(); i += kDeletesPerSend) {
    const std::size_t n = std::min(kDeletesPerSend, entries.size() - i);
    deleted += delete_chunk(*sock, std::span<const CtEntry>(entries.data() + i, n), error);
  }
  return deleted;
}

std::size_t ct_delete_if(const std::function<bool(const CtEntry&)>& pred, std::string* error) {
  std::vector<CtEntry> doomed = ct_dump(error);
  std::erase_if(doomed, [&](const CtEntry& e) { return !pred(e); });
  return ct_delete(doomed, error);
}

}  // namespace tierwall::dataplane::nft
