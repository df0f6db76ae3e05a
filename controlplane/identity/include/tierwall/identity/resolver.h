// Identity -> tier: selectors over labels, image and name, and the first
// matching assignment.
#pragma once

#include <optional>
#include <string>

#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/model.h"

namespace tierwall::identity {

// True when the label/image/name part of `sel` holds for `ep` (the `tier`
// part is not looked at: it depends on resolution).
bool matches_identity(const policy::EndpointSelector& sel, const Endpoint& ep);

struct TierResolution {
  std::string tier;             // "quarantine" when no assignment matches
  int assignment = -1;          // index into policy.assignments; -1 for none
  std::string assignment_name;  // the assignment's name, or "#N" for an unnamed one
};

// The display name of assignment `index` (its name, or "#N", 1-based).
std::string assignment_label(const policy::Policy& policy, std::size_t index);

TierResolution resolve_tier(const policy::Policy& policy, const Endpoint& ep);

}  // namespace tierwall::identity
