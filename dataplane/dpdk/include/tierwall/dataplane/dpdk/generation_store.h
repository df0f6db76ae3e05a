// Publication of Generations to the lcores with RCU (quiescent-state-based
// reclamation), the contract of DPDK's rte_rcu_qsbr:
//  * the control thread publishes a new Generation (one atomic pointer
//    store); readers load the current pointer at any time while online;
//  * each reader reports a quiescent state between bursts (it then holds no
//    pointer to any Generation); a burst that loaded the pointer once is
//    decided entirely by that one generation;
//  * a replaced Generation is freed by the writer once every online reader
//    has reported a quiescent state after the replacement (grace period).
//    Offline readers (idle lcores) do not hold grace periods back.
//
// Why our own and not rte_rcu_qsbr: the scheme is ~100 lines over
// std::atomic, needs no EAL, no librte_* link and no hugepages, so the
// decision core (and its threaded ASan test) builds and runs anywhere. The
// contract and the reader calls map 1:1 onto rte_rcu_qsbr
// (register/online/quiescent/offline, a token per retired object), so the
// EAL dataplane may switch to it without touching callers.
//
// Thread contract: publish(), reclaim(), synchronize(), register_reader()
// and unregister_reader() are control-thread calls (one writer). current(),
// quiescent(), online() and offline() are reader calls; each reader id is
// used by one thread at a time. Readers never block and never allocate;
// the writer allocates for its retire list only.
// Costs: quiescent() is one seq_cst load and one release store (a cache
// line of its own per reader); current() is one load. reclaim() is
// O(readers + retired).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tierwall/dataplane/dpdk/classify.h"

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
  struct alignas(64) ReaderSlot {
    // 0: offline; otherwise the epoch seen at the last quiescent state.
    std::atomic<std::uint64_t> seen{0};
    std::atomic<bool> registered{false};
  };
  struct Retired {
    const Generation* generation;
    std::uint64_t epoch;  // readers must have seen >= epoch
  };

  std::atomic<const Generation*> current_{nullptr};
  std::atomic<std::uint64_t> epoch_{1};
  std::unique_ptr<ReaderSlot[]> readers_;
  std::vector<Retired> retired_;
};

}  // namespace tierwall::dataplane::dpdk
