// What the root benchmarks (agent, cluster, flowlog, nft) share around
// their runs: ctest's skip exit code, and SIGINT/SIGTERM turned into an
// exception at the run's next check_stop(), so that the destructors of
// what the run made (network namespaces, containers, nft tables, agents,
// etcd) clean up on the way out.
//
// Thread contract: on_signal only stores an atomic flag; check_stop() may
// be called from any thread.
#pragma once

#include <atomic>
#include <stdexcept>

namespace tierwall_bench {

inline constexpr int kExitSkip = 77;  // ctest SKIP_RETURN_CODE

inline std::atomic<bool> g_stop{false};

// For std::signal(SIGINT / SIGTERM, on_signal).
inline void on_signal(int) { g_stop.store(true); }

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Cannot run here (no root, no namespaces, no etcd, ...): exit kExitSkip.
struct Unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check_stop() {
  if (g_stop.load()) throw Interrupted();
}

}  // namespace tierwall_bench
