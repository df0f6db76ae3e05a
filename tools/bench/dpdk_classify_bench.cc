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
#include <random>
#include <span>
#include <string>
#include <vector>

#include "dpdk_bench_common.h"

using namespace tierwall_bench;  // NOLINT(google-build-using-namespace): bench-local helpers

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
    return tierwall_bench::best_of(kReps, per_run, run, before);
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
  // then in bursts of FlowTable::kMaxBurst (process_burst, as the lcore loop runs).
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
  const std::vector<dpdk::FlowPacket> replies = shuffled_replies(packets, rng);
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
