// libFuzzer harness for the kernel flow-event parsers (flow_events.h): the
// bytes a netlink socket delivers are untrusted, and the parsers must never
// read outside them, whatever lengths the headers claim.
//
// Input format: one netlink datagram. Every input goes through all readers:
//   parse_nflog_datagram  (NFULNL_MSG_PACKET messages: prefix, seq, time,
//                          payload -> IP/L4 headers)
//   parse_ct_datagram     (ctnetlink NEW/DELETE: nested tuple, counters,
//                          timestamps)
//   parse_ip_headers      (the input as a packet copy)
//   decode_prefix         (the input as an NFLOG prefix)
// Seeds (tests/fuzz/corpus-nflog) are real-shaped datagrams: NFLOG batches
// of IPv4 TCP/UDP/ICMP and IPv6 with extension headers, conntrack NEW and
// DESTROY with counters and timestamps.
//
// Invariants beyond "no crash, no UB" (a violation traps):
//   - a message that decoded a prefix carries a Start event with a rule id
//     decode_prefix also accepts (round trip through the prefix format);
//   - addresses of one event share a family;
//   - a conntrack event's rule is its mark's low 16 bits.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/nft/flow_events.h"

namespace nft = tierwall::dataplane::nft;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);

  std::vector<nft::NflogMessage> nflog;
  nft::parse_nflog_datagram(bytes, nflog);
  for (const auto& m : nflog) {
    if (m.event.kind != nft::FlowEventKind::Start) __builtin_trap();
    if (m.ours) {
      const char letter = m.event.verdict == tierwall::dataplane::Verdict::Deny    ? 'd'
                          : m.event.verdict == tierwall::dataplane::Verdict::Audit ? 'a'
                                                                                   : 'l';
      const std::string prefix = std::string("tw:") + letter + ":" + std::to_string(m.event.rule) +
                                 ":" + std::to_string(m.event.generation);
      const auto again = nft::decode_prefix(prefix);
      if (!again || again->rule != m.event.rule || again->generation != m.event.generation)
        __builtin_trap();
    }
    if (!m.malformed && m.event.src.family != m.event.dst.family) __builtin_trap();
  }

  std::vector<nft::CtEventMessage> ct;
  nft::parse_ct_datagram(bytes, ct);
  for (const auto& m : ct) {
    if (m.event.rule != (m.mark & 0xffffU)) __builtin_trap();
    if (!m.malformed && m.event.src.family != m.event.dst.family) __builtin_trap();
  }

  nft::RawFlowEvent packet;
  nft::parse_ip_headers(bytes, packet);
  nft::decode_prefix(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
