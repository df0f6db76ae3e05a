// The DPDK dataplane's forwarding loop: an L2 learning bridge between ports
// (container ports and uplinks) that enforces the policy on IP traffic.
//
// One Bridge is one lcore's loop, run() on the calling thread until the
// given flag turns true, over one queue (BridgeOptions::queue) of every
// port. Per iteration and port: rte_eth_rx_burst (up to kBurst frames) -> parse_packet -> learn the
// source MAC on the ingress port ->
//  * malformed (is_malformed): dropped, counted per ParseStatus;
//  * not IP (ARP, LLDP...) and IPv6 neighbour discovery (ICMPv6 133-137):
//    forwarded without policy, like the kernel bridge;
//  * IP, non-first fragment: dropped (no fragment table yet);
//  * IP: FlowTable::process_burst against the GenerationStore's current
//    Generation (loaded once per burst; a quiescent state is reported between
//    bursts); passed (Allow / Audit) -> forwarded, Deny / Cut -> dropped;
//    no generation published yet -> dropped;
// forwarded = sent to the port learned for the destination MAC, or flooded
// to every other port when the destination is unknown, broadcast or
// multicast (one mbuf, reference-counted, no copy); a frame whose
// destination was learned on its ingress port is dropped (filtered), as a
// bridge does. Frames are queued per egress port and sent with
// rte_eth_tx_burst at the end of each RX burst; what the PMD does not
// accept is freed and counted.
//
// Overlay uplinks (BridgeOptions::overlays, overlay.h): a port may be an
// uplink carrying VXLAN-GBP to trusted peer VTEPs. What it receives is
// checked (Overlay::check_ingress: refused frames are dropped and counted
// per OverlayRefusal), decapsulated, its inner source MAC learned behind
// the peer, and the inner frame decided (FlowPacket::src_tag = the group
// id: the flow table checks it on a connection's first packet, decides a
// source this node does not know by its tier and refuses a contradicting
// tag, FlowResult::tag) and forwarded to container
// ports only (never back to an uplink). A frame from a container port whose
// destination was learned behind a peer is encapsulated to that peer (in
// place, rte_pktmbuf_prepend) with the group id of its source tier
// (egress_group, under the generation that decided it) and the A bit; an
// unknown, broadcast or multicast destination is flooded to the other
// container ports and, head-end replicated (one copy per peer from the
// uplink port's pool), to every peer. Container ports never decapsulate:
// VXLAN sent by a container is a UDP packet like any other.
//
// Learning table: open addressing, fixed capacity (BridgeOptions), MAC ->
// port and last-seen time; entries older than `mac_ageing_ns` are ignored
// and reused; when full, a new MAC is not learned (its frames flood).
//
// Flow events: with BridgeOptions::events set, every decision that makes a
// flow-log record (a new connection passed, denied packets, a cut) and
// every remembered connection's end (with its counts: the flow table then
// counts per flow, and ~64 of its slots are swept for expired flows per
// iteration) is handed to that sink through a FlowEventEmitter
// (flow_events.h: denies folded, rate-limited, every packet counted). When
// run() returns, the remaining flows end (reason stopped) and the folded
// denies are flushed. Null: no events, no cost.
//
// Thread contract: construct/destroy on the control thread (they register
// and unregister a GenerationStore reader); run() on one thread at a time;
// counters() from any thread at any time (relaxed atomics: each counter is
// exact, a snapshot is not one instant).
// Costs per packet: a parse, a learning-table probe or two, a flow-table
// lookup for IP; no allocation, lock, log or system call (the clock is read
// once per burst through the vDSO). Uplinks add a peer-table probe per frame
// (the tag check rides on the flow table's own source lookup); egress to an
// uplink adds a Generation::resolve of the source; encapsulation writes
// 50-70 header bytes, and a flood takes one mempool buffer per peer.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tierwall/dataplane/dpdk/flow_events.h"
#include "tierwall/dataplane/dpdk/flow_table.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/dpdk/port.h"

namespace tierwall::dataplane::dpdk {

// A Bridge port that is an overlay uplink.
struct BridgeOverlay {
  std::size_t port = 0;  // index in the Bridge's ports
  OverlayConfig config;
};

struct BridgeOptions {
  // The RX and TX queue of every port this Bridge polls and sends on (one
  // Bridge per queue: a worker; Port, "Several queues"). Each worker has its
  // own flow table, learning table and overlay state.
  std::uint16_t queue = 0;
  FlowTableOptions flows{.capacity = std::size_t{1} << 16, .timeouts = {}};
  ParseOptions parse;
  std::size_t mac_capacity = 4096;  // learning-table slots (rounded up to 2^k)
  std::uint64_t mac_ageing_ns = 300 * kNsPerSecond;
  // Sleep this long after an iteration that received nothing (0: busy poll,
  // as a dedicated lcore does; tests and shared machines use a few tens of
  // microseconds).
  std::uint32_t idle_sleep_us = 0;
  // Where flow events go (outliving the Bridge); null: none.
  FlowEventSink* events = nullptr;
  FlowEventOptions event_options;
  // Overlay uplinks (at most one per port); every other port is a container
  // port. The Bridge constructor throws std::invalid_argument on a bad one.
  std::vector<BridgeOverlay> overlays;
};

struct BridgeCounters {
  std::uint64_t rx = 0;              // frames received (all ports)
  std::uint64_t tx = 0;              // frames accepted by the PMDs (a flood counts per port)
  std::uint64_t tx_failed = 0;       // refused by tx_burst, freed
  std::uint64_t forwarded = 0;       // frames sent to one learned port
  std::uint64_t flooded = 0;         // frames sent to every other port
  std::uint64_t filtered = 0;        // destination learned on the ingress port
  std::uint64_t non_ip = 0;          // passed without policy (not IP, or IPv6 ND)
  std::uint64_t ip_allowed = 0;      // IP frames the policy passed (Allow or Audit)
  std::uint64_t policy_dropped = 0;  // IP frames denied (new connections and cuts)
  std::uint64_t policy_cut = 0;      // of which established flows cut by a new generation
  std::uint64_t no_generation = 0;   // IP frames dropped before the first publish
  std::uint64_t fragments_dropped = 0;
  std::array<std::uint64_t, kParseStatusCount> by_status{};  // every frame, per ParseStatus
  std::uint64_t malformed = 0;   // sum of the malformed statuses (dropped)
  std::uint64_t learned = 0;     // MACs learned or moved to another port
  std::uint64_t learn_full = 0;  // MACs not learned: table full
  std::uint64_t bursts = 0;      // non-empty RX bursts
  // Overlay uplinks (docs/dpdk.md, "Overlay").
  std::uint64_t overlay_decapsulated = 0;  // VXLAN frames accepted from a peer VTEP
  std::uint64_t overlay_encapsulated = 0;  // frames sent to a peer (a replication counts per peer)
  std::uint64_t overlay_encap_failed = 0;  // no mbuf for a copy, no headroom, chained: dropped
  std::uint64_t overlay_by_tag = 0;        // new connections decided by their tag (source unknown)
  std::uint64_t overlay_refused = 0;       // frames refused on an uplink: sum of the reasons
  std::array<std::uint64_t, kOverlayRefusalCount> overlay_refused_by{};  // per OverlayRefusal

  // Field by field: the sum over several Bridges (workers).
  BridgeCounters& operator+=(const BridgeCounters& other);
};

class Bridge {
 public:
  static constexpr std::size_t kMaxPorts = 8;
  static constexpr std::uint16_t kBurst = 64;

  // `ports` (1..kMaxPorts, outliving the Bridge) in the order of their
  // indexes. Registers a reader in `store` (which must outlive the Bridge).
  Bridge(std::span<Port* const> ports, GenerationStore& store, const BridgeOptions& options = {});
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // The loop: returns once `stop` is true (checked between iterations).
  // The reader is online while it runs, offline when it returns.
  void run(const std::atomic<bool>& stop);
  // One iteration over every port (what run() repeats); returns the number
  // of frames received. For tests and for callers with their own loop;
  // the caller reports the reader online first (store.online(reader())).
  std::size_t poll_once();

  [[nodiscard]] BridgeCounters counters() const;
  // The flow table's counters and the event emitter's, published after each
  // iteration like counters(): callable from any thread.
  [[nodiscard]] FlowCounters flow_counters() const;
  [[nodiscard]] FlowEventCounters event_counters() const;
  [[nodiscard]] int reader() const { return reader_; }
  [[nodiscard]] const FlowTable& flows() const { return flows_; }
  [[nodiscard]] std::size_t port_count() const { return ports_.size(); }

 private:
  struct Impl;
  std::vector<Port*> ports_;
  GenerationStore& store_;
  BridgeOptions options_;
  int reader_ = -1;
  FlowTable flows_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierwall::dataplane::dpdk
