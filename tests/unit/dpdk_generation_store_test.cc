// GenerationStore (tw_dpdk_rcu): Generations published over rte_rcu_qsbr,
// without an EAL. A replaced generation waits for every online reader's
// quiescent state and no longer (offline readers hold nothing back); two
// reader threads decide under one generation per burst, each decision equal
// to the reference evaluator's for that generation's rules, while the
// writer swaps 1,000 generations. Run under ASan in CI: a generation freed
// too early is a use-after-free there. docs/dpdk.md, "Decision core".
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/dpdk_reference.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/generation_store.h"

namespace tierwall::dataplane::dpdk {
namespace {

using testkit::case_addresses;
using testkit::compile_case;
using testkit::describe;
using testkit::reference;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

TEST(DpdkGenerationStore, GracePeriodWaitsForOnlineReaders) {
  GenerationStore store;
  const RuleSet rules = compile_case(testkit::generate_case(999), 1);
  ASSERT_TRUE(rules.policy);
  const int r0 = store.register_reader();
  const int r1 = store.register_reader();
  ASSERT_GE(r0, 0);
  ASSERT_GE(r1, 0);
  EXPECT_EQ(store.publish(build_generation(rules, {1}).generation), 0U);
  store.online(r0);
  const Generation* held = store.current();
  EXPECT_EQ(held->id(), 1U);
  EXPECT_EQ(store.publish(build_generation(rules, {2}).generation), 1U);  // r0 may hold g1
  EXPECT_EQ(held->id(), 1U);
  EXPECT_EQ(store.reclaim(), 1U);
  store.quiescent(r0);
  EXPECT_EQ(store.reclaim(), 0U);
  EXPECT_EQ(store.current()->id(), 2U);
  // r1 is registered but offline: it never holds a grace period back.
  store.offline(r0);
  EXPECT_EQ(store.publish(build_generation(rules, {3}).generation), 0U);
  store.unregister_reader(r0);
  store.unregister_reader(r1);
}

TEST(DpdkGenerationStore, ReadersDecideUnderOneGenerationWhileWriterSwaps) {
  constexpr int kPool = 12;
  constexpr int kSwaps = 1000;
  std::vector<RuleSet> pool;
  std::vector<std::string> addrs;
  for (int i = 0; i < kPool; ++i) {
    const auto gen = testkit::generate_case(static_cast<std::uint32_t>(1000 + i));
    pool.push_back(compile_case(gen, 1));
    if (i == 0) addrs = case_addresses(gen, false);
  }
  std::vector<IpAddress> ips;
  for (const auto& a : addrs) ips.push_back(ip(a));
  GenerationStore store;
  ASSERT_EQ(store.publish(build_generation(pool[0], {1}).generation), 0U);
  std::atomic<bool> stop{false};
  std::atomic<long> decided{0};
  std::atomic<long> mismatches{0};
  std::atomic<long> bursts{0};
  std::mutex first_mu;
  std::string first;
  auto reader = [&](unsigned seed) {
    const int id = store.register_reader();
    ASSERT_GE(id, 0);
    store.online(id);
    std::mt19937 rng(seed);
    const std::uint8_t prs[] = {proto::kTcp, proto::kUdp, proto::kIcmp};
    const std::uint16_t ports[] = {80, 443, 5432, 8080, 53, 8, 0};
    std::uint64_t last_id = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const Generation* g = store.current();  // one generation per burst
      if (g->id() < last_id) mismatches.fetch_add(1);
      last_id = g->id();
      for (int i = 0; i < 16; ++i) {
        const IpAddress& s = ips[rng() % ips.size()];
        const IpAddress& d = ips[rng() % ips.size()];
        const std::uint8_t pr = prs[rng() % 3];
        const std::uint16_t port = ports[rng() % 7];
        const FastDecision got = g->classify(s, d, pr, port);
        const FastDecision want = reference(g->rules(), s, d, pr, port);
        if (!(got == want)) {
          if (mismatches.fetch_add(1) == 0) {
            std::lock_guard lock(first_mu);
            first = "generation " + std::to_string(g->id()) + ": " + s.to_string() + " -> " +
                    d.to_string() + " " + std::to_string(pr) + "/" + std::to_string(port) +
                    ": got " + describe(got) + ", want " + describe(want);
          }
        }
        decided.fetch_add(1, std::memory_order_relaxed);
      }
      store.quiescent(id);
      bursts.fetch_add(1, std::memory_order_relaxed);
    }
    store.offline(id);
    store.unregister_reader(id);
  };
  std::thread t1(reader, 1U);
  std::thread t2(reader, 2U);
  std::size_t max_waiting = 0;
  for (int i = 1; i <= kSwaps; ++i) {
    auto built = build_generation(pool[static_cast<std::size_t>(i % kPool)],
                                  {static_cast<std::uint64_t>(i + 1)});
    ASSERT_TRUE(built.generation);
    max_waiting = std::max(max_waiting, store.publish(std::move(built.generation)));
    if (i % 50 == 0) std::this_thread::yield();
  }
  // Let the readers see the last generation for a while.
  const long seen = bursts.load();
  while (bursts.load() < seen + 100) std::this_thread::yield();
  stop = true;
  t1.join();
  t2.join();
  store.synchronize();
  EXPECT_EQ(mismatches.load(), 0) << first;
  EXPECT_GT(decided.load(), 1000);
  EXPECT_EQ(store.current()->id(), static_cast<std::uint64_t>(kSwaps + 1));
  std::printf("[rcu] %d swaps, %ld decisions in %ld bursts, max %zu generations waiting\n", kSwaps,
              decided.load(), bursts.load(), max_waiting);
}

}  // namespace
}  // namespace tierwall::dataplane::dpdk
