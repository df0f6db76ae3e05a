// Internet checksum (RFC 1071) helpers shared by the parser and the
// encapsulation. Internal to tw_dpdk_parse.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tierwall::dataplane::dpdk::detail {

// Adds `len` bytes at `p` to a 32-bit one's complement accumulator, as
// big-endian 16-bit words (an odd last byte is padded with zero).
inline std::uint32_t sum16(const std::uint8_t* p, std::size_t len, std::uint32_t acc) {
  std::size_t i = 0;
  for (; i + 1 < len; i += 2) {
    acc += (std::uint32_t{p[i]} << 8) | p[i + 1];
    acc = (acc & 0xffffU) + (acc >> 16);
  }
  if (i < len) acc += std::uint32_t{p[i]} << 8;
  return acc;
}

// Folds the accumulator and complements it: the value to store.
inline std::uint16_t fold(std::uint32_t acc) {
  while ((acc >> 16) != 0) acc = (acc & 0xffffU) + (acc >> 16);
  return static_cast<std::uint16_t>(~acc & 0xffffU);
}

}  // namespace tierwall::dataplane::dpdk::detail
