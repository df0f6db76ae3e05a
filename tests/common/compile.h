// From YAML text to a compiled RuleSet for tests: the real loader and
// compiler, with every diagnostic in the failure message when the policy or
// the inventory does not load.
#pragma once

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/loader.h"

namespace tierwall::testkit {

// The diagnostics as tierctl prints them, one per line.
inline std::string diag_text(const policy::Diagnostics& d) {
  std::ostringstream s;
  d.print(s);
  return s.str();
}

// Parses the policy (as the file `policy_file`, the origin of its rules) and
// the inventory and compiles them as `generation` for the container networks
// `container_cidrs`. When either does not load, the current test fails with
// the diagnostics and the result is empty.
inline std::optional<dataplane::RuleSet> compile_yaml(
    std::string_view policy_yaml, std::string_view inventory_yaml, std::uint64_t generation,
    std::vector<Cidr> container_cidrs, const std::string& policy_file = "policy.yaml") {
  policy::Diagnostics diags;
  auto p = policy::parse_policy(policy_yaml, policy_file, diags);
  auto inv = identity::parse_inventory(inventory_yaml, "inventory.yaml", diags);
  if (!p || !inv) {
    ADD_FAILURE() << diag_text(diags);
    return std::nullopt;
  }
  return compiler::compile(*p, *inv, generation, std::move(container_cidrs));
}

}  // namespace tierwall::testkit
