#include "tierwall/dataplane/dpdk/eal.h"

#include <mutex>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <rte_eal.h>
#include <rte_errno.h>

namespace tierwall::dataplane::dpdk {
namespace {

// Owns the process's EAL: rte_eal_cleanup() when static objects are
// destroyed at exit.
struct EalState {
  std::mutex mu;
  bool attempted = false;
  bool ok = false;
  std::string error;
  ~EalState() {
    if (!ok) return;
    // --no-shconf leaves the per-prefix runtime directory empty: remove it,
    // so that every process does not leave a /var/run/dpdk/<prefix> behind.
    const std::string runtime_dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    if (!runtime_dir.empty()) rmdir(runtime_dir.c_str());
  }
};

EalState& state() {
  static EalState s;
  return s;
}

std::string join(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

}  // namespace

std::string Eal::init(const std::vector<std::string>& args) {
  EalState& s = state();
  std::lock_guard lock(s.mu);
  if (s.attempted) return s.error;
  s.attempted = true;

  std::vector<std::string> storage;
  storage.reserve(args.size() + 1);
  storage.emplace_back("tierwall");
  for (const auto& a : args) storage.push_back(a);
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  cpu_set_t affinity;
  CPU_ZERO(&affinity);
  const bool have_affinity =
      pthread_getaffinity_np(pthread_self(), sizeof(affinity), &affinity) == 0;

  const int rc = rte_eal_init(static_cast<int>(storage.size()), argv.data());
  if (rc < 0) {
    s.error = "rte_eal_init failed: " + std::string(rte_strerror(rte_errno)) + " (rte_errno " +
              std::to_string(rte_errno) + "), args: " + join(args);
    return s.error;
  }
  if (have_affinity) pthread_setaffinity_np(pthread_self(), sizeof(affinity), &affinity);
  s.ok = true;
  return {};
}

bool Eal::initialized() {
  EalState& s = state();
  std::lock_guard lock(s.mu);
  return s.ok;
}

std::vector<std::string> Eal::default_args(unsigned memory_mb) {
  unsigned cpu = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (unsigned i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &set)) {
        cpu = i;
        break;
      }
    }
  }
  return {"-l",
          std::to_string(cpu),
          "--no-huge",
          "-m",
          std::to_string(memory_mb),
          "--no-pci",
          "--no-shconf",
          "--file-prefix=tierwall-" + std::to_string(getpid()),
          "--no-telemetry",
          "--log-level=lib.eal:warning"};
}

}  // namespace tierwall::dataplane::dpdk
