// IP addresses and prefixes as plain values, shared by every component.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tierwall {

// An IPv4 or IPv6 address. IPv4 addresses use the first 4 bytes of `bytes`;
// the rest stay zero so that comparison and hashing are total.
struct IpAddress {
  enum class Family : std::uint8_t { V4 = 4, V6 = 6 };

  Family family = Family::V4;
  std::array<std::uint8_t, 16> bytes{};

  static std::optional<IpAddress> parse(std::string_view text);
  static IpAddress v4(std::uint32_t host_order);

  [[nodiscard]] bool is_v4() const { return family == Family::V4; }
  [[nodiscard]] std::size_t size() const { return is_v4() ? 4 : 16; }
  [[nodiscard]] std::string to_string() const;

  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

struct IpAddressHash {
  std::size_t operator()(const IpAddress& a) const noexcept;
};

// A network prefix. `parse` rejects host bits set below the prefix
// ("10.0.0.1/8" is an error, not silently 10.0.0.0/8), and accepts a bare
// address as a /32 or /128.
struct Cidr {
  IpAddress base;
  std::uint8_t prefix = 0;

  static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);

  [[nodiscard]] bool contains(const IpAddress& a) const;
  // True when every address of `inner` is in this prefix.
  [[nodiscard]] bool covers(const Cidr& inner) const;
  [[nodiscard]] std::string to_string() const;

  friend auto operator<=>(const Cidr&, const Cidr&) = default;
  friend bool operator==(const Cidr&, const Cidr&) = default;
};

}  // namespace tierwall
