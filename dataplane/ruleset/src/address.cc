// IP address and prefix parsing/printing. Parsing is strict: what a policy
// says must mean exactly one thing, so forms that other tools read in
// different ways (leading zeros in IPv4, which inet_aton reads as octal;
// zone ids; brackets) are rejected instead of guessed at.
#include "tierwall/dataplane/address.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace tierwall {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Strict dotted quad: exactly four decimal octets 0..255, no leading zeros
// (except "0" itself), nothing else.
std::optional<std::array<std::uint8_t, 4>> parse_dotted_quad(std::string_view text) {
  std::array<std::uint8_t, 4> out{};
  std::size_t pos = 0;
  for (std::size_t octet = 0; octet < 4; ++octet) {
    if (octet > 0) {
      if (pos >= text.size() || text[pos] != '.') return std::nullopt;
      ++pos;
    }
    const std::size_t start = pos;
    unsigned value = 0;
    while (pos < text.size() && is_digit(text[pos]) && pos - start < 3) {
      value = value * 10 + static_cast<unsigned>(text[pos] - '0');
      ++pos;
    }
    const std::size_t len = pos - start;
    if (len == 0 || value > 255) return std::nullopt;
    if (len > 1 && text[start] == '0') return std::nullopt;
    out[octet] = static_cast<std::uint8_t>(value);
  }
  if (pos != text.size()) return std::nullopt;
  return out;
}

// RFC 4291 section 2.2 text forms: eight groups of 1-4 hex digits, one "::"
// standing for one or more zero groups, and optionally a dotted quad in
// place of the last two groups.
std::optional<std::array<std::uint8_t, 16>> parse_v6(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  std::array<std::uint16_t, 8> groups{};
  std::size_t count = 0;           // groups written so far
  std::optional<std::size_t> gap;  // group index where "::" stands
  std::size_t pos = 0;

  if (text.starts_with("::")) {
    gap = 0;
    pos = 2;
    if (pos == text.size()) {
      return std::array<std::uint8_t, 16>{};  // "::"
    }
  } else if (text[0] == ':') {
    return std::nullopt;  // a single leading colon
  }

  while (pos < text.size()) {
    if (count >= 8) return std::nullopt;
    // Find the end of this field.
    std::size_t end = pos;
    while (end < text.size() && text[end] != ':') ++end;
    const std::string_view field = text.substr(pos, end - pos);
    if (field.empty()) return std::nullopt;

    if (field.find('.') != std::string_view::npos) {
      // Embedded IPv4: must be the last field and fill two groups.
      if (end != text.size() || count > 6) return std::nullopt;
      const auto quad = parse_dotted_quad(field);
      if (!quad) return std::nullopt;
      groups[count++] = static_cast<std::uint16_t>(((*quad)[0] << 8) | (*quad)[1]);
      groups[count++] = static_cast<std::uint16_t>(((*quad)[2] << 8) | (*quad)[3]);
      pos = end;
      break;
    }

    if (field.size() > 4) return std::nullopt;
    unsigned value = 0;
    for (const char c : field) {
      const int h = hex_value(c);
      if (h < 0) return std::nullopt;
      value = (value << 4) | static_cast<unsigned>(h);
    }
    groups[count++] = static_cast<std::uint16_t>(value);
    pos = end;
    if (pos == text.size()) break;
    // pos is at ':'.
    if (pos + 1 < text.size() && text[pos + 1] == ':') {
      if (gap) return std::nullopt;  // a second "::"
      gap = count;
      pos += 2;
      if (pos < text.size() && text[pos] == ':') return std::nullopt;  // ":::"
    } else {
      ++pos;
      if (pos == text.size()) return std::nullopt;  // a trailing single colon
    }
  }

  std::array<std::uint16_t, 8> full{};
  if (gap) {
    // "::" stands for at least one zero group.
    if (count > 7) return std::nullopt;
    const std::size_t tail = count - *gap;
    for (std::size_t i = 0; i < *gap; ++i) full[i] = groups[i];
    for (std::size_t i = 0; i < tail; ++i) full[8 - tail + i] = groups[*gap + i];
  } else {
    if (count != 8) return std::nullopt;
    full = groups;
  }

  std::array<std::uint8_t, 16> bytes{};
  for (std::size_t i = 0; i < 8; ++i) {
    bytes[2 * i] = static_cast<std::uint8_t>(full[i] >> 8);
    bytes[2 * i + 1] = static_cast<std::uint8_t>(full[i] & 0xff);
  }
  return bytes;
}

void append_hex(std::string& out, unsigned value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  bool started = false;
  for (int shift = 12; shift >= 0; shift -= 4) {
    const unsigned nibble = (value >> static_cast<unsigned>(shift)) & 0xfU;
    if (nibble != 0 || started || shift == 0) {
      out.push_back(kDigits[nibble]);
      started = true;
    }
  }
}

void append_dotted_quad(std::string& out, const std::uint8_t* b) {
  for (std::size_t i = 0; i < 4; ++i) {
    if (i > 0) out.push_back('.');
    out += std::to_string(b[i]);
  }
}

// RFC 5952: lowercase, no leading zeros, the longest run (first on a tie) of
// two or more zero groups as "::", IPv4-mapped addresses as ::ffff:a.b.c.d.
std::string format_v6(const std::array<std::uint8_t, 16>& bytes) {
  std::array<unsigned, 8> groups{};
  for (std::size_t i = 0; i < 8; ++i) {
    groups[i] = (static_cast<unsigned>(bytes[2 * i]) << 8) | bytes[2 * i + 1];
  }

  const bool v4_mapped =
      std::all_of(groups.begin(), groups.begin() + 5, [](unsigned g) { return g == 0; }) &&
      groups[5] == 0xffff;
  if (v4_mapped) {
    std::string out = "::ffff:";
    append_dotted_quad(out, bytes.data() + 12);
    return out;
  }

  std::size_t best_start = 8;
  std::size_t best_len = 0;
  for (std::size_t i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len) {
      best_start = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best_start = 8;

  std::string out;
  out.reserve(39);
  for (std::size_t i = 0; i < 8;) {
    if (i == best_start) {
      out += "::";
      i += best_len;
      continue;
    }
    if (i > 0 && i != best_start + best_len) out.push_back(':');
    append_hex(out, groups[i]);
    ++i;
  }
  return out;
}

void set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
}

std::uint8_t max_prefix(const IpAddress& a) { return a.is_v4() ? 32 : 128; }

// Clears every bit of `a` from bit `prefix` on.
IpAddress mask(IpAddress a, std::uint8_t prefix) {
  for (std::size_t i = 0; i < a.bytes.size(); ++i) {
    const unsigned bit = static_cast<unsigned>(i) * 8;
    if (bit >= prefix) {
      a.bytes[i] = 0;
    } else if (bit + 8 > prefix) {
      const unsigned keep = prefix - bit;
      a.bytes[i] = static_cast<std::uint8_t>(a.bytes[i] & (0xffU << (8 - keep)));
    }
  }
  return a;
}

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  IpAddress out;
  if (text.find(':') != std::string_view::npos) {
    const auto bytes = parse_v6(text);
    if (!bytes) return std::nullopt;
    out.family = Family::V6;
    out.bytes = *bytes;
    return out;
  }
  const auto quad = parse_dotted_quad(text);
  if (!quad) return std::nullopt;
  out.family = Family::V4;
  std::copy(quad->begin(), quad->end(), out.bytes.begin());
  return out;
}

IpAddress IpAddress::v4(std::uint32_t host_order) {
  IpAddress out;
  out.family = Family::V4;
  out.bytes[0] = static_cast<std::uint8_t>(host_order >> 24);
  out.bytes[1] = static_cast<std::uint8_t>(host_order >> 16);
  out.bytes[2] = static_cast<std::uint8_t>(host_order >> 8);
  out.bytes[3] = static_cast<std::uint8_t>(host_order);
  return out;
}

std::string IpAddress::to_string() const {
  if (is_v4()) {
    std::string out;
    out.reserve(15);
    append_dotted_quad(out, bytes.data());
    return out;
  }
  return format_v6(bytes);
}

std::size_t IpAddressHash::operator()(const IpAddress& a) const noexcept {
  // FNV-1a over the family and all 16 bytes (unused bytes are zero).
  std::uint64_t h = 14695981039346656037ULL;
  auto mix = [&h](std::uint8_t b) {
    h ^= b;
    h *= 1099511628211ULL;
  };
  mix(static_cast<std::uint8_t>(a.family));
  for (const std::uint8_t b : a.bytes) mix(b);
  return static_cast<std::size_t>(h);
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
  const std::string quoted = "'" + std::string(text) + "'";
  if (text.empty()) {
    set_error(error, "empty CIDR");
    return std::nullopt;
  }
  const std::size_t slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  const auto addr = IpAddress::parse(addr_text);
  if (!addr) {
    if (slash == std::string_view::npos) {
      set_error(error, "invalid IP address " + quoted);
    } else {
      set_error(error, "invalid IP address '" + std::string(addr_text) + "' in CIDR " + quoted);
    }
    return std::nullopt;
  }
  const std::uint8_t max = max_prefix(*addr);
  const char* family = addr->is_v4() ? "IPv4" : "IPv6";

  if (slash == std::string_view::npos) return Cidr{*addr, max};

  const std::string_view len_text = text.substr(slash + 1);
  if (len_text.empty() ||
      !std::all_of(len_text.begin(), len_text.end(), [](char c) { return is_digit(c); })) {
    set_error(error, "invalid prefix length '" + std::string(len_text) + "' in CIDR " + quoted);
    return std::nullopt;
  }
  unsigned len = 0;
  for (const char c : len_text) {
    len = len * 10 + static_cast<unsigned>(c - '0');
    if (len > 1000) break;  // far out of range; stop before overflow
  }
  if (len > max) {
    set_error(error, "prefix length " + std::string(len_text) + " out of range for " + family);
    return std::nullopt;
  }
  const auto prefix = static_cast<std::uint8_t>(len);
  const IpAddress base = mask(*addr, prefix);
  if (base != *addr) {
    set_error(error, "host bits set in " + std::string(text) + " (did you mean " +
                         base.to_string() + "/" + std::to_string(len) + "?)");
    return std::nullopt;
  }
  return Cidr{base, prefix};
}

bool Cidr::contains(const IpAddress& a) const {
  if (a.family != base.family) return false;
  return mask(a, prefix) == base;
}

bool Cidr::covers(const Cidr& inner) const {
  if (inner.base.family != base.family) return false;
  return inner.prefix >= prefix && contains(inner.base);
}

std::string Cidr::to_string() const { return base.to_string() + "/" + std::to_string(prefix); }

}  // namespace tierwall
