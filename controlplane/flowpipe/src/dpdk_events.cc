#include "tierwall/flowpipe/dpdk_events.h"

#include <ctime>
#include <utility>

namespace tierwall::flowpipe {
namespace {

std::chrono::nanoseconds read_clock(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

flowlog::FlowRecord loss(std::string reason, std::uint64_t count) {
  flowlog::Loss l;
  l.source = flowlog::LossSource::Dpdk;
  l.reason = std::move(reason);
  l.count = count;
  return flowlog::FlowRecord{0, std::move(l)};
}

}  // namespace

std::chrono::nanoseconds monotonic_to_wall_offset() {
  return read_clock(CLOCK_REALTIME) - read_clock(CLOCK_MONOTONIC);
}

dataplane::nft::RawFlowEvent to_raw_event(const dataplane::dpdk::FlowEventRecord& event,
                                          std::chrono::nanoseconds wall_offset) {
  dataplane::nft::RawFlowEvent r;
  const bool end = event.type == dataplane::dpdk::FlowEventType::End;
  r.kind = end ? dataplane::nft::FlowEventKind::End : dataplane::nft::FlowEventKind::Start;
  r.time = dataplane::nft::WallClock::time_point(
      std::chrono::duration_cast<dataplane::nft::WallClock::duration>(
          std::chrono::nanoseconds(event.time_ns) + wall_offset));
  r.kernel_time = true;  // the dataplane's own time stamp
  const bool passed = event.type == dataplane::dpdk::FlowEventType::Start || end;
  r.verdict = passed ? event.verdict : dataplane::Verdict::Deny;
  r.rule = event.rule;
  r.generation = event.generation;
  r.proto = event.protocol;
  r.src = event.src;
  r.dst = event.dst;
  r.sport = event.src_port;
  r.dport = event.dst_port;
  r.icmp_type = event.icmp_type;
  r.icmp_code = event.icmp_code;
  // Starts and ends of remembered flows are matched by the flow id.
  r.conntrack_id = passed ? event.flow_id : 0;
  if (end) {
    r.counters = true;
    r.packets_orig = event.packets_orig;
    r.packets_reply = event.packets_reply;
    r.bytes_orig = event.bytes_orig;
    r.bytes_reply = event.bytes_reply;
  }
  return r;
}

std::optional<flowlog::FlowRecord> enrich_dpdk(Enricher& enricher,
                                               const dataplane::dpdk::FlowEventRecord& event,
                                               std::chrono::nanoseconds wall_offset) {
  auto record = enricher.enrich(to_raw_event(event, wall_offset));
  if (!record) return record;
  auto* flow = std::get_if<flowlog::Flow>(&record->body);
  if (flow != nullptr && event.type != dataplane::dpdk::FlowEventType::End) {
    flow->count = event.count == 0 ? 1 : event.count;
  }
  return record;
}

std::vector<flowlog::FlowRecord> DpdkLossTracker::take(
    const dataplane::dpdk::FlowEventCounters& counters) {
  std::vector<flowlog::FlowRecord> out;
  if (counters.lost > lost_) {
    out.push_back(loss("ring full", counters.lost - lost_));
    lost_ = counters.lost;
  }
  if (counters.rate_limited > rate_limited_) {
    out.push_back(loss("rate limit", counters.rate_limited - rate_limited_));
    rate_limited_ = counters.rate_limited;
  }
  return out;
}

}  // namespace tierwall::flowpipe
