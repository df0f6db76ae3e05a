// DPDK flow events (dataplane/dpdk/flow_events.h) into the flow-log
// pipeline: each event the agent drains from the lcore's ring becomes the
// Enricher's input, so that DPDK records are named exactly like the kernel
// dataplane's (identities, rule, generation), with "dataplane":"dpdk";
// the packets the lcore could not report become exact `loss` records.
//
//  * Start -> a flow start, verdict allow or audit, count 1;
//  * Deny  -> a flow start, verdict deny, count = the packets folded;
//  * Cut   -> a flow start, verdict deny (the packet dropped when a new
//             generation cut its established connection), count 1;
//  * End   -> a flow end with packets and bytes per direction, named by
//             its start (the flow id travels in RawFlowEvent::conntrack_id).
// Times: the lcore stamps CLOCK_MONOTONIC; the record time is that plus the
// wall-clock offset measured when the event was drained.
//
// Thread contract: pure functions; a DpdkLossTracker belongs to one thread
// (the agent's control thread).
// Costs: O(1) per event plus the Enricher's lookups.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "tierwall/dataplane/dpdk/flow_events.h"
#include "tierwall/dataplane/nft/flow_events.h"
#include "tierwall/flowlog/record.h"
#include "tierwall/flowpipe/enricher.h"

namespace tierwall::flowpipe {

// CLOCK_REALTIME - CLOCK_MONOTONIC now: add to an lcore time stamp.
std::chrono::nanoseconds monotonic_to_wall_offset();

// The Enricher's input for one DPDK event: Start (the lcore's verdict, rule
// and generation; conntrack_id = the flow id for a remembered connection, 0
// for denies and cuts) or End (counters, conntrack_id = the flow id).
dataplane::nft::RawFlowEvent to_raw_event(const dataplane::dpdk::FlowEventRecord& event,
                                          std::chrono::nanoseconds wall_offset);

// enrich() of that input with the event's count; nullopt as enrich().
// `enricher` must have been built with Options::dataplane = Dpdk.
std::optional<flowlog::FlowRecord> enrich_dpdk(Enricher& enricher,
                                               const dataplane::dpdk::FlowEventRecord& event,
                                               std::chrono::nanoseconds wall_offset);

// Turns the lcore's running loss counters into `loss` records (source
// "dpdk"): one per reason whose count grew since the last call, with the
// exact number of packets: "ring full" (the ring refused the event) and
// "rate limit" (deny events over FlowEventOptions::deny_events_per_second).
class DpdkLossTracker {
 public:
  std::vector<flowlog::FlowRecord> take(const dataplane::dpdk::FlowEventCounters& counters);

 private:
  std::uint64_t lost_ = 0;
  std::uint64_t rate_limited_ = 0;
};

}  // namespace tierwall::flowpipe
