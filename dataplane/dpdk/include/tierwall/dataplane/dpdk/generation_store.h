// Publication of Generations to the lcores with RCU (quiescent-state-based
// reclamation) over DPDK's rte_rcu_qsbr:
//  * the control thread publishes a new Generation (one atomic pointer
//    store); readers load the current pointer at any time while online;
//  * each reader reports a quiescent state between bursts (it then holds no
//    pointer to any Generation); a burst that loaded the pointer once is
//    decided entirely by that one generation;
//  * a replaced Generation is freed by the writer once every online reader
//    has reported a quiescent state after the replacement (grace period).
//    Offline readers (idle lcores) do not hold grace periods back.
//
// The QS variable (rte_rcu_qsbr_init, kMaxReaders threads) lives in
// ordinary cache-aligned memory: rte_rcu_qsbr needs no EAL and no
// hugepages, so the store works in unit tests as in the agent. A reader id
// is an rte_rcu_qsbr thread id; a retired generation waits for the token
// rte_rcu_qsbr_start gave when it was replaced (rte_rcu_qsbr_check).
//
// Thread contract: publish(), reclaim(), synchronize(), register_reader()
// and unregister_reader() are control-thread calls (one writer). current(),
// quiescent(), online() and offline() are reader calls; each reader id is
// used by one thread at a time. Readers never block and never allocate;
// the writer allocates for its retire list only.
// Costs: quiescent() is rte_rcu_qsbr_quiescent, one acquire load and one
// release store (a cache line of its own per reader); current() is one
// load. reclaim() is O(readers x retired) (rte_rcu_qsbr_check per token).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tierwall/dataplane/dpdk/classify.h"

struct rte_rcu_qsbr;

namespace tierwall::dataplane::dpdk {

class GenerationStore {
 public:
  static constexpr unsigned kMaxReaders = 128;

  GenerationStore();
  // Frees the current and every retired generation: all readers must be
  // stopped (unregistered or offline and never to read again).
  ~GenerationStore();
  GenerationStore(const GenerationStore&) = delete;
  GenerationStore& operator=(const GenerationStore&) = delete;

  // --- writer (control thread) ---
  // Makes `g` current, retires the previous one, then reclaims what it can
  // (a null `g` only reclaims).
  // Returns the number of generations still waiting for a grace period.
  std::size_t publish(std::unique_ptr<const Generation> g);
  // Frees retired generations whose grace period has passed; returns how
  // many are still waiting.
  std::size_t reclaim();
  // Waits (yielding) until every retired generation can be freed, frees them.
  void synchronize();
  // A reader id in [0, kMaxReaders), initially offline; -1 when full.
  int register_reader();
  void unregister_reader(int reader);

  // --- readers (lcores) ---
  // Start / stop taking part in grace periods. online() also counts as a
  // quiescent state.
  void online(int reader);
  void offline(int reader);
  // "I hold no Generation pointer now": call between bursts.
  void quiescent(int reader);
  // The current generation (may be null before the first publish); valid
  // until this reader's next quiescent() or offline().
  [[nodiscard]] const Generation* current() const {
    return current_.load(std::memory_order_seq_cst);
  }

 private:
  struct Retired {
    const Generation* generation;
    std::uint64_t token;  // from rte_rcu_qsbr_start when it was replaced
  };
  struct FreeQs {
    void operator()(rte_rcu_qsbr* v) const;
  };

  std::atomic<const Generation*> current_{nullptr};
  std::unique_ptr<rte_rcu_qsbr, FreeQs> qs_;
  std::array<std::atomic<bool>, kMaxReaders> used_{};  // reader ids handed out
  std::vector<Retired> retired_;
};

}  // namespace tierwall::dataplane::dpdk
