// Protocols and the port/ICMP-type part of a rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tierwall {

// IANA protocol numbers of the protocols the policy language names.
namespace proto {
inline constexpr std::uint8_t kIcmp = 1;
inline constexpr std::uint8_t kTcp = 6;
inline constexpr std::uint8_t kUdp = 17;
inline constexpr std::uint8_t kIcmpv6 = 58;
inline constexpr std::uint8_t kSctp = 132;
}  // namespace proto

// Name of a protocol ("tcp", "icmpv6", or the number for others).
std::string protocol_name(std::uint8_t protocol);

// One entry of a `ports:` list. For tcp/udp/sctp, [lo, hi] is the
// destination port range; for icmp/icmpv6 it is the ICMP type range
// ([0, 255] when no type is given). `any` matches every protocol.
struct PortMatch {
  bool any = false;
  std::uint8_t protocol = 0;
  std::uint16_t lo = 0;
  std::uint16_t hi = 0;

  static PortMatch any_port() { return PortMatch{true, 0, 0, 0}; }

  // Parses `tcp/N`, `tcp/N-M`, `udp/..`, `sctp/..`, `icmp`, `icmp/TYPE`,
  // `icmpv6`, `icmpv6/TYPE`, `any`. On failure returns nullopt and, when
  // `error` is given, says why.
  static std::optional<PortMatch> parse(std::string_view text, std::string* error = nullptr);

  [[nodiscard]] bool matches(std::uint8_t ip_protocol, std::uint16_t port) const {
    return any || (ip_protocol == protocol && port >= lo && port <= hi);
  }
  // True when every (protocol, port) this matches is also matched by `outer`.
  [[nodiscard]] bool within(const PortMatch& outer) const;
  [[nodiscard]] bool is_icmp() const {
    return protocol == proto::kIcmp || protocol == proto::kIcmpv6;
  }
  // Canonical spelling, the inverse of parse (`tcp/80`, `tcp/1000-2000`,
  // `icmp/echo-request`, `icmp`, `any`).
  [[nodiscard]] std::string to_string() const;

  friend bool operator==(const PortMatch&, const PortMatch&) = default;
};

// ICMP / ICMPv6 type names as nft spells them ("echo-request", ...).
std::optional<std::uint8_t> icmp_type_from_name(std::uint8_t protocol, std::string_view name);
std::optional<std::string> icmp_type_name(std::uint8_t protocol, std::uint8_t type);

}  // namespace tierwall
