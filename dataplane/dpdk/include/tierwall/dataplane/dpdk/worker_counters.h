// Counters with one writer, a worker on the fast path, and readers on any
// thread: the worker counts in its own memory and publish() adds those
// counts to relaxed atomics once per burst, so no packet writes a shared
// cache line. Readers see every count published so far, never a partial one.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace tierwall::dataplane::dpdk {

template <std::size_t N>
class WorkerCounters {
 public:
  // The worker's unpublished count of counter `i`. Worker thread only.
  std::uint64_t& operator[](std::size_t i) { return local_[i]; }

  // Adds the unpublished counts to the published ones and restarts them at
  // 0. Worker thread only.
  void publish() {
    for (std::size_t i = 0; i < N; ++i) {
      if (local_[i] == 0) continue;
      published_[i].store(published_[i].load(std::memory_order_relaxed) + local_[i],
                          std::memory_order_relaxed);
      local_[i] = 0;
    }
  }

  // Counter `i` as last published. Any thread.
  [[nodiscard]] std::uint64_t published(std::size_t i) const {
    return published_[i].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::uint64_t, N> local_{};
  std::array<std::atomic<std::uint64_t>, N> published_{};
};

}  // namespace tierwall::dataplane::dpdk
