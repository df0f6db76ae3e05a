// The `ports:` entries of the policy language. Names are the lower-case
// spellings nft uses, so that what the engineer writes is what
// `nft list ruleset` shows.
#include "tierwall/dataplane/ports.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tierwall {
namespace {

struct NamedType {
  std::string_view name;
  std::uint8_t type;
};

constexpr std::array<NamedType, 15> kIcmpTypes{{
    {"echo-reply", 0},
    {"destination-unreachable", 3},
    {"source-quench", 4},
    {"redirect", 5},
    {"echo-request", 8},
    {"router-advertisement", 9},
    {"router-solicitation", 10},
    {"time-exceeded", 11},
    {"parameter-problem", 12},
    {"timestamp-request", 13},
    {"timestamp-reply", 14},
    {"info-request", 15},
    {"info-reply", 16},
    {"address-mask-request", 17},
    {"address-mask-reply", 18},
}};

constexpr std::array<NamedType, 15> kIcmpv6Types{{
    {"destination-unreachable", 1},
    {"packet-too-big", 2},
    {"time-exceeded", 3},
    {"parameter-problem", 4},
    {"echo-request", 128},
    {"echo-reply", 129},
    {"mld-listener-query", 130},
    {"mld-listener-report", 131},
    {"mld-listener-done", 132},
    {"nd-router-solicit", 133},
    {"nd-router-advert", 134},
    {"nd-neighbor-solicit", 135},
    {"nd-neighbor-advert", 136},
    {"nd-redirect", 137},
    {"mld2-listener-report", 143},
}};

constexpr std::array<std::string_view, 6> kProtocolWords{"tcp",  "udp",    "sctp",
                                                         "icmp", "icmpv6", "any"};

const NamedType* types_begin(std::uint8_t protocol) {
  if (protocol == proto::kIcmp) return kIcmpTypes.data();
  if (protocol == proto::kIcmpv6) return kIcmpv6Types.data();
  return nullptr;
}

const NamedType* types_end(std::uint8_t protocol) {
  if (protocol == proto::kIcmp) return kIcmpTypes.data() + kIcmpTypes.size();
  if (protocol == proto::kIcmpv6) return kIcmpv6Types.data() + kIcmpv6Types.size();
  return nullptr;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Optimal string alignment distance (Levenshtein plus adjacent
// transposition, the most common typo: "tpc" for "tcp"), case-insensitive.
// The policy library has the same helper for its own hints; the dataplane
// may not depend on it, so this small copy lives here.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (std::size_t j = 0; j <= m; ++j) prev[j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
          lower(a[i - 2]) == lower(b[j - 1])) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

// " (did you mean 'X'?)" for the closest candidate within max(1, len/3)
// edits, or "".
template <typename Range, typename Name>
std::string hint(std::string_view word, const Range& candidates, Name name_of) {
  const std::size_t threshold = std::max<std::size_t>(1, word.size() / 3);
  std::string_view best;
  std::size_t best_distance = threshold + 1;
  for (const auto& candidate : candidates) {
    const std::string_view name = name_of(candidate);
    const std::size_t d = edit_distance(word, name);
    if (d < best_distance) {
      best = name;
      best_distance = d;
    }
  }
  if (best.empty()) return "";
  return " (did you mean '" + std::string(best) + "'?)";
}

void set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal value of an all-digit string, saturated well above any limit we
// check so that a long string cannot overflow.
unsigned long decimal(std::string_view s) {
  unsigned long v = 0;
  for (const char c : s) {
    v = v * 10 + static_cast<unsigned long>(c - '0');
    if (v > 1000000) return v;
  }
  return v;
}

std::optional<std::uint16_t> parse_port(std::string_view text, std::string_view spec,
                                        std::string* error) {
  if (text.empty()) {
    set_error(error, "missing port in '" + std::string(spec) + "'");
    return std::nullopt;
  }
  if (!all_digits(text)) {
    set_error(error, "invalid port '" + std::string(text) + "' in '" + std::string(spec) +
                         "' (expected a number 1-65535)");
    return std::nullopt;
  }
  const unsigned long value = decimal(text);
  if (value < 1 || value > 65535) {
    set_error(error, "port " + std::string(text) + " out of range 1-65535");
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

std::optional<PortMatch> parse_l4(std::uint8_t protocol, std::string_view name,
                                  std::optional<std::string_view> arg, std::string_view spec,
                                  std::string* error) {
  if (!arg) {
    set_error(error, "'" + std::string(name) + "' needs a port or range (e.g. '" +
                         std::string(name) + "/443' or '" + std::string(name) + "/1024-65535')");
    return std::nullopt;
  }
  const std::size_t dash = arg->find('-');
  const auto lo = parse_port(arg->substr(0, dash), spec, error);
  if (!lo) return std::nullopt;
  std::uint16_t hi = *lo;
  if (dash != std::string_view::npos) {
    const auto parsed_hi = parse_port(arg->substr(dash + 1), spec, error);
    if (!parsed_hi) return std::nullopt;
    hi = *parsed_hi;
    if (hi < *lo) {
      set_error(error, "port range " + std::string(*arg) + " is reversed (did you mean " +
                           std::to_string(hi) + "-" + std::to_string(*lo) + "?)");
      return std::nullopt;
    }
  }
  return PortMatch{false, protocol, *lo, hi};
}

std::optional<PortMatch> parse_icmp(std::uint8_t protocol, std::string_view name,
                                    std::optional<std::string_view> arg, std::string* error) {
  if (!arg) return PortMatch{false, protocol, 0, 255};
  if (arg->empty()) {
    set_error(error, "missing " + std::string(name) + " type after '" + std::string(name) + "/'");
    return std::nullopt;
  }
  if (all_digits(*arg)) {
    const unsigned long value = decimal(*arg);
    if (value > 255) {
      set_error(error, std::string(name) + " type " + std::string(*arg) + " out of range 0-255");
      return std::nullopt;
    }
    const auto type = static_cast<std::uint8_t>(value);
    return PortMatch{false, protocol, type, type};
  }
  const auto type = icmp_type_from_name(protocol, *arg);
  if (!type) {
    std::vector<std::string_view> names;
    for (const NamedType* t = types_begin(protocol); t != types_end(protocol); ++t) {
      names.push_back(t->name);
    }
    set_error(error, "unknown " + std::string(name) + " type '" + std::string(*arg) + "'" +
                         hint(*arg, names, [](std::string_view n) { return n; }));
    return std::nullopt;
  }
  return PortMatch{false, protocol, *type, *type};
}

}  // namespace

std::string protocol_name(std::uint8_t protocol) {
  switch (protocol) {
    case proto::kIcmp:
      return "icmp";
    case proto::kTcp:
      return "tcp";
    case proto::kUdp:
      return "udp";
    case proto::kIcmpv6:
      return "icmpv6";
    case proto::kSctp:
      return "sctp";
    default:
      return std::to_string(protocol);
  }
}

std::optional<PortMatch> PortMatch::parse(std::string_view text, std::string* error) {
  if (text.empty()) {
    set_error(error, "empty port specification");
    return std::nullopt;
  }
  const std::size_t slash = text.find('/');
  const std::string_view word = text.substr(0, slash);
  std::optional<std::string_view> arg;
  if (slash != std::string_view::npos) arg = text.substr(slash + 1);

  if (word == "any") {
    if (arg) {
      set_error(error, "'any' takes no port or type (write 'any', or e.g. 'tcp/" +
                           std::string(*arg) + "')");
      return std::nullopt;
    }
    return any_port();
  }
  if (word == "tcp") return parse_l4(proto::kTcp, word, arg, text, error);
  if (word == "udp") return parse_l4(proto::kUdp, word, arg, text, error);
  if (word == "sctp") return parse_l4(proto::kSctp, word, arg, text, error);
  if (word == "icmp") return parse_icmp(proto::kIcmp, word, arg, error);
  if (word == "icmpv6") return parse_icmp(proto::kIcmpv6, word, arg, error);

  if (word.empty()) {
    set_error(error, "missing protocol in '" + std::string(text) + "'");
    return std::nullopt;
  }
  set_error(error, "unknown protocol '" + std::string(word) + "'" +
                       hint(word, kProtocolWords, [](std::string_view n) { return n; }));
  return std::nullopt;
}

bool PortMatch::within(const PortMatch& outer) const {
  if (outer.any) return true;
  if (any) return false;
  return protocol == outer.protocol && lo >= outer.lo && hi <= outer.hi;
}

std::string PortMatch::to_string() const {
  if (any) return "any";
  std::string out = protocol_name(protocol);
  if (is_icmp()) {
    if (lo == 0 && hi == 255) return out;
    out += '/';
    if (lo == hi && lo <= 255) {
      const auto name = icmp_type_name(protocol, static_cast<std::uint8_t>(lo));
      out += name ? *name : std::to_string(lo);
    } else {
      // Not produced by parse; spelled as a range so nothing is hidden.
      out += std::to_string(lo) + "-" + std::to_string(hi);
    }
    return out;
  }
  out += '/';
  out += std::to_string(lo);
  if (hi != lo) out += "-" + std::to_string(hi);
  return out;
}

std::optional<std::uint8_t> icmp_type_from_name(std::uint8_t protocol, std::string_view name) {
  for (const NamedType* t = types_begin(protocol); t != types_end(protocol); ++t) {
    if (t->name == name) return t->type;
  }
  return std::nullopt;
}

std::optional<std::string> icmp_type_name(std::uint8_t protocol, std::uint8_t type) {
  for (const NamedType* t = types_begin(protocol); t != types_end(protocol); ++t) {
    if (t->type == type) return std::string(t->name);
  }
  return std::nullopt;
}

}  // namespace tierwall
