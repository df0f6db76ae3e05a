#include "tierwall/identity/resolver.h"

#include <algorithm>

namespace tierwall::identity {

bool matches_identity(const policy::EndpointSelector& sel, const Endpoint& ep) {
  for (const auto& req : sel.labels) {
    const std::string* v = ep.labels.get(req.key);
    if (v == nullptr) return false;
    if (!std::binary_search(req.values.begin(), req.values.end(), *v)) return false;
  }
  // An endpoint without an image reference never matches an image selector.
  if (sel.image && (ep.image.empty() || !sel.image->matches(ep.image))) return false;
  if (sel.name && !sel.name->matches(ep.name)) return false;
  return true;
}

std::string assignment_label(const policy::Policy& policy, std::size_t index) {
  const auto& a = policy.assignments.at(index);
  return a.name.empty() ? "#" + std::to_string(index + 1) : a.name;
}

TierResolution resolve_tier(const policy::Policy& policy, const Endpoint& ep) {
  for (std::size_t i = 0; i < policy.assignments.size(); ++i) {
    if (matches_identity(policy.assignments[i].match, ep)) {
      return TierResolution{policy.assignments[i].tier, static_cast<int>(i),
                            assignment_label(policy, i)};
    }
  }
  return TierResolution{"quarantine", -1, {}};
}

}  // namespace tierwall::identity
