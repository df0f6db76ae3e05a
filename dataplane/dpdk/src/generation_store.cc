#include "tierwall/dataplane/dpdk/generation_store.h"

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include <rte_rcu_qsbr.h>

namespace tierwall::dataplane::dpdk {

void GenerationStore::FreeQs::operator()(rte_rcu_qsbr* v) const { std::free(v); }

GenerationStore::GenerationStore() {
  const std::size_t size = rte_rcu_qsbr_get_memsize(kMaxReaders);
  // rte_rcu_qsbr wants cache-line alignment; aligned_alloc wants a multiple.
  const std::size_t rounded =
      (size + RTE_CACHE_LINE_SIZE - 1) / RTE_CACHE_LINE_SIZE * RTE_CACHE_LINE_SIZE;
  auto* v = static_cast<rte_rcu_qsbr*>(std::aligned_alloc(RTE_CACHE_LINE_SIZE, rounded));
  if (v == nullptr) throw std::bad_alloc();
  qs_.reset(v);
  if (rte_rcu_qsbr_init(v, kMaxReaders) != 0) {
    throw std::runtime_error("rte_rcu_qsbr_init(" + std::to_string(kMaxReaders) + ") failed");
  }
}

GenerationStore::~GenerationStore() {
  delete current_.load();
  for (const Retired& r : retired_) delete r.generation;
}

std::size_t GenerationStore::publish(std::unique_ptr<const Generation> g) {
  if (!g) return reclaim();
  const Generation* old = current_.exchange(g.release(), std::memory_order_seq_cst);
  if (old != nullptr) {
    // Readers that report a quiescent state with this token (or a later
    // one) have dropped `old` and can only load the new pointer.
    retired_.push_back(Retired{old, rte_rcu_qsbr_start(qs_.get())});
  }
  return reclaim();
}

std::size_t GenerationStore::reclaim() {
  if (retired_.empty()) return 0;
  // Tokens grow: once one's grace period is still running, so are the
  // later ones'.
  std::size_t done = 0;
  while (done < retired_.size() &&
         rte_rcu_qsbr_check(qs_.get(), retired_[done].token, false) == 1) {
    delete retired_[done].generation;
    ++done;
  }
  retired_.erase(retired_.begin(), retired_.begin() + static_cast<std::ptrdiff_t>(done));
  return retired_.size();
}

void GenerationStore::synchronize() {
  if (retired_.empty()) return;
  rte_rcu_qsbr_check(qs_.get(), retired_.back().token, true);
  reclaim();
}

int GenerationStore::register_reader() {
  for (unsigned i = 0; i < kMaxReaders; ++i) {
    bool expected = false;
    if (used_[i].compare_exchange_strong(expected, true)) {
      if (rte_rcu_qsbr_thread_register(qs_.get(), i) != 0) {
        used_[i].store(false);
        return -1;
      }
      return static_cast<int>(i);
    }
  }
  return -1;
}

void GenerationStore::unregister_reader(int reader) {
  if (reader < 0 || static_cast<unsigned>(reader) >= kMaxReaders) return;
  const auto id = static_cast<unsigned>(reader);
  rte_rcu_qsbr_thread_offline(qs_.get(), id);
  rte_rcu_qsbr_thread_unregister(qs_.get(), id);
  used_[id].store(false, std::memory_order_release);
}

void GenerationStore::online(int reader) {
  // Its store, then a full fence, before the caller loads the pointer:
  // either the writer's check sees us online, or we see its new pointer.
  rte_rcu_qsbr_thread_online(qs_.get(), static_cast<unsigned>(reader));
}

void GenerationStore::offline(int reader) {
  rte_rcu_qsbr_thread_offline(qs_.get(), static_cast<unsigned>(reader));
}

void GenerationStore::quiescent(int reader) {
  // Release: every read of the generation we held happens before the
  // writer's check sees this, hence before it frees the generation.
  rte_rcu_qsbr_quiescent(qs_.get(), static_cast<unsigned>(reader));
}

}  // namespace tierwall::dataplane::dpdk
