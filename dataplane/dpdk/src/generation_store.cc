#include "tierwall/dataplane/dpdk/generation_store.h"

#include <algorithm>
#include <limits>
#include <thread>

namespace tierwall::dataplane::dpdk {

GenerationStore::GenerationStore() : readers_(new ReaderSlot[kMaxReaders]) {}

GenerationStore::~GenerationStore() {
  delete current_.load();
  for (const Retired& r : retired_) delete r.generation;
}

std::size_t GenerationStore::publish(std::unique_ptr<const Generation> g) {
  if (!g) return reclaim();
  const Generation* old = current_.exchange(g.release(), std::memory_order_seq_cst);
  if (old != nullptr) {
    // Readers that report a quiescent state after this increment have
    // dropped `old` and can only load the new pointer.
    const std::uint64_t e = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
    retired_.push_back(Retired{old, e});
  }
  return reclaim();
}

std::size_t GenerationStore::reclaim() {
  if (retired_.empty()) return 0;
  std::uint64_t min_seen = std::numeric_limits<std::uint64_t>::max();
  for (unsigned i = 0; i < kMaxReaders; ++i) {
    if (!readers_[i].registered.load(std::memory_order_acquire)) continue;
    const std::uint64_t s = readers_[i].seen.load(std::memory_order_seq_cst);
    if (s != 0) min_seen = std::min(min_seen, s);
  }
  const auto keep = std::partition(retired_.begin(), retired_.end(),
                                   [&](const Retired& r) { return r.epoch > min_seen; });
  for (auto it = keep; it != retired_.end(); ++it) delete it->generation;
  retired_.erase(keep, retired_.end());
  return retired_.size();
}

void GenerationStore::synchronize() {
  while (reclaim() != 0) std::this_thread::yield();
}

int GenerationStore::register_reader() {
  for (unsigned i = 0; i < kMaxReaders; ++i) {
    bool expected = false;
    if (readers_[i].registered.compare_exchange_strong(expected, true)) {
      readers_[i].seen.store(0, std::memory_order_seq_cst);
      return static_cast<int>(i);
    }
  }
  return -1;
}

void GenerationStore::unregister_reader(int reader) {
  if (reader < 0 || static_cast<unsigned>(reader) >= kMaxReaders) return;
  ReaderSlot& r = readers_[static_cast<unsigned>(reader)];
  r.seen.store(0, std::memory_order_seq_cst);
  r.registered.store(false, std::memory_order_release);
}

void GenerationStore::online(int reader) {
  // seq_cst store, then (in the caller) a seq_cst load of the pointer:
  // either the writer's scan sees us online, or we see its new pointer.
  readers_[static_cast<unsigned>(reader)].seen.store(epoch_.load(std::memory_order_seq_cst),
                                                     std::memory_order_seq_cst);
}

void GenerationStore::offline(int reader) {
  readers_[static_cast<unsigned>(reader)].seen.store(0, std::memory_order_release);
}

void GenerationStore::quiescent(int reader) {
  // Release: every read of the generation we held happens before the
  // writer's load of this value, hence before it frees the generation.
  readers_[static_cast<unsigned>(reader)].seen.store(epoch_.load(std::memory_order_seq_cst),
                                                     std::memory_order_release);
}

}  // namespace tierwall::dataplane::dpdk
