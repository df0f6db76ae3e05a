// A probe of the root tests as a value: TCP or UDP to a port, or an ICMP
// echo, run from a namespace with the tw_testsupport probes and described
// as the evaluator sees its first packet.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "tierwall/dataplane/ports.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall::testkit {

enum class ProbeKind : std::uint8_t { kTcp, kUdp, kPing };

struct Probe {
  ProbeKind kind = ProbeKind::kTcp;
  std::uint16_t port = 0;  // none for kPing
};

// "tcp/443", "udp/53", "ping": for failure messages.
inline std::string describe(Probe p) {
  switch (p.kind) {
    case ProbeKind::kTcp:
      return "tcp/" + std::to_string(p.port);
    case ProbeKind::kUdp:
      return "udp/" + std::to_string(p.port);
    case ProbeKind::kPing:
      return "ping";
  }
  return "?";
}

// Runs the probe from `from` to `dst`, from the address `source` when given.
inline testsupport::Outcome run_probe(const testsupport::NetNs& from, const std::string& dst,
                                      Probe p, testsupport::Millis timeout,
                                      const std::string& source = {}) {
  switch (p.kind) {
    case ProbeKind::kTcp:
      return testsupport::tcp_probe(from, dst, p.port, timeout, source);
    case ProbeKind::kUdp:
      return testsupport::udp_probe(from, dst, p.port, timeout, source);
    case ProbeKind::kPing:
      return testsupport::ping_probe(from, dst, timeout, source);
  }
  return testsupport::Outcome::kError;
}

// What the evaluator sees of a probe's first packet: protocol and port (the
// ICMP/ICMPv6 echo request type for a ping).
inline std::pair<std::uint8_t, std::uint16_t> proto_port(Probe p, bool v6) {
  switch (p.kind) {
    case ProbeKind::kTcp:
      return {proto::kTcp, p.port};
    case ProbeKind::kUdp:
      return {proto::kUdp, p.port};
    case ProbeKind::kPing:
      if (v6) return {proto::kIcmpv6, 128};
      return {proto::kIcmp, 8};
  }
  return {0, 0};
}

}  // namespace tierwall::testkit
