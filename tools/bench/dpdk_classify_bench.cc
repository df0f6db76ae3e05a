// tierwall-bench-dpdkclassify: the cost of the DPDK dataplane's decision core
// (dataplane/dpdk, tw_dpdk_classify) with 10,000 rules, 100,000 endpoints
// and 1M flows, in TSC cycles per packet on already-parsed 64-byte packets:
//   (a) established flows (flow table hit), 1M flows and a cache-hot 1k;
//   (b) new connections (two endpoint lookups, the decision structure, the
//       flow table insert), and the decision alone;
//   (c) the floor: the reference evaluator's linear scan over the same rules;
// plus the parser's cost on the same 64-byte frame (as
// tierwall-bench-dpdkparse) and the sums, bytes per flow and per endpoint,
// and the Generation build time. For docs/dpdk.md; build it in a Release tree:
//   cmake --build build-rel --target tierwall-bench-dpdkclassify
//   tierwall-bench-dpdkclassify [--json] [--flows N]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

namespace dp = tierwall::dataplane;
namespace dpdk = tierwall::dataplane::dpdk;
using tierwall::Cidr;
using tierwall::IpAddress;

namespace {

constexpr int kTiers = 100;
constexpr int kSelectorsPerTier = 20;
constexpr int kEndpoints = 100000;
constexpr int kRules = 10000;
constexpr int kDenies = 500;

std::uint64_t tsc() {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

IpAddress v4(std::uint32_t x) { return IpAddress::v4(x); }
IpAddress v6_of(std::uint32_t i) {
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
dp::TierId tier_of(int i) { return static_cast<dp::TierId>(1 + i % kTiers); }
std::uint32_t endpoint_v4(int i) { return 0x0a000000U + static_cast<std::uint32_t>(i) + 2; }
int endpoint_with(int tier, int k, int j) {
  return (tier - 1) + kTiers * (k + kSelectorsPerTier * j);
}

struct Setup {
  dp::RuleSet rules;
  std::vector<const dp::Rule*> flows;
};

Setup make_ruleset(std::mt19937& rng) {
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
IpAddress member(const dp::PeerMatch& p, std::mt19937& rng) {
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
std::vector<dpdk::FlowPacket> make_flows(const Setup& s, std::size_t n, std::mt19937& rng) {
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
std::vector<std::uint8_t> frame64() {
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

double parse_cycles() {
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

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::size_t flows = 1000000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--flows" && i + 1 < argc) {
      flows = std::max<std::size_t>(1000, std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: tierwall-bench-dpdkclassify [--json] [--flows N]\n");
      return 2;
    }
  }
  std::mt19937 rng(20261125);
  const Setup s = make_ruleset(rng);
  const auto b0 = std::chrono::steady_clock::now();
  auto built = dpdk::build_generation(s.rules);
  const auto b1 = std::chrono::steady_clock::now();
  if (!built.generation) {
    std::fprintf(stderr, "tierwall-bench-dpdkclassify: %s\n", built.error.c_str());
    return 1;
  }
  const dpdk::Generation& g = *built.generation;
  const double build_ms = std::chrono::duration<double, std::milli>(b1 - b0).count();
  const auto packets = make_flows(s, flows, rng);

  // Every figure is the best of kReps runs: the machine is shared.
  constexpr int kReps = 3;
  std::uint64_t sink = 0;
  auto best_of = [&](std::size_t per_run, auto&& run, auto&& before) {
    double best = 1e300;
    for (int r = 0; r < kReps; ++r) {
      before();
      const std::uint64_t c0 = tsc();
      run();
      best = std::min(best, static_cast<double>(tsc() - c0) / static_cast<double>(per_run));
    }
    return best;
  };
  auto nothing = [] {};

  // (b) the decision alone, one at a time and in bursts of 32 pipelined as
  // process_burst does (slots, then pair and profiles, then candidates).
  const double decide_cycles = best_of(
      flows,
      [&] {
        for (const auto& p : packets) {
          sink += g.classify(p.src, p.dst, p.protocol, p.decision_port).rule_id;
        }
      },
      nothing);
  const double decide_burst_cycles = best_of(
      flows,
      [&] {
        for (std::size_t i = 0; i < packets.size(); i += 32) {
          const std::size_t n = std::min<std::size_t>(32, packets.size() - i);
          for (std::size_t j = 0; j < n; ++j) {
            g.prefetch(packets[i + j].src);
            g.prefetch(packets[i + j].dst);
          }
          dpdk::PeerClass cls[32][2];
          for (std::size_t j = 0; j < n; ++j) {
            cls[j][0] = g.resolve(packets[i + j].src);
            cls[j][1] = g.resolve(packets[i + j].dst);
            g.prefetch_pair(cls[j][0], cls[j][1], packets[i + j].protocol);
          }
          for (std::size_t j = 0; j < n; ++j) {
            g.prefetch_candidates(cls[j][0], cls[j][1], packets[i + j].protocol);
          }
          for (std::size_t j = 0; j < n; ++j) {
            const auto& p = packets[i + j];
            sink += g.decide(cls[j][0], cls[j][1], p.protocol, p.decision_port).rule_id;
          }
        }
      },
      nothing);
  // Decision + insert into an empty table: one packet at a time (process),
  // then in bursts of 32 (process_burst, as the lcore loop runs).
  dpdk::FlowTableOptions fo;
  fo.capacity = flows * 2;
  dpdk::FlowTable table(fo);
  std::uint64_t now = 1;
  const double new_single_cycles = best_of(
      flows,
      [&] {
        for (const auto& p : packets) sink += table.process(g, p, now).decision.rule_id;
      },
      [&] { table.clear(); });
  std::vector<dpdk::FlowResult> results(dpdk::FlowTable::kMaxBurst);
  auto run_bursts = [&](const std::vector<dpdk::FlowPacket>& in) {
    for (std::size_t i = 0; i < in.size(); i += dpdk::FlowTable::kMaxBurst) {
      const std::size_t n = std::min(dpdk::FlowTable::kMaxBurst, in.size() - i);
      table.process_burst(g, std::span(in.data() + i, n), results, now);
      for (std::size_t j = 0; j < n; ++j) sink += results[j].decision.rule_id;
    }
  };
  const double new_cycles = best_of(
      flows, [&] { run_bursts(packets); }, [&] { table.clear(); });
  const std::size_t remembered = table.live(now);
  const double pass_share = static_cast<double>(remembered) / static_cast<double>(flows);

  // (a) established: the replies of the same flows, shuffled.
  std::vector<dpdk::FlowPacket> replies;
  replies.reserve(flows);
  for (const auto& p : packets) {
    dpdk::FlowPacket r = p;
    std::swap(r.src, r.dst);
    std::swap(r.src_port, r.dst_port);
    r.tcp_flags = 0x10;
    replies.push_back(r);
  }
  std::shuffle(replies.begin(), replies.end(), rng);
  now += 1000;
  const std::uint64_t hits_before = table.counters().hits;
  const double est_cycles = best_of(
      flows, [&] { run_bursts(replies); }, nothing);
  const std::uint64_t hits = (table.counters().hits - hits_before) / kReps;
  const double est_single_cycles = best_of(
      flows,
      [&] {
        for (const auto& p : replies) sink += table.process(g, p, now).decision.rule_id;
      },
      nothing);
  // Cache-hot: 1,000 flows over and over.
  constexpr std::size_t kHot = 1000;
  constexpr int kHotRounds = 1000;
  const double hot_cycles = best_of(
      kHot * kHotRounds,
      [&] {
        for (int r = 0; r < kHotRounds; ++r) {
          for (std::size_t i = 0; i < kHot; ++i) {
            sink += table.process(g, packets[i], now).decision.rule_id;
          }
        }
      },
      nothing);

  // (c) the floor: the reference evaluator (hash resolve + linear scan).
  const std::size_t naive_n = std::min<std::size_t>(flows, 20000);
  const std::uint64_t c0 = tsc();
  for (std::size_t i = 0; i < naive_n; ++i) {
    const auto& p = packets[i];
    sink +=
        dp::decide(s.rules, dp::Connection{p.src, p.dst, p.protocol, p.decision_port}).rule_id();
  }
  const double naive_cycles = static_cast<double>(tsc() - c0) / static_cast<double>(naive_n);
  const double parse = parse_cycles();

  const auto& st = g.stats();
  const double per_flow_slot =
      static_cast<double>(table.memory_bytes()) / static_cast<double>(table.capacity());
  const double per_flow_loaded = static_cast<double>(table.memory_bytes()) /
                                 static_cast<double>(std::max<std::size_t>(remembered, 1));
  const double per_endpoint =
      static_cast<double>(st.hash_bytes + st.profile_bytes) / static_cast<double>(kEndpoints);
  if (sink == 42) std::puts("");

  if (json) {
    std::printf(
        "{\"rules\": %d, \"endpoints\": %d, \"flows\": %zu, \"tsc_cycles_per_packet\": "
        "{\"established\": %.1f, \"established_single\": %.1f, \"established_hot\": %.1f, "
        "\"new_connection\": %.1f, \"new_connection_single\": %.1f, "
        "\"decision_only\": %.1f, \"decision_only_burst\": %.1f, \"naive_linear_scan\": %.1f, "
        "\"parse_64b\": %.1f, "
        "\"parse_plus_established\": %.1f, \"parse_plus_new_connection\": %.1f}, "
        "\"flow_hits\": %llu, \"flows_remembered\": %zu, \"flow_evictions\": %llu, "
        "\"bytes_per_flow_slot\": %.1f, \"bytes_per_remembered_flow\": %.1f, "
        "\"bytes_per_endpoint\": %.1f, \"generation_bytes\": %zu, \"candidate_entries\": %zu, "
        "\"max_candidates\": %zu, \"build_ms\": %.1f}\n",
        kRules, kEndpoints, flows, est_cycles, est_single_cycles, hot_cycles, new_cycles,
        new_single_cycles, decide_cycles, decide_burst_cycles, naive_cycles, parse,
        parse + est_cycles, parse + new_cycles, static_cast<unsigned long long>(hits), remembered,
        static_cast<unsigned long long>(table.counters().evicted), per_flow_slot, per_flow_loaded,
        per_endpoint, st.total_bytes, st.candidate_entries, st.max_candidates, build_ms);
    return 0;
  }
  std::printf("decision core: %d rules (%d denies), %d endpoints (2 addresses each), %zu flows\n",
              kRules, kDenies, kEndpoints, flows);
  std::printf(
      "generation: built in %.0f ms, %.1f MB (hash %.1f MB, decision %.1f MB, "
      "%zu candidates, longest list %zu, %zu intervals)\n",
      build_ms, static_cast<double>(st.total_bytes) / 1e6, static_cast<double>(st.hash_bytes) / 1e6,
      static_cast<double>(st.decision_bytes) / 1e6, st.candidate_entries, st.max_candidates,
      st.interval_count);
  std::printf("%-44s %12s\n", "path", "tsc/packet");
  std::printf(
      "%-44s %12.1f\n",
      ("(a) established, " + std::to_string(flows / 1000) + "k flows, bursts of 32").c_str(),
      est_cycles);
  std::printf("%-44s %12.1f\n", "    same, one packet at a time", est_single_cycles);
  std::printf("%-44s %12.1f\n", "    1k flows, cache-hot, one at a time", hot_cycles);
  std::printf("%-44s %12.1f\n", "(b) new connections, bursts of 32", new_cycles);
  std::printf("%-44s %12.1f\n", "    same, one packet at a time", new_single_cycles);
  std::printf("%-44s %12.1f\n", "    decision only, bursts of 32 (pipelined)", decide_burst_cycles);
  std::printf("%-44s %12.1f\n", "    decision only, one at a time", decide_cycles);
  std::printf("%-44s %12.1f\n", "(c) naive linear scan (reference evaluator)", naive_cycles);
  std::printf("%-44s %12.1f\n", "parse, 64-byte IPv4/TCP frame", parse);
  std::printf("%-44s %12.1f\n", "parse + established", parse + est_cycles);
  std::printf("%-44s %12.1f\n", "parse + new connection", parse + new_cycles);
  std::printf(
      "flows remembered: %zu (%.0f%% allowed or audited), hits per established pass %llu, "
      "evictions %llu\n",
      remembered, pass_share * 100, static_cast<unsigned long long>(hits),
      static_cast<unsigned long long>(table.counters().evicted));
  std::printf(
      "bytes per flow: %.0f per slot, %.0f per remembered flow (capacity %zu); "
      "bytes per endpoint: %.0f\n",
      per_flow_slot, per_flow_loaded, table.capacity(), per_endpoint);
  return 0;
}
