#include "tierwall/dataplane/dpdk/flow_table.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "huge_array.h"

namespace tierwall::dataplane::dpdk {
namespace {

constexpr std::size_t kWays = 8;
constexpr std::uint8_t kTcpFin = 0x01;
constexpr std::uint8_t kTcpRst = 0x04;

enum : std::uint8_t { kStateNew = 0, kStateEstablished = 1, kStateClosing = 2 };
constexpr std::uint8_t kFlagInitiatorIsA = 0x01;

// Direction-normalised 5-tuple: (a, port_a) is the smaller endpoint.
struct FlowKey {
  std::uint8_t a[16];
  std::uint8_t b[16];
  std::uint16_t port_a;
  std::uint16_t port_b;
  std::uint8_t protocol;
  std::uint8_t family;
  std::uint16_t pad;
};
static_assert(sizeof(FlowKey) == 40);

struct alignas(64) Entry {
  FlowKey key;
  std::uint64_t expiry_ns;
  std::uint32_t generation;  // low 32 bits of Generation::serial()
  RuleId rule;
  std::uint16_t decision_port;
  Verdict verdict;
  RuleKind kind;
  std::uint8_t state;
  std::uint8_t flags;
  std::uint16_t src_tag;  // FlowPacket::src_tag of the initiator's first packet
};
static_assert(sizeof(Entry) == 64);

std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Returns whether p.src is side `a` of the key. The order is any total
// order on (address, port) that both directions agree on: native-endian
// words compare without a byte swap or a memcmp call.
bool make_key(const FlowPacket& p, FlowKey& k) {
  const std::uint64_t s0 = load64(p.src.bytes.data());
  const std::uint64_t s1 = load64(p.src.bytes.data() + 8);
  const std::uint64_t d0 = load64(p.dst.bytes.data());
  const std::uint64_t d1 = load64(p.dst.bytes.data() + 8);
  const bool src_is_a = s0 != d0 ? s0 < d0 : (s1 != d1 ? s1 < d1 : p.src_port <= p.dst_port);
  const std::uint64_t a[2] = {src_is_a ? s0 : d0, src_is_a ? s1 : d1};
  const std::uint64_t b[2] = {src_is_a ? d0 : s0, src_is_a ? d1 : s1};
  std::memcpy(k.a, a, 16);
  std::memcpy(k.b, b, 16);
  k.port_a = src_is_a ? p.src_port : p.dst_port;
  k.port_b = src_is_a ? p.dst_port : p.src_port;
  k.protocol = p.protocol;
  k.family = static_cast<std::uint8_t>(p.src.family);
  k.pad = 0;
  return src_is_a;
}

std::uint64_t hash_key(const FlowKey& k) {
  std::uint64_t w[5];
  std::memcpy(w, &k, sizeof(w));
  std::uint64_t h = 0x243F6A8885A308D3ULL;
  for (std::uint64_t x : w) {
    h = (h ^ x) * 0x9E3779B97F4A7C15ULL;
    h = std::rotl(h, 29);
  }
  h ^= h >> 32;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 29;
  return h;
}

bool same_key(const FlowKey& x, const FlowKey& y) {
  std::uint64_t a[5];
  std::uint64_t b[5];
  std::memcpy(a, &x, sizeof a);
  std::memcpy(b, &y, sizeof b);
  return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0;
}

IpAddress address_of(const std::uint8_t* bytes, std::uint8_t family) {
  IpAddress a;
  a.family = static_cast<IpAddress::Family>(family);
  std::memcpy(a.bytes.data(), bytes, 16);
  return a;
}

// The source's class for a decision: its address resolved, then for a
// tagged packet checked against the tag (Generation::check_tag). `src` is
// only meaningful when the result is None, ByAddress or ByTag.
TagCheck source_class(const Generation& g, const FlowPacket& p, PeerClass& src) {
  src = g.resolve(p.src);
  if (p.src_tag == 0) return TagCheck::None;
  PeerClass decided;
  const TagCheck t = g.check_tag(src, p.src_tag, decided);
  if (t == TagCheck::ByAddress || t == TagCheck::ByTag) src = decided;
  return t;
}

bool refused(TagCheck t) { return t == TagCheck::UnknownTag || t == TagCheck::Spoofed; }

}  // namespace

FlowPacket flow_packet(const PacketInfo& p) {
  FlowPacket f;
  f.src = p.src;
  f.dst = p.dst;
  f.protocol = p.protocol;
  if (p.has(kFlagPorts)) {
    f.src_port = p.src_port;
    f.dst_port = p.dst_port;
    f.decision_port = p.dst_port;
  } else if (p.has(kFlagIcmp)) {
    f.src_port = p.icmp_id;
    f.dst_port = p.icmp_id;
    f.decision_port = p.icmp_type;
  }
  f.tcp_flags = p.tcp_flags;
  return f;
}

struct FlowTable::Impl {
  detail::HugeArray<std::uint32_t> sigs;  // kWays per bucket; 0 = free
  detail::HugeArray<Entry> entries;
  std::uint64_t bucket_mask = 0;
  FlowTimeouts timeouts;

  [[nodiscard]] std::uint64_t timeout(std::uint8_t protocol, std::uint8_t state) const {
    switch (protocol) {
      case proto::kTcp:
        return state == kStateEstablished ? timeouts.tcp_established_ns
               : state == kStateClosing   ? timeouts.tcp_closing_ns
                                          : timeouts.tcp_new_ns;
      case proto::kUdp:
        return timeouts.udp_ns;
      case proto::kIcmp:
      case proto::kIcmpv6:
        return timeouts.icmp_ns;
      default:
        return timeouts.other_ns;
    }
  }

  // Index of the live entry for `k`, or -1.
  [[nodiscard]] std::ptrdiff_t find(const FlowKey& k, std::uint64_t h) const {
    const std::size_t base = static_cast<std::size_t>(h & bucket_mask) * kWays;
    const std::uint32_t sig = static_cast<std::uint32_t>(h >> 32) | 1U;
    for (std::size_t w = 0; w < kWays; ++w) {
      if (sigs[base + w] == sig && same_key(entries[base + w].key, k)) {
        return static_cast<std::ptrdiff_t>(base + w);
      }
    }
    return -1;
  }
};

FlowTable::FlowTable(const FlowTableOptions& options) : impl_(std::make_unique<Impl>()) {
  std::size_t buckets = 1;
  while (buckets * kWays < options.capacity) buckets <<= 1;
  impl_->sigs = detail::HugeArray<std::uint32_t>(buckets * kWays);
  impl_->entries = detail::HugeArray<Entry>(buckets * kWays);
  impl_->bucket_mask = buckets - 1;
  impl_->timeouts = options.timeouts;
}

FlowTable::~FlowTable() = default;

std::size_t FlowTable::capacity() const { return impl_->entries.size(); }

std::size_t FlowTable::memory_bytes() const {
  return impl_->entries.size() * (sizeof(Entry) + sizeof(std::uint32_t));
}

void FlowTable::clear() {
  std::fill(impl_->sigs.begin(), impl_->sigs.end(), 0U);
  counters_ = FlowCounters{};
}

std::size_t FlowTable::live(std::uint64_t now_ns) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < impl_->sigs.size(); ++i) {
    if (impl_->sigs[i] != 0 && impl_->entries[i].expiry_ns > now_ns) ++n;
  }
  return n;
}

bool FlowTable::peek(const FlowPacket& p, std::uint64_t now_ns, FastDecision& out,
                     std::uint64_t* generation_low32) const {
  FlowKey k;
  make_key(p, k);
  const std::ptrdiff_t i = impl_->find(k, hash_key(k));
  if (i < 0) return false;
  const Entry& e = impl_->entries[static_cast<std::size_t>(i)];
  if (e.expiry_ns <= now_ns) return false;
  out = FastDecision{e.verdict, e.kind, e.rule};
  if (generation_low32 != nullptr) *generation_low32 = e.generation;
  return true;
}

FlowResult FlowTable::process(const Generation& g, const FlowPacket& p, std::uint64_t now_ns) {
  FlowKey k;
  const bool src_is_a = make_key(p, k);
  return process_keyed(g, p, &k, hash_key(k), src_is_a, now_ns, nullptr, TagCheck::None);
}

std::size_t FlowTable::process_burst(const Generation& g, std::span<const FlowPacket> packets,
                                     std::span<FlowResult> results, std::uint64_t now_ns) {
  Impl& m = *impl_;
  const std::size_t n = std::min(packets.size(), results.size());
  FlowKey keys[kMaxBurst];
  std::uint64_t hashes[kMaxBurst];
  bool src_is_a[kMaxBurst];
  for (std::size_t done = 0; done < n; done += kMaxBurst) {
    const std::size_t count = std::min(kMaxBurst, n - done);
    const FlowPacket* p = packets.data() + done;
    // Stage 1: keys, hashes, prefetch the signature buckets.
    for (std::size_t i = 0; i < count; ++i) {
      src_is_a[i] = make_key(p[i], keys[i]);
      hashes[i] = hash_key(keys[i]);
      __builtin_prefetch(&m.sigs[static_cast<std::size_t>(hashes[i] & m.bucket_mask) * kWays]);
    }
    // Stage 2: prefetch the entry a signature points at, or (a new
    // connection) the endpoint hash slots the decision will read.
    bool miss[kMaxBurst];
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t base = static_cast<std::size_t>(hashes[i] & m.bucket_mask) * kWays;
      const std::uint32_t sig = static_cast<std::uint32_t>(hashes[i] >> 32) | 1U;
      std::size_t w = 0;
      while (w < kWays && m.sigs[base + w] != sig) ++w;
      miss[i] = w == kWays;
      if (!miss[i]) {
        __builtin_prefetch(&m.entries[base + w]);
      } else {
        g.prefetch(p[i].src);
        g.prefetch(p[i].dst);
        // The entry the insert will most likely write: the first free way.
        std::size_t free_way = 0;
        while (free_way < kWays && m.sigs[base + free_way] != 0) ++free_way;
        __builtin_prefetch(&m.entries[base + (free_way < kWays ? free_way : 0)], 1);
      }
    }
    // Stage 3 (new connections): resolve, then prefetch the decision
    // structure in two steps.
    PeerClass classes[kMaxBurst][2];
    TagCheck tags[kMaxBurst];
    for (std::size_t i = 0; i < count; ++i) {
      tags[i] = TagCheck::None;
      if (!miss[i]) continue;
      tags[i] = source_class(g, p[i], classes[i][0]);
      classes[i][1] = g.resolve(p[i].dst);
      g.prefetch_pair(classes[i][0], classes[i][1], p[i].protocol);
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (miss[i]) g.prefetch_candidates(classes[i][0], classes[i][1], p[i].protocol);
    }
    // Stage 4: decide, in order.
    for (std::size_t i = 0; i < count; ++i) {
      results[done + i] = process_keyed(g, p[i], &keys[i], hashes[i], src_is_a[i], now_ns,
                                        miss[i] ? classes[i] : nullptr, tags[i]);
    }
  }
  return n;
}

FlowResult FlowTable::process_keyed(const Generation& g, const FlowPacket& p, const void* key,
                                    std::uint64_t h, bool src_is_a, std::uint64_t now_ns,
                                    const PeerClass* classes, TagCheck tag) {
  Impl& m = *impl_;
  const FlowKey& k = *static_cast<const FlowKey*>(key);
  const auto gen32 = static_cast<std::uint32_t>(g.serial());
  const std::ptrdiff_t found = m.find(k, h);
  if (found >= 0) {
    const auto i = static_cast<std::size_t>(found);
    Entry& e = m.entries[i];
    if (e.expiry_ns > now_ns) {
      FlowOutcome outcome = FlowOutcome::Hit;
      if (e.generation != gen32) {
        // Lazy re-check with the initiator's original first packet.
        const bool init_a = (e.flags & kFlagInitiatorIsA) != 0;
        const IpAddress src = address_of(init_a ? e.key.a : e.key.b, e.key.family);
        const IpAddress dst = address_of(init_a ? e.key.b : e.key.a, e.key.family);
        FastDecision now;
        if (e.src_tag == 0) {
          now = g.classify(src, dst, e.key.protocol, e.decision_port);
        } else if (e.src_tag - 1U < g.tier_count()) {
          now = g.decide(g.tagged_peer(static_cast<TierId>(e.src_tag - 1U)), g.resolve(dst),
                         e.key.protocol, e.decision_port);
        }  // else: the tier is gone; `now` is the default deny
        if (now.verdict == Verdict::Deny) {
          m.sigs[i] = 0;
          ++counters_.cuts;
          return FlowResult{now, FlowOutcome::Cut};
        }
        e.generation = gen32;
        outcome = FlowOutcome::Recheck;
        ++counters_.rechecks;
      } else {
        ++counters_.hits;
      }
      const bool from_initiator = src_is_a == ((e.flags & kFlagInitiatorIsA) != 0);
      if (e.key.protocol == proto::kTcp) {
        if ((p.tcp_flags & (kTcpFin | kTcpRst)) != 0) {
          e.state = kStateClosing;
        } else if (!from_initiator && e.state == kStateNew) {
          e.state = kStateEstablished;
        }
      }
      e.expiry_ns = now_ns + m.timeout(e.key.protocol, e.state);
      return FlowResult{FastDecision{e.verdict, e.kind, e.rule}, outcome};
    }
    m.sigs[i] = 0;  // expired
    ++counters_.expired;
  }
  // A miss. (The burst pipeline may have resolved the peers already; a
  // packet that missed in stage 2 may hit here when an earlier packet of
  // the same burst created its flow, and then never gets here.)
  PeerClass resolved[2];
  if (classes == nullptr) {
    tag = source_class(g, p, resolved[0]);
    resolved[1] = g.resolve(p.dst);
    classes = resolved;
  }
  if (refused(tag)) {
    ++counters_.denied;
    return FlowResult{FastDecision{}, FlowOutcome::Denied, tag};
  }
  const FastDecision d = g.decide(classes[0], classes[1], p.protocol, p.decision_port);
  if (d.verdict == Verdict::Deny) {
    ++counters_.denied;
    return FlowResult{d, FlowOutcome::Denied, tag};
  }
  // A way: free, else expired, else the one closest to expiry.
  const std::size_t base = static_cast<std::size_t>(h & m.bucket_mask) * kWays;
  std::size_t way = kWays;
  for (std::size_t w = 0; w < kWays; ++w) {
    if (m.sigs[base + w] == 0) {
      way = w;
      break;
    }
  }
  if (way == kWays) {
    way = 0;
    for (std::size_t w = 1; w < kWays; ++w) {
      if (m.entries[base + w].expiry_ns < m.entries[base + way].expiry_ns) way = w;
    }
    if (m.entries[base + way].expiry_ns <= now_ns) {
      ++counters_.expired;
    } else {
      ++counters_.evicted;
    }
  }
  Entry& e = m.entries[base + way];
  e.key = k;
  e.state = kStateNew;
  if (p.protocol == proto::kTcp && (p.tcp_flags & (kTcpFin | kTcpRst)) != 0)
    e.state = kStateClosing;
  e.expiry_ns = now_ns + m.timeout(p.protocol, e.state);
  e.generation = gen32;
  e.rule = d.rule_id;
  e.decision_port = p.decision_port;
  e.verdict = d.verdict;
  e.kind = d.kind;
  e.flags = src_is_a ? kFlagInitiatorIsA : 0;
  e.src_tag = tag == TagCheck::ByTag ? p.src_tag : std::uint16_t{0};
  m.sigs[base + way] = static_cast<std::uint32_t>(h >> 32) | 1U;
  ++counters_.inserts;
  return FlowResult{d, FlowOutcome::New, tag};
}

}  // namespace tierwall::dataplane::dpdk
