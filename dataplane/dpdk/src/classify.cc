#include "tierwall/dataplane/dpdk/classify.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <map>
#include <utility>

#include "huge_array.h"

namespace tierwall::dataplane::dpdk {
namespace {

constexpr std::uint32_t kNoReq = 0xffffffffU;
constexpr std::size_t kBuckets = 6;  // tcp, udp, sctp, icmp, icmpv6, other
constexpr std::uint8_t kOtherBucket = 5;

constexpr std::uint8_t kCandAny = 0x01;
constexpr std::uint8_t kCandStaged = 0x02;

constexpr std::uint8_t kPairDenyAudited = 0x01;
constexpr std::uint8_t kPairIntraAllow = 0x02;

constexpr std::uint8_t kSlotEmpty = 0;
constexpr std::uint8_t kSlotEndpoint = 1;
constexpr std::uint8_t kSlotHost = 2;

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

// One pre-selected (rule, port match) for a (src class, dst class, bucket).
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

struct Slot4 {
  std::uint32_t key = 0;
  EndpointId endpoint = kUnknownEndpoint;
  std::uint32_t profile = 0;
  TierId tier = 0;
  std::uint8_t kind = kSlotEmpty;
  std::uint8_t pad = 0;
};
static_assert(sizeof(Slot4) == 16);

struct Key6 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend auto operator<=>(const Key6&, const Key6&) = default;
  friend bool operator==(const Key6&, const Key6&) = default;
};

struct Slot6 {
  Key6 key;
  EndpointId endpoint = kUnknownEndpoint;
  std::uint32_t profile = 0;
  TierId tier = 0;
  std::uint8_t kind = kSlotEmpty;
  std::uint8_t pad[3] = {0, 0, 0};
};
static_assert(sizeof(Slot6) == 32);

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

std::uint64_t hash4(std::uint32_t k) { return mix(std::uint64_t{k} * kMul); }
std::uint64_t hash6(const Key6& k) { return mix(k.hi * kMul ^ std::rotl(k.lo, 29)); }

std::size_t table_capacity(std::size_t n) {
  std::size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  return cap;
}

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

}  // namespace

struct Generation::Impl {
  detail::HugeArray<Slot4> v4;
  std::uint64_t v4_mask = 0;
  unsigned v4_shift = 0;
  detail::HugeArray<Slot6> v6;
  std::uint64_t v6_mask = 0;
  unsigned v6_shift = 0;

  std::vector<std::uint32_t> profile_offsets;  // my profile -> [off[i], off[i+1])
  std::vector<SelectorId> profile_selectors;   // sorted per profile

  Intervals<std::uint32_t> iv4;
  Intervals<Key6> iv6;
  std::size_t world_words = 0;  // 64-bit words per world class bitmap
  std::vector<std::uint64_t> world_bits;

  std::uint32_t tiers = 0;
  std::uint32_t classes = 0;  // tiers + host + world
  std::vector<Range> ranges;  // (src class * classes + dst class) * kBuckets + bucket
  std::vector<std::uint8_t> pair_flags;
  std::vector<Candidate> candidates;

  [[nodiscard]] std::uint32_t host_class() const { return tiers; }
  [[nodiscard]] std::uint32_t world_class() const { return tiers + 1; }

  [[nodiscard]] bool profile_has(std::uint32_t profile, SelectorId s) const {
    const SelectorId* b = profile_selectors.data() + profile_offsets[profile];
    const SelectorId* e = profile_selectors.data() + profile_offsets[profile + 1];
    if (e - b <= 8) {
      for (; b != e; ++b) {
        if (*b == s) return true;
      }
      return false;
    }
    return std::binary_search(b, e, s);
  }

  [[nodiscard]] bool world_has(std::uint32_t world_class_id, std::uint32_t set) const {
    const std::uint64_t w = world_bits[world_class_id * world_words + (set >> 6)];
    return ((w >> (set & 63U)) & 1U) != 0;
  }

  // `Tagged`: a side may have an unknown profile; its selector check then
  // counts as met for denies (`deny`) and unmet for flows (fail closed).
  template <bool Tagged>
  [[nodiscard]] bool side_ok(std::uint32_t req, const PeerClass& p, bool deny) const {
    if (req == kNoReq) return true;
    if (p.entity == PeerMatch::Entity::World) return world_has(p.world_class, req);
    if constexpr (Tagged) {
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

  template <bool Tagged>
  FastDecision decide(const PeerClass& s, const PeerClass& d, std::uint8_t protocol,
                      std::uint16_t port) const;

  PeerClass resolve(const IpAddress& a) const;
  // The PeerClass of a matched address slot (v4 or v6): host or endpoint.
  template <typename Slot>
  PeerClass from_slot(const Slot& s) const;
};

Generation::Generation(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Generation::~Generation() = default;

template <typename Slot>
PeerClass Generation::Impl::from_slot(const Slot& s) const {
  PeerClass p;
  if (s.kind == kSlotHost) {
    p.entity = PeerMatch::Entity::Host;
    p.cls = host_class();
  } else {
    p.entity = PeerMatch::Entity::Endpoint;
    p.cls = s.tier;
    p.endpoint = s.endpoint;
    p.profile = s.profile;
  }
  return p;
}

PeerClass Generation::Impl::resolve(const IpAddress& a) const {
  PeerClass p;
  std::uint32_t info = 0;
  if (a.is_v4()) {
    const std::uint32_t k = key4(a);
    for (std::uint64_t i = hash4(k) >> v4_shift;; i = (i + 1) & v4_mask) {
      const Slot4& s = v4[i];
      if (s.kind == kSlotEmpty) break;
      if (s.key != k) continue;
      return from_slot(s);
    }
    const auto it = std::upper_bound(iv4.starts.begin(), iv4.starts.end(), k);
    info = iv4.info[static_cast<std::size_t>(it - iv4.starts.begin()) - 1];
  } else {
    const Key6 k = key6(a);
    for (std::uint64_t i = hash6(k) >> v6_shift;; i = (i + 1) & v6_mask) {
      const Slot6& s = v6[i];
      if (s.kind == kSlotEmpty) break;
      if (s.key != k) continue;
      return from_slot(s);
    }
    const auto it = std::upper_bound(iv6.starts.begin(), iv6.starts.end(), k);
    info = iv6.info[static_cast<std::size_t>(it - iv6.starts.begin()) - 1];
  }
  if ((info & 1U) != 0) {
    // Fail closed, as resolve(): an unknown address in a container network
    // is a quarantined endpoint with no identity and no selectors.
    p.entity = PeerMatch::Entity::Endpoint;
    p.cls = kQuarantineTier;
    p.profile = 0;
  } else {
    p.entity = PeerMatch::Entity::World;
    p.cls = world_class();
    p.world_class = info >> 1;
  }
  return p;
}

PeerClass Generation::resolve(const IpAddress& address) const { return impl_->resolve(address); }

void Generation::prefetch(const IpAddress& a) const {
  const Impl& m = *impl_;
  if (a.is_v4()) {
    __builtin_prefetch(&m.v4[hash4(key4(a)) >> m.v4_shift]);
  } else {
    __builtin_prefetch(&m.v6[hash6(key6(a)) >> m.v6_shift]);
  }
}

void Generation::prefetch_pair(const PeerClass& s, const PeerClass& d,
                               std::uint8_t protocol) const {
  const Impl& m = *impl_;
  const std::size_t pair = std::size_t{s.cls} * m.classes + d.cls;
  __builtin_prefetch(&m.ranges[pair * kBuckets + kBucketMap[protocol]]);
  __builtin_prefetch(&m.pair_flags[pair]);
  __builtin_prefetch(&m.profile_offsets[s.profile]);
  __builtin_prefetch(&m.profile_offsets[d.profile]);
}

void Generation::prefetch_candidates(const PeerClass& s, const PeerClass& d,
                                     std::uint8_t protocol) const {
  const Impl& m = *impl_;
  const std::size_t pair = std::size_t{s.cls} * m.classes + d.cls;
  const Range& r = m.ranges[pair * kBuckets + kBucketMap[protocol]];
  if (r.begin != r.end) __builtin_prefetch(&m.candidates[r.begin]);
  if (s.entity == PeerMatch::Entity::Endpoint) {
    __builtin_prefetch(m.profile_selectors.data() + m.profile_offsets[s.profile]);
  }
  if (d.entity == PeerMatch::Entity::Endpoint) {
    __builtin_prefetch(m.profile_selectors.data() + m.profile_offsets[d.profile]);
  }
}

template <bool Tagged>
FastDecision Generation::Impl::decide(const PeerClass& s, const PeerClass& d, std::uint8_t protocol,
                                      std::uint16_t port) const {
  using E = PeerMatch::Entity;
  const Impl& m = *this;
  if (s.entity == E::Endpoint && d.entity == E::Endpoint && s.endpoint == d.endpoint &&
      s.endpoint != kUnknownEndpoint) {
    return FastDecision{Verdict::Allow, RuleKind::Self, kRuleSelf};
  }
  const std::size_t pair = std::size_t{s.cls} * m.classes + d.cls;
  const Range& r = m.ranges[pair * kBuckets + kBucketMap[protocol]];
  const std::uint8_t flags = m.pair_flags[pair];
  const Candidate* c = m.candidates.data();
  RuleId staged = 0;
  for (std::uint32_t i = r.begin; i < r.mid; ++i) {
    if (!m.matches<Tagged>(c[i], s, d, protocol, port, true)) continue;
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
    if (m.matches<Tagged>(c[i], s, d, protocol, port, false)) {
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

FastDecision Generation::decide(const PeerClass& s, const PeerClass& d, std::uint8_t protocol,
                                std::uint16_t port) const {
  // One well-predicted branch keeps the exact path free of the tagged checks.
  if (s.unknown_profile || d.unknown_profile) [[unlikely]] {
    return impl_->decide<true>(s, d, protocol, port);
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
  return decide(impl_->resolve(src), impl_->resolve(dst), protocol, port);
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

}  // namespace

BuildResult build_generation(const RuleSet& rules, const GenerationOptions& options) {
  if (!rules.policy || !rules.endpoints) return {nullptr, "ruleset without policy or endpoints"};
  const CompiledPolicy& pol = *rules.policy;
  const EndpointTable& table = *rules.endpoints;
  auto m = std::make_unique<Generation::Impl>();
  if (pol.tiers.empty() || pol.tiers.size() > 0xfffeU) return {nullptr, "bad tier count"};
  m->tiers = static_cast<std::uint32_t>(pol.tiers.size());
  m->classes = m->tiers + 2;

  // Profiles: table profile index -> my index (0 is the empty profile).
  std::vector<std::uint32_t> profile_map(table.profile_count() + 1, kNoReq);
  m->profile_offsets.push_back(0);
  m->profile_offsets.push_back(0);  // profile 0: empty
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
    std::vector<SelectorId> sorted(sel.begin(), sel.end());
    std::sort(sorted.begin(), sorted.end());
    m->profile_selectors.insert(m->profile_selectors.end(), sorted.begin(), sorted.end());
    profile_map[e.profile] = static_cast<std::uint32_t>(m->profile_offsets.size() - 1);
    m->profile_offsets.push_back(static_cast<std::uint32_t>(m->profile_selectors.size()));
  });
  if (!error.empty()) return {nullptr, error};
  for (const auto& a : table.node_addresses()) (a.is_v4() ? n4 : n6) += 1;

  // Address hashes: node addresses first, endpoints overwrite (resolve()
  // prefers the endpoint).
  m->v4 = detail::HugeArray<Slot4>(table_capacity(n4));
  m->v4_mask = m->v4.size() - 1;
  m->v4_shift = static_cast<unsigned>(64 - std::countr_zero(m->v4.size()));
  m->v6 = detail::HugeArray<Slot6>(table_capacity(n6));
  m->v6_mask = m->v6.size() - 1;
  m->v6_shift = static_cast<unsigned>(64 - std::countr_zero(m->v6.size()));
  std::size_t keys = 0;
  auto put = [&](const IpAddress& a, std::uint8_t kind, EndpointId id, TierId tier,
                 std::uint32_t profile) {
    if (a.is_v4()) {
      const std::uint32_t k = key4(a);
      for (std::uint64_t i = hash4(k) >> m->v4_shift;; i = (i + 1) & m->v4_mask) {
        Slot4& s = m->v4[i];
        if (s.kind != kSlotEmpty && s.key != k) continue;
        if (s.kind == kSlotEmpty) ++keys;
        s = Slot4{k, id, profile, tier, kind, 0};
        return;
      }
    }
    const Key6 k = key6(a);
    for (std::uint64_t i = hash6(k) >> m->v6_shift;; i = (i + 1) & m->v6_mask) {
      Slot6& s = m->v6[i];
      if (s.kind != kSlotEmpty && s.key != k) continue;
      if (s.kind == kSlotEmpty) ++keys;
      s = Slot6{k, id, profile, tier, kind, {0, 0, 0}};
      return;
    }
  };
  for (const auto& a : table.node_addresses()) put(a, kSlotHost, kUnknownEndpoint, 0, 0);
  table.for_each_address([&](const IpAddress& a, EndpointId id, const EndpointEntry& e) {
    put(a, kSlotEndpoint, id, e.tier, profile_map[e.profile]);
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

  m->ranges.resize(lists);
  std::size_t max_list = 0;
  for (std::size_t li = 0; li < lists; ++li) {
    Range& rg = m->ranges[li];
    rg.begin = static_cast<std::uint32_t>(m->candidates.size());
    m->candidates.insert(m->candidates.end(), denies[li].begin(), denies[li].end());
    rg.mid = static_cast<std::uint32_t>(m->candidates.size());
    m->candidates.insert(m->candidates.end(), flows[li].begin(), flows[li].end());
    rg.end = static_cast<std::uint32_t>(m->candidates.size());
    max_list = std::max<std::size_t>(max_list, rg.end - rg.begin);
  }
  m->pair_flags.assign(pairs, 0);
  for (std::uint32_t s = 0; s < m->classes; ++s) {
    for (std::uint32_t d = 0; d < m->classes; ++d) {
      // deny_is_audited() and the intra-tier condition, per class pair.
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
      m->pair_flags[std::size_t{s} * m->classes + d] = f;
    }
  }

  Generation::Stats st;
  st.endpoint_addresses = keys;
  st.hash_bytes = m->v4.size() * sizeof(Slot4) + m->v6.size() * sizeof(Slot6);
  st.profile_bytes = m->profile_offsets.size() * sizeof(std::uint32_t) +
                     m->profile_selectors.size() * sizeof(SelectorId);
  st.interval_count = m->iv4.starts.size() + m->iv6.starts.size();
  st.interval_bytes = m->iv4.starts.size() * (sizeof(std::uint32_t) * 2) +
                      m->iv6.starts.size() * (sizeof(Key6) + sizeof(std::uint32_t)) +
                      m->world_bits.size() * sizeof(std::uint64_t);
  st.world_classes = bitmaps.size();
  st.classes = m->classes;
  st.candidate_entries = m->candidates.size();
  st.max_candidates = max_list;
  st.decision_bytes = m->candidates.size() * sizeof(Candidate) + m->ranges.size() * sizeof(Range) +
                      m->pair_flags.size();
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
