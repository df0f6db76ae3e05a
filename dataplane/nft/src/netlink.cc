// See netlink.h. Encoding follows what nft 1.0.x itself sends (checked with
// `nft --debug=netlink`), so `nft list` prints our rules as nft syntax.
#include "tierwall/dataplane/nft/netlink.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <memory>
#include <poll.h>
#include <set>
#include <sys/socket.h>
#include <unordered_map>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

namespace tierwall::dataplane::nft {

namespace {

using Fam = IpAddress::Family;
using Clock = std::chrono::steady_clock;

// nft's datatype ids (src/datatype.h TYPE_IPADDR / TYPE_IP6ADDR): stored as
// the set's key type so `nft list` prints addresses.
constexpr std::uint32_t kNftTypeIpAddr = 7;
constexpr std::uint32_t kNftTypeIp6Addr = 8;
constexpr std::uint32_t kNftTypeMark = 19;             // TYPE_MARK: map data of tag4/tag6
constexpr std::uint32_t kNftTypeIfname = 41;           // TYPE_IFNAME: the overlay device set
constexpr std::size_t kIfnameLen = 16;                 // IFNAMSIZ: ifname keys are NUL-padded
constexpr std::uint32_t kNftHostOrder = 1;             // nft's BYTEORDER_HOST_ENDIAN
constexpr std::uint32_t kNftNetworkOrder = 2;          // nft's BYTEORDER_BIG_ENDIAN
constexpr std::uint32_t kTagMask = 0xffffU;            // the GBP group id in the packet mark
constexpr std::size_t kNameMax = NFT_NAME_MAXLEN - 1;  // bytes, without NUL
constexpr std::size_t kLogPrefixMax = 127;
constexpr std::size_t kMaxRuleTerms = 64;           // matches + actions
constexpr std::size_t kMessageSlack = 8 * 1024;     // headers + names per message
constexpr std::size_t kReceiveBuffer = 128 * 1024;  // > any single skb we get
constexpr std::size_t kAckTruesize = 2048;          // rcvbuf charge per ACK skb
constexpr int kReplyTimeoutMs = 30'000;
constexpr std::uint32_t kCtStateEstRel = 0x2 | 0x4;  // NF_CT_STATE_BIT(ESTABLISHED|RELATED)
constexpr std::uint32_t kCtMarkKeep = 0xffff0000U;

struct RuleFree {
  void operator()(nftnl_rule* r) const { nftnl_rule_free(r); }
};
struct ChainFree {
  void operator()(nftnl_chain* c) const { nftnl_chain_free(c); }
};
struct SetFree {
  void operator()(nftnl_set* s) const { nftnl_set_free(s); }
};
struct TableFree {
  void operator()(nftnl_table* t) const { nftnl_table_free(t); }
};
struct UdataFree {
  void operator()(nftnl_udata_buf* b) const { nftnl_udata_buf_free(b); }
};
struct ObjFree {
  void operator()(nftnl_obj* o) const { nftnl_obj_free(o); }
};

template <typename T>
T* checked(T* p) {
  if (p == nullptr) std::abort();  // libnftnl allocation failure: out of memory
  return p;
}

std::string errno_text(int err) { return std::strerror(err); }

std::size_t align4(std::size_t n) { return (n + 3U) & ~std::size_t{3}; }

std::uint16_t u16(int v) { return static_cast<std::uint16_t>(v); }

// ---------------------------------------------------------------------------
// Batch buffer: messages appended back to back, each built in place.

class BatchWriter {
 public:
  explicit BatchWriter(std::uint32_t first_seq) : seq_(first_seq) {}

  // Space for one message of at most `max_bytes`; valid until commit().
  char* reserve(std::size_t max_bytes) {
    if (buf_.size() < used_ + max_bytes) buf_.resize(std::max(buf_.size() * 2, used_ + max_bytes));
    std::memset(buf_.data() + used_, 0, std::min(max_bytes, std::size_t{4096}));
    return reinterpret_cast<char*>(buf_.data() + used_);
  }
  void commit(const nlmsghdr* nlh) {
    used_ += align4(nlh->nlmsg_len);
    largest_ = std::max<std::size_t>(largest_, nlh->nlmsg_len);
  }
  std::uint32_t take_seq() { return seq_++; }
  EncodedBatch finish(std::uint32_t begin_seq, std::map<std::uint32_t, BatchObject> objects) {
    EncodedBatch out;
    out.end_seq = take_seq();
    nlmsghdr* end = nftnl_batch_end(reserve(kMessageSlack), out.end_seq);
    commit(end);
    buf_.resize(used_);
    out.bytes = std::move(buf_);
    out.begin_seq = begin_seq;
    out.objects = std::move(objects);
    out.largest_message = largest_;
    return out;
  }

 private:
  std::vector<std::uint8_t> buf_;
  std::size_t used_ = 0;
  std::size_t largest_ = 0;
  std::uint32_t seq_;
};

// A batch under construction: the writer plus the seq -> object map.
struct Builder {
  BatchWriter w;
  std::map<std::uint32_t, BatchObject> objects;
  std::uint32_t begin_seq;

  Builder(std::uint32_t first_seq, std::optional<std::uint32_t> genid) : w(first_seq) {
    begin_seq = w.take_seq();
    nlmsghdr* nlh = nftnl_batch_begin(w.reserve(kMessageSlack), begin_seq);
    if (genid) mnl_attr_put_u32(nlh, NFNL_BATCH_GENID, htonl(*genid));
    w.commit(nlh);
  }
  // Header of a new message that requests an ACK, recorded as `object`.
  nlmsghdr* message(std::size_t max_bytes, int type, int flags, BatchObject object) {
    const std::uint32_t seq = w.take_seq();
    objects.emplace(seq, std::move(object));
    return nftnl_nlmsg_build_hdr(w.reserve(max_bytes), u16(type), NFPROTO_INET,
                                 u16(flags | NLM_F_ACK), seq);
  }
  EncodedBatch finish() { return w.finish(begin_seq, std::move(objects)); }
};

// ---------------------------------------------------------------------------
// Keys: addresses and interval bounds as kernel set keys.

struct Key {
  std::array<std::uint8_t, 16> bytes{};
  std::uint8_t len = 4;
  bool end = false;
  bool open = false;
  std::optional<std::uint32_t> data;  // map elements: the value (host order)
};

Key ifname_key(const std::string& name) {
  Key k;
  k.len = kIfnameLen;
  std::memcpy(k.bytes.data(), name.data(), std::min(name.size(), kIfnameLen - 1));
  return k;
}

std::uint8_t key_len(Fam f) { return f == Fam::V4 ? 4 : 16; }

Key address_key(const IpAddress& a) {
  Key k;
  k.bytes = a.bytes;
  k.len = static_cast<std::uint8_t>(a.size());
  return k;
}

using Bytes = std::array<std::uint8_t, 16>;

struct Range {
  Bytes lo{};
  Bytes hi{};
};

Range prefix_range(const Cidr& c, std::size_t len) {
  Range r;
  const std::size_t bits = std::min<std::size_t>(c.prefix, len * 8);
  for (std::size_t i = 0; i < len; ++i) {
    const std::size_t keep = bits > i * 8 ? std::min<std::size_t>(bits - i * 8, 8) : 0;
    const auto mask = static_cast<std::uint8_t>(keep == 0 ? 0 : 0xffU << (8 - keep));
    r.lo[i] = static_cast<std::uint8_t>(c.base.bytes[i] & mask);
    r.hi[i] = static_cast<std::uint8_t>(r.lo[i] | static_cast<std::uint8_t>(~mask));
  }
  return r;
}

bool all_ones(const Bytes& b, std::size_t len) {
  return std::all_of(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(len),
                     [](std::uint8_t x) { return x == 0xff; });
}

Bytes increment(Bytes b, std::size_t len) {
  for (std::size_t i = len; i-- > 0;) {
    if (++b[i] != 0) break;
  }
  return b;
}

std::vector<Range> merged_ranges(std::span<const Cidr> prefixes, Fam family) {
  const std::size_t len = key_len(family);
  std::vector<Range> in;
  for (const Cidr& c : prefixes)
    if (c.base.family == family) in.push_back(prefix_range(c, len));
  std::sort(in.begin(), in.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  std::vector<Range> out;
  for (const Range& r : in) {
    if (!out.empty()) {
      Range& cur = out.back();
      const bool touches = all_ones(cur.hi, len) || r.lo <= increment(cur.hi, len);
      if (touches) {
        cur.hi = std::max(cur.hi, r.hi);
        continue;
      }
    }
    out.push_back(r);
  }
  return out;
}

std::vector<Key> interval_set_keys(std::span<const Cidr> prefixes, Fam family) {
  const std::uint8_t len = key_len(family);
  const std::vector<Range> ranges = merged_ranges(prefixes, family);
  std::vector<Key> keys;
  if (ranges.empty()) return keys;
  if (ranges.front().lo != Bytes{}) keys.push_back(Key{Bytes{}, len, true, false, std::nullopt});
  for (const Range& r : ranges) {
    const bool open = all_ones(r.hi, len);
    keys.push_back(Key{r.lo, len, false, open, std::nullopt});
    if (!open) keys.push_back(Key{increment(r.hi, len), len, true, false, std::nullopt});
  }
  return keys;
}

std::vector<Cidr> interval_members(const SetDef& s) {
  std::vector<Cidr> all = s.prefixes;
  for (const IpAddress& a : s.addresses)
    all.push_back(Cidr{a, static_cast<std::uint8_t>(a.size() * 8)});
  return all;
}

std::vector<Key> plain_set_keys(const SetDef& s) {
  std::vector<IpAddress> addrs = s.addresses;
  for (const Cidr& c : s.prefixes) addrs.push_back(c.base);  // host prefixes (validated)
  std::sort(addrs.begin(), addrs.end());
  addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
  std::vector<Key> keys;
  keys.reserve(addrs.size());
  for (const IpAddress& a : addrs) keys.push_back(address_key(a));
  return keys;
}

std::vector<Key> map_keys(const SetDef& s) {
  std::vector<std::pair<IpAddress, std::uint32_t>> pairs;
  for (std::size_t i = 0; i < s.addresses.size() && i < s.marks.size(); ++i)
    pairs.emplace_back(s.addresses[i], s.marks[i]);
  std::sort(pairs.begin(), pairs.end());
  std::vector<Key> keys;
  for (const auto& [a, mark] : pairs) {
    if (!keys.empty() && std::equal(keys.back().bytes.begin(), keys.back().bytes.end(),
                                    address_key(a).bytes.begin()))
      continue;  // one value per key
    keys.push_back(address_key(a));
    keys.back().data = mark;
  }
  return keys;
}

std::vector<Key> set_keys(const SetDef& s) {
  if (s.key == SetDef::Key::Ifname) {
    std::vector<Key> keys;
    for (const std::string& n : s.ifnames) keys.push_back(ifname_key(n));
    return keys;
  }
  if (s.mark_map) return map_keys(s);
  if (!s.interval) return plain_set_keys(s);
  const std::vector<Cidr> members = interval_members(s);
  return interval_set_keys(members, s.family);
}

// Bytes one element takes inside NFTA_SET_ELEM_LIST_ELEMENTS.
std::size_t element_bytes(const Key& k) {
  std::size_t n = 4 /*LIST_ELEM*/ + 4 /*KEY*/ + 4 + align4(k.len) /*DATA_VALUE*/;
  if (k.end) n += 8;    // NFTA_SET_ELEM_FLAGS
  if (k.open) n += 12;  // NFTA_SET_ELEM_USERDATA (6 bytes of udata)
  if (k.data) n += 12;  // NFTA_SET_ELEM_DATA { NFTA_DATA_VALUE u32 }
  return n;
}

void put_element(nlmsghdr* nlh, const Key& k) {
  nlattr* elem = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
  nlattr* key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);
  mnl_attr_put(nlh, NFTA_DATA_VALUE, k.len, k.bytes.data());
  mnl_attr_nest_end(nlh, key);
  if (k.data) {
    nlattr* data = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_DATA);
    const std::uint32_t value = *k.data;  // a mark is host order
    mnl_attr_put(nlh, NFTA_DATA_VALUE, sizeof value, &value);
    mnl_attr_nest_end(nlh, data);
  }
  if (k.end) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_FLAGS, htonl(NFT_SET_ELEM_INTERVAL_END));
  if (k.open) {
    // nftnl udata TLV: type, length, host-order u32 flags (what nft sends).
    std::array<std::uint8_t, 6> udata{NFTNL_UDATA_SET_ELEM_FLAGS, 4, 0, 0, 0, 0};
    const std::uint32_t flags = NFTNL_SET_ELEM_F_INTERVAL_OPEN;
    std::memcpy(udata.data() + 2, &flags, sizeof flags);
    mnl_attr_put(nlh, NFTA_SET_ELEM_USERDATA, udata.size(), udata.data());
  }
  mnl_attr_nest_end(nlh, elem);
}

// NEWSETELEM / DELSETELEM messages for `keys`, split so that no message
// carries more than kMaxElementBytesPerMessage of elements.
void put_element_messages(Builder& b, int type, const std::string& table, const std::string& set,
                          std::uint32_t set_id, std::span<const Key> keys) {
  std::size_t i = 0;
  std::size_t chunk = 0;
  while (i < keys.size()) {
    BatchObject obj{BatchObject::Kind::Elements, set, {}, ++chunk, 0};
    const int flags = type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0;
    nlmsghdr* nlh =
        b.message(kMaxElementBytesPerMessage + kMessageSlack, type, flags, std::move(obj));
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
    if (set_id != 0) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_LIST_SET_ID, htonl(set_id));
    nlattr* list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
    std::size_t bytes = 0;
    for (; i < keys.size() && bytes + element_bytes(keys[i]) <= kMaxElementBytesPerMessage; ++i) {
      bytes += element_bytes(keys[i]);
      put_element(nlh, keys[i]);
    }
    mnl_attr_nest_end(nlh, list);
    b.w.commit(nlh);
  }
}

// ---------------------------------------------------------------------------
// Rule expressions (register 1 for data, as nft does).

class RuleEncoder {
 public:
  RuleEncoder(nftnl_rule* rule, const std::unordered_map<std::string, std::uint32_t>& set_ids)
      : r_(rule), set_ids_(set_ids) {}

  void match(const Match& m);
  void action(const Action& a);

 private:
  nftnl_expr* add(const char* name) {
    nftnl_expr* e = checked(nftnl_expr_alloc(name));
    nftnl_rule_add_expr(r_, e);
    return e;
  }
  void meta_load(std::uint32_t key) {
    nftnl_expr* e = add("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  }
  void cmp(std::uint32_t op, const void* data, std::uint32_t len) {
    nftnl_expr* e = add("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  }
  void cmp_u8(std::uint32_t op, std::uint8_t v) { cmp(op, &v, 1); }
  void cmp_be16(std::uint32_t op, std::uint16_t v) {
    const std::uint16_t be = htons(v);
    cmp(op, &be, 2);
  }
  void payload(std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
    nftnl_expr* e = add("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  }
  void ct(std::uint32_t key, bool set) {
    nftnl_expr* e = add("ct");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
    nftnl_expr_set_u32(e, set ? NFTNL_EXPR_CT_SREG : NFTNL_EXPR_CT_DREG, NFT_REG_1);
  }
  void bitwise(std::uint32_t mask, std::uint32_t xor_value) {  // host order, 4 bytes
    nftnl_expr* e = add("bitwise");
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, sizeof mask);
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask, sizeof mask);
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &xor_value, sizeof xor_value);
  }
  void range_u8(std::uint16_t lo, std::uint16_t hi);
  void lookup(const Match& m);
  void lookup_set(const std::string& set, bool invert, std::optional<std::uint32_t> dreg);
  void ifname_lookup(std::uint32_t key, const std::string& set, bool invert);
  void tag_load();  // reg1 = meta mark & 0xffff
  void meta_store(std::uint32_t key) {
    nftnl_expr* e = add("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, NFT_REG_1);
  }
  void verdict(int code, const std::string& chain);
  // nft's implicit dependencies: `ip saddr` implies `meta nfproto ipv4`,
  // `icmp type` implies `meta l4proto icmp`. Emitted unless the rule
  // already established them (plan rules usually do).
  void require_nfproto(Fam f);
  void require_l4proto(std::uint8_t proto);

  nftnl_rule* r_;
  const std::unordered_map<std::string, std::uint32_t>& set_ids_;
  std::optional<Fam> nfproto_;
  std::optional<std::uint8_t> l4proto_;
};

void RuleEncoder::require_nfproto(Fam f) {
  if (nfproto_ == f) return;
  meta_load(NFT_META_NFPROTO);
  cmp_u8(NFT_CMP_EQ, f == Fam::V4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
  nfproto_ = f;
}

void RuleEncoder::require_l4proto(std::uint8_t proto) {
  if (l4proto_ == proto) return;
  meta_load(NFT_META_L4PROTO);
  cmp_u8(NFT_CMP_EQ, proto);
  l4proto_ = proto;
}

void RuleEncoder::range_u8(std::uint16_t lo, std::uint16_t hi) {
  if (lo == hi) {
    cmp_u8(NFT_CMP_EQ, static_cast<std::uint8_t>(lo));
    return;
  }
  cmp_u8(NFT_CMP_GTE, static_cast<std::uint8_t>(lo));
  cmp_u8(NFT_CMP_LTE, static_cast<std::uint8_t>(hi));
}

void RuleEncoder::lookup_set(const std::string& set, bool invert,
                             std::optional<std::uint32_t> dreg) {
  nftnl_expr* e = add("lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set.c_str());
  if (auto it = set_ids_.find(set); it != set_ids_.end())
    nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, it->second);
  if (dreg) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, *dreg);
  if (invert) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
}

void RuleEncoder::lookup(const Match& m) {
  require_nfproto(m.family);
  const bool v4 = m.family == Fam::V4;
  const std::uint32_t offset =
      v4 ? (m.dir == Dir::Src ? 12U : 16U) : (m.dir == Dir::Src ? 8U : 24U);
  payload(NFT_PAYLOAD_NETWORK_HEADER, offset, v4 ? 4U : 16U);
  lookup_set(m.set, m.kind == Match::Kind::NotInSet, std::nullopt);
}

void RuleEncoder::ifname_lookup(std::uint32_t key, const std::string& set, bool invert) {
  meta_load(key);  // 16 bytes, NUL-padded: regs 1..4 of 32 bits
  lookup_set(set, invert, std::nullopt);
}

void RuleEncoder::tag_load() {
  meta_load(NFT_META_MARK);
  bitwise(kTagMask, 0);
}

void RuleEncoder::match(const Match& m) {
  switch (m.kind) {
    case Match::Kind::NfProto:
      nfproto_.reset();
      require_nfproto(m.family);
      return;
    case Match::Kind::L4Proto:
      l4proto_.reset();
      require_l4proto(m.proto);
      return;
    case Match::Kind::InSet:
    case Match::Kind::NotInSet:
      lookup(m);
      return;
    case Match::Kind::DportRange:
      payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
      if (m.lo == m.hi) {
        cmp_be16(NFT_CMP_EQ, m.lo);
      } else {
        cmp_be16(NFT_CMP_GTE, m.lo);
        cmp_be16(NFT_CMP_LTE, m.hi);
      }
      return;
    case Match::Kind::IcmpTypeRange:
      require_nfproto(m.family);
      require_l4proto(m.proto != 0
                          ? m.proto
                          : static_cast<std::uint8_t>(m.family == Fam::V4 ? int{IPPROTO_ICMP}
                                                                          : int{IPPROTO_ICMPV6}));
      payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
      range_u8(m.lo, m.hi);
      return;
    case Match::Kind::CtStateEstRel: {
      ct(NFT_CT_STATE, false);
      bitwise(kCtStateEstRel, 0);
      const std::uint32_t zero = 0;
      cmp(NFT_CMP_NEQ, &zero, sizeof zero);
      return;
    }
    case Match::Kind::IcmpV6Nd:
      require_nfproto(Fam::V6);
      require_l4proto(IPPROTO_ICMPV6);
      payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
      range_u8(133, 137);  // router solicitation .. redirect
      return;
    case Match::Kind::IifInSet:
    case Match::Kind::IifNotInSet:
      ifname_lookup(NFT_META_IIFNAME, m.set, m.kind == Match::Kind::IifNotInSet);
      return;
    case Match::Kind::OifInSet:
      ifname_lookup(NFT_META_OIFNAME, m.set, false);
      return;
    case Match::Kind::TagNot: {
      tag_load();
      const std::uint32_t v = m.lo;  // host order, like the mark
      cmp(NFT_CMP_NEQ, &v, sizeof v);
      return;
    }
    case Match::Kind::TagRange: {
      tag_load();
      if (m.lo == m.hi) {
        const std::uint32_t v = m.lo;
        cmp(NFT_CMP_EQ, &v, sizeof v);
        return;
      }
      // Ordered comparisons are big-endian (memcmp): convert, as nft does.
      nftnl_expr* e = add("byteorder");
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_DREG, NFT_REG_1);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_HTON);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_LEN, 4);
      nftnl_expr_set_u32(e, NFTNL_EXPR_BYTEORDER_SIZE, 4);
      const std::uint32_t lo = htonl(m.lo);
      const std::uint32_t hi = htonl(m.hi);
      cmp(NFT_CMP_GTE, &lo, sizeof lo);
      cmp(NFT_CMP_LTE, &hi, sizeof hi);
      return;
    }
  }
}

void RuleEncoder::verdict(int code, const std::string& chain) {
  nftnl_expr* e = add("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<std::uint32_t>(code));
  if (!chain.empty()) nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, chain.c_str());
}

void RuleEncoder::action(const Action& a) {
  switch (a.kind) {
    case Action::Kind::Counter: {
      nftnl_expr* e = add("objref");
      nftnl_expr_set_u32(e, NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
      nftnl_expr_set_str(e, NFTNL_EXPR_OBJREF_IMM_NAME, a.name.c_str());
      return;
    }
    case Action::Kind::Log: {
      nftnl_expr* e = add("log");
      nftnl_expr_set_str(e, NFTNL_EXPR_LOG_PREFIX, a.name.c_str());
      nftnl_expr_set_u16(e, NFTNL_EXPR_LOG_GROUP, static_cast<std::uint16_t>(a.value));
      return;
    }
    case Action::Kind::CtMark:  // ct mark set ct mark & 0xffff0000 | (value & 0xffff)
      ct(NFT_CT_MARK, false);
      bitwise(kCtMarkKeep, a.value & ~kCtMarkKeep);
      ct(NFT_CT_MARK, true);
      return;
    case Action::Kind::Accept:
      verdict(NF_ACCEPT, {});
      return;
    case Action::Kind::Drop:
      verdict(NF_DROP, {});
      return;
    case Action::Kind::Jump:
      verdict(NFT_JUMP, a.name);
      return;
    case Action::Kind::Goto:
      verdict(NFT_GOTO, a.name);
      return;
    case Action::Kind::SetMark: {
      nftnl_expr* e = add("immediate");
      nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
      const std::uint32_t v = a.value;  // host order
      nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &v, sizeof v);
      meta_store(NFT_META_MARK);
      return;
    }
    case Action::Kind::SetMarkMap: {
      require_nfproto(a.family);
      const bool v4 = a.family == Fam::V4;
      payload(NFT_PAYLOAD_NETWORK_HEADER, v4 ? 12U : 8U, v4 ? 4U : 16U);
      lookup_set(a.name, false, NFT_REG_1);  // a miss ends the rule here
      meta_store(NFT_META_MARK);
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// Plan objects as messages.

void put_table(Builder& b, int type, int flags, const std::string& table) {
  std::unique_ptr<nftnl_table, TableFree> t(checked(nftnl_table_alloc()));
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
  nlmsghdr* nlh =
      b.message(kMessageSlack, type, flags, BatchObject{BatchObject::Kind::Table, table, {}, 0, 0});
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  b.w.commit(nlh);
}

void put_counter(Builder& b, const std::string& table, const std::string& name) {
  std::unique_ptr<nftnl_obj, ObjFree> o(checked(nftnl_obj_alloc()));
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, table.c_str());
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_NAME, name.c_str());
  nftnl_obj_set_u32(o.get(), NFTNL_OBJ_FAMILY, NFPROTO_INET);
  nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
  nftnl_obj_set_u64(o.get(), NFTNL_OBJ_CTR_PKTS, 0);  // the kernel requires NFTA_OBJ_DATA
  nftnl_obj_set_u64(o.get(), NFTNL_OBJ_CTR_BYTES, 0);
  nlmsghdr* nlh = b.message(kMessageSlack, NFT_MSG_NEWOBJ, NLM_F_CREATE,
                            BatchObject{BatchObject::Kind::Counter, name, {}, 0, 0});
  nftnl_obj_nlmsg_build_payload(nlh, o.get());
  b.w.commit(nlh);
}

void put_set(Builder& b, const std::string& table, const SetDef& s, std::uint32_t id) {
  std::unique_ptr<nftnl_set, SetFree> set(checked(nftnl_set_alloc()));
  nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(set.get(), NFTNL_SET_NAME, s.name.c_str());
  nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  const bool ifname = s.key == SetDef::Key::Ifname;
  nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_LEN, ifname ? kIfnameLen : key_len(s.family));
  nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_TYPE,
                    ifname                ? kNftTypeIfname
                    : s.family == Fam::V4 ? kNftTypeIpAddr
                                          : kNftTypeIp6Addr);
  std::uint32_t flags = s.interval ? std::uint32_t{NFT_SET_INTERVAL} : 0U;
  if (s.mark_map) {
    flags |= NFT_SET_MAP;
    nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_TYPE, kNftTypeMark);
    nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_LEN, sizeof(std::uint32_t));
  }
  nftnl_set_set_u32(set.get(), NFTNL_SET_FLAGS, flags);
  if (ifname || s.mark_map) {
    // Interface names and marks are host-order data: say so in the set's
    // userdata (as nft does), or `nft list` prints them byte-swapped.
    // Address sets carry none, which nft reads as network order.
    std::unique_ptr<nftnl_udata_buf, UdataFree> ud(checked(nftnl_udata_buf_alloc(64)));
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER,
                        ifname ? kNftHostOrder : kNftNetworkOrder);
    if (s.mark_map) nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_DATABYTEORDER, kNftHostOrder);
    nftnl_set_set_data(set.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                       nftnl_udata_buf_len(ud.get()));
  }
  nftnl_set_set_u32(set.get(), NFTNL_SET_ID, id);
  nlmsghdr* nlh = b.message(kMessageSlack, NFT_MSG_NEWSET, NLM_F_CREATE,
                            BatchObject{BatchObject::Kind::Set, s.name, {}, 0, 0});
  nftnl_set_nlmsg_build_payload(nlh, set.get());
  b.w.commit(nlh);
}

std::uint32_t hook_number(Hook h) {
  switch (h) {
    case Hook::Forward:
      return NF_INET_FORWARD;
    case Hook::Input:
      return NF_INET_LOCAL_IN;
    case Hook::Output:
      return NF_INET_LOCAL_OUT;
  }
  return NF_INET_FORWARD;
}

void put_chain(Builder& b, const std::string& table, const ChainDef& c) {
  std::unique_ptr<nftnl_chain, ChainFree> ch(checked(nftnl_chain_alloc()));
  nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_NAME, c.name.c_str());
  nftnl_chain_set_u32(ch.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  if (c.hook) {
    nftnl_chain_set_u32(ch.get(), NFTNL_CHAIN_HOOKNUM, hook_number(*c.hook));
    nftnl_chain_set_s32(ch.get(), NFTNL_CHAIN_PRIO, c.priority);
    nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(ch.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
  }
  nlmsghdr* nlh = b.message(kMessageSlack, NFT_MSG_NEWCHAIN, NLM_F_CREATE,
                            BatchObject{BatchObject::Kind::Chain, c.name, {}, 0, 0});
  nftnl_chain_nlmsg_build_payload(nlh, ch.get());
  b.w.commit(nlh);
}

std::size_t rule_bytes_bound(const RuleDef& r) {
  std::size_t n = kMessageSlack + r.chain.size();
  for (const Match& m : r.matches) n += 512 + m.set.size();
  for (const Action& a : r.actions) n += 512 + a.name.size();
  return n;
}

void put_rule(Builder& b, const std::string& table, const RuleDef& r, std::size_t index,
              const std::unordered_map<std::string, std::uint32_t>& set_ids) {
  std::unique_ptr<nftnl_rule, RuleFree> rule(checked(nftnl_rule_alloc()));
  nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, r.chain.c_str());
  nftnl_rule_set_u32(rule.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
  RuleEncoder enc(rule.get(), set_ids);
  for (const Match& m : r.matches) enc.match(m);
  for (const Action& a : r.actions) enc.action(a);
  nlmsghdr* nlh =
      b.message(rule_bytes_bound(r), NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
                BatchObject{BatchObject::Kind::Rule, r.chain, r.chain, index, r.origin});
  nftnl_rule_nlmsg_build_payload(nlh, rule.get());
  b.w.commit(nlh);
}

// ---------------------------------------------------------------------------
// Validation helpers.

ApplyError invalid(std::string object, std::string what, RuleId rule = 0) {
  return ApplyError{EINVAL, "invalid plan: " + object + ": " + what, rule, std::move(object)};
}

bool bad_name(const std::string& n) { return n.empty() || n.size() > kNameMax; }

ApplyResult validate_names(const Plan& plan) {
  if (bad_name(plan.table)) return invalid("table " + plan.table, "name must be 1..255 bytes");
  std::set<std::string> sets;
  std::set<std::string> chains;
  std::set<std::string> counters;
  for (const SetDef& s : plan.sets)
    if (bad_name(s.name) || !sets.insert(s.name).second)
      return invalid("set " + s.name, "empty, too long or duplicate name");
  for (const ChainDef& c : plan.chains)
    if (bad_name(c.name) || !chains.insert(c.name).second)
      return invalid("chain " + c.name, "empty, too long or duplicate name");
  for (const std::string& c : plan.counters)
    if (bad_name(c) || !counters.insert(c).second)
      return invalid("counter " + c, "empty, too long or duplicate name");
  return std::nullopt;
}

ApplyResult validate_set(const SetDef& s) {
  const std::string object = "set " + s.name;
  for (const std::string& n : s.ifnames)
    if (s.key != SetDef::Key::Ifname || n.empty() || n.size() >= kIfnameLen)
      return invalid(object, "interface name '" + n + "' empty, too long or in an address set");
  if (s.key == SetDef::Key::Ifname && (!s.addresses.empty() || !s.prefixes.empty()))
    return invalid(object, "addresses in an interface-name set");
  if (s.mark_map && (s.interval || s.marks.size() != s.addresses.size() || !s.prefixes.empty()))
    return invalid(object, "a mark map needs one mark per address and no prefixes");
  for (const IpAddress& a : s.addresses)
    if (a.family != s.family)
      return invalid(object, "address " + a.to_string() + " of the other family");
  for (const Cidr& c : s.prefixes) {
    if (c.base.family != s.family)
      return invalid(object, "prefix " + c.to_string() + " of the other family");
    if (!s.interval && c.prefix != c.base.size() * 8)
      return invalid(object, "prefix " + c.to_string() + " in a set without the interval flag");
  }
  return std::nullopt;
}

ApplyResult validate_rule(const RuleDef& r, std::size_t index) {
  const std::string object = "rule " + r.chain + "#" + std::to_string(index);
  if (bad_name(r.chain)) return invalid(object, "bad chain name", r.origin);
  if (r.matches.size() + r.actions.size() > kMaxRuleTerms)
    return invalid(object, "too many terms", r.origin);
  for (const Match& m : r.matches) {
    const bool set_match = m.kind == Match::Kind::InSet || m.kind == Match::Kind::NotInSet ||
                           m.kind == Match::Kind::IifInSet || m.kind == Match::Kind::IifNotInSet ||
                           m.kind == Match::Kind::OifInSet;
    if (set_match && bad_name(m.set)) return invalid(object, "bad set name", r.origin);
    if (m.kind == Match::Kind::IcmpTypeRange && (m.lo > 255 || m.hi > 255))
      return invalid(object, "icmp type beyond 255", r.origin);
  }
  for (const Action& a : r.actions) {
    const bool named = a.kind == Action::Kind::Counter || a.kind == Action::Kind::Jump ||
                       a.kind == Action::Kind::Goto || a.kind == Action::Kind::SetMarkMap;
    if (named && bad_name(a.name)) return invalid(object, "bad counter or chain name", r.origin);
    if (a.kind == Action::Kind::Log && (a.name.size() > kLogPrefixMax || a.value > 0xffff))
      return invalid(object, "log prefix longer than 127 bytes or group beyond 65535", r.origin);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Receiving.

struct AttrFind {
  std::uint16_t type;
  const nlattr* found = nullptr;
};

int find_attr_cb(const nlattr* attr, void* data) {
  auto* f = static_cast<AttrFind*>(data);
  if (mnl_attr_get_type(attr) == f->type) f->found = attr;
  return MNL_CB_OK;
}

// The top-level attribute `type` of an nfnetlink message, or nullptr.
const nlattr* nfnl_attr(const nlmsghdr* nlh, std::uint16_t type) {
  AttrFind f{type};
  mnl_attr_parse(nlh, sizeof(nfgenmsg), find_attr_cb, &f);
  return f.found;
}

std::string_view attr_string(const nlattr* a) {
  if (a == nullptr) return {};
  const auto* p = static_cast<const char*>(mnl_attr_get_payload(a));
  return std::string_view(p, strnlen(p, mnl_attr_get_payload_len(a)));
}

Ack parse_ack(const nlmsghdr* nlh) {
  Ack ack;
  ack.seq = nlh->nlmsg_seq;
  if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
    ack.err = EBADMSG;
    return ack;
  }
  const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  ack.err = e->error < 0 ? -e->error : e->error;
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) != 0) {
    std::size_t offset = sizeof(nlmsgerr);
    if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) offset += mnl_nlmsg_get_payload_len(&e->msg);
    AttrFind f{NLMSGERR_ATTR_MSG};
    if (offset < mnl_nlmsg_get_payload_len(nlh)) {
      mnl_attr_parse(nlh, static_cast<unsigned>(offset), find_attr_cb, &f);
      ack.ext_message = std::string(attr_string(f.found));
    }
  }
  return ack;
}

// Waits until the socket is readable; false on timeout.
bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc = 0;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  return rc > 0;
}

int set_buffer(int fd, int force_opt, int opt, std::size_t bytes) {
  const int v = static_cast<int>(std::min<std::size_t>(bytes, 1U << 30));
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) == 0) return 0;
  return setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0 ? 0 : errno;
}

std::size_t current_buffer(int fd, int opt) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0) return 0;
  return static_cast<std::size_t>(v) / 2;  // the kernel reports twice the requested size
}

std::string join_ext(const std::string& base, const std::string& ext) {
  return ext.empty() ? base : base + " (" + ext + ")";
}

// Maps the ACKs of `batch` to success or the first error.
ApplyResult interpret_acks(const EncodedBatch& batch, const std::vector<Ack>& acks) {
  const Ack* first = nullptr;
  std::size_t errors = 0;
  std::size_t ok = 0;
  for (const Ack& a : acks) {
    if (a.err == 0) {
      ok += batch.objects.count(a.seq);
      continue;
    }
    if (a.seq == batch.begin_seq && a.err == ERESTART)
      return ApplyError{ERESTART,
                        "concurrent ruleset change detected: the ruleset generation changed since "
                        "it was read; nothing was applied",
                        0, "batch"};
    ++errors;
    if (first == nullptr || a.seq < first->seq) first = &a;
  }
  if (first != nullptr) {
    ApplyError e{first->err, {}, 0, "batch"};
    if (auto it = batch.objects.find(first->seq); it != batch.objects.end()) {
      e.object = it->second.describe();
      e.rule = it->second.rule;
    }
    e.message = "kernel rejected " + e.object;
    if (e.rule != 0) e.message += " (policy rule " + std::to_string(e.rule) + ")";
    e.message = join_ext(e.message + ": " + errno_text(first->err), first->ext_message);
    if (errors > 1) e.message += "; " + std::to_string(errors - 1) + " more error(s) followed";
    e.message += "; nothing was applied";
    return e;
  }
  if (ok != batch.objects.size())
    return ApplyError{EPROTO,
                      "kernel acknowledged " + std::to_string(ok) + " of " +
                          std::to_string(batch.objects.size()) + " messages",
                      0, "batch"};
  return std::nullopt;
}

// Runs a dump (built by `build` into a fresh buffer) until it was not
// interrupted by a concurrent change, calling `reset` before each attempt.
template <typename Build, typename Reset>
int dump_retry(NftSocket& sock, Build&& build, const NftSocket::ReplyFn& on_reply, Reset&& reset) {
  int rc = EINTR;
  for (int attempt = 0; attempt < 5 && rc == EINTR; ++attempt) {
    reset();
    std::array<char, 4096> buf{};
    nlmsghdr* nlh = build(buf.data());
    rc = sock.request(nlh, on_reply);
  }
  return rc;
}

nlmsghdr* dump_header(char* buf, int type) {
  return nftnl_nlmsg_build_hdr(buf, u16(type), NFPROTO_INET, NLM_F_DUMP, 0);
}

bool nft_reply(const nlmsghdr* nlh, int type) {
  return nlh->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | type);
}

// Counts the messages of a table-filtered dump whose table attribute is
// `table` (the kernel filters some dumps by table, not all: check again).
int count_dump(NftSocket& sock, int get, int reply, std::uint16_t table_attr,
               const std::string& table, std::size_t& count,
               std::vector<std::string>* names = nullptr, std::uint16_t name_attr = 0) {
  auto build = [&](char* buf) {
    nlmsghdr* nlh = dump_header(buf, get);
    mnl_attr_put_strz(nlh, table_attr, table.c_str());
    return nlh;
  };
  auto on_reply = [&](const nlmsghdr* nlh) {
    if (!nft_reply(nlh, reply) || attr_string(nfnl_attr(nlh, table_attr)) != table) return;
    ++count;
    if (names != nullptr) names->emplace_back(attr_string(nfnl_attr(nlh, name_attr)));
  };
  auto reset = [&] {
    count = 0;
    if (names != nullptr) names->clear();
  };
  return dump_retry(sock, build, on_reply, reset);
}

int count_nested(const nlattr* nest) {
  int n = 0;
  mnl_attr_parse_nested(
      nest,
      [](const nlattr*, void* data) {
        ++*static_cast<int*>(data);
        return MNL_CB_OK;
      },
      &n);
  return n;
}

ApplyError query_error(const std::string& what, int err) {
  return ApplyError{err, what + ": " + errno_text(err), 0, what};
}

}  // namespace

// ---------------------------------------------------------------------------
// Pure functions.

std::string BatchObject::describe() const {
  switch (kind) {
    case Kind::Table:
      return "table " + name;
    case Kind::Counter:
      return "counter " + name;
    case Kind::Set:
      return "set " + name;
    case Kind::Elements:
      return "elements of set " + name + " (chunk " + std::to_string(index) + ")";
    case Kind::Chain:
      return "chain " + name;
    case Kind::Rule:
      return "rule " + chain + "#" + std::to_string(index);
  }
  return name;
}

std::vector<IntervalKey> interval_keys(std::span<const Cidr> prefixes, IpAddress::Family family) {
  std::vector<IntervalKey> out;
  for (const Key& k : interval_set_keys(prefixes, family))
    out.push_back(IntervalKey{std::vector<std::uint8_t>(k.bytes.begin(), k.bytes.begin() + k.len),
                              k.end, k.open});
  return out;
}

ApplyResult validate_plan(const Plan& plan) {
  if (auto e = validate_names(plan)) return e;
  for (const SetDef& s : plan.sets)
    if (auto e = validate_set(s)) return e;
  std::unordered_map<std::string, std::size_t> per_chain;
  for (const RuleDef& r : plan.rules)
    if (auto e = validate_rule(r, ++per_chain[r.chain])) return e;
  return std::nullopt;
}

EncodedBatch encode_plan(const Plan& plan, std::uint32_t first_seq,
                         std::optional<std::uint32_t> genid) {
  Builder b(first_seq, genid);
  put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, plan.table);
  put_table(b, NFT_MSG_DELTABLE, 0, plan.table);
  put_table(b, NFT_MSG_NEWTABLE, NLM_F_CREATE, plan.table);
  for (const std::string& c : plan.counters) put_counter(b, plan.table, c);
  std::unordered_map<std::string, std::uint32_t> set_ids;
  for (const SetDef& s : plan.sets) {
    const auto id = static_cast<std::uint32_t>(set_ids.size() + 1);
    set_ids.emplace(s.name, id);
    put_set(b, plan.table, s, id);
    const std::vector<Key> keys = set_keys(s);
    put_element_messages(b, NFT_MSG_NEWSETELEM, plan.table, s.name, id, keys);
  }
  for (const ChainDef& c : plan.chains) put_chain(b, plan.table, c);
  std::unordered_map<std::string, std::size_t> per_chain;
  for (const RuleDef& r : plan.rules) put_rule(b, plan.table, r, ++per_chain[r.chain], set_ids);
  return b.finish();
}

EncodedBatch encode_elements(std::string_view table, std::span<const Element> add,
                             std::span<const Element> remove, std::uint32_t first_seq,
                             std::optional<std::uint32_t> genid) {
  Builder b(first_seq, genid);
  const std::string t(table);
  auto put_all = [&](std::span<const Element> elems, int type) {
    std::map<std::string, std::vector<Key>> by_set;  // deterministic order
    for (const Element& e : elems) {
      by_set[e.set].push_back(address_key(e.address));
      if (type == NFT_MSG_NEWSETELEM)
        by_set[e.set].back().data = e.mark;  // deletes need the key only
    }
    for (auto& [set, keys] : by_set) put_element_messages(b, type, t, set, 0, keys);
  };
  put_all(remove, NFT_MSG_DELSETELEM);
  put_all(add, NFT_MSG_NEWSETELEM);
  return b.finish();
}

EncodedBatch encode_delete_table(std::string_view table, std::uint32_t first_seq) {
  Builder b(first_seq, std::nullopt);
  put_table(b, NFT_MSG_DELTABLE, 0, std::string(table));
  return b.finish();
}

KernelCounts expected_counts(const Plan& plan) {
  KernelCounts c;
  c.tables = 1;
  c.chains = plan.chains.size();
  c.rules = plan.rules.size();
  c.sets = plan.sets.size();
  for (const SetDef& s : plan.sets) c.elements += set_keys(s).size();
  return c;
}

// ---------------------------------------------------------------------------
// NftSocket.

NftSocket::NftSocket(mnl_socket* socket)
    : socket_(socket), seq_(static_cast<std::uint32_t>(std::time(nullptr))) {}

std::optional<NftSocket> NftSocket::open(std::string* error) {
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == nullptr) {
    if (error != nullptr) *error = "netlink socket: " + errno_text(errno);
    return std::nullopt;
  }
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    if (error != nullptr) *error = "netlink bind: " + errno_text(errno);
    mnl_socket_close(nl);
    return std::nullopt;
  }
  int one = 1;
  // Errors name the attribute (EXT_ACK) without echoing whole messages (CAP_ACK).
  mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, sizeof one);
  mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof one);
  NftSocket s(nl);
  s.ensure_receive_buffer(4U << 20);
  return s;
}

int NftSocket::fd() const { return mnl_socket_get_fd(socket_.get()); }

std::uint32_t NftSocket::portid() const { return mnl_socket_get_portid(socket_.get()); }

std::uint32_t NftSocket::next_seq(std::uint32_t n) {
  const std::uint32_t first = seq_;
  seq_ += n;
  return first;
}

void NftSocket::ensure_send_buffer(std::size_t bytes) {
  const std::size_t want = bytes + 64 * 1024;
  if (current_buffer(fd(), SO_SNDBUF) < want) set_buffer(fd(), SO_SNDBUFFORCE, SO_SNDBUF, want);
}

void NftSocket::ensure_receive_buffer(std::size_t bytes) {
  if (current_buffer(fd(), SO_RCVBUF) < bytes) set_buffer(fd(), SO_RCVBUFFORCE, SO_RCVBUF, bytes);
}

void NftSocket::drain() {
  std::vector<char> buf(kReceiveBuffer);
  while (::recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
  }
}

int NftSocket::exchange(std::span<const std::uint8_t> bytes, std::size_t expected,
                        std::vector<Ack>& acks) {
  drain();
  ensure_send_buffer(bytes.size());
  ensure_receive_buffer(expected * kAckTruesize + (1U << 20));
  if (mnl_socket_sendto(socket_.get(), bytes.data(), bytes.size()) < 0) return errno;
  std::vector<char> buf(kReceiveBuffer);
  bool failed = false;
  std::size_t got = 0;
  for (;;) {
    const ssize_t n = ::recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (got >= expected || failed) return 0;  // all ACKs or an error, and drained
      if (!wait_readable(fd(), kReplyTimeoutMs)) return ETIMEDOUT;
      continue;
    }
    if (n < 0) return errno;
    int len = static_cast<int>(n);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      acks.push_back(parse_ack(nlh));
      failed = failed || acks.back().err != 0;
      ++got;
    }
  }
}

int NftSocket::request(nlmsghdr* req, const ReplyFn& on_reply) {
  const bool dump = (req->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  req->nlmsg_seq = next_seq();
  if (!dump) req->nlmsg_flags = static_cast<std::uint16_t>(req->nlmsg_flags | NLM_F_ACK);
  drain();
  if (mnl_socket_sendto(socket_.get(), req, req->nlmsg_len) < 0) return errno;
  std::vector<char> buf(kReceiveBuffer);
  bool interrupted = false;
  for (;;) {
    if (!wait_readable(fd(), kReplyTimeoutMs)) return ETIMEDOUT;
    const ssize_t n = ::recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return errno;
    int len = static_cast<int>(n);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_seq != req->nlmsg_seq) continue;  // stale reply of an earlier request
      if (nlh->nlmsg_type == NLMSG_ERROR) return parse_ack(nlh).err;
      if (nlh->nlmsg_type == NLMSG_DONE) {
        int status = 0;
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof status)
          std::memcpy(&status, mnl_nlmsg_get_payload(nlh), sizeof status);
        if (status < 0) return -status;
        return interrupted ? EINTR : 0;
      }
      interrupted = interrupted || (nlh->nlmsg_flags & NLM_F_DUMP_INTR) != 0;
      on_reply(nlh);
    }
  }
}

ApplyResult NftSocket::send_batch(const EncodedBatch& batch) {
  const auto start = Clock::now();
  seq_ = std::max(seq_, batch.end_seq + 1);
  std::vector<Ack> acks;
  const int rc = exchange(batch.bytes, batch.objects.size(), acks);
  const auto end = Clock::now();
  last_batch_.messages = batch.objects.size();
  last_batch_.bytes = batch.bytes.size();
  last_batch_.send_ms = std::chrono::duration<double, std::milli>(end - start).count();
  if (rc != 0)
    return ApplyError{
        rc, "netlink transport failed: " + errno_text(rc) + "; the outcome is unknown", 0, "batch"};
  return interpret_acks(batch, acks);
}

std::optional<std::uint32_t> NftSocket::get_generation(ApplyError* error) {
  std::array<char, 512> buf{};
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETGEN, AF_UNSPEC, 0, 0);
  std::optional<std::uint32_t> genid;
  const int rc = request(nlh, [&](const nlmsghdr* reply) {
    if (!nft_reply(reply, NFT_MSG_NEWGEN)) return;
    if (const nlattr* a = nfnl_attr(reply, NFTA_GEN_ID);
        a != nullptr && mnl_attr_get_payload_len(a) == 4)
      genid = ntohl(mnl_attr_get_u32(a));
  });
  if (rc == 0 && genid) return genid;
  if (error != nullptr) *error = query_error("generation id", rc != 0 ? rc : EPROTO);
  return std::nullopt;
}

ApplyResult NftSocket::apply_plan(const Plan& plan, std::optional<std::uint32_t> expected_genid) {
  const auto start = Clock::now();
  if (auto e = validate_plan(plan)) return e;
  const EncodedBatch batch = encode_plan(plan, next_seq(0), expected_genid);
  ApplyResult result = send_batch(batch);
  last_batch_.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return result;
}

ApplyResult NftSocket::apply_elements(const std::string& table, const std::vector<Element>& add,
                                      const std::vector<Element>& remove,
                                      std::optional<std::uint32_t> expected_genid) {
  if (add.empty() && remove.empty()) return std::nullopt;
  const auto start = Clock::now();
  const EncodedBatch batch = encode_elements(table, add, remove, next_seq(0), expected_genid);
  ApplyResult result = send_batch(batch);
  last_batch_.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return result;
}

ApplyResult NftSocket::flush(const std::string& table) {
  const EncodedBatch batch = encode_delete_table(table, next_seq(0));
  ApplyResult result = send_batch(batch);
  if (result && result->err == ENOENT) return std::nullopt;
  return result;
}

bool NftSocket::table_exists(const std::string& table, ApplyError* error) {
  std::array<char, 1024> buf{};
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, 0, 0);
  mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, table.c_str());
  bool seen = false;
  const int rc = request(
      nlh, [&](const nlmsghdr* reply) { seen = seen || nft_reply(reply, NFT_MSG_NEWTABLE); });
  if (rc == 0) return seen;
  if (rc != ENOENT && error != nullptr) *error = query_error("table " + table, rc);
  return false;
}

std::optional<KernelCounts> NftSocket::kernel_counts(const std::string& table, ApplyError* error) {
  KernelCounts c;
  ApplyError local;
  ApplyError& err = error != nullptr ? *error : local;
  err = ApplyError{};
  if (!table_exists(table, &err)) {
    if (err.err != 0) return std::nullopt;
    return c;
  }
  c.tables = 1;
  std::vector<std::string> sets;
  int rc = count_dump(*this, NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE, table, c.chains);
  if (rc == 0)
    rc = count_dump(*this, NFT_MSG_GETRULE, NFT_MSG_NEWRULE, NFTA_RULE_TABLE, table, c.rules);
  if (rc == 0)
    rc = count_dump(*this, NFT_MSG_GETSET, NFT_MSG_NEWSET, NFTA_SET_TABLE, table, c.sets, &sets,
                    NFTA_SET_NAME);
  for (std::size_t i = 0; rc == 0 && i < sets.size(); ++i) {
    std::size_t n = 0;
    auto build = [&](char* buf) {
      nlmsghdr* nlh = dump_header(buf, NFT_MSG_GETSETELEM);
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, sets[i].c_str());
      return nlh;
    };
    auto on_reply = [&](const nlmsghdr* nlh) {
      if (!nft_reply(nlh, NFT_MSG_NEWSETELEM)) return;
      if (const nlattr* list = nfnl_attr(nlh, NFTA_SET_ELEM_LIST_ELEMENTS))
        n += static_cast<std::size_t>(count_nested(list));
    };
    rc = dump_retry(*this, build, on_reply, [&] { n = 0; });
    c.elements += n;
  }
  if (rc == 0) return c;
  err = query_error("counts of table " + table, rc);
  return std::nullopt;
}

CounterValues NftSocket::read_counters(const std::string& table, ApplyError* error) {
  CounterValues out;
  auto build = [&](char* buf) {
    nlmsghdr* nlh = dump_header(buf, NFT_MSG_GETOBJ);
    mnl_attr_put_strz(nlh, NFTA_OBJ_TABLE, table.c_str());
    mnl_attr_put_u32(nlh, NFTA_OBJ_TYPE, htonl(NFT_OBJECT_COUNTER));
    return nlh;
  };
  auto on_reply = [&](const nlmsghdr* nlh) {
    if (!nft_reply(nlh, NFT_MSG_NEWOBJ)) return;
    std::unique_ptr<nftnl_obj, ObjFree> o(checked(nftnl_obj_alloc()));
    if (nftnl_obj_nlmsg_parse(nlh, o.get()) < 0) return;
    const char* t = nftnl_obj_get_str(o.get(), NFTNL_OBJ_TABLE);
    const char* name = nftnl_obj_get_str(o.get(), NFTNL_OBJ_NAME);
    if (t == nullptr || name == nullptr || table != t) return;
    if (nftnl_obj_get_u32(o.get(), NFTNL_OBJ_TYPE) != NFT_OBJECT_COUNTER) return;
    out[name] = {nftnl_obj_get_u64(o.get(), NFTNL_OBJ_CTR_PKTS),
                 nftnl_obj_get_u64(o.get(), NFTNL_OBJ_CTR_BYTES)};
  };
  const int rc = dump_retry(*this, build, on_reply, [&] { out.clear(); });
  if (rc != 0) {
    out.clear();
    if (error != nullptr) *error = query_error("counters of table " + table, rc);
  }
  return out;
}

}  // namespace tierwall::dataplane::nft
