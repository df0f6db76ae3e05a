// tierwall-bench-dpdkfwd: the DPDK dataplane's whole lcore loop on a real
// EAL, in TSC cycles per packet and Mpps per core: rte_eth_rx_burst ->
// parse -> flow table / decision -> MAC learning -> rte_eth_tx_burst,
// through Bridge::poll_once between a ring PMD port (net_ring: an ethdev
// over an rte_ring, the software stand-in for a NIC's RX queue) and a null
// PMD port (net_null with no-rx: its TX frees what it is given, as a NIC's
// TX completion does), with the benchmark
// policy of tierwall-bench dpdk (10,000 rules, 100,000 endpoints) and
// 64-byte frames:
//   new      every frame opens a new connection (the first packets of N
//            flows, in order);
//   established  every frame belongs to an allowed flow already in the
//            table (the replies of those flows, shuffled).
// Only poll_once is timed. Between polls the benchmark (untimed) allocates
// a burst of mbufs, writes the next flows' 64 bytes into them and puts them
// on port 0's ring, so every timed poll receives one burst (Bridge::kBurst) on port 0
// and forwards what passes to port 1 (freed there); what is denied the
// bridge frees.
// Then the same passes with W workers at once (--workers, default 2): each
// on its own thread (registered with the EAL, as the agent's), with its own
// queue of both ports, its own flow table and a W-th of the flows; each
// worker's cycles per packet, and their sum in Mpps, against one worker.
//   tierwall-bench dpdkfwd [--json] [--quick] [--flows N] [--workers W]
//   (--quick: 100,000 flows; --workers 1: no concurrent pass)
// Needs an EAL (no hugepages: --no-huge) and so root on most systems.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dpdk_bench_common.h"
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "tierwall/dataplane/dpdk/bridge.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/port.h"

using namespace tierwall_bench;  // NOLINT(google-build-using-namespace): bench-local helpers

namespace {

constexpr unsigned kBurst = tierwall::dataplane::dpdk::Bridge::kBurst;

struct Pass {
  double cycles_per_packet = 0;
  std::uint64_t frames = 0;
  std::uint64_t passed = 0;
};

// Feeds `frames` (64 bytes each) to port 0, one burst per timed poll;
// returns the cycles per received frame.
Pass run(dpdk::Bridge& bridge, dpdk::Port& in, rte_ring* in_ring,
         const std::vector<std::uint8_t>& frames) {
  const std::size_t count = frames.size() / 64;
  Pass r;
  std::uint64_t cycles = 0;
  const auto before = bridge.counters();
  rte_mbuf* burst[kBurst];
  for (std::size_t next = 0; next < count;) {
    const auto want = static_cast<unsigned>(std::min<std::size_t>(kBurst, count - next));
    if (rte_pktmbuf_alloc_bulk(in.pool(), burst, want) != 0) {
      std::fprintf(stderr, "tierwall-bench-dpdkfwd: mbuf pool empty\n");
      std::exit(1);
    }
    for (unsigned i = 0; i < want; ++i) {
      std::memcpy(rte_pktmbuf_append(burst[i], 64), &frames[(next + i) * 64], 64);
    }
    if (rte_ring_sp_enqueue_burst(in_ring, reinterpret_cast<void**>(burst), want, nullptr) !=
        want) {
      std::fprintf(stderr, "tierwall-bench-dpdkfwd: port 0 ring full\n");
      std::exit(1);
    }
    next += want;
    const std::uint64_t c0 = tsc();
    bridge.poll_once();
    cycles += tsc() - c0;
  }
  const auto after = bridge.counters();
  r.frames = after.rx - before.rx;
  r.passed = after.ip_allowed - before.ip_allowed;
  r.cycles_per_packet =
      static_cast<double>(cycles) / static_cast<double>(std::max<std::uint64_t>(1, r.frames));
  return r;
}

void frames_of(const std::vector<dpdk::FlowPacket>& flows, std::vector<std::uint8_t>& out) {
  out.assign(flows.size() * 64, 0);
  for (std::size_t i = 0; i < flows.size(); ++i) {
    std::uint8_t* f = &out[i * 64];
    write_frame64(f, flows[i]);
    // A destination no port has learned (flooded to port 1) and a source
    // learned on port 0.
    const std::uint8_t dst[6] = {0x02, 0, 0, 0, 0, 0x02};
    const std::uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(f, dst, 6);
    std::memcpy(f + 6, src, 6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::size_t flows = 1000000;
  unsigned workers = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--quick") {
      flows = 100000;
    } else if (arg == "--flows" && i + 1 < argc) {
      flows = std::max<std::size_t>(1000, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--workers" && i + 1 < argc) {
      workers = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
      if (workers < 1 || workers > dpdk::Port::kMaxQueues) {
        std::fprintf(stderr, "tierwall-bench-dpdkfwd: --workers is 1..%u\n",
                     unsigned{dpdk::Port::kMaxQueues});
        return 2;
      }
    } else {
      std::fprintf(stderr,
                   "usage: tierwall-bench dpdkfwd [--json] [--quick] [--flows N] [--workers W]\n");
      return 2;
    }
  }
  const std::string eal = dpdk::Eal::init(dpdk::Eal::default_args(512));
  if (!eal.empty()) {
    std::fprintf(stderr, "tierwall-bench-dpdkfwd: EAL: %s\n", eal.c_str());
    return 1;
  }
  const double hz = tsc_hz(200);
  std::mt19937 rng(20261125);
  const Setup s = make_ruleset(rng);
  auto built = dpdk::build_generation(s.rules);
  if (!built.generation) {
    std::fprintf(stderr, "tierwall-bench-dpdkfwd: %s\n", built.error.c_str());
    return 1;
  }
  const dpdk::Generation& g = *built.generation;
  auto packets = make_flows(s, flows, rng);
  for (auto& p : packets) {
    if (p.src_port == dpdk::kVxlanPort) ++p.src_port;
  }
  // The replies of the allowed flows, shuffled: the established pass.
  auto passes = [&](const dpdk::FlowPacket& p) {
    return g.classify(p.src, p.dst, p.protocol, p.decision_port).verdict != dp::Verdict::Deny;
  };
  const std::vector<dpdk::FlowPacket> replies = shuffled_replies(packets, rng, passes);
  std::vector<std::uint8_t> syn_frames;
  std::vector<std::uint8_t> reply_frames;
  frames_of(packets, syn_frames);
  frames_of(replies, reply_frames);

  std::string error;
  dpdk::PortOptions po;
  po.mbufs = 4095;
  po.queues = static_cast<std::uint16_t>(workers);
  auto port0 = dpdk::Port::open_vdev("net_ring_fw0", po, error);
  auto port1 = port0 ? dpdk::Port::open_vdev("net_null_fw1,no-rx=1", po, error) : nullptr;
  if (!port0 || !port1) {
    std::fprintf(stderr, "tierwall-bench-dpdkfwd: %s\n", error.c_str());
    return 1;
  }
  // The ring PMD's queue 0 ring (its RX and TX share it; the bridge never
  // sends to port 0: every frame enters there).
  rte_ring* ring0 = rte_ring_lookup("ETH_RXTX0_net_ring_fw0");
  if (ring0 == nullptr) {
    std::fprintf(stderr, "tierwall-bench-dpdkfwd: ring PMD rings not found\n");
    return 1;
  }

  dpdk::GenerationStore store;
  store.publish(std::move(built.generation));
  dpdk::BridgeOptions options;
  options.flows.capacity = flows * 2;
  dpdk::Port* ports[] = {port0.get(), port1.get()};
  auto bridge = std::make_unique<dpdk::Bridge>(ports, store, options);
  store.online(bridge->reader());
  const Pass fresh = run(*bridge, *port0, ring0, syn_frames);
  const Pass established = run(*bridge, *port0, ring0, reply_frames);
  const auto c = bridge->counters();
  store.offline(bridge->reader());
  bridge.reset();

  // W workers at once: worker w takes flows i with i % W == w (and their
  // replies), fed through queue w of port 0 (the ring PMD's ring w).
  struct Share {
    std::vector<std::uint8_t> syn, reply;
    Pass fresh, established;
    std::uint64_t tx_failed = 0, malformed = 0;
    bool registered = false;
  };
  std::vector<Share> shares(workers > 1 ? workers : 0);
  if (workers > 1) {
    std::vector<std::vector<dpdk::FlowPacket>> part(workers);
    for (std::size_t i = 0; i < packets.size(); ++i) part[i % workers].push_back(packets[i]);
    for (unsigned w = 0; w < workers; ++w) {
      frames_of(part[w], shares[w].syn);
      frames_of(shuffled_replies(part[w], rng, passes), shares[w].reply);
    }
    std::vector<std::unique_ptr<dpdk::Bridge>> bridges;
    std::vector<rte_ring*> rings;
    for (unsigned w = 0; w < workers; ++w) {
      dpdk::BridgeOptions o = options;
      o.queue = static_cast<std::uint16_t>(w);
      o.flows.capacity = flows * 2 / workers;
      bridges.push_back(std::make_unique<dpdk::Bridge>(ports, store, o));
      rings.push_back(rte_ring_lookup(("ETH_RXTX" + std::to_string(w) + "_net_ring_fw0").c_str()));
      if (rings.back() == nullptr) {
        std::fprintf(stderr, "tierwall-bench-dpdkfwd: ring PMD ring %u not found\n", w);
        return 1;
      }
    }
    // Both passes start together on every worker.
    std::atomic<unsigned> at_start{0};
    std::atomic<unsigned> at_middle{0};
    auto wait_all = [&](std::atomic<unsigned>& gate) {
      gate.fetch_add(1);
      while (gate.load() < workers) std::this_thread::yield();
    };
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        Share& sh = shares[w];
        sh.registered = rte_thread_register() == 0;
        dpdk::Bridge& b = *bridges[w];
        store.online(b.reader());
        wait_all(at_start);
        sh.fresh = run(b, *port0, rings[w], sh.syn);
        wait_all(at_middle);
        sh.established = run(b, *port0, rings[w], sh.reply);
        store.offline(b.reader());
        sh.tx_failed = b.counters().tx_failed;
        sh.malformed = b.counters().malformed;
        if (sh.registered) rte_thread_unregister();
      });
    }
    for (auto& t : threads) t.join();
  }
  store.synchronize();
  double total_new = 0;
  double total_est = 0;
  std::uint64_t par_tx_failed = 0;
  std::uint64_t par_malformed = 0;
  std::uint64_t par_new_frames = 0;
  std::uint64_t par_new_passed = 0;
  std::uint64_t par_est_frames = 0;
  for (const Share& sh : shares) {
    total_new += hz / sh.fresh.cycles_per_packet / 1e6;
    total_est += hz / sh.established.cycles_per_packet / 1e6;
    par_tx_failed += sh.tx_failed;
    par_malformed += sh.malformed;
    par_new_frames += sh.fresh.frames;
    par_new_passed += sh.fresh.passed;
    par_est_frames += sh.established.frames;
  }

  const double mpps_new = hz / fresh.cycles_per_packet / 1e6;
  const double mpps_est = hz / established.cycles_per_packet / 1e6;
  if (json) {
    std::printf(
        "{\"flows\": %zu, \"rules\": %d, \"endpoints\": %d, \"tsc_hz\": %.0f, \"burst\": %u, "
        "\"new_cycles_per_packet\": %.1f, \"new_mpps_per_core\": %.2f, \"new_frames\": %llu, "
        "\"new_passed\": %llu, \"established_cycles_per_packet\": %.1f, "
        "\"established_mpps_per_core\": %.2f, \"established_frames\": %llu, "
        "\"tx_failed\": %llu, \"malformed\": %llu",
        flows, kRules, kEndpoints, hz, kBurst, fresh.cycles_per_packet, mpps_new,
        static_cast<unsigned long long>(fresh.frames),
        static_cast<unsigned long long>(fresh.passed), established.cycles_per_packet, mpps_est,
        static_cast<unsigned long long>(established.frames),
        static_cast<unsigned long long>(c.tx_failed), static_cast<unsigned long long>(c.malformed));
    if (!shares.empty()) {
      std::printf(
          ",\n \"workers\": {\"count\": %u, \"new_mpps_total\": %.2f, \"established_mpps_total\": "
          "%.2f, \"new_scaling\": %.2f, \"established_scaling\": %.2f, \"new_frames\": %llu, "
          "\"new_passed\": %llu, \"established_frames\": %llu, \"tx_failed\": %llu, "
          "\"malformed\": %llu, \"per_worker\": [",
          workers, total_new, total_est, total_new / mpps_new, total_est / mpps_est,
          static_cast<unsigned long long>(par_new_frames),
          static_cast<unsigned long long>(par_new_passed),
          static_cast<unsigned long long>(par_est_frames),
          static_cast<unsigned long long>(par_tx_failed),
          static_cast<unsigned long long>(par_malformed));
      for (std::size_t w = 0; w < shares.size(); ++w) {
        std::printf(
            "%s{\"new_cycles_per_packet\": %.1f, \"established_cycles_per_packet\": %.1f, "
            "\"registered\": %s}",
            w > 0 ? ", " : "", shares[w].fresh.cycles_per_packet,
            shares[w].established.cycles_per_packet, shares[w].registered ? "true" : "false");
      }
      std::printf("]}");
    }
    std::printf("}\n");
    return 0;
  }
  std::printf(
      "DPDK lcore loop, ring PMD port -> null PMD port: %d rules, %d endpoints, %zu flows, 64-byte "
      "frames, "
      "bursts of %u, TSC %.3f GHz\n",
      kRules, kEndpoints, flows, kBurst, hz / 1e9);
  std::printf("%-58s %10s %10s\n", "pass (rx -> parse -> decide -> learn -> tx)", "cycles/pkt",
              "Mpps/core");
  std::printf("%-58s %10.1f %10.2f  (%llu frames, %llu passed)\n", "new connections",
              fresh.cycles_per_packet, mpps_new, static_cast<unsigned long long>(fresh.frames),
              static_cast<unsigned long long>(fresh.passed));
  std::printf("%-58s %10.1f %10.2f  (%llu frames)\n", "established flows",
              established.cycles_per_packet, mpps_est,
              static_cast<unsigned long long>(established.frames));
  std::printf("tx refused %llu, malformed %llu\n", static_cast<unsigned long long>(c.tx_failed),
              static_cast<unsigned long long>(c.malformed));
  if (!shares.empty()) {
    std::printf(
        "%u workers at once (a thread, a queue of each port, a flow table and 1/%u of the "
        "flows each):\n",
        workers, workers);
    for (std::size_t w = 0; w < shares.size(); ++w) {
      std::printf("  worker %zu: new %.1f cycles/pkt, established %.1f cycles/pkt%s\n", w,
                  shares[w].fresh.cycles_per_packet, shares[w].established.cycles_per_packet,
                  shares[w].registered ? "" : " (no lcore id: uncached mempool)");
    }
    std::printf("  together: new %.2f Mpps (%.2fx one worker), established %.2f Mpps (%.2fx)\n",
                total_new, total_new / mpps_new, total_est, total_est / mpps_est);
  }
  return 0;
}
