// The DPDK packet parser as it was before the fast path (see
// dpdk_parser_reference.cc): test-only, for the differential tests.
#pragma once

#include <cstdint>
#include <span>

#include "tierwall/dataplane/dpdk/parser.h"

namespace tierwall::dataplane::dpdk::reference {

PacketInfo parse_packet_reference(std::span<const std::uint8_t> frame, const ParseOptions& options);

}  // namespace tierwall::dataplane::dpdk::reference
