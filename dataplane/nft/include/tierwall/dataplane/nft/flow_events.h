// Raw flow events of the kernel dataplane, before they become flow-log
// records (docs/flowlog-format.md): what NflogSource (nflog.h) reads from
// NFLOG and ConntrackEventSource (ct_events.h) reads from ctnetlink, as
// plain values, plus the pure parsers of both message kinds.
//
// Contract: the parsers take untrusted bytes (a netlink datagram as the
// kernel, or anybody able to send to the socket, delivered it) and never
// read outside them: every length is checked before use, unknown or short
// attributes are ignored, a message that cannot be walked stops the walk of
// its datagram. They allocate only when an output vector grows.
//
// Threads: everything here is a pure function of its arguments.
// Costs: O(bytes of the datagram) per parse; no system calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane::nft {

using WallClock = std::chrono::system_clock;

enum class FlowEventKind : std::uint8_t {
  Start,  // a connection's first packet was decided (allow, deny, audit)
  End,    // an accepted connection left the conntrack table
  Loss,   // events the kernel dropped before we read them
};

enum class LossSource : std::uint8_t { Nflog, Conntrack };
enum class LossReason : std::uint8_t { Enobufs, SequenceGap };
std::string_view to_string(FlowEventKind kind);
std::string_view to_string(LossSource source);  // "nflog" | "conntrack"
std::string_view to_string(LossReason reason);  // "ENOBUFS" | "sequence gap"

struct RawFlowEvent {
  FlowEventKind kind = FlowEventKind::Start;
  // Wall-clock time of the event: the kernel's timestamp when the message
  // carries one (NFULA_TIMESTAMP; CTA_TIMESTAMP start/stop), else when the
  // datagram was read. kernel_time says which.
  WallClock::time_point time{};
  bool kernel_time = false;

  // Start/End. NFLOG: from the prefix letter (d deny, a audit, l allow).
  // Conntrack: Allow unless the source's classifier says Audit (see
  // ct_events.h: the ct mark holds a rule id, not a verdict).
  Verdict verdict = Verdict::Deny;
  RuleId rule = 0;
  // The policy generation that decided (NFLOG prefix); 0 = unknown, which is
  // what conntrack events carry: the ct mark has room for the rule id only.
  std::uint64_t generation = 0;

  std::uint8_t proto = 0;  // IPPROTO_*; 0 with zero addresses if unparsable
  IpAddress src;           // original direction: initiator
  IpAddress dst;
  std::uint16_t sport = 0;  // TCP/UDP/UDP-Lite/SCTP/DCCP; 0 otherwise
  std::uint16_t dport = 0;
  std::uint8_t icmp_type = 0;  // ICMP/ICMPv6 only
  std::uint8_t icmp_code = 0;

  // End (conntrack DESTROY). Counters need net.netfilter.nf_conntrack_acct=1
  // when the connection was created; `counters` says whether they came.
  bool counters = false;
  std::uint64_t packets_orig = 0;
  std::uint64_t bytes_orig = 0;
  std::uint64_t packets_reply = 0;
  std::uint64_t bytes_reply = 0;
  std::uint32_t conntrack_id = 0;  // CTA_ID (Start and End from conntrack)
  // When the connection began (CTA_TIMESTAMP_START, nf_conntrack_timestamp=1).
  std::optional<WallClock::time_point> started;

  // Loss.
  LossSource loss_source = LossSource::Nflog;
  LossReason loss_reason = LossReason::Enobufs;
  std::uint64_t loss_count = 0;
  // loss_count is a lower bound (possibly 0): the kernel cannot say how many.
  bool lower_bound = false;
};

// ---------------------------------------------------------------------------
// The NFLOG prefix "tw:<d|a|l>:<rule id>:<generation>" (plan.h log_prefix).

struct PrefixTag {
  Verdict verdict = Verdict::Deny;  // d Deny, a Audit, l Allow
  RuleId rule = 0;
  std::uint64_t generation = 0;
};

// Decodes a prefix as NFULA_PREFIX carries it (one trailing NUL tolerated);
// nullopt for anything else (foreign prefixes, overflowing numbers).
std::optional<PrefixTag> decode_prefix(std::string_view prefix);

// ---------------------------------------------------------------------------
// Packet headers (the NFLOG payload copy: an IPv4 or IPv6 packet).

// Fills proto, src, dst, ports and ICMP type/code from the first bytes of an
// IP packet (IPv6 extension headers are skipped; non-first fragments give
// addresses and proto only). False when not even the IP header is there.
bool parse_ip_headers(std::span<const std::uint8_t> packet, RawFlowEvent& event);

// ---------------------------------------------------------------------------
// NFLOG messages (NFNL_SUBSYS_ULOG / NFULNL_MSG_PACKET)

struct NflogMessage {
  bool has_seq = false;  // NFULA_SEQ (NFULNL_CFG_F_SEQ)
  std::uint32_t seq = 0;
  bool ours = false;       // the prefix decoded: `event` is a Start event
  bool malformed = false;  // an attribute had a wrong size or no IP header
  RawFlowEvent event;      // kind Start; time set only when kernel_time
};

// Appends every packet message of one datagram to `out` (other message types
// are skipped). Returns false when the datagram ended in a message that could
// not be walked (truncated header or length); what came before is kept.
bool parse_nflog_datagram(std::span<const std::uint8_t> datagram, std::vector<NflogMessage>& out);

// ---------------------------------------------------------------------------
// Conntrack event messages (NFNL_SUBSYS_CTNETLINK / IPCTNL_MSG_CT_NEW|DELETE)

struct CtEventMessage {
  bool destroy = false;  // IPCTNL_MSG_CT_DELETE; else a new connection
  std::uint32_t mark = 0;
  bool malformed = false;  // no usable original tuple
  RawFlowEvent event;      // kind Start or End; time set only when kernel_time
};

// Appends every conntrack NEW/DELETE message of one datagram to `out`.
// Returns false as parse_nflog_datagram does.
bool parse_ct_datagram(std::span<const std::uint8_t> datagram, std::vector<CtEventMessage>& out);

}  // namespace tierwall::dataplane::nft
