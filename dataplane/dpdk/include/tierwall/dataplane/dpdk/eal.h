// The DPDK Environment Abstraction Layer, initialised once per process.
//
// rte_eal_init() may run only once in a process (a second call fails with
// EALREADY, and after rte_eal_cleanup() it cannot run again), so Eal is a
// process-wide singleton: the first Eal::init() initialises with its
// arguments, later calls return the same outcome and ignore theirs. The EAL
// is cleaned up (rte_eal_cleanup) when the process exits, after every Port
// has been closed.
//
// Eal::default_args() works without hugepages and without root-owned
// shared state: `--no-huge -m 256` (anonymous memory, IOVA as VA),
// `--no-pci`, `--no-shconf` and a per-process `--file-prefix` (so any number
// of processes can run at once; `--in-memory` is refused by DPDK 22.11
// together with --no-huge, which implies --legacy-mem), `--no-telemetry`,
// one lcore on the first CPU the process may use. Ports are added later by
// hotplug (Port::open_vdev), in the network namespace of the calling
// thread, so no --vdev is needed here.
//
// rte_eal_init() pins the calling thread to the main lcore's CPU; init()
// restores the thread's previous CPU affinity afterwards, so a test process
// keeps using all its CPUs (the forwarding loop runs on any thread).
//
// Thread contract: init() may be called from any thread, concurrently.
#pragma once

#include <string>
#include <vector>

namespace tierwall::dataplane::dpdk {

class Eal {
 public:
  // Initialises the EAL with `args` (argv[1..]; a program name is added) on
  // the first call. Returns an empty string on success, otherwise why the
  // EAL could not start (rte_strerror(rte_errno) and the arguments); the
  // same answer on every later call.
  static std::string init(const std::vector<std::string>& args);
  // True once init() has succeeded.
  static bool initialized();
  // The arguments described above; `memory_mb` is the -m size.
  static std::vector<std::string> default_args(unsigned memory_mb = 256);
};

}  // namespace tierwall::dataplane::dpdk
