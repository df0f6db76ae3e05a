// The node agent's one-shot operations: apply a policy and exit, or remove
// everything tierwall installed. The long-running agent builds on these.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "tierwall/dataplane/address.h"

namespace tierwall::agent {

struct OnceOptions {
  std::vector<std::string> policy;
  std::optional<std::string> inventory;
  std::vector<std::string> container_cidrs;
  std::uint16_t log_group = 100;
  std::string table = "tierwall";
  // Pass bridged IP traffic through the inet hooks (br_netfilter), so
  // containers on one bridge are policed with conntrack. See docs/nftables.md.
  bool bridge_netfilter = true;
};

// Validates, compiles and applies the policy to the kernel of this network
// namespace, then returns with the rules left enforced. Exit codes as tierctl:
// 0 applied, 1 invalid policy/inventory (nothing applied), 2 usage,
// 3 the kernel could not be reached or rejected the ruleset.
int apply_once(const OnceOptions& options, std::ostream& out, std::ostream& err);

// Deletes tierwall's table, and nothing else. 0 on success (also when there
// was nothing to delete), 3 when the kernel could not be reached.
int flush(const std::string& table, std::ostream& out, std::ostream& err);

// The addresses configured on this namespace's interfaces.
std::vector<IpAddress> local_addresses();

// Sets net.bridge.bridge-nf-call-ip{,6}tables=1 in this namespace.
bool enable_bridge_netfilter(std::string* error);

}  // namespace tierwall::agent
