// `tierctl lint`: warnings about a valid policy that is probably not what
// its author meant. Lint never reports errors and never changes the policy.
#pragma once

#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/model.h"

namespace tierwall::lint {

// Adds warnings (never errors) for a valid policy to `diags`, each with its
// lint code and the location of the rule, assignment or tier concerned:
//   write-down          a flow from a tier to a less sensitive tier
//   world-to-sensitive  a flow from `world` to a tier above the lowest one
//   shadowed            a deny, flow or assignment that an earlier one always
//                       decides first (the shadowing one is named, with its
//                       location)
//   broad               a flow from `{}` to `{}` on any port
//   unused-tier         a declared tier that no assignment targets
// Deterministic: warnings come in the order of these checks, then policy
// order. Cost: O(rules^2 + assignments^2) for `shadowed`.
void lint(const policy::Policy& policy, policy::Diagnostics& diags);

// True when every connection peer `inner` selects is also selected by
// `outer` (conservative: may answer false for some true cases). `policy`
// gives the tiers that an empty tier list stands for.
bool peer_within(const policy::Peer& inner, const policy::Peer& outer,
                 const policy::Policy& policy);

// True when every connection `inner` matches is also matched by `outer`
// (from, to and ports; conservative like peer_within).
bool rule_within(const policy::Rule& inner, const policy::Rule& outer,
                 const policy::Policy& policy);

}  // namespace tierwall::lint
