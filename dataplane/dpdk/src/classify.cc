#include "tierwall/dataplane/dpdk/classify.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "huge_array.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tierwall::dataplane::dpdk {
namespace {

constexpr std::uint32_t kNoReq = 0xffffffffU;
constexpr std::size_t kBuckets = 6;  // tcp, udp, sctp, icmp, icmpv6, other
constexpr std::uint8_t kOtherBucket = 5;

constexpr std::uint8_t kCandAny = 0x01;
constexpr std::uint8_t kCandStaged = 0x02;

constexpr std::uint8_t kPairDenyAudited = 0x01;
constexpr std::uint8_t kPairIntraAllow = 0x02;

constexpr std::uint8_t bucket_of(std::uint8_t protocol) {
  switch (protocol) {
    case proto::kTcp:
      return 0;
    case proto::kUdp:
      return 1;
    case proto::kSctp:
      return 2;
    case proto::kIcmp:
      return 3;
    case proto::kIcmpv6:
      return 4;
    default:
      return kOtherBucket;
  }
}

constexpr std::array<std::uint8_t, 256> make_bucket_map() {
  std::array<std::uint8_t, 256> m{};
  for (std::size_t p = 0; p < m.size(); ++p) m[p] = bucket_of(static_cast<std::uint8_t>(p));
  return m;
}
constexpr std::array<std::uint8_t, 256> kBucketMap = make_bucket_map();

// One pre-selected (rule, port match) for a (src class, dst class, bucket):
// what port maps are compiled from, and what the generic scan reads.
struct Candidate {
  RuleId rule = 0;
  std::uint32_t from_req = kNoReq;  // selector id (endpoint class) or world set
  std::uint32_t to_req = kNoReq;
  std::uint16_t lo = 0;
  std::uint16_t hi = 0;
  std::uint8_t protocol = 0;
  std::uint8_t flags = 0;
};

struct Range {
  std::uint32_t begin = 0;
  std::uint32_t mid = 0;  // denies are [begin, mid), flows [mid, end)
  std::uint32_t end = 0;
};

// ------------------------------------------------------------ address hashes

struct Key6 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend auto operator<=>(const Key6&, const Key6&) = default;
  friend bool operator==(const Key6&, const Key6&) = default;
};

// A hash bucket is one cache line of kWays slots, columns per field so the
// keys are compared at once. Slots [0, used) are in use (`valid` has their
// bits); `spill` says a key whose home is this bucket may live in the next
// one (set when a key passed this bucket full), so a lookup reads one line
// unless its bucket spilled.
// A host address's slot has the host class, kUnknownEndpoint and profile 0.
struct alignas(64) Bucket4 {
  static constexpr unsigned kWays = 4;
  std::uint32_t key[kWays] = {};
  EndpointId endpoint[kWays] = {};
  std::uint32_t profile[kWays] = {};  // profile record (Impl::profiles offset)
  std::uint16_t cls[kWays] = {};      // tier, or the host class
  std::uint8_t used = 0;
  std::uint8_t valid = 0;
  std::uint8_t spill = 0;
};
static_assert(sizeof(Bucket4) == 64);

struct alignas(64) Bucket6 {
  static constexpr unsigned kWays = 2;
  Key6 key[kWays];
  EndpointId endpoint[kWays] = {};
  std::uint32_t profile[kWays] = {};
  std::uint16_t cls[kWays] = {};
  std::uint8_t used = 0;
  std::uint8_t valid = 0;
  std::uint8_t spill = 0;
};
static_assert(sizeof(Bucket6) == 64);

// Bit i set: slot i of `b` is in use and holds `k`. No branch.
unsigned match(const Bucket4& b, std::uint32_t k) {
#if defined(__SSE2__)
  const __m128i keys = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.key));
  const __m128i eq = _mm_cmpeq_epi32(keys, _mm_set1_epi32(static_cast<int>(k)));
  const auto m = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(eq)));
#else
  unsigned m = 0;
  for (unsigned i = 0; i < Bucket4::kWays; ++i) m |= static_cast<unsigned>(b.key[i] == k) << i;
#endif
  return m & b.valid;
}

unsigned match(const Bucket6& b, const Key6& k) {
  unsigned m = 0;
  for (unsigned i = 0; i < Bucket6::kWays; ++i) {
    m |= static_cast<unsigned>(((b.key[i].hi ^ k.hi) | (b.key[i].lo ^ k.lo)) == 0) << i;
  }
  return m & b.valid;
}

std::uint32_t key4(const IpAddress& a) {
  return (std::uint32_t{a.bytes[0]} << 24) | (std::uint32_t{a.bytes[1]} << 16) |
         (std::uint32_t{a.bytes[2]} << 8) | std::uint32_t{a.bytes[3]};
}

Key6 key6(const IpAddress& a) {
  Key6 k;
  for (std::size_t i = 0; i < 8; ++i) {
    k.hi = (k.hi << 8) | a.bytes[i];
    k.lo = (k.lo << 8) | a.bytes[i + 8];
  }
  return k;
}

constexpr std::uint64_t kMul = 0x9E3779B97F4A7C15ULL;

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

// IPv4: Fibonacci hashing (the table index is the product's top bits): one
// multiply, and consecutive addresses (as IPAM hands them out) land in
// distinct buckets. Only the table's own keys, not traffic, decide how long
// a bucket's spill chain is.
std::uint64_t hash4(std::uint32_t k) { return std::uint64_t{k} * kMul; }
std::uint64_t hash6(const Key6& k) { return mix(k.hi * kMul ^ std::rotl(k.lo, 29)); }

// Buckets for `n` keys in buckets of `ways` slots: a power of two, at most
// half the slots used.
std::size_t bucket_count(std::size_t n, std::size_t ways) {
  std::size_t slots = 16;
  while (slots < n * 2) slots <<= 1;
  return slots / ways;
}

// Inserts (or, for a key already present, overwrites) `k`; true if new.
// The table is never more than half full, so a bucket with room exists.
template <typename Bucket, typename Key>
bool bucket_put(detail::HugeArray<Bucket>& t, std::uint64_t home, std::uint64_t mask, const Key& k,
                std::uint16_t cls, EndpointId endpoint, std::uint32_t profile) {
  std::uint64_t i = home;
  for (;; i = (i + 1) & mask) {
    const unsigned m = match(t[i], k);
    if (m != 0) break;
    if (t[i].spill == 0) {
      i = ~std::uint64_t{0};
      break;
    }
  }
  bool fresh = false;
  unsigned slot = 0;
  if (i != ~std::uint64_t{0}) {
    slot = static_cast<unsigned>(std::countr_zero(match(t[i], k)));
  } else {
    for (i = home; t[i].used == Bucket::kWays; i = (i + 1) & mask) t[i].spill = 1;
    slot = t[i].used++;
    t[i].valid = static_cast<std::uint8_t>((1U << t[i].used) - 1U);
    fresh = true;
  }
  Bucket& b = t[i];
  b.key[slot] = k;
  b.endpoint[slot] = endpoint;
  b.profile[slot] = profile;
  b.cls[slot] = cls;
  return fresh;
}

// ------------------------------------------------------------ world intervals

// Interval start keys for a family: u32 for IPv4, Key6 for IPv6.
template <typename K>
struct Intervals {
  std::vector<K> starts;            // sorted, starts[0] == 0
  std::vector<std::uint32_t> info;  // world class << 1 | in container CIDR
};

Key6 cidr_first6(const Cidr& c) { return key6(c.base); }
Key6 cidr_last6(const Cidr& c) {
  Key6 k = key6(c.base);
  const unsigned host = 128U - c.prefix;
  if (host >= 64) {
    k.lo = ~0ULL;
    const unsigned h = host - 64;
    k.hi |= h >= 64 ? ~0ULL : (1ULL << h) - 1;
  } else if (host > 0) {
    k.lo |= (1ULL << host) - 1;
  }
  return k;
}
std::uint32_t cidr_first4(const Cidr& c) { return key4(c.base); }
std::uint32_t cidr_last4(const Cidr& c) {
  const unsigned host = 32U - c.prefix;
  if (host >= 32) return 0xffffffffU;
  return key4(c.base) | ((1U << host) - 1U);
}

// Successor of `k`, or false on wrap-around.
bool next_key(std::uint32_t k, std::uint32_t& out) {
  if (k == 0xffffffffU) return false;
  out = k + 1;
  return true;
}
bool next_key(const Key6& k, Key6& out) {
  out = k;
  if (++out.lo != 0) return true;
  if (++out.hi != 0) return true;
  return false;
}

// Index of the last start <= k (starts sorted, starts[0] == 0): a binary
// search without data-dependent branches.
template <typename K>
std::size_t last_at_or_below(const std::vector<K>& starts, const K& k) {
  const K* base = starts.data();
  std::size_t n = starts.size();
  while (n > 1) {
    const std::size_t half = n / 2;
    base = base[half] <= k ? base + half : base;
    n -= half;
  }
  return static_cast<std::size_t>(base - starts.data());
}

// ------------------------------------------------------------ profiles

// Profile records (Impl::profiles), named by PeerClass::profile: the
// record's word offset (a multiple of 4) | its format in the low 2 bits.
//  kShortRecord:  4 words, up to 3 selectors padded with kNoReq;
//  kMediumRecord: 8 words (32-byte aligned), up to 7 selectors + kNoReq;
//  kLongRecord:   the count n, then the n sorted selectors.
// Short and medium records always hold kNoReq (never a real requirement),
// so "no requirement" needs no special case, and their membership test is
// one (two) 4-word compares without a loop or branch. A record never
// straddles a cache line unless it is long. 0 is the empty profile.
constexpr std::uint32_t kShortRecord = 0;
constexpr std::uint32_t kMediumRecord = 1;
constexpr std::uint32_t kLongRecord = 2;
constexpr std::uint32_t kRecordFormat = 3;

// Whether the 4 words at `p` hold `s`.
bool has4(const SelectorId* p, std::uint32_t s) {
#if defined(__SSE2__)
  const __m128i eq = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)),
                                     _mm_set1_epi32(static_cast<int>(s)));
  return _mm_movemask_ps(_mm_castsi128_ps(eq)) != 0;
#else
  return p[0] == s || p[1] == s || p[2] == s || p[3] == s;
#endif
}

// ------------------------------------------------------------ decisions

// How one (pair, bucket) list is decided: 8 bytes of the pair's line.
//  Map:  `value` is the first Unit of a port map of `bounds` boundaries and
//        its programs (a list that depends on no port has 0 boundaries).
//  Scan: `value` indexes Impl::ranges: the generic candidate scan.
// (A list whose answer depends on nothing is a map of one program of one
// entry, shared by all such lists: one branch less than a special case.)
enum : std::uint8_t { kHeadMap = 0, kHeadScan = 1 };
struct Head {
  std::uint32_t value = 0;
  std::uint16_t bounds = 0;
  std::uint8_t mode = kHeadMap;
  std::uint8_t unused = 0;
};
static_assert(sizeof(Head) == 8);

// A (src class, dst class) pair: its six protocol buckets in one line.
struct alignas(64) PairLine {
  std::array<Head, kBuckets> heads{};
  std::uint8_t flags = 0;  // kPairDenyAudited | kPairIntraAllow
};
static_assert(sizeof(PairLine) == 64);

// 16 bytes of a compiled list (Impl::units): a program entry, or 8 packed
// 16-bit lanes of a port map (lane j: bytes 2j, 2j + 1, little-endian).
//
// A port map of B boundaries over G = (B + 8) / 8 lane groups is G units of
// boundaries (sorted, stored as bound ^ 0x8000 so that a signed compare
// orders them, padded with 0xffff ^ 0x8000), G units of actions (interval i
// = [bound i-1, bound i) -> its program, as an entry index after the map),
// then the programs. A program is entries tried in order, each with the
// residual checks of one pre-selected rule (its port is known to match),
// ending with an entry that always matches (the pair's intra-tier allow or
// default deny, or an unconditional rule). A block of at most 4 units never
// straddles a cache line.
struct Unit {
  std::array<std::uint32_t, 4> w{};
  friend bool operator==(const Unit&, const Unit&) = default;
  friend auto operator<=>(const Unit&, const Unit&) = default;
};
static_assert(sizeof(Unit) == 16);

// Program entry words: from_req, to_req, rule id, meta.
// meta: verdict | kind << 8 | entry flags << 16.
constexpr std::uint32_t kEntryDeny = 1U << 16;   // a deny: tagged sides count as met
constexpr std::uint32_t kEntryStage = 2U << 16;  // a staged deny: remembered, decides nothing

Unit entry(std::uint32_t from_req, std::uint32_t to_req, RuleId rule, Verdict v, RuleKind k,
           std::uint32_t flags) {
  Unit u;
  u.w = {from_req, to_req, rule,
         static_cast<std::uint32_t>(v) | (static_cast<std::uint32_t>(k) << 8) | flags};
  return u;
}

constexpr std::uint16_t kLaneFlip = 0x8000;

// Lane j of the units at `u`, as stored.
std::uint16_t lane(const Unit* u, std::uint32_t j) {
  std::uint16_t v = 0;
  std::memcpy(&v, reinterpret_cast<const unsigned char*>(u) + 2 * std::size_t{j}, sizeof v);
  return v;
}

// Two bits per lane of boundary unit `u`: set where the boundary is above
// the port (`flipped` = port ^ kLaneFlip). No branch.
std::uint32_t above_mask(const Unit& u, std::uint16_t flipped) {
#if defined(__SSE2__)
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u.w.data()));
  const __m128i gt = _mm_cmpgt_epi16(b, _mm_set1_epi16(static_cast<short>(flipped)));
  return static_cast<std::uint32_t>(_mm_movemask_epi8(gt));
#else
  std::uint32_t m = 0;
  for (std::uint32_t j = 0; j < 8; ++j) {
    const auto b = static_cast<std::int16_t>(lane(&u, j));
    if (b > static_cast<std::int16_t>(flipped)) m |= 3U << (2 * j);
  }
  return m;
#endif
}

// Port maps of more than this many lane groups are searched by bisection.
constexpr std::uint32_t kLinearGroups = 4;

}  // namespace

struct Generation::Impl {
  detail::HugeArray<Bucket4> v4;
  std::uint64_t v4_mask = 0;
  unsigned v4_shift = 0;
  detail::HugeArray<Bucket6> v6;
  std::uint64_t v6_mask = 0;
  unsigned v6_shift = 0;

  detail::HugeArray<SelectorId> profiles;  // profile records, see kShortRecord

  Intervals<std::uint32_t> iv4;
  Intervals<Key6> iv6;
  std::size_t world_words = 0;  // 64-bit words per world class bitmap
  std::vector<std::uint64_t> world_bits;

  std::uint32_t tiers = 0;
  std::uint32_t classes = 0;          // tiers + host + world
  detail::HugeArray<PairLine> pairs;  // src class * classes + dst class
  detail::HugeArray<Unit> units;      // port maps and programs
  std::vector<Range> ranges;          // Scan lists
  std::vector<Candidate> candidates;  // Scan lists' entries

  [[nodiscard]] std::uint32_t host_class() const { return tiers; }
  [[nodiscard]] std::uint32_t world_class() const { return tiers + 1; }

  // Whether the profile record `profile` has selector `s`; kNoReq (no
  // requirement) is in every profile.
  [[nodiscard]] bool profile_has(std::uint32_t profile, std::uint32_t s) const {
    if ((profile & kRecordFormat) == kShortRecord) [[likely]]
      return has4(&profiles[profile], s);
    return wide_profile_has(profile, s);
  }
  // profile_has() for medium and long records (off the usual path).
  [[gnu::noinline]] bool wide_profile_has(std::uint32_t profile, std::uint32_t s) const {
    const SelectorId* p = &profiles[profile & ~kRecordFormat];
    if ((profile & kRecordFormat) == kMediumRecord) return has4(p, s) || has4(p + 4, s);
    return s == kNoReq || std::binary_search(p + 1, p + 1 + p[0], s);
  }

  // Whether world class `world_class_id` is in world set `set` (kNoReq: yes).
  [[gnu::noinline]] bool world_has(std::uint32_t world_class_id, std::uint32_t set) const {
    if (set == kNoReq) return true;
    const std::uint64_t w = world_bits[world_class_id * world_words + (set >> 6)];
    return ((w >> (set & 63U)) & 1U) != 0;
  }

  // Whether peer `p` meets requirement `req` (a selector for an endpoint,
  // a world set for a world peer). `Tagged`: a side may have an unknown
  // profile; its selector check then counts as met for denies (`deny`) and
  // unmet for flows (fail closed).
  template <bool Tagged>
  [[nodiscard]] bool side_ok(std::uint32_t req, const PeerClass& p, bool deny) const {
    if (p.entity == PeerMatch::Entity::World) [[unlikely]]
      return world_has(p.world_class, req);
    if constexpr (Tagged) {
      if (req == kNoReq) return true;
      if (p.unknown_profile) return deny;
    }
    return profile_has(p.profile, req);
  }

  template <bool Tagged>
  [[nodiscard]] bool matches(const Candidate& c, const PeerClass& s, const PeerClass& d,
                             std::uint8_t protocol, std::uint16_t port, bool deny) const {
    if ((c.flags & kCandAny) == 0 && (c.protocol != protocol || port < c.lo || port > c.hi)) {
      return false;
    }
    return side_ok<Tagged>(c.from_req, s, deny) && side_ok<Tagged>(c.to_req, d, deny);
  }

  // The program of the port interval holding `port` in the map at `h`.
  [[nodiscard, gnu::always_inline]] inline const Unit* map_program(const Head& h,
                                                                   std::uint16_t port) const;
  // map_program()'s interval index for maps of more than two lane groups.
  static std::uint32_t wide_map_index(const Unit* b, std::uint32_t bounds, std::uint32_t groups,
                                      std::uint16_t flipped);
  template <bool Tagged>
  [[gnu::always_inline]] inline FastDecision run(const Unit* e, const PeerClass& s,
                                                 const PeerClass& d) const;
  // The generic path, off the hot one.
  template <bool Tagged>
  [[gnu::noinline]] FastDecision scan(const Range& r, std::uint8_t flags, const PeerClass& s,
                                      const PeerClass& d, std::uint8_t protocol,
                                      std::uint16_t port) const;
  template <bool Tagged>
  [[gnu::always_inline]] inline FastDecision decide(const PeerClass& s, const PeerClass& d,
                                                    std::uint8_t protocol,
                                                    std::uint16_t port) const;
  [[gnu::noinline]] FastDecision decide_tagged(const PeerClass& s, const PeerClass& d,
                                               std::uint8_t protocol, std::uint16_t port) const {
    return decide<true>(s, d, protocol, port);
  }

  // Every address (Generation::resolve() has the usual case inline).
  [[gnu::noinline]] PeerClass resolve(const IpAddress& a) const;
  // resolve() in one family: the buckets from `home` while they spill, else
  // the address interval holding `k`.
  template <typename Bucket, typename K>
  PeerClass find(const detail::HugeArray<Bucket>& table, std::uint64_t home, std::uint64_t mask,
                 const K& k, const Intervals<K>& iv) const;
  // The PeerClass of slot `i` of a matched bucket (v4 or v6): host or endpoint.
  template <typename Bucket>
  PeerClass from_slot(const Bucket& b, unsigned i) const;
  // The PeerClass of an address that is neither endpoint nor host.
  PeerClass from_interval(std::uint32_t info) const;
};

Generation::Generation(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Generation::~Generation() = default;

template <typename Bucket>
PeerClass Generation::Impl::from_slot(const Bucket& b, unsigned i) const {
  PeerClass p;
  p.cls = b.cls[i];
  p.entity = p.cls == host_class() ? PeerMatch::Entity::Host : PeerMatch::Entity::Endpoint;
  p.endpoint = b.endpoint[i];
  p.profile = b.profile[i];
  return p;
}

PeerClass Generation::Impl::from_interval(std::uint32_t info) const {
  PeerClass p;
  if ((info & 1U) != 0) {
    // Fail closed, as resolve(): an unknown address in a container network
    // is a quarantined endpoint with no identity and no selectors.
    p.entity = PeerMatch::Entity::Endpoint;
    p.cls = kQuarantineTier;
    p.profile = 0;
  } else {
    p.entity = PeerMatch::Entity::World;
    p.cls = static_cast<std::uint16_t>(world_class());
    p.world_class = info >> 1;
  }
  return p;
}

template <typename Bucket, typename K>
PeerClass Generation::Impl::find(const detail::HugeArray<Bucket>& table, std::uint64_t home,
                                 std::uint64_t mask, const K& k, const Intervals<K>& iv) const {
  for (std::uint64_t i = home;; i = (i + 1) & mask) {
    const Bucket& b = table[i];
    const unsigned m = match(b, k);
    if (m != 0) [[likely]]
      return from_slot(b, static_cast<unsigned>(std::countr_zero(m)));
    if (b.spill == 0) break;
  }
  return from_interval(iv.info[last_at_or_below(iv.starts, k)]);
}

PeerClass Generation::Impl::resolve(const IpAddress& a) const {
  if (a.is_v4()) {
    const std::uint32_t k = key4(a);
    return find(v4, hash4(k) >> v4_shift, v4_mask, k, iv4);
  }
  const Key6 k = key6(a);
  return find(v6, hash6(k) >> v6_shift, v6_mask, k, iv6);
}

PeerClass Generation::resolve(const IpAddress& a) const {
  // The usual case inline: an IPv4 endpoint in its home bucket.
  const Impl& m = *impl_;
  if (a.is_v4()) [[likely]] {
    const std::uint32_t k = key4(a);
    const Bucket4& b = m.v4[hash4(k) >> m.v4_shift];
    const unsigned hit = match(b, k);
    if (hit != 0) [[likely]]
      return m.from_slot(b, static_cast<unsigned>(std::countr_zero(hit)));
  }
  return m.resolve(a);
}

void Generation::prefetch(const IpAddress& a) const {
  const Impl& m = *impl_;
  if (a.is_v4()) {
    __builtin_prefetch(&m.v4[hash4(key4(a)) >> m.v4_shift]);
  } else {
    __builtin_prefetch(&m.v6[hash6(key6(a)) >> m.v6_shift]);
  }
}

void Generation::prefetch_pair(const PeerClass& s, const PeerClass& d,
                               std::uint8_t /*protocol*/) const {
  const Impl& m = *impl_;
  __builtin_prefetch(&m.pairs[std::size_t{s.cls} * m.classes + d.cls]);
  __builtin_prefetch(&m.profiles[s.profile]);
  __builtin_prefetch(&m.profiles[d.profile]);
}

void Generation::prefetch_candidates(const PeerClass& s, const PeerClass& d,
                                     std::uint8_t protocol) const {
  const Impl& m = *impl_;
  const Head& h = m.pairs[std::size_t{s.cls} * m.classes + d.cls].heads[kBucketMap[protocol]];
  if (h.mode == kHeadScan) [[unlikely]] {
    const Range& r = m.ranges[h.value];
    if (r.begin != r.end) __builtin_prefetch(&m.candidates[r.begin]);
    return;
  }
  // The map block's first line (a block of <= 4 units is all there) and
  // the next.
  const std::size_t at = h.value;
  __builtin_prefetch(&m.units[at]);
  __builtin_prefetch(&m.units[at + 4]);
}

const Unit* Generation::Impl::map_program(const Head& h, std::uint16_t port) const {
  const Unit* b = &units[h.value];
  const std::uint32_t groups = (std::uint32_t{h.bounds} + 8U) / 8U;
  const auto flipped = static_cast<std::uint16_t>(port ^ kLaneFlip);
  // Boundaries <= port: the interval's index, the first boundary above the
  // port (sorted). Maps of one or two groups (the usual) take no branch:
  // b[1] exists either way (the actions of a one-group map, then masked).
  const std::uint32_t second = above_mask(b[1], flipped);
  const std::uint64_t above = above_mask(b[0], flipped) |
                              (std::uint64_t{groups >= 2 ? second : 0xffffU} << 16) |
                              (std::uint64_t{1} << 32);
  std::uint32_t below = static_cast<std::uint32_t>(std::countr_zero(above)) / 2;
  if (groups > 2) [[unlikely]]
    below = wide_map_index(b, h.bounds, groups, flipped);
  // Padding lanes count only for port 65535, where every real boundary
  // does too.
  below = std::min<std::uint32_t>(below, h.bounds);
  return b + 2 * groups + lane(b + groups, below);
}

std::uint32_t Generation::Impl::wide_map_index(const Unit* b, std::uint32_t bounds,
                                               std::uint32_t groups, std::uint16_t flipped) {
  if (groups <= kLinearGroups) {
    for (std::uint32_t g = 0; g < groups; ++g) {
      const std::uint32_t above = above_mask(b[g], flipped);
      if (above != 0) return 8 * g + static_cast<std::uint32_t>(std::countr_zero(above)) / 2;
    }
    return bounds;
  }
  std::uint32_t below = 0;
  for (std::uint32_t n = bounds; n > 0;) {
    const std::uint32_t half = n / 2;
    if (static_cast<std::int16_t>(lane(b, below + half)) <= static_cast<std::int16_t>(flipped)) {
      below += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return below;
}

template <bool Tagged>
FastDecision Generation::Impl::run(const Unit* e, const PeerClass& s, const PeerClass& d) const {
  RuleId staged = 0;
  for (;; ++e) {
    const std::uint32_t meta = e->w[3];
    const bool deny = (meta & kEntryDeny) != 0;
    const bool from_ok = side_ok<Tagged>(e->w[0], s, deny);
    const bool to_ok = side_ok<Tagged>(e->w[1], d, deny);
    if (!(from_ok & to_ok)) continue;
    if ((meta & kEntryStage) != 0) [[unlikely]] {
      if (staged == 0) staged = e->w[2];
      continue;
    }
    const auto v = static_cast<Verdict>(meta & 0xffU);
    if (staged != 0 && v == Verdict::Allow) [[unlikely]] {
      return FastDecision{Verdict::Audit, RuleKind::Deny, staged};
    }
    return FastDecision{v, static_cast<RuleKind>((meta >> 8) & 0xffU), e->w[2]};
  }
}

template <bool Tagged>
FastDecision Generation::Impl::scan(const Range& r, std::uint8_t flags, const PeerClass& s,
                                    const PeerClass& d, std::uint8_t protocol,
                                    std::uint16_t port) const {
  const Candidate* c = candidates.data();
  RuleId staged = 0;
  for (std::uint32_t i = r.begin; i < r.mid; ++i) {
    if (!matches<Tagged>(c[i], s, d, protocol, port, true)) continue;
    if ((c[i].flags & kCandStaged) != 0) {
      if (staged == 0) staged = c[i].rule;
      continue;
    }
    const Verdict v = (flags & kPairDenyAudited) != 0 ? Verdict::Audit : Verdict::Deny;
    return FastDecision{v, RuleKind::Deny, c[i].rule};
  }
  FastDecision allow{Verdict::Deny, RuleKind::DefaultDeny, kRuleDefaultDeny};
  bool allowed = false;
  for (std::uint32_t i = r.mid; i < r.end; ++i) {
    if (matches<Tagged>(c[i], s, d, protocol, port, false)) {
      allow = FastDecision{Verdict::Allow, RuleKind::Flow, c[i].rule};
      allowed = true;
      break;
    }
  }
  if (!allowed && (flags & kPairIntraAllow) != 0) {
    allow = FastDecision{Verdict::Allow, RuleKind::IntraTier, kRuleIntraTier};
    allowed = true;
  }
  if (allowed) {
    if (staged != 0) return FastDecision{Verdict::Audit, RuleKind::Deny, staged};
    return allow;
  }
  const Verdict v = (flags & kPairDenyAudited) != 0 ? Verdict::Audit : Verdict::Deny;
  return FastDecision{v, RuleKind::DefaultDeny, kRuleDefaultDeny};
}

template <bool Tagged>
FastDecision Generation::Impl::decide(const PeerClass& s, const PeerClass& d, std::uint8_t protocol,
                                      std::uint16_t port) const {
  using E = PeerMatch::Entity;
  if (s.endpoint == d.endpoint && s.endpoint != kUnknownEndpoint && s.entity == E::Endpoint &&
      d.entity == E::Endpoint) [[unlikely]] {
    return FastDecision{Verdict::Allow, RuleKind::Self, kRuleSelf};
  }
  const PairLine& pl = pairs[std::size_t{s.cls} * classes + d.cls];
  const Head h = pl.heads[kBucketMap[protocol]];
  if (h.mode == kHeadScan) [[unlikely]] {
    return scan<Tagged>(ranges[h.value], pl.flags, s, d, protocol, port);
  }
  return run<Tagged>(map_program(h, port), s, d);
}

FastDecision Generation::decide(const PeerClass& s, const PeerClass& d, std::uint8_t protocol,
                                std::uint16_t port) const {
  // One well-predicted branch keeps the exact path free of the tagged checks.
  if (s.unknown_profile || d.unknown_profile) [[unlikely]] {
    return impl_->decide_tagged(s, d, protocol, port);
  }
  return impl_->decide<false>(s, d, protocol, port);
}

PeerClass Generation::tagged_peer(TierId tier) const {
  PeerClass p;
  p.entity = PeerMatch::Entity::Endpoint;
  p.cls = tier;
  p.endpoint = kUnknownEndpoint;
  p.profile = 0;
  p.unknown_profile = true;
  return p;
}

std::size_t Generation::tier_count() const { return impl_->tiers; }

TagCheck Generation::check_tag(const PeerClass& resolved, std::uint16_t tag,
                               PeerClass& decided) const {
  if (tag == 0 || tag - 1U >= impl_->tiers) return TagCheck::UnknownTag;
  const auto tier = static_cast<TierId>(tag - 1U);
  if (resolved.entity == PeerMatch::Entity::Host) return TagCheck::Spoofed;
  if (resolved.entity == PeerMatch::Entity::Endpoint && resolved.endpoint != kUnknownEndpoint) {
    if (resolved.cls != tier) return TagCheck::Spoofed;
    decided = resolved;  // the full identity, selectors included
    return TagCheck::ByAddress;
  }
  decided = tagged_peer(tier);
  return TagCheck::ByTag;
}

FastDecision Generation::classify(const IpAddress& src, const IpAddress& dst, std::uint8_t protocol,
                                  std::uint16_t port) const {
  return decide(resolve(src), resolve(dst), protocol, port);
}

namespace {

// Builds the elementary intervals of one family.
template <typename K, typename First, typename Last>
void build_intervals(Intervals<K>& out, const std::vector<Cidr>& container,
                     const std::vector<std::vector<Cidr>>& world_sets, IpAddress::Family family,
                     First first, Last last, std::vector<std::vector<std::uint64_t>>& bitmaps,
                     std::map<std::vector<std::uint64_t>, std::uint32_t>& interned,
                     std::size_t words) {
  std::vector<K> bounds{K{}};
  auto add_bounds = [&](const Cidr& c) {
    if (c.base.family != family) return;
    bounds.push_back(first(c));
    K n{};
    if (next_key(last(c), n)) bounds.push_back(n);
  };
  for (const Cidr& c : container) add_bounds(c);
  for (const auto& set : world_sets) {
    for (const Cidr& c : set) add_bounds(c);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  const std::size_t n = bounds.size();
  std::vector<std::vector<std::uint64_t>> bits(n, std::vector<std::uint64_t>(words, 0));
  std::vector<std::uint8_t> in_container(n, 0);
  // Intervals [lo_index, hi_index) covered by a prefix.
  auto cover = [&](const Cidr& c, auto&& fn) {
    const auto lo = std::lower_bound(bounds.begin(), bounds.end(), first(c)) - bounds.begin();
    K nx{};
    const auto hi = next_key(last(c), nx)
                        ? std::lower_bound(bounds.begin(), bounds.end(), nx) - bounds.begin()
                        : static_cast<std::ptrdiff_t>(n);
    for (auto i = lo; i < hi; ++i) fn(static_cast<std::size_t>(i));
  };
  for (const Cidr& c : container) {
    if (c.base.family != family) continue;
    cover(c, [&](std::size_t i) { in_container[i] = 1; });
  }
  for (std::size_t w = 0; w < world_sets.size(); ++w) {
    for (const Cidr& c : world_sets[w]) {
      if (c.base.family != family) continue;
      cover(c, [&](std::size_t i) { bits[i][w >> 6] |= 1ULL << (w & 63U); });
    }
  }
  out.starts.clear();
  out.info.clear();
  for (std::size_t i = 0; i < n; ++i) {
    auto [it, fresh] = interned.emplace(bits[i], static_cast<std::uint32_t>(bitmaps.size()));
    if (fresh) bitmaps.push_back(bits[i]);
    const std::uint32_t info = (it->second << 1) | in_container[i];
    // Merge neighbours with the same answer: fewer probes.
    if (!out.info.empty() && out.info.back() == info) continue;
    out.starts.push_back(bounds[i]);
    out.info.push_back(info);
  }
}

// Compiles each (pair, bucket) list of pre-selected candidates into its
// Head: a port Map over Units (identical blocks shared); the "other" bucket
// (several protocols) and lists past the budget are Scanned.
class ListCompiler {
 public:
  explicit ListCompiler(std::uint32_t units_per_candidate) : per_candidate_(units_per_candidate) {}

  std::vector<Unit> units;
  std::vector<Range> ranges;
  std::vector<Candidate> candidates;

  // Cost: O(n log n + the entries of the interval programs), the latter
  // bounded by the budget: a list whose programs outgrow it is scanned.
  // Lists alike (a rule naming every tier lands in every pair) are
  // compiled once.
  Head compile(const std::vector<Candidate>& denies, const std::vector<Candidate>& flows,
               std::uint8_t pair_flags, bool other_bucket) {
    std::vector<std::uint32_t> key{pair_flags, other_bucket ? 1U : 0U,
                                   static_cast<std::uint32_t>(denies.size())};
    for (const auto* list : {&denies, &flows}) {
      for (const Candidate& c : *list) {
        key.insert(key.end(), {c.rule, c.from_req, c.to_req, (std::uint32_t{c.lo} << 16) | c.hi,
                               (std::uint32_t{c.protocol} << 8) | c.flags});
      }
    }
    const auto [it, fresh] = compiled_.emplace(std::move(key), Head{});
    if (fresh) it->second = compile_once(denies, flows, pair_flags, other_bucket);
    return it->second;
  }

 private:
  Head compile_once(const std::vector<Candidate>& denies, const std::vector<Candidate>& flows,
                    std::uint8_t pair_flags, bool other_bucket) {
    if (other_bucket || per_candidate_ == 0) return scan(denies, flows);
    // Candidates in decision order (denies, then flows) and where each
    // starts and stops covering ports: elementary port intervals are the
    // spans between consecutive event ports.
    std::vector<const Candidate*> all;
    for (const auto* list : {&denies, &flows}) {
      for (const Candidate& c : *list) all.push_back(&c);
    }
    struct Event {
      std::uint32_t port;
      std::uint32_t index;
      bool add;
    };
    std::vector<Event> events;
    std::set<std::uint32_t> active;  // indices into `all` covering the interval
    for (std::uint32_t i = 0; i < all.size(); ++i) {
      const Candidate& c = *all[i];
      if ((c.flags & kCandAny) != 0) {
        active.insert(i);
      } else if (c.lo <= c.hi) {  // an empty range matches nothing
        events.push_back({c.lo, i, true});
        if (c.hi < 0xffffU) events.push_back({c.hi + 1U, i, false});
      }
    }
    std::sort(events.begin(), events.end(),
              [](const Event& x, const Event& y) { return x.port < y.port; });
    // Each interval's program; neighbours with the same program merge.
    const std::size_t limit = 4 * budget(denies, flows);
    std::size_t work = 0;
    std::vector<std::uint32_t> bounds;
    std::vector<std::vector<Unit>> programs;
    std::size_t e = 0;
    for (std::uint32_t start = 0;;) {
      for (; e < events.size() && events[e].port == start; ++e) {
        if (events[e].add) {
          active.insert(events[e].index);
        } else {
          active.erase(events[e].index);
        }
      }
      std::vector<Unit> p = program(all, denies.size(), active, pair_flags);
      work += p.size();
      if (work > limit) return scan(denies, flows);
      if (programs.empty() || programs.back() != p) {
        if (!programs.empty()) bounds.push_back(start);
        programs.push_back(std::move(p));
      }
      if (e == events.size()) break;
      start = events[e].port;
    }
    return map(bounds, programs, denies, flows);
  }

  std::uint32_t per_candidate_;
  std::map<std::vector<std::uint32_t>, Head> compiled_;  // list -> its head
  std::map<std::vector<Unit>, std::uint32_t> blocks_;    // block -> its first unit

  // The most units a list of these candidates may compile into.
  [[nodiscard]] std::size_t budget(const std::vector<Candidate>& denies,
                                   const std::vector<Candidate>& flows) const {
    const std::size_t n = denies.size() + flows.size();
    return std::min<std::size_t>(std::size_t{per_candidate_} * n + 16, 0xffffU);
  }

  // The entries deciding a packet whose port the `active` candidates (of
  // `all`, the first `denies` of them denies) cover.
  static std::vector<Unit> program(const std::vector<const Candidate*>& all, std::size_t denies,
                                   const std::set<std::uint32_t>& active, std::uint8_t pair_flags) {
    const bool audited = (pair_flags & kPairDenyAudited) != 0;
    const Verdict deny_verdict = audited ? Verdict::Audit : Verdict::Deny;
    std::vector<Unit> p;
    for (const std::uint32_t i : active) {
      const Candidate& c = *all[i];
      // Entries of one rule are adjacent in a list (one per port match):
      // the second of a rule covering this interval decides nothing new.
      if (!p.empty() && p.back().w[2] == c.rule) continue;
      const bool unconditional = c.from_req == kNoReq && c.to_req == kNoReq;
      if (i < denies) {
        const bool staged = (c.flags & kCandStaged) != 0;
        p.push_back(entry(c.from_req, c.to_req, c.rule, deny_verdict, RuleKind::Deny,
                          kEntryDeny | (staged ? kEntryStage : 0U)));
        if (!staged && unconditional) return p;
      } else {
        p.push_back(entry(c.from_req, c.to_req, c.rule, Verdict::Allow, RuleKind::Flow, 0));
        if (unconditional) return p;
      }
    }
    if ((pair_flags & kPairIntraAllow) != 0) {
      p.push_back(entry(kNoReq, kNoReq, kRuleIntraTier, Verdict::Allow, RuleKind::IntraTier, 0));
    } else {
      p.push_back(entry(kNoReq, kNoReq, kRuleDefaultDeny, deny_verdict, RuleKind::DefaultDeny, 0));
    }
    return p;
  }

  // Where a block of `size` units goes: one of at most 4 units never
  // straddles a cache line, a larger one starts a line.
  std::uint32_t place(std::size_t size) {
    std::size_t at = units.size();
    const std::size_t in_line = at % 4;
    if (in_line != 0 && (size > 4 || in_line + size > 4)) at += 4 - in_line;
    units.resize(at);
    return static_cast<std::uint32_t>(at);
  }

  static void set_lane(Unit* u, std::uint32_t j, std::uint32_t v) {
    const auto x = static_cast<std::uint16_t>(v);
    std::memcpy(reinterpret_cast<unsigned char*>(u) + 2 * std::size_t{j}, &x, sizeof x);
  }

  Head map(const std::vector<std::uint32_t>& bounds, const std::vector<std::vector<Unit>>& programs,
           const std::vector<Candidate>& denies, const std::vector<Candidate>& flows) {
    // Each distinct program once, in first-use order.
    std::map<std::vector<Unit>, std::uint32_t> index;
    std::vector<Unit> area;
    std::vector<std::uint32_t> action;
    for (const auto& p : programs) {
      const auto [it, fresh] = index.emplace(p, static_cast<std::uint32_t>(area.size()));
      if (fresh) area.insert(area.end(), p.begin(), p.end());
      action.push_back(it->second);
    }
    const auto nb = static_cast<std::uint32_t>(bounds.size());
    const std::uint32_t groups = (nb + 8U) / 8U;
    if (2 * std::size_t{groups} + area.size() > budget(denies, flows)) return scan(denies, flows);
    std::vector<Unit> block(2 * std::size_t{groups});
    for (std::uint32_t j = 0; j < 8 * groups; ++j) {
      set_lane(block.data(), j, (j < nb ? bounds[j] : 0xffffU) ^ kLaneFlip);
      set_lane(block.data() + groups, j, j < action.size() ? action[j] : 0U);
    }
    block.insert(block.end(), area.begin(), area.end());
    // Lists alike (a rule naming several tiers, or no rule: the pair's
    // fallback alone) share one block.
    const auto [it, fresh] = blocks_.emplace(block, 0);
    if (fresh) {
      it->second = place(block.size());
      units.insert(units.end(), block.begin(), block.end());
    }
    return Head{it->second, static_cast<std::uint16_t>(nb), kHeadMap, 0};
  }

  Head scan(const std::vector<Candidate>& denies, const std::vector<Candidate>& flows) {
    Range r;
    r.begin = static_cast<std::uint32_t>(candidates.size());
    candidates.insert(candidates.end(), denies.begin(), denies.end());
    r.mid = static_cast<std::uint32_t>(candidates.size());
    candidates.insert(candidates.end(), flows.begin(), flows.end());
    r.end = static_cast<std::uint32_t>(candidates.size());
    ranges.push_back(r);
    return Head{static_cast<std::uint32_t>(ranges.size() - 1), 0, kHeadScan, 0};
  }
};

}  // namespace

BuildResult build_generation(const RuleSet& rules, const GenerationOptions& options) {
  if (!rules.policy || !rules.endpoints) return {nullptr, "ruleset without policy or endpoints"};
  const CompiledPolicy& pol = *rules.policy;
  const EndpointTable& table = *rules.endpoints;
  auto m = std::make_unique<Generation::Impl>();
  if (pol.tiers.empty() || pol.tiers.size() > 0xfffeU) return {nullptr, "bad tier count"};
  m->tiers = static_cast<std::uint32_t>(pol.tiers.size());
  m->classes = m->tiers + 2;

  // Profiles: table profile index -> my record offset (0: the empty profile).
  std::vector<std::uint32_t> profile_map(table.profile_count() + 1, kNoReq);
  std::vector<SelectorId> records(4, kNoReq);
  auto add_record = [&](std::vector<std::uint32_t> members) {
    std::sort(members.begin(), members.end());
    auto pad_to = [&](std::size_t words) {
      records.resize((records.size() + words - 1) / words * words, kNoReq);
    };
    const std::size_t n = members.size();
    const std::size_t words = n <= 3 ? 4 : n <= 7 ? 8 : 4;
    pad_to(words);
    const auto at = static_cast<std::uint32_t>(records.size());
    if (n > 7) records.push_back(static_cast<std::uint32_t>(n));
    records.insert(records.end(), members.begin(), members.end());
    if (n <= 7) records.push_back(kNoReq);
    pad_to(words);
    return at | (n <= 3 ? kShortRecord : n <= 7 ? kMediumRecord : kLongRecord);
  };
  std::string error;
  std::size_t n4 = 0;
  std::size_t n6 = 0;
  table.for_each_address([&](const IpAddress& a, EndpointId, const EndpointEntry& e) {
    (a.is_v4() ? n4 : n6) += 1;
    if (e.tier >= m->tiers) error = "endpoint in unknown tier " + std::to_string(e.tier);
    if (e.profile >= profile_map.size()) profile_map.resize(e.profile + 1U, kNoReq);
    if (profile_map[e.profile] != kNoReq) return;
    const auto sel = table.selectors(e);
    if (sel.empty()) {
      profile_map[e.profile] = 0;
      return;
    }
    profile_map[e.profile] = add_record(std::vector<SelectorId>(sel.begin(), sel.end()));
  });
  if (!error.empty()) return {nullptr, error};
  m->profiles = detail::HugeArray<SelectorId>(records.size());
  std::copy(records.begin(), records.end(), m->profiles.begin());
  for (const auto& a : table.node_addresses()) (a.is_v4() ? n4 : n6) += 1;

  // Address hashes: node addresses first, endpoints overwrite (resolve()
  // prefers the endpoint).
  m->v4 = detail::HugeArray<Bucket4>(bucket_count(n4, Bucket4::kWays));
  m->v4_mask = m->v4.size() - 1;
  m->v4_shift = static_cast<unsigned>(64 - std::countr_zero(m->v4.size()));
  m->v6 = detail::HugeArray<Bucket6>(bucket_count(n6, Bucket6::kWays));
  m->v6_mask = m->v6.size() - 1;
  m->v6_shift = static_cast<unsigned>(64 - std::countr_zero(m->v6.size()));
  std::size_t keys = 0;
  auto put = [&](const IpAddress& a, std::uint32_t cls, EndpointId id, std::uint32_t profile) {
    const auto c = static_cast<std::uint16_t>(cls);
    if (a.is_v4()) {
      const std::uint32_t k = key4(a);
      keys += bucket_put(m->v4, hash4(k) >> m->v4_shift, m->v4_mask, k, c, id, profile) ? 1U : 0U;
    } else {
      const Key6 k = key6(a);
      keys += bucket_put(m->v6, hash6(k) >> m->v6_shift, m->v6_mask, k, c, id, profile) ? 1U : 0U;
    }
  };
  for (const auto& a : table.node_addresses()) put(a, m->host_class(), kUnknownEndpoint, 0);
  table.for_each_address([&](const IpAddress& a, EndpointId id, const EndpointEntry& e) {
    put(a, e.tier, id, profile_map[e.profile]);
  });
  // World sets: one per distinct CIDR list of a world peer in a rule.
  std::map<std::vector<Cidr>, std::uint32_t> world_index;
  std::vector<std::vector<Cidr>> world_sets;
  auto world_set = [&](const PeerMatch& p) {
    auto [it, fresh] = world_index.emplace(p.cidrs, static_cast<std::uint32_t>(world_sets.size()));
    if (fresh) world_sets.push_back(p.cidrs);
    return it->second;
  };
  for (const auto* list : {&pol.denies, &pol.flows}) {
    for (const Rule& r : *list) {
      for (const PeerMatch* p : {&r.from, &r.to}) {
        if (p->entity == PeerMatch::Entity::World && !p->cidrs.empty()) world_set(*p);
        for (TierId t : p->tiers) {
          if (t >= m->tiers)
            return {nullptr, "rule " + std::to_string(r.id) + " names tier " + std::to_string(t)};
        }
      }
    }
  }
  m->world_words = std::max<std::size_t>(1, (world_sets.size() + 63) / 64);
  std::vector<std::vector<std::uint64_t>> bitmaps;
  std::map<std::vector<std::uint64_t>, std::uint32_t> interned;
  build_intervals<std::uint32_t>(m->iv4, table.container_cidrs(), world_sets, IpAddress::Family::V4,
                                 cidr_first4, cidr_last4, bitmaps, interned, m->world_words);
  build_intervals<Key6>(m->iv6, table.container_cidrs(), world_sets, IpAddress::Family::V6,
                        cidr_first6, cidr_last6, bitmaps, interned, m->world_words);
  for (const auto& b : bitmaps) m->world_bits.insert(m->world_bits.end(), b.begin(), b.end());

  // Per (pair, bucket) candidate lists, denies then flows, in policy order.
  const std::size_t pairs = std::size_t{m->classes} * m->classes;
  const std::size_t lists = pairs * kBuckets;
  std::vector<std::vector<Candidate>> denies(lists);
  std::vector<std::vector<Candidate>> flows(lists);
  std::vector<std::uint8_t> closed(lists, 0);  // 1: no more flows, 2: nothing more
  // The classes a peer can be, with the residual check for each.
  auto side = [&](const PeerMatch& p, std::vector<std::pair<std::uint32_t, std::uint32_t>>& out) {
    out.clear();
    switch (p.entity) {
      case PeerMatch::Entity::Host:
        out.emplace_back(m->host_class(), kNoReq);
        break;
      case PeerMatch::Entity::World:
        if (!p.cidrs.empty()) out.emplace_back(m->world_class(), world_set(p));
        break;
      case PeerMatch::Entity::Endpoint: {
        const std::uint32_t req = p.selector ? *p.selector : kNoReq;
        if (p.tiers.empty()) {
          for (std::uint32_t t = 0; t < m->tiers; ++t) out.emplace_back(t, req);
        } else {
          for (TierId t : p.tiers) out.emplace_back(t, req);
        }
        break;
      }
    }
  };
  std::vector<std::pair<std::uint32_t, std::uint32_t>> from_classes;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> to_classes;
  auto add_rule = [&](const Rule& r, bool is_deny) {
    side(r.from, from_classes);
    side(r.to, to_classes);
    for (const auto& [fc, freq] : from_classes) {
      for (const auto& [tc, treq] : to_classes) {
        const std::size_t pair = std::size_t{fc} * m->classes + tc;
        for (const PortMatch& pm : r.ports) {
          Candidate c;
          c.rule = r.id;
          c.from_req = freq;
          c.to_req = treq;
          c.protocol = pm.protocol;
          c.lo = pm.any ? 0 : pm.lo;
          c.hi = pm.any ? 0xffff : pm.hi;
          c.flags = static_cast<std::uint8_t>((pm.any ? kCandAny : 0) |
                                              (is_deny && r.staged ? kCandStaged : 0));
          for (std::size_t b = 0; b < kBuckets; ++b) {
            if (!pm.any && b != bucket_of(pm.protocol)) continue;
            const std::size_t li = pair * kBuckets + b;
            if (closed[li] == 2 || (!is_deny && closed[li] == 1)) continue;
            (is_deny ? denies : flows)[li].push_back(c);
            // Entries after an unconditional one covering the whole bucket
            // can never decide: stop adding them.
            const bool whole = pm.any || (b != kOtherBucket && c.lo == 0 && c.hi == 0xffff);
            if (whole && freq == kNoReq && treq == kNoReq) {
              if (!is_deny) closed[li] = 1;
              if (is_deny && !r.staged) closed[li] = 2;
            }
          }
        }
      }
    }
  };
  for (const Rule& r : pol.denies) add_rule(r, true);
  for (const Rule& r : pol.flows) add_rule(r, false);

  // Per pair: deny_is_audited() and the intra-tier condition; then each
  // (pair, bucket) list compiled into the pair's line.
  m->pairs = detail::HugeArray<PairLine>(pairs);
  ListCompiler lists_out(options.map_units_per_candidate);
  std::size_t entries = 0;
  std::size_t max_list = 0;
  for (std::uint32_t s = 0; s < m->classes; ++s) {
    for (std::uint32_t d = 0; d < m->classes; ++d) {
      bool any_endpoint = false;
      bool audited = true;
      for (std::uint32_t c : {s, d}) {
        if (c >= m->tiers) continue;
        any_endpoint = true;
        if (pol.tiers[c].mode != Mode::Audit) audited = false;
      }
      if (!any_endpoint) audited = pol.mode == Mode::Audit;
      std::uint8_t f = audited ? kPairDenyAudited : 0;
      if (pol.intra_tier_allow && s < m->tiers && s == d && pol.tiers[s].declared) {
        f |= kPairIntraAllow;
      }
      const std::size_t pair = std::size_t{s} * m->classes + d;
      PairLine& line = m->pairs[pair];
      line.flags = f;
      for (std::size_t b = 0; b < kBuckets; ++b) {
        const std::size_t li = pair * kBuckets + b;
        line.heads[b] = lists_out.compile(denies[li], flows[li], f, b == kOtherBucket);
        const std::size_t n = denies[li].size() + flows[li].size();
        entries += n;
        max_list = std::max(max_list, n);
      }
    }
  }
  // A line past the last block: prefetch_candidates() reads a block's
  // second line without a bound check.
  lists_out.units.resize(lists_out.units.size() + 4);
  m->units = detail::HugeArray<Unit>(lists_out.units.size());
  std::copy(lists_out.units.begin(), lists_out.units.end(), m->units.begin());
  m->ranges = std::move(lists_out.ranges);
  m->candidates = std::move(lists_out.candidates);

  Generation::Stats st;
  st.endpoint_addresses = keys;
  st.hash_bytes = m->v4.size() * sizeof(Bucket4) + m->v6.size() * sizeof(Bucket6);
  st.profile_bytes = m->profiles.size() * sizeof(SelectorId);
  st.interval_count = m->iv4.starts.size() + m->iv6.starts.size();
  st.interval_bytes = m->iv4.starts.size() * (sizeof(std::uint32_t) * 2) +
                      m->iv6.starts.size() * (sizeof(Key6) + sizeof(std::uint32_t)) +
                      m->world_bits.size() * sizeof(std::uint64_t);
  st.world_classes = bitmaps.size();
  st.classes = m->classes;
  st.candidate_entries = entries;
  st.max_candidates = max_list;
  st.decision_bytes = m->pairs.size() * sizeof(PairLine) + m->units.size() * sizeof(Unit) +
                      m->ranges.size() * sizeof(Range) + m->candidates.size() * sizeof(Candidate);
  st.total_bytes = st.hash_bytes + st.profile_bytes + st.interval_bytes + st.decision_bytes;

  std::unique_ptr<Generation> g(new Generation(std::move(m)));
  static std::atomic<std::uint64_t> serials{0};
  g->id_ = options.id != 0 ? options.id : pol.generation;
  g->serial_ = serials.fetch_add(1, std::memory_order_relaxed) + 1;
  g->rules_ = rules;
  g->stats_ = st;
  return {std::move(g), {}};
}

}  // namespace tierwall::dataplane::dpdk
