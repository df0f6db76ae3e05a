// The DPDK dataplane as the agent drives it: a dataplane::Dataplane that
// owns the EAL, the ports, the GenerationStore, the forwarding workers (one
// thread running one Bridge each), and the rte_ring that carries their flow
// events to the control thread. docs/dpdk.md, "In the agent".
//
//  * open(): Eal::init(eal_args) (once per process), the ports opened from
//    their devargs in the calling thread's network namespace (af_packet
//    binds there), each overlay uplink checked (Overlay::create) with the
//    port's own MAC, the event ring (rte_ring, multi-producer / single
//    consumer), then the forwarding workers. Until the first apply() no
//    generation is published and every IP packet is dropped (no_generation);
//    non-IP frames (ARP) are bridged.
//  * apply(rules): build_generation + GenerationStore::publish: each worker
//    takes it at its next burst; connections the new generation denies are
//    cut on their next packet.
//  * update_endpoints(changes): the changes applied to a copy of the last
//    applied RuleSet's endpoint table, a generation rebuilt and published
//    (rules unchanged; a generation is immutable, so a change is a rebuild:
//    O(endpoints + rules x pairs), milliseconds for thousands).
//  * flush(): publishes a generation with no rules and no endpoints, which
//    denies every IP packet (default deny). It does not stop the workers or
//    forward unpoliced: this dataplane fails closed. The next apply()
//    restores enforcement.
//  * drain_events(): what the workers reported since the last call (starts,
//    folded denies, cuts, connection ends with their counts; flow_events.h).
//  * stop(fn) / the destructor: the forwarding workers stop; the flows
//    they remembered end and their folded denies are flushed into the ring
//    (drained into fn meanwhile), the ports close. Traffic through the
//    ports stops with the process: nothing forwards without the agent.
//
// Workers (DpdkDataplaneConfig::workers, default 1) are ordinary threads
// registered with the EAL (rte_thread_register: an lcore id, so mempool
// caches), not EAL-launched lcores. Each has queue i of every port, its own flow table
// (flow_capacity entries), learning table and overlay state; all read the
// one GenerationStore (a reader each) and share the event ring. A
// connection stays on one worker when the ports spread their queues by a
// symmetric hash (port.h: af_packet's fanout, symmetric RSS); a packet on
// another worker is decided as a new connection (fail closed). Overlay
// uplinks need one worker: their queues are spread by the outer header.
//
// Thread contract: every method on one control thread, except stats(),
// which any thread may call. DPDK headers stay out of this header.
// Costs: apply/update: a generation build (no allocation on the workers);
// drain_events: O(events); stats(): O(ports) PMD stats reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tierwall/dataplane/dataplane.h"
#include "tierwall/dataplane/dpdk/bridge.h"
#include "tierwall/dataplane/dpdk/flow_events.h"
#include "tierwall/dataplane/dpdk/port.h"

namespace tierwall::dataplane::dpdk {

struct DpdkPortConfig {
  std::string devargs;  // "net_af_packet0,iface=veth0"
  std::string name;     // for metrics and logs; default: the device name
  // Set: the port is a VXLAN-GBP overlay uplink (bridge.h, overlay.h);
  // local_mac is ignored: open() takes the opened port's own MAC.
  std::optional<OverlayConfig> overlay;
};

struct DpdkDataplaneConfig {
  std::vector<std::string> eal_args;  // empty: Eal::default_args()
  std::vector<DpdkPortConfig> ports;  // 1..Bridge::kMaxPorts
  // Forwarding workers (threads), 1..Port::kMaxQueues: worker i polls
  // queue i of every port (port.h, "Several queues").
  std::uint32_t workers = 1;
  std::uint32_t idle_sleep_us = 0;                   // 0: busy poll
  std::size_t flow_capacity = std::size_t{1} << 16;  // per worker
  std::size_t event_ring_size = 16384;               // events (rounded up to 2^k)
  FlowEventOptions events;
  PortOptions port;
};

struct DpdkPortStats {
  std::string name;
  PortStats stats;
};

struct DpdkWorkerStats {
  BridgeCounters bridge;
  FlowCounters flows;
  FlowEventCounters events;
};

struct DpdkStats {
  BridgeCounters bridge;  // the sums over the workers
  FlowCounters flows;
  FlowEventCounters events;
  std::vector<DpdkWorkerStats> workers;  // worker i's own
  std::vector<DpdkPortStats> ports;
  std::size_t ring_capacity = 0;
  std::size_t ring_used = 0;
  std::uint64_t drained = 0;     // events the control thread took off the ring
  std::uint64_t generation = 0;  // id of the published generation (0: none / flushed)
};

class DpdkDataplane final : public Dataplane {
 public:
  // Null with `error` set (nothing left running) when the EAL, a port, an
  // overlay uplink or the ring cannot be set up; an overlay's error names
  // its port ("port uplink: overlay: ...").
  static std::unique_ptr<DpdkDataplane> open(const DpdkDataplaneConfig& config, std::string& error);
  ~DpdkDataplane() override;
  DpdkDataplane(const DpdkDataplane&) = delete;
  DpdkDataplane& operator=(const DpdkDataplane&) = delete;

  std::optional<DataplaneError> apply(const RuleSet& rules) override;
  std::optional<DataplaneError> update_endpoints(std::span<const EndpointChange> changes) override;
  std::optional<DataplaneError> flush() override;

  // Takes up to `max` events off the ring, oldest first, calling fn for
  // each; returns how many. Also frees generations whose grace period
  // passed.
  std::size_t drain_events(const std::function<void(const FlowEventRecord&)>& fn,
                           std::size_t max = 4096);
  // Stops the forwarding workers (idempotent). Each then ends every remembered
  // flow and flushes its folded denies into the ring, waiting for room (up
  // to 2 s per event) while `fn` (when set) drains the ring here; the ring
  // is drained into `fn` to the end. Without `fn`, a later drain_events()
  // gets what fit.
  void stop(const std::function<void(const FlowEventRecord&)>& fn = {});

  [[nodiscard]] DpdkStats stats() const;
  [[nodiscard]] std::size_t port_count() const;

 private:
  struct Impl;
  DpdkDataplane();
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierwall::dataplane::dpdk
