// Conntrack table access over ctnetlink (NFNL_SUBSYS_CTNETLINK), without
// libnetfilter_conntrack: dump every entry, delete entries by their
// original-direction tuple.
//
// Why the agent needs it: established traffic is decided once, so when a
// policy generation revokes a flow, the entries that conntrack already
// accepted must be deleted or they keep passing (ct state established).
// The ct mark's low 16 bits carry the rule id that accepted the flow
// (Action::CtMark), which is how the agent picks the entries to delete.
//
// Threads: every call opens its own short-lived netlink socket in the
// network namespace of the calling thread; calls are independent and may
// run on any thread. Blocking; no exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tierwall/dataplane/address.h"

namespace tierwall::dataplane::nft {

// The original-direction tuple of one conntrack entry, plus its mark.
// For ICMP/ICMPv6 the "ports" hold the ICMP header: sport = echo id,
// dport = type, icmp_code = code. Protocols without ports leave them 0.
struct CtEntry {
  IpAddress src;
  IpAddress dst;
  std::uint8_t proto = 0;
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  std::uint32_t mark = 0;
  std::uint8_t icmp_code = 0;  // ICMP/ICMPv6 only
  std::uint16_t zone = 0;      // conntrack zone (0: default)

  friend bool operator==(const CtEntry&, const CtEntry&) = default;
};

// Every IPv4 and IPv6 entry of the calling thread's namespace. Empty (and
// *error set) when the dump fails; retried when the kernel reports the dump
// interrupted.
std::vector<CtEntry> ct_dump(std::string* error = nullptr);

// Deletes each entry by its original tuple (and zone); entries that are
// already gone are skipped silently. Returns how many the kernel deleted.
std::size_t ct_delete(const std::vector<CtEntry>& entries, std::string* error = nullptr);

// ct_dump(), then ct_delete() of the entries for which `pred` is true.
std::size_t ct_delete_if(const std::function<bool(const CtEntry&)>& pred,
                         std::string* error = nullptr);

}  // namespace tierwall::dataplane::nft
