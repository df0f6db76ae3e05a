#include "tierwall/dataplane/dpdk/flow_table.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "huge_array.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
static_assert(offsetof(FlowKey, port_a) == 32 && offsetof(FlowKey, family) == 37);
static_assert(std::endian::native == std::endian::little);

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

// Per-flow counts (FlowTableOptions::count), parallel to the entries.
struct FlowStats {
  std::uint64_t packets[2];  // [0] initiator -> responder, [1] back
  std::uint64_t bytes[2];
  std::uint32_t id;
  std::uint32_t pad;
};
static_assert(sizeof(FlowStats) == 40);

std::uint64_t load64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::uint64_t hash_words(const std::uint64_t (&w)[5]) {
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

// Builds p's key and its hash; returns whether p.src is side `a` of the
// key. The order is any total order on (address, port) that both
// directions agree on: native-endian words compare without a byte swap or
// a memcmp call. The key is built as five 64-bit words in registers, hashed
// from them and stored with one store each (so that no later load of the
// key spans several smaller stores: a store-forwarding stall).
[[gnu::always_inline]] inline bool make_key(const FlowPacket& p, FlowKey& k, std::uint64_t& hash) {
  const std::uint64_t s0 = load64(p.src.bytes.data());
  const std::uint64_t s1 = load64(p.src.bytes.data() + 8);
  const std::uint64_t d0 = load64(p.dst.bytes.data());
  const std::uint64_t d1 = load64(p.dst.bytes.data() + 8);
  // Without branches: the direction of a packet is random to a predictor.
  const bool src_is_a =
      (s0 < d0) | ((s0 == d0) & ((s1 < d1) | ((s1 == d1) & (p.src_port <= p.dst_port))));
  const std::uint64_t m = 0 - static_cast<std::uint64_t>(src_is_a);
  const auto m16 = static_cast<std::uint16_t>(m);
  const auto x = static_cast<std::uint16_t>(p.src_port ^ p.dst_port);
  const auto port_a = static_cast<std::uint16_t>(p.dst_port ^ (x & m16));
  const auto port_b = static_cast<std::uint16_t>(p.src_port ^ (x & m16));
  // FlowKey's last word: port_a, port_b, protocol, family, pad (little
  // endian layout of the struct, checked below).
  const std::uint64_t tail = std::uint64_t{port_a} | (std::uint64_t{port_b} << 16) |
                             (std::uint64_t{p.protocol} << 32) |
                             (std::uint64_t{static_cast<std::uint8_t>(p.src.family)} << 40);
  const std::uint64_t w[5] = {d0 ^ ((s0 ^ d0) & m), d1 ^ ((s1 ^ d1) & m), s0 ^ ((s0 ^ d0) & m),
                              s1 ^ ((s1 ^ d1) & m), tail};
  std::memcpy(&k, w, sizeof w);
  hash = hash_words(w);
  return src_is_a;
}

bool same_key(const FlowKey& x, const FlowKey& y) {
  std::uint64_t a[5];
  std::uint64_t b[5];
  std::memcpy(a, &x, sizeof a);
  std::memcpy(b, &y, sizeof b);
  return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0;
}

// A way's signature: 16 bits of the hash (not those that index the
// bucket), never 0 (0 marks a free way). A bucket's 8 signatures are 16
// bytes, so four buckets share a cache line and the signature array is a
// sixteenth of the entries' size (at 1M flows it stays mostly in cache).
using Sig = std::uint16_t;

// Bit w set when sigs[w] == sig, for the kWays signatures of one bucket:
// one 8-lane compare, a pack and a movemask on x86 (SSE2 is part of
// x86-64), no branch per way.
unsigned match_ways(const Sig* sigs, Sig sig) {
#if defined(__SSE2__)
  const __m128i want = _mm_set1_epi16(static_cast<short>(sig));
  const __m128i all = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sigs));
  const __m128i eq = _mm_cmpeq_epi16(all, want);
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128())));
#else
  unsigned m = 0;
  for (std::size_t w = 0; w < kWays; ++w) m |= static_cast<unsigned>(sigs[w] == sig) << w;
  return m;
#endif
}

Sig signature(std::uint64_t h) { return static_cast<Sig>((h >> 48) | 1U); }

// Initialises `slot` with the prvalue `make()` returns, in place: a
// function returning a struct through memory then writes it where it is
// read, instead of into a temporary that is copied with loads wider than
// its stores (a store-forwarding stall per packet).
template <typename T, typename Make>
[[gnu::always_inline]] inline void emplace(T& slot, Make&& make) {
  static_assert(std::is_trivially_destructible_v<T>);
  ::new (static_cast<void*>(&slot)) T(make());
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
  emplace(src, [&] { return g.resolve(p.src); });
  if (p.src_tag == 0) return TagCheck::None;
  PeerClass decided;
  const TagCheck t = g.check_tag(src, p.src_tag, decided);
  if (t == TagCheck::ByAddress || t == TagCheck::ByTag) src = decided;
  return t;
}

bool refused(TagCheck t) { return t == TagCheck::UnknownTag || t == TagCheck::Spoofed; }

}  // namespace

std::string_view to_string(FlowEndReason reason) {
  switch (reason) {
    case FlowEndReason::Expired:
      return "expired";
    case FlowEndReason::Evicted:
      return "evicted";
    case FlowEndReason::Cut:
      return "cut";
    case FlowEndReason::Stopped:
      return "stopped";
  }
  return "unknown";
}

struct FlowTable::Impl {
  detail::HugeArray<Sig> sigs;  // kWays per bucket; 0 = free
  detail::HugeArray<Entry> entries;
  std::uint64_t bucket_mask = 0;
  detail::HugeArray<FlowStats> stats;  // empty unless counting
  FlowEndSink* end_sink = nullptr;
  std::uint32_t next_id = 1;
  std::uint32_t id_first = 1;
  std::uint32_t id_stride = 1;
  std::size_t sweep_cursor = 0;

  [[nodiscard]] bool counting() const { return stats.size() != 0; }

  // Tells the sink that slot `i` (still holding its flow) ends.
  void report_end(std::size_t i, FlowEndReason reason, std::uint64_t now_ns) const {
    if (end_sink == nullptr || !counting()) return;
    const Entry& e = entries[i];
    const FlowStats& st = stats[i];
    const bool init_a = (e.flags & kFlagInitiatorIsA) != 0;
    FlowEnd end;
    end.src = address_of(init_a ? e.key.a : e.key.b, e.key.family);
    end.dst = address_of(init_a ? e.key.b : e.key.a, e.key.family);
    end.src_port = init_a ? e.key.port_a : e.key.port_b;
    end.dst_port = init_a ? e.key.port_b : e.key.port_a;
    end.decision_port = e.decision_port;
    end.protocol = e.key.protocol;
    end.reason = reason;
    end.decision = FastDecision{e.verdict, e.kind, e.rule};
    end.flow_id = st.id;
    end.packets_orig = st.packets[0];
    end.packets_reply = st.packets[1];
    end.bytes_orig = st.bytes[0];
    end.bytes_reply = st.bytes[1];
    end_sink->ended(end, now_ns);
  }

  // Timeout by (protocol class, TCP state): two table loads, no branch.
  // Classes: 0 other, 1 TCP, 2 UDP, 3 ICMP/ICMPv6.
  std::array<std::uint8_t, 256> protocol_class{};
  std::array<std::array<std::uint64_t, 3>, 4> timeout_table{};

  void set_timeouts(const FlowTimeouts& t) {
    protocol_class.fill(0);
    protocol_class[proto::kTcp] = 1;
    protocol_class[proto::kUdp] = 2;
    protocol_class[proto::kIcmp] = 3;
    protocol_class[proto::kIcmpv6] = 3;
    timeout_table[0] = {t.other_ns, t.other_ns, t.other_ns};
    timeout_table[1] = {t.tcp_new_ns, t.tcp_established_ns, t.tcp_closing_ns};
    timeout_table[2] = {t.udp_ns, t.udp_ns, t.udp_ns};
    timeout_table[3] = {t.icmp_ns, t.icmp_ns, t.icmp_ns};
  }
  [[nodiscard]] std::uint64_t timeout(std::uint8_t protocol, std::uint8_t state) const {
    return timeout_table[protocol_class[protocol]][state];
  }

  // A packet of the live flow in slot `i`, decided by the generation that
  // stamped it: advances the TCP state, pushes the expiry, counts.
  // Returns the flow id (0 unless counting).
  [[gnu::always_inline]] std::uint32_t refresh(std::size_t i, const FlowPacket& p, bool src_is_a,
                                               std::uint64_t now_ns) {
    Entry& e = entries[i];
    const bool from_initiator = src_is_a == ((e.flags & kFlagInitiatorIsA) != 0);
    if (e.key.protocol == proto::kTcp) {
      if ((p.tcp_flags & (kTcpFin | kTcpRst)) != 0) {
        e.state = kStateClosing;
      } else if (!from_initiator && e.state == kStateNew) {
        e.state = kStateEstablished;
      }
    }
    e.expiry_ns = now_ns + timeout(e.key.protocol, e.state);
    if (!counting()) return 0;
    FlowStats& st = stats[i];
    const int dir = from_initiator ? 0 : 1;
    ++st.packets[dir];
    st.bytes[dir] += p.length;
    return st.id;
  }

  // Index of the entry holding `k` (live or expired), or -1.
  [[nodiscard]] std::ptrdiff_t find(const FlowKey& k, std::uint64_t h) const {
    const std::size_t base = static_cast<std::size_t>(h & bucket_mask) * kWays;
    for (unsigned m = match_ways(&sigs[base], signature(h)); m != 0; m &= m - 1) {
      const std::size_t i = base + static_cast<std::size_t>(std::countr_zero(m));
      if (same_key(entries[i].key, k)) return static_cast<std::ptrdiff_t>(i);
    }
    return -1;
  }
};

FlowTable::FlowTable(const FlowTableOptions& options) : impl_(std::make_unique<Impl>()) {
  std::size_t buckets = 1;
  while (buckets * kWays < options.capacity) buckets <<= 1;
  impl_->sigs = detail::HugeArray<Sig>(buckets * kWays);
  impl_->entries = detail::HugeArray<Entry>(buckets * kWays);
  impl_->bucket_mask = buckets - 1;
  impl_->set_timeouts(options.timeouts);
  if (options.count) impl_->stats = detail::HugeArray<FlowStats>(buckets * kWays);
  if (options.id_stride == 0 || options.id_first == 0 || options.id_first > options.id_stride) {
    throw std::invalid_argument("FlowTable: id_first must be in 1..id_stride");
  }
  impl_->id_first = options.id_first;
  impl_->id_stride = options.id_stride;
  impl_->next_id = options.id_first;
}

void FlowTable::set_end_sink(FlowEndSink* sink) { impl_->end_sink = sink; }

std::size_t FlowTable::sweep(std::uint64_t now_ns, std::size_t slots) {
  Impl& m = *impl_;
  if (!m.counting()) return 0;
  const std::size_t n = m.sigs.size();
  std::size_t ended = 0;
  for (std::size_t k = 0; k < slots && k < n; ++k) {
    const std::size_t i = m.sweep_cursor;
    m.sweep_cursor = m.sweep_cursor + 1 == n ? 0 : m.sweep_cursor + 1;
    if (m.sigs[i] == 0 || m.entries[i].expiry_ns > now_ns) continue;
    m.report_end(i, FlowEndReason::Expired, now_ns);
    m.sigs[i] = 0;
    ++counters_.expired;
    ++ended;
  }
  return ended;
}

std::size_t FlowTable::end_all(std::uint64_t now_ns) {
  Impl& m = *impl_;
  if (!m.counting()) return 0;
  std::size_t ended = 0;
  for (std::size_t i = 0; i < m.sigs.size(); ++i) {
    if (m.sigs[i] == 0) continue;
    const bool expired = m.entries[i].expiry_ns <= now_ns;
    m.report_end(i, expired ? FlowEndReason::Expired : FlowEndReason::Stopped, now_ns);
    m.sigs[i] = 0;
    ++ended;
  }
  return ended;
}

FlowTable::~FlowTable() = default;

std::size_t FlowTable::capacity() const { return impl_->entries.size(); }

std::size_t FlowTable::memory_bytes() const {
  return impl_->entries.size() * (sizeof(Entry) + sizeof(Sig));
}

void FlowTable::clear() {
  std::fill(impl_->sigs.begin(), impl_->sigs.end(), Sig{0});
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
  std::uint64_t h = 0;
  make_key(p, k, h);
  const std::ptrdiff_t i = impl_->find(k, h);
  if (i < 0) return false;
  const Entry& e = impl_->entries[static_cast<std::size_t>(i)];
  if (e.expiry_ns <= now_ns) return false;
  out = FastDecision{e.verdict, e.kind, e.rule};
  if (generation_low32 != nullptr) *generation_low32 = e.generation;
  return true;
}

FlowResult FlowTable::process(const Generation& g, const FlowPacket& p, std::uint64_t now_ns) {
  FlowKey k;
  std::uint64_t h = 0;
  const bool src_is_a = make_key(p, k, h);
  return process_keyed(g, p, &k, h, src_is_a, now_ns, nullptr, kNoHint, TagCheck::None);
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
      src_is_a[i] = make_key(p[i], keys[i], hashes[i]);
      __builtin_prefetch(&m.sigs[static_cast<std::size_t>(hashes[i] & m.bucket_mask) * kWays]);
    }
    // Stage 2: prefetch the entry a signature points at (remembered as
    // the hint stage 4 checks first), or (a new connection) the endpoint
    // hash slots the decision will read.
    bool miss[kMaxBurst];
    std::uint8_t hint[kMaxBurst];
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t base = static_cast<std::size_t>(hashes[i] & m.bucket_mask) * kWays;
      const unsigned ways = match_ways(&m.sigs[base], signature(hashes[i]));
      miss[i] = ways == 0;
      if (!miss[i]) {
        const auto w = static_cast<std::size_t>(std::countr_zero(ways));
        hint[i] = static_cast<std::uint8_t>(w);
        __builtin_prefetch(&m.entries[base + w]);
      } else {
        hint[i] = kNoHint;
        g.prefetch(p[i].src);
        g.prefetch(p[i].dst);
        // The entry the insert will most likely write: the first free way.
        const unsigned free_ways = match_ways(&m.sigs[base], 0);
        const auto w = free_ways != 0 ? static_cast<std::size_t>(std::countr_zero(free_ways)) : 0;
        __builtin_prefetch(&m.entries[base + w], 1);
      }
    }
    // Stage 3 (new connections): resolve, then prefetch the decision
    // structure in two steps.
    union Classes {
      Classes() {}  // left uninitialised: only misses' slots are written
      PeerClass of[kMaxBurst][2];
    } resolved;
    auto& classes = resolved.of;
    TagCheck tags[kMaxBurst];
    for (std::size_t i = 0; i < count; ++i) {
      tags[i] = TagCheck::None;
      if (!miss[i]) continue;
      tags[i] = source_class(g, p[i], classes[i][0]);
      emplace(classes[i][1], [&] { return g.resolve(p[i].dst); });
      g.prefetch_pair(classes[i][0], classes[i][1], p[i].protocol);
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (miss[i]) g.prefetch_candidates(classes[i][0], classes[i][1], p[i].protocol);
    }
    // Stage 4: decide, in order. The common case inline: the hinted way
    // holds the flow, live, stamped by this generation.
    const auto gen32 = static_cast<std::uint32_t>(g.serial());
    for (std::size_t i = 0; i < count; ++i) {
      if (hint[i] < kWays) {
        const std::size_t slot =
            static_cast<std::size_t>(hashes[i] & m.bucket_mask) * kWays + hint[i];
        const Entry& e = m.entries[slot];
        if (m.sigs[slot] == signature(hashes[i]) && same_key(e.key, keys[i]) &&
            e.expiry_ns > now_ns && e.generation == gen32) {
          ++counters_.hits;
          const std::uint32_t id = m.refresh(slot, p[i], src_is_a[i], now_ns);
          results[done + i] =
              FlowResult{FastDecision{e.verdict, e.kind, e.rule}, FlowOutcome::Hit, id};
          continue;
        }
      }
      emplace(results[done + i], [&] {
        return process_keyed(g, p[i], &keys[i], hashes[i], src_is_a[i], now_ns,
                             miss[i] ? classes[i] : nullptr, hint[i], tags[i]);
      });
    }
  }
  return n;
}

FlowResult FlowTable::process_keyed(const Generation& g, const FlowPacket& p, const void* key,
                                    std::uint64_t h, bool src_is_a, std::uint64_t now_ns,
                                    const PeerClass* classes, std::uint8_t hint, TagCheck tag) {
  Impl& m = *impl_;
  const FlowKey& k = *static_cast<const FlowKey*>(key);
  const auto gen32 = static_cast<std::uint32_t>(g.serial());
  // The way stage 2 saw the signature in holds the flow unless two flows
  // of the bucket share a signature or an earlier packet of the burst
  // changed the bucket: then search it.
  const std::size_t hinted = static_cast<std::size_t>(h & m.bucket_mask) * kWays + hint;
  const std::ptrdiff_t found =
      hint < kWays && m.sigs[hinted] == signature(h) && same_key(m.entries[hinted].key, k)
          ? static_cast<std::ptrdiff_t>(hinted)
          : m.find(k, h);
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
          m.report_end(i, FlowEndReason::Cut, now_ns);
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
      const std::uint32_t id = m.refresh(i, p, src_is_a, now_ns);
      return FlowResult{FastDecision{e.verdict, e.kind, e.rule}, outcome, id};
    }
    m.report_end(i, FlowEndReason::Expired, now_ns);
    m.sigs[i] = 0;  // expired
    ++counters_.expired;
  }
  // A miss. (The burst pipeline may have resolved the peers already; a
  // packet that missed in stage 2 may hit here when an earlier packet of
  // the same burst created its flow, and then never gets here.)
  PeerClass resolved[2];
  if (classes == nullptr) {
    tag = source_class(g, p, resolved[0]);
    emplace(resolved[1], [&] { return g.resolve(p.dst); });
    classes = resolved;
  }
  if (refused(tag)) {
    ++counters_.denied;
    FlowResult r{FastDecision{}, FlowOutcome::Denied};
    r.tag = tag;
    return r;
  }
  const FastDecision d = g.decide(classes[0], classes[1], p.protocol, p.decision_port);
  if (d.verdict == Verdict::Deny) {
    ++counters_.denied;
    FlowResult r{d, FlowOutcome::Denied};
    r.tag = tag;
    return r;
  }
  // A way: free, else expired, else the one closest to expiry.
  const std::size_t base = static_cast<std::size_t>(h & m.bucket_mask) * kWays;
  const unsigned free_ways = match_ways(&m.sigs[base], 0);
  std::size_t way = static_cast<std::size_t>(std::countr_zero(free_ways));  // kWays: none
  if (free_ways == 0) {
    way = 0;
    for (std::size_t w = 1; w < kWays; ++w) {
      if (m.entries[base + w].expiry_ns < m.entries[base + way].expiry_ns) way = w;
    }
    if (m.entries[base + way].expiry_ns <= now_ns) {
      m.report_end(base + way, FlowEndReason::Expired, now_ns);
      ++counters_.expired;
    } else {
      m.report_end(base + way, FlowEndReason::Evicted, now_ns);
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
  m.sigs[base + way] = signature(h);
  ++counters_.inserts;
  std::uint32_t id = 0;
  if (m.counting()) {
    id = m.next_id;
    // 0 means no flow; wrap to the first id before the sum would overflow.
    m.next_id = m.next_id > UINT32_MAX - m.id_stride ? m.id_first : m.next_id + m.id_stride;
    m.stats[base + way] = FlowStats{{1, 0}, {p.length, 0}, id, 0};
  }
  FlowResult r{d, FlowOutcome::New, id};
  r.tag = tag;
  return r;
}

FlowCounters& FlowCounters::operator+=(const FlowCounters& other) {
  hits += other.hits;
  rechecks += other.rechecks;
  inserts += other.inserts;
  denied += other.denied;
  cuts += other.cuts;
  expired += other.expired;
  evicted += other.evicted;
  return *this;
}

}  // namespace tierwall::dataplane::dpdk
