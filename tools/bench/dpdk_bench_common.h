// Shared setup and measurement code of the DPDK dataplane benchmarks
// (tierwall-bench-dpdkclassify, tierwall-bench-dpdk): the 10,000-rule /
// 100,000-endpoint policy, flow and 64-byte frame synthesis, TSC timing.
// Header-only, internal to tools/bench.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/flow_table.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/evaluator.h"

namespace tierwall_bench {

namespace dp = tierwall::dataplane;
namespace dpdk = tierwall::dataplane::dpdk;
using tierwall::Cidr;
using tierwall::IpAddress;

constexpr int kTiers = 100;
constexpr int kSelectorsPerTier = 20;
constexpr int kEndpoints = 100000;
constexpr int kRules = 10000;
constexpr int kDenies = 500;

inline std::uint64_t tsc() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

inline IpAddress v4(std::uint32_t x) { return IpAddress::v4(x); }
inline IpAddress v6_of(std::uint32_t i) {
  IpAddress a;
  a.family = IpAddress::Family::V6;
  a.bytes[0] = 0xfd;
  a.bytes[12] = static_cast<std::uint8_t>(i >> 24);
  a.bytes[13] = static_cast<std::uint8_t>(i >> 16);
  a.bytes[14] = static_cast<std::uint8_t>(i >> 8);
  a.bytes[15] = static_cast<std::uint8_t>(i);
  return a;
}

// Endpoint i: tier 1 + i % 100, selector tier*20 + (i / 100) % 20, and one
// of 50 cluster-wide selectors; 10.(i>>16).(i>>8).i + 2 and fd00::i.
inline dp::TierId tier_of(int i) { return static_cast<dp::TierId>(1 + i % kTiers); }
inline std::uint32_t endpoint_v4(int i) { return 0x0a000000U + static_cast<std::uint32_t>(i) + 2; }
inline int endpoint_with(int tier, int k, int j) {
  return (tier - 1) + kTiers * (k + kSelectorsPerTier * j);
}

struct Setup {
  dp::RuleSet rules;
  std::vector<const dp::Rule*> flows;
};

inline Setup make_ruleset(std::mt19937& rng) {
  auto pol = std::make_shared<dp::CompiledPolicy>();
  pol->name = "bench";
  pol->generation = 1;
  pol->intra_tier_allow = true;
  pol->tiers.push_back({"quarantine", -1, dp::Mode::Enforce, false});
  for (int t = 1; t <= kTiers; ++t) {
    pol->tiers.push_back(
        {"t" + std::to_string(t), t * 10, t % 10 == 0 ? dp::Mode::Audit : dp::Mode::Enforce, true});
  }
  const int selectors = (kTiers + 1) * kSelectorsPerTier + 50;
  for (int s = 0; s < selectors; ++s) pol->selectors.push_back({"s" + std::to_string(s)});
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto peer = [&](bool world_ok) {
    dp::PeerMatch p;
    if (world_ok && pick(100) < 5) {
      p.entity = dp::PeerMatch::Entity::World;
      for (int c = 0, n = 1 + pick(3); c < n; ++c) {
        // 100.64.0.0/10 carved into /16 and /24 prefixes.
        const std::uint32_t base = 0x64400000U + (static_cast<std::uint32_t>(pick(64)) << 16);
        if (pick(2) == 0) {
          p.cidrs.push_back(Cidr{v4(base), 16});
        } else {
          p.cidrs.push_back(Cidr{v4(base + (static_cast<std::uint32_t>(pick(256)) << 8)), 24});
        }
      }
      return p;
    }
    const int t = 1 + pick(kTiers);
    p.tiers.push_back(static_cast<dp::TierId>(t));
    if (pick(4) == 0) {
      const int t2 = 1 + pick(kTiers);
      if (t2 != t) p.tiers.push_back(static_cast<dp::TierId>(t2));
      std::sort(p.tiers.begin(), p.tiers.end());
    }
    if (pick(2) == 0) p.selector = static_cast<dp::SelectorId>(t * kSelectorsPerTier + pick(20));
    return p;
  };
  auto ports = [&]() {
    std::vector<tierwall::PortMatch> out;
    const int k = pick(10);
    if (k == 0) {
      out.push_back(tierwall::PortMatch::any_port());
    } else if (k < 7) {
      const auto p = static_cast<std::uint16_t>(1000 + pick(200) * 7);
      out.push_back({false, tierwall::proto::kTcp, p, p});
    } else if (k < 9) {
      const auto p = static_cast<std::uint16_t>(20000 + pick(100) * 50);
      out.push_back({false, tierwall::proto::kTcp, p, static_cast<std::uint16_t>(p + 40)});
    } else {
      out.push_back({false, tierwall::proto::kUdp, 53, 53});
      out.push_back({false, tierwall::proto::kTcp, 53, 53});
    }
    return out;
  };
  dp::RuleId id = dp::kFirstPolicyRule;
  for (int r = 0; r < kRules; ++r) {
    dp::Rule rule;
    rule.id = id++;
    rule.origin.name = "r" + std::to_string(r);
    rule.from = peer(true);
    rule.to = peer(rule.from.entity != dp::PeerMatch::Entity::World);
    rule.ports = ports();
    if (r < kDenies) {
      rule.staged = pick(3) == 0;
      pol->denies.push_back(std::move(rule));
    } else {
      pol->flows.push_back(std::move(rule));
    }
  }
  auto eps = std::make_shared<dp::EndpointTable>();
  eps->reserve(kEndpoints, 2 * kEndpoints);
  for (int i = 0; i < kEndpoints; ++i) {
    const dp::TierId t = tier_of(i);
    const std::vector<dp::SelectorId> sel{
        static_cast<dp::SelectorId>(t * kSelectorsPerTier + (i / kTiers) % kSelectorsPerTier),
        static_cast<dp::SelectorId>((kTiers + 1) * kSelectorsPerTier + i % 50)};
    const IpAddress addrs[] = {v4(endpoint_v4(i)), v6_of(static_cast<std::uint32_t>(i))};
    eps->upsert(static_cast<dp::EndpointId>(i), addrs, t, sel);
  }
  eps->set_node_addresses({v4(0x0a000001U)});
  eps->set_container_cidrs({Cidr{v4(0x0a000000U), 8}, Cidr{v6_of(0), 64}});
  Setup s;
  s.rules = dp::RuleSet{pol, eps};
  for (const auto& r : pol->flows) s.flows.push_back(&r);
  return s;
}

// An endpoint (or world address) the peer match selects, when possible.
inline IpAddress member(const dp::PeerMatch& p, std::mt19937& rng) {
  if (p.entity == dp::PeerMatch::Entity::World) {
    const Cidr& c = p.cidrs[rng() % p.cidrs.size()];
    const std::uint32_t base = (std::uint32_t{c.base.bytes[0]} << 24) |
                               (std::uint32_t{c.base.bytes[1]} << 16) |
                               (std::uint32_t{c.base.bytes[2]} << 8);
    return v4(base + 1 + static_cast<std::uint32_t>(rng() % 250));
  }
  const int tier = p.tiers[rng() % p.tiers.size()];
  const int k = p.selector ? static_cast<int>(*p.selector) - tier * kSelectorsPerTier
                           : static_cast<int>(rng() % kSelectorsPerTier);
  const int jmax = kEndpoints / (kTiers * kSelectorsPerTier);
  int i = endpoint_with(tier, (k >= 0 && k < kSelectorsPerTier) ? k : 0,
                        static_cast<int>(rng() % static_cast<unsigned>(jmax)));
  return v4(endpoint_v4(i));
}

// 80% of flows are what a rule allows, 20% random endpoint pairs.
inline std::vector<dpdk::FlowPacket> make_flows(const Setup& s, std::size_t n, std::mt19937& rng) {
  std::vector<dpdk::FlowPacket> out(n);
  for (std::size_t f = 0; f < n; ++f) {
    dpdk::FlowPacket& p = out[f];
    p.src_port = static_cast<std::uint16_t>(1024 + rng() % 60000);
    p.tcp_flags = 0x02;
    if (rng() % 5 != 0) {
      const dp::Rule& r = *s.flows[rng() % s.flows.size()];
      p.src = member(r.from, rng);
      p.dst = member(r.to, rng);
      const tierwall::PortMatch& pm = r.ports[rng() % r.ports.size()];
      p.protocol = pm.any ? tierwall::proto::kTcp : pm.protocol;
      p.dst_port = pm.any ? std::uint16_t{443}
                          : static_cast<std::uint16_t>(pm.lo + rng() % (pm.hi - pm.lo + 1U));
    } else {
      p.src = v4(endpoint_v4(static_cast<int>(rng() % kEndpoints)));
      p.dst = v4(endpoint_v4(static_cast<int>(rng() % kEndpoints)));
      p.protocol = tierwall::proto::kTcp;
      p.dst_port = static_cast<std::uint16_t>(1000 + (rng() % 200) * 7);
    }
    p.decision_port = p.dst_port;
  }
  return out;
}

// A 64-byte Ethernet / IPv4 / TCP frame (as tierwall-bench-dpdkparse).
// The replies (responder -> initiator, ACK) of the packets `keep` accepts,
// shuffled: the established path's trace.
template <typename Keep>
std::vector<dpdk::FlowPacket> shuffled_replies(const std::vector<dpdk::FlowPacket>& packets,
                                               std::mt19937& rng, Keep&& keep) {
  std::vector<dpdk::FlowPacket> replies;
  replies.reserve(packets.size());
  for (const auto& p : packets) {
    if (!keep(p)) continue;
    dpdk::FlowPacket r = p;
    std::swap(r.src, r.dst);
    std::swap(r.src_port, r.dst_port);
    r.tcp_flags = 0x10;
    replies.push_back(r);
  }
  std::shuffle(replies.begin(), replies.end(), rng);
  return replies;
}
inline std::vector<dpdk::FlowPacket> shuffled_replies(const std::vector<dpdk::FlowPacket>& packets,
                                                      std::mt19937& rng) {
  return shuffled_replies(packets, rng, [](const dpdk::FlowPacket&) { return true; });
}

inline std::vector<std::uint8_t> frame64() {
  std::vector<std::uint8_t> f(64, 0);
  f[12] = 0x08;
  std::uint8_t* h = &f[14];
  h[0] = 0x45;
  h[3] = 40;
  h[8] = 64;
  h[9] = 6;
  h[12] = 10;
  h[15] = 2;
  h[16] = 10;
  h[19] = 3;
  std::uint8_t* t = h + 20;
  t[0] = 0x9c;
  t[1] = 0x40;
  t[2] = 0x01;
  t[3] = 0xbb;
  t[12] = 0x50;
  t[13] = 0x10;
  return f;
}

inline double parse_cycles() {
  const auto f = frame64();
  std::uint64_t sink = 0;
  constexpr long kRounds = 2000000;
  for (long i = 0; i < kRounds / 10; ++i) sink += dpdk::parse_packet(f).dst_port;
  const std::uint64_t c0 = tsc();
  for (long i = 0; i < kRounds; ++i) {
    const dpdk::PacketInfo info = dpdk::parse_packet(f);
    sink += std::uint64_t{info.dst_port} + info.src.bytes[3];
  }
  const std::uint64_t c1 = tsc();
  if (sink == 42) std::puts("");
  return static_cast<double>(c1 - c0) / kRounds;
}

// A 64-byte Ethernet / IPv4 / TCP or UDP frame carrying an IPv4 FlowPacket
// (addresses, ports, protocol, TCP flags); what the NIC would hand the lcore.
inline void write_frame64(std::uint8_t* f, const dpdk::FlowPacket& p) {
  std::fill(f, f + 64, std::uint8_t{0});
  f[12] = 0x08;
  std::uint8_t* h = f + 14;
  const bool udp = p.protocol == tierwall::proto::kUdp;
  const std::uint16_t ip_len = udp ? 28 : 40;
  h[0] = 0x45;
  h[2] = static_cast<std::uint8_t>(ip_len >> 8);
  h[3] = static_cast<std::uint8_t>(ip_len);
  h[8] = 64;
  h[9] = p.protocol;
  std::copy(p.src.bytes.begin(), p.src.bytes.begin() + 4, h + 12);
  std::copy(p.dst.bytes.begin(), p.dst.bytes.begin() + 4, h + 16);
  std::uint8_t* t = h + 20;
  t[0] = static_cast<std::uint8_t>(p.src_port >> 8);
  t[1] = static_cast<std::uint8_t>(p.src_port);
  t[2] = static_cast<std::uint8_t>(p.dst_port >> 8);
  t[3] = static_cast<std::uint8_t>(p.dst_port);
  if (udp) {
    t[5] = 8;
  } else {
    t[12] = 0x50;
    t[13] = p.tcp_flags;
  }
}

// TSC ticks per second, measured against CLOCK_MONOTONIC over `ms`.
inline double tsc_hz(int ms) {
  timespec a{}, b{};
  clock_gettime(CLOCK_MONOTONIC, &a);
  const std::uint64_t c0 = tsc();
  do {
    clock_gettime(CLOCK_MONOTONIC, &b);
  } while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ms * 1000000L);
  const std::uint64_t c1 = tsc();
  const double ns =
      static_cast<double>((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
  return static_cast<double>(c1 - c0) * 1e9 / ns;
}

// The best (lowest) TSC cycles per item of `reps` runs of `run` over
// `per_run` items, `before` called ahead of each run (not timed): the
// machine is shared, the minimum is the least disturbed run.
template <typename Run, typename Before>
double best_of(int reps, std::size_t per_run, Run&& run, Before&& before) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    before();
    const std::uint64_t c0 = tsc();
    run();
    best = std::min(best, static_cast<double>(tsc() - c0) / static_cast<double>(per_run));
  }
  return best;
}

}  // namespace tierwall_bench
