// Per-lcore stateful flow table of the DPDK dataplane: the decision of a
// connection's first packet, cached so that later packets in either
// direction cost one hash probe instead of a decision.
//
// Layout: set-associative, 8 ways per bucket. A bucket is 8 x 16-bit
// signatures (16 bytes, four buckets per cache line); the entries (64 bytes,
// one cache line each: the direction-normalised 5-tuple, expiry, generation, verdict,
// rule id, TCP state) sit in a parallel array. A lookup reads the signature
// line and, on a signature match, one entry line. When a bucket is full, an
// expired entry is reused, else the entry closest to expiry is evicted
// (LRU-ish: every packet pushes its flow's expiry forward). Capacity is
// fixed at construction; nothing is allocated afterwards.
//
// Semantics:
//  * Only allowed or audited connections are remembered (as nft keeps no
//    conntrack entry for a dropped packet): a denied first packet is decided
//    again when it is retried, and spoofed denied traffic cannot fill the
//    table.
//  * Generation change: an entry remembers the generation that decided it
//    (the low 32 bits of Generation::serial(), unique per build).
//    When a packet of the flow arrives under another generation, the flow
//    is re-checked lazily against the new one, with the initiator's
//    original (src, dst, protocol, port): if the new generation denies it,
//    the entry is removed and the packet dropped (Outcome::Cut), as the nft
//    dataplane cuts connections that a new ruleset denies; otherwise the
//    flow keeps its original decision and is re-stamped.
//  * Timeouts per protocol and TCP state (New until the responder sends,
//    Established, Closing after FIN/RST), configurable; time is injected
//    (`now_ns`, any monotonic nanosecond clock: tests use a fake one).
//
//  * Connection ends (FlowTableOptions::count, off by default): every
//    remembered flow then has an id and packet/byte counts per direction
//    (initiator -> responder = orig), in a parallel array (one more cache
//    line written per packet); when it leaves the table — found expired,
//    evicted from a full bucket, cut, swept (sweep()) or at end_all() — the
//    FlowEndSink is told, with its counts.
//
// Thread contract: single-threaded; one FlowTable per lcore, no sharing.
// Costs: process() is O(ways) on a hit, plus Generation::classify() on a
// miss or a re-check; sweep() is O(slots). No allocation, lock, log or
// system call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace tierwall::dataplane::dpdk {

inline constexpr std::uint64_t kNsPerSecond = 1'000'000'000ULL;

struct FlowTimeouts {
  std::uint64_t tcp_new_ns = 30 * kNsPerSecond;  // until the responder answers
  std::uint64_t tcp_established_ns = 7200 * kNsPerSecond;
  std::uint64_t tcp_closing_ns = 10 * kNsPerSecond;  // after FIN or RST
  std::uint64_t udp_ns = 30 * kNsPerSecond;
  std::uint64_t icmp_ns = 10 * kNsPerSecond;
  std::uint64_t other_ns = 60 * kNsPerSecond;
};

struct FlowTableOptions {
  std::size_t capacity = std::size_t{1} << 20;  // entries; rounded up to 8 x 2^k
  FlowTimeouts timeouts;
  bool count = false;  // flow ids and per-flow packet/byte counts (FlowEnd)
  // Flow ids are id_first, id_first + id_stride, ... (wrapping before 2^32,
  // never 0): tables with the same stride and distinct id_first below it
  // (the workers of one dataplane: w + 1 and their count) never hand out
  // the same id, which the flow log pairs a connection's start and end by.
  std::uint32_t id_first = 1;   // 1..id_stride
  std::uint32_t id_stride = 1;  // >= 1
};

// The part of a packet the flow table needs. For ICMP/ICMPv6 both ports are
// the echo identifier (so a request and its reply share a flow) and
// `decision_port` is the ICMP type; for TCP/UDP/SCTP `decision_port` is the
// destination port.
struct FlowPacket {
  IpAddress src;
  IpAddress dst;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  std::uint16_t decision_port = 0;
  std::uint8_t protocol = 0;
  std::uint8_t tcp_flags = 0;
  std::uint16_t length = 0;  // IP bytes (header included), for per-flow counts
  // 0: `src` is resolved by address. t + 1: a trusted overlay peer tags
  // `src` with tier t (the GBP group id; overlay.h). A new connection's
  // source is then checked with Generation::check_tag() on the address it
  // resolves to anyway (no extra lookup): a known endpoint of tier t is
  // decided by its address, an unknown source as tagged_peer(t), and a
  // contradicting or unknown tag is refused (FlowResult::tag, Denied).
  // Packets that hit a flow are not checked (the 5-tuple decides, as for
  // any packet). A flow decided by the tag keeps it, and a re-check under
  // a new generation decides its initiator by the tag again (Cut when the
  // tier is gone).
  std::uint16_t src_tag = 0;
};

// From a parsed packet (status Ok); src_tag 0. Inline: once per packet in
// the lcore loop, and the caller's element is then written field by field.
inline FlowPacket flow_packet(const PacketInfo& p) {
  FlowPacket f;
  f.src = p.src;
  f.dst = p.dst;
  f.protocol = p.protocol;
  if (p.has(kFlagPorts)) {
    f.src_port = p.src_port;
    f.dst_port = p.dst_port;
    f.decision_port = p.dst_port;
  } else if (p.has(kFlagIcmp)) {
    f.src_port = p.icmp_id;
    f.dst_port = p.icmp_id;
    f.decision_port = p.icmp_type;
  }
  f.tcp_flags = p.tcp_flags;
  f.length = static_cast<std::uint16_t>(p.l3_end - p.l3_offset);
  return f;
}

enum class FlowOutcome : std::uint8_t {
  Hit,      // an entry of the same generation: cached decision
  Recheck,  // an entry of an older generation the new one still lets through
  New,      // no entry: decided, and remembered
  Denied,   // no entry: decided Deny, not remembered
  Cut,      // an entry the new generation denies: removed, packet dropped
};

struct FlowResult {
  FastDecision decision;
  FlowOutcome outcome = FlowOutcome::New;
  std::uint32_t flow_id = 0;  // the remembered flow's id (FlowTableOptions::count), else 0
  // For a new connection with FlowPacket::src_tag: how its source was
  // classified (UnknownTag / Spoofed: refused, outcome Denied).
  TagCheck tag = TagCheck::None;
  // True when the packet may pass (Allow, or Audit: logged, not dropped).
  [[nodiscard]] bool pass() const { return decision.verdict != Verdict::Deny; }
};

struct FlowCounters {
  std::uint64_t hits = 0;
  std::uint64_t rechecks = 0;
  std::uint64_t inserts = 0;
  std::uint64_t denied = 0;
  std::uint64_t cuts = 0;
  std::uint64_t expired = 0;  // entries found expired (on lookup or reuse)
  std::uint64_t evicted = 0;  // live entries pushed out of a full bucket

  // Field by field: the sum over several tables (workers).
  FlowCounters& operator+=(const FlowCounters& other);
};

enum class FlowEndReason : std::uint8_t { Expired, Evicted, Cut, Stopped };
std::string_view to_string(FlowEndReason reason);

// A remembered flow leaving the table (FlowTableOptions::count).
struct FlowEnd {
  IpAddress src;  // the initiator
  IpAddress dst;
  std::uint16_t src_port = 0;  // the initiator's; ICMP: the echo identifier
  std::uint16_t dst_port = 0;
  std::uint16_t decision_port = 0;  // destination port, or the ICMP type
  std::uint8_t protocol = 0;
  FlowEndReason reason = FlowEndReason::Expired;
  FastDecision decision;  // the flow's (first) decision
  std::uint32_t flow_id = 0;
  std::uint64_t packets_orig = 0;  // initiator -> responder
  std::uint64_t packets_reply = 0;
  std::uint64_t bytes_orig = 0;
  std::uint64_t bytes_reply = 0;
};

// Told of every FlowEnd, on the table's thread, from within process(),
// process_burst(), sweep() or end_all(). Must not block.
class FlowEndSink {
 public:
  virtual ~FlowEndSink() = default;
  virtual void ended(const FlowEnd& end, std::uint64_t now_ns) = 0;
};

class FlowTable {
 public:
  explicit FlowTable(const FlowTableOptions& options = {});
  ~FlowTable();
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  static constexpr std::size_t kMaxBurst = 64;

  // The fast path: the decision for `p` under `generation` at `now_ns`.
  FlowResult process(const Generation& generation, const FlowPacket& p, std::uint64_t now_ns);
  // process() for a burst, results[i] for packets[i], in order (so the
  // second packet of a flow in one burst hits the entry the first made).
  // Hashes the whole burst first and prefetches the buckets, then the
  // entries (or, for new connections, the endpoint slots, then the
  // decision structure), hiding memory latency as rte_hash_lookup_bulk
  // does. Returns min(sizes).
  std::size_t process_burst(const Generation& generation, std::span<const FlowPacket> packets,
                            std::span<FlowResult> results, std::uint64_t now_ns);

  // The cached decision of p's flow (either direction), or nullopt-like
  // false when there is no live entry. Does not refresh the entry.
  bool peek(const FlowPacket& p, std::uint64_t now_ns, FastDecision& out,
            std::uint64_t* generation_low32 = nullptr) const;

  // Live (unexpired at `now_ns`) entries; O(capacity), for tests and stats.
  [[nodiscard]] std::size_t live(std::uint64_t now_ns) const;
  [[nodiscard]] std::size_t capacity() const;
  [[nodiscard]] std::size_t memory_bytes() const;
  [[nodiscard]] const FlowCounters& counters() const { return counters_; }
  void clear();

  // Connection ends (FlowTableOptions::count; otherwise these do nothing).
  // The sink (null: none) must outlive the table or be reset.
  void set_end_sink(FlowEndSink* sink);
  // Looks at the next `slots` slots (round robin) and ends the expired
  // flows among them; returns how many ended.
  std::size_t sweep(std::uint64_t now_ns, std::size_t slots);
  // Ends every remembered flow (reason Stopped, or Expired when it was).
  std::size_t end_all(std::uint64_t now_ns);

 private:
  struct Impl;
  // `classes`: the resolved (src, dst) when the burst pipeline has them;
  // `hint`: the way whose signature matched in the pipeline (kNoHint: none).
  static constexpr std::uint8_t kNoHint = 0xff;
  FlowResult process_keyed(const Generation& g, const FlowPacket& p, const void* key,
                           std::uint64_t hash, bool src_is_a, std::uint64_t now_ns,
                           const PeerClass* classes, std::uint8_t hint, TagCheck tag);
  std::unique_ptr<Impl> impl_;
  FlowCounters counters_;
};

}  // namespace tierwall::dataplane::dpdk
