// Flow events of the DPDK dataplane: what the forwarding lcore reports about
// the connections it decides, as fixed-size values handed to a sink (the
// agent's rte_ring, docs/dpdk.md "In the agent").
//
// Events, produced where the Bridge decides:
//  * Start: the first packet of a new connection the policy passed (Allow or
//    Audit): one event per connection (the flow table remembers it).
//  * Deny: denied packets of one (src, dst, protocol, port, rule,
//    generation) folded into one event whose `count` is the number of
//    packets, emitted when the fold window closes or its slot is needed.
//  * Cut: a packet of an established connection that a new generation
//    denies (the flow table dropped the connection); the addresses and
//    ports are those of that packet, the decision that of the new
//    generation for the connection.
//  * End: a remembered connection left the flow table (expired, evicted,
//    cut, or the lcore stopped), with its id (that of its Start) and its
//    packet and byte counts per direction. The emitter is the flow table's
//    FlowEndSink (FlowTableOptions::count).
//
// FlowEventEmitter is the lcore side: it folds denies in a direct-mapped
// cache, rate-limits the events that leave it for denies (a flood of
// distinct denied packets cannot crowd out the starts), and counts every
// packet an event stands for: for every run,
//   packets reported (sum of `count` over events the sink took)
//     + lost (sink full) + rate_limited = starts + cuts + ends + denied packets
// (a Start, Cut or End event counts 1).
//
// Thread contract: a FlowEventEmitter belongs to one lcore (start(), deny(),
// cut(), tick(), flush(), publish()); counters() may be called from any
// thread (relaxed atomics published by publish()). The sink is called on the
// lcore and must never block.
// Costs: start/cut/end: one sink call; deny: one hash and one 64-byte slot
// compare, a sink call only when a slot is flushed; tick(): a scan of the
// fold cache at most every window/4. No allocation, lock, log or system
// call after construction.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/flow_table.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/dpdk/worker_counters.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane::dpdk {

enum class FlowEventType : std::uint8_t { Start = 0, Deny = 1, Cut = 2, End = 3 };
std::string_view to_string(FlowEventType type);

// One event, trivially copyable (it is copied into an rte_ring slot).
struct alignas(8) FlowEventRecord {
  std::uint64_t time_ns = 0;     // CLOCK_MONOTONIC when the (first) packet was decided
  std::uint64_t generation = 0;  // Generation::id(): the policy generation that decided
  IpAddress src;                 // the packet's source
  IpAddress dst;
  std::uint32_t count = 1;  // packets this event stands for (Deny: folded)
  RuleId rule = kRuleDefaultDeny;
  std::uint16_t src_port = 0;  // TCP/UDP/SCTP; 0 otherwise
  std::uint16_t dst_port = 0;
  std::uint8_t protocol = 0;
  std::uint8_t icmp_type = 0;  // ICMP/ICMPv6 only
  std::uint8_t icmp_code = 0;
  FlowEventType type = FlowEventType::Start;
  Verdict verdict = Verdict::Deny;
  RuleKind kind = RuleKind::DefaultDeny;
  std::uint8_t port = 0;        // ingress port index (Start, Deny, Cut)
  std::uint8_t end_reason = 0;  // End: a FlowEndReason
  std::uint32_t flow_id = 0;    // Start and End: the flow table's id; 0 otherwise
  std::uint32_t pad = 0;
  // End: initiator -> responder (orig) and back (reply).
  std::uint64_t packets_orig = 0;
  std::uint64_t packets_reply = 0;
  std::uint64_t bytes_orig = 0;
  std::uint64_t bytes_reply = 0;
};
static_assert(sizeof(FlowEventRecord) % 8 == 0);

// Where the lcore puts events. push() never blocks; false when the event was
// not taken (full): the emitter counts its packets as lost.
class FlowEventSink {
 public:
  virtual ~FlowEventSink() = default;
  virtual bool push(const FlowEventRecord& event) = 0;
};

struct FlowEventOptions {
  std::size_t fold_slots = 1024;               // deny fold cache (rounded up to 2^k)
  std::uint64_t fold_window_ns = 250'000'000;  // a deny event covers at most this long
  // Deny events (not packets) that may leave the emitter per second; the
  // packets of the others are counted in rate_limited.
  std::uint32_t deny_events_per_second = 20'000;
};

struct FlowEventCounters {
  std::uint64_t events = 0;        // events the sink took
  std::uint64_t starts = 0;        // of which Start
  std::uint64_t denies = 0;        // of which Deny
  std::uint64_t cuts = 0;          // of which Cut
  std::uint64_t ends = 0;          // of which End
  std::uint64_t packets = 0;       // sum of `count` over the events the sink took
  std::uint64_t lost = 0;          // packets of events the sink refused (full)
  std::uint64_t rate_limited = 0;  // packets of deny events over the rate limit
  std::uint64_t folded = 0;        // denied packets folded into an earlier event

  // Field by field: the sum over several emitters (workers).
  FlowEventCounters& operator+=(const FlowEventCounters& other);
};

class FlowEventEmitter final : public FlowEndSink {
 public:
  FlowEventEmitter(FlowEventSink& sink, const FlowEventOptions& options = {});
  FlowEventEmitter(const FlowEventEmitter&) = delete;
  FlowEventEmitter& operator=(const FlowEventEmitter&) = delete;

  // A packet decided under `generation` at `now_ns` (the FlowTable's outcome
  // New with a passing verdict, Denied, or Cut), on ingress port `port`.
  void start(const PacketInfo& p, const FastDecision& d, std::uint64_t generation,
             std::uint8_t port, std::uint64_t now_ns, std::uint32_t flow_id = 0);
  void deny(const PacketInfo& p, const FastDecision& d, std::uint64_t generation, std::uint8_t port,
            std::uint64_t now_ns);
  void cut(const PacketInfo& p, const FastDecision& d, std::uint64_t generation, std::uint8_t port,
           std::uint64_t now_ns);
  // FlowEndSink: a remembered flow left the flow table.
  void ended(const FlowEnd& end, std::uint64_t now_ns) override;
  // Emits the folded denies whose window has closed (cheap when called
  // often: scans at most every window/4).
  void tick(std::uint64_t now_ns);
  // Emits every folded deny (the lcore stops).
  void flush();
  // Makes the counters visible to counters().
  void publish();
  [[nodiscard]] FlowEventCounters counters() const;

 private:
  struct Slot {
    FlowEventRecord event;
    std::uint16_t decision_port = 0;
    bool used = false;
  };
  enum Counter : std::size_t {
    kEvents,
    kStarts,
    kDenies,
    kCuts,
    kEnds,
    kPackets,
    kLost,
    kRateLimited,
    kFolded,
    kCount
  };

  void emit(const FlowEventRecord& e);
  void emit_deny(const FlowEventRecord& e, std::uint64_t now_ns);
  static FlowEventRecord make(const PacketInfo& p, const FastDecision& d, std::uint64_t generation,
                              std::uint8_t port, std::uint64_t now_ns, FlowEventType type);

  FlowEventSink& sink_;
  FlowEventOptions options_;
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::uint64_t next_scan_ns_ = 0;
  std::uint64_t tokens_ = 0;  // deny events allowed now, refilled with time
  std::uint64_t refilled_ns_ = 0;
  WorkerCounters<kCount> counts_;
};

}  // namespace tierwall::dataplane::dpdk
