#include "tierwall/dataplane/dpdk/flow_events.h"

#include <algorithm>
#include <cstring>

namespace tierwall::dataplane::dpdk {
namespace {

std::uint64_t fold_hash(const FlowEventRecord& e, std::uint16_t decision_port) {
  std::uint64_t w[4];
  std::memcpy(&w[0], e.src.bytes.data(), 8);
  std::memcpy(&w[1], e.src.bytes.data() + 8, 8);
  std::memcpy(&w[2], e.dst.bytes.data(), 8);
  std::memcpy(&w[3], e.dst.bytes.data() + 8, 8);
  std::uint64_t h = (static_cast<std::uint64_t>(e.protocol) << 48) ^
                    (static_cast<std::uint64_t>(decision_port) << 32) ^ e.rule ^
                    (e.generation * 0x9E3779B97F4A7C15ULL);
  for (std::uint64_t x : w) {
    h = (h ^ x) * 0xff51afd7ed558ccdULL;
    h ^= h >> 31;
  }
  return h;
}

bool same_fold(const FlowEventRecord& a, std::uint16_t pa, const FlowEventRecord& b,
               std::uint16_t pb) {
  return pa == pb && a.src == b.src && a.dst == b.dst && a.protocol == b.protocol &&
         a.rule == b.rule && a.generation == b.generation && a.verdict == b.verdict;
}

}  // namespace

std::string_view to_string(FlowEventType type) {
  switch (type) {
    case FlowEventType::Start:
      return "start";
    case FlowEventType::Deny:
      return "deny";
    case FlowEventType::Cut:
      return "cut";
    case FlowEventType::End:
      return "end";
  }
  return "unknown";
}

FlowEventEmitter::FlowEventEmitter(FlowEventSink& sink, const FlowEventOptions& options)
    : sink_(sink), options_(options) {
  std::size_t n = 16;
  while (n < options_.fold_slots) n <<= 1;
  slots_.assign(n, Slot{});
  mask_ = n - 1;
  tokens_ = std::max<std::uint64_t>(options_.deny_events_per_second / 4, 1);
}

FlowEventRecord FlowEventEmitter::make(const PacketInfo& p, const FastDecision& d,
                                       std::uint64_t generation, std::uint8_t port,
                                       std::uint64_t now_ns, FlowEventType type) {
  FlowEventRecord e;
  e.time_ns = now_ns;
  e.generation = generation;
  e.src = p.src;
  e.dst = p.dst;
  e.count = 1;
  e.rule = d.rule_id;
  if (p.has(kFlagPorts)) {
    e.src_port = p.src_port;
    e.dst_port = p.dst_port;
  }
  e.protocol = p.protocol;
  if (p.has(kFlagIcmp)) {
    e.icmp_type = p.icmp_type;
    e.icmp_code = p.icmp_code;
  }
  e.type = type;
  e.verdict = d.verdict;
  e.kind = d.kind;
  e.port = port;
  return e;
}

void FlowEventEmitter::emit(const FlowEventRecord& e) {
  if (sink_.push(e)) {
    ++counts_[kEvents];
    counts_[kPackets] += e.count;
    switch (e.type) {
      case FlowEventType::Start:
        ++counts_[kStarts];
        break;
      case FlowEventType::Deny:
        ++counts_[kDenies];
        break;
      case FlowEventType::Cut:
        ++counts_[kCuts];
        break;
      case FlowEventType::End:
        ++counts_[kEnds];
        break;
    }
  } else {
    counts_[kLost] += e.count;
  }
}

void FlowEventEmitter::emit_deny(const FlowEventRecord& e, std::uint64_t now_ns) {
  const std::uint64_t rate = options_.deny_events_per_second;
  const std::uint64_t cap = std::max<std::uint64_t>(rate / 4, 1);
  if (now_ns > refilled_ns_) {
    const std::uint64_t elapsed = std::min<std::uint64_t>(now_ns - refilled_ns_, kNsPerSecond);
    const std::uint64_t add = elapsed * rate / kNsPerSecond;
    if (add > 0) {
      tokens_ = std::min(cap, tokens_ + add);
      refilled_ns_ = now_ns;
    }
  }
  if (tokens_ == 0) {
    counts_[kRateLimited] += e.count;
    return;
  }
  --tokens_;
  emit(e);
}

void FlowEventEmitter::start(const PacketInfo& p, const FastDecision& d, std::uint64_t generation,
                             std::uint8_t port, std::uint64_t now_ns, std::uint32_t flow_id) {
  FlowEventRecord e = make(p, d, generation, port, now_ns, FlowEventType::Start);
  e.flow_id = flow_id;
  emit(e);
}

void FlowEventEmitter::ended(const FlowEnd& end, std::uint64_t now_ns) {
  FlowEventRecord e;
  e.type = FlowEventType::End;
  e.time_ns = now_ns;
  e.src = end.src;
  e.dst = end.dst;
  e.protocol = end.protocol;
  if (end.protocol == proto::kIcmp || end.protocol == proto::kIcmpv6) {
    e.icmp_type = static_cast<std::uint8_t>(end.decision_port);
  } else {
    e.src_port = end.src_port;
    e.dst_port = end.dst_port;
  }
  e.rule = end.decision.rule_id;
  e.verdict = end.decision.verdict;
  e.kind = end.decision.kind;
  e.end_reason = static_cast<std::uint8_t>(end.reason);
  e.flow_id = end.flow_id;
  e.packets_orig = end.packets_orig;
  e.packets_reply = end.packets_reply;
  e.bytes_orig = end.bytes_orig;
  e.bytes_reply = end.bytes_reply;
  emit(e);
}

void FlowEventEmitter::cut(const PacketInfo& p, const FastDecision& d, std::uint64_t generation,
                           std::uint8_t port, std::uint64_t now_ns) {
  emit(make(p, d, generation, port, now_ns, FlowEventType::Cut));
}

void FlowEventEmitter::deny(const PacketInfo& p, const FastDecision& d, std::uint64_t generation,
                            std::uint8_t port, std::uint64_t now_ns) {
  const FlowEventRecord e = make(p, d, generation, port, now_ns, FlowEventType::Deny);
  const std::uint16_t decision_port = to_connection(p).port;
  Slot& s = slots_[fold_hash(e, decision_port) & mask_];
  if (s.used && same_fold(s.event, s.decision_port, e, decision_port) &&
      now_ns - s.event.time_ns < options_.fold_window_ns && s.event.count != UINT32_MAX) {
    ++s.event.count;
    ++counts_[kFolded];
    return;
  }
  if (s.used) emit_deny(s.event, now_ns);
  s.event = e;
  s.decision_port = decision_port;
  s.used = true;
}

void FlowEventEmitter::tick(std::uint64_t now_ns) {
  if (now_ns < next_scan_ns_) return;
  next_scan_ns_ = now_ns + options_.fold_window_ns / 4;
  for (Slot& s : slots_) {
    if (s.used && now_ns - s.event.time_ns >= options_.fold_window_ns) {
      emit_deny(s.event, now_ns);
      s.used = false;
    }
  }
}

void FlowEventEmitter::flush() {
  for (Slot& s : slots_) {
    if (!s.used) continue;
    emit_deny(s.event, s.event.time_ns + options_.fold_window_ns);
    s.used = false;
  }
}

void FlowEventEmitter::publish() { counts_.publish(); }

FlowEventCounters FlowEventEmitter::counters() const {
  const auto get = [this](std::size_t i) { return counts_.published(i); };
  FlowEventCounters c;
  c.events = get(kEvents);
  c.starts = get(kStarts);
  c.denies = get(kDenies);
  c.cuts = get(kCuts);
  c.ends = get(kEnds);
  c.packets = get(kPackets);
  c.lost = get(kLost);
  c.rate_limited = get(kRateLimited);
  c.folded = get(kFolded);
  return c;
}

FlowEventCounters& FlowEventCounters::operator+=(const FlowEventCounters& other) {
  events += other.events;
  starts += other.starts;
  denies += other.denies;
  cuts += other.cuts;
  ends += other.ends;
  packets += other.packets;
  lost += other.lost;
  rate_limited += other.rate_limited;
  folded += other.folded;
  return *this;
}

}  // namespace tierwall::dataplane::dpdk
