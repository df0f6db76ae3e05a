// Lint checks over a valid policy. Each check is a pure function of the
// policy that appends warnings; none of them needs the compiled form.
#include "tierwall/lint/lint.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/ruleset.h"

namespace tierwall::lint {
namespace {

using policy::Assignment;
using policy::Diagnostics;
using policy::EndpointSelector;
using policy::Glob;
using policy::LabelRequirement;
using policy::Peer;
using policy::Policy;
using policy::Rule;

constexpr std::string_view kQuarantine = dataplane::kQuarantineName;

template <typename Range, typename T>
bool contains(const Range& range, const T& value) {
  return std::find(range.begin(), range.end(), value) != range.end();
}

// Every tier an empty tier list stands for: the declared ones and quarantine.
std::vector<std::string> all_tiers(const Policy& policy) {
  std::vector<std::string> out;
  for (const auto& t : policy.tiers) out.push_back(t.name);
  out.emplace_back(kQuarantine);
  return out;
}

// "'restricted' (level 40)", or "'quarantine' (below every tier)".
std::string describe_tier(const Policy& policy, std::string_view tier) {
  const std::string quoted = "'" + std::string(tier) + "'";
  if (const auto* t = policy.find_tier(tier))
    return quoted + " (level " + std::to_string(t->level) + ")";
  return quoted + " (below every tier)";
}

// ---- subset relations ------------------------------------------------------

bool tiers_within(const EndpointSelector& inner, const EndpointSelector& outer,
                  const Policy& policy) {
  if (outer.tiers.empty()) return true;
  const std::vector<std::string> tiers = inner.tiers.empty() ? all_tiers(policy) : inner.tiers;
  return std::all_of(tiers.begin(), tiers.end(),
                     [&](const std::string& t) { return contains(outer.tiers, t); });
}

// Every label requirement of `outer` is implied by one of `inner`.
bool labels_within(const std::vector<LabelRequirement>& inner,
                   const std::vector<LabelRequirement>& outer) {
  return std::all_of(outer.begin(), outer.end(), [&](const LabelRequirement& want) {
    auto have = std::find_if(inner.begin(), inner.end(),
                             [&](const LabelRequirement& r) { return r.key == want.key; });
    if (have == inner.end()) return false;
    return std::all_of(have->values.begin(), have->values.end(),
                       [&](const std::string& v) { return contains(want.values, v); });
  });
}

bool glob_within(const std::optional<Glob>& inner, const std::optional<Glob>& outer) {
  return !outer || (inner && inner->within(*outer));
}

// The label/image/name part only (assignments have no tier part).
bool identity_within(const EndpointSelector& inner, const EndpointSelector& outer) {
  return labels_within(inner.labels, outer.labels) && glob_within(inner.image, outer.image) &&
         glob_within(inner.name, outer.name);
}

bool cidrs_within(const std::vector<Cidr>& inner, const std::vector<Cidr>& outer) {
  return std::all_of(inner.begin(), inner.end(), [&](const Cidr& c) {
    return std::any_of(outer.begin(), outer.end(), [&](const Cidr& o) { return o.covers(c); });
  });
}

bool ports_within(const std::vector<PortMatch>& inner, const std::vector<PortMatch>& outer) {
  return std::all_of(inner.begin(), inner.end(), [&](const PortMatch& p) {
    return std::any_of(outer.begin(), outer.end(), [&](const PortMatch& o) { return p.within(o); });
  });
}

// ---- write-down, world-to-sensitive, broad ---------------------------------

// The declared tier (or quarantine) of `tiers` with the highest / lowest
// level; empty when `tiers` is.
std::string extreme_tier(const Policy& policy, const std::vector<std::string>& tiers,
                         bool highest) {
  if (tiers.empty()) return {};
  auto by_level = [&](const std::string& a, const std::string& b) {
    return policy.level_of(a) < policy.level_of(b);
  };
  return highest ? *std::max_element(tiers.begin(), tiers.end(), by_level)
                 : *std::min_element(tiers.begin(), tiers.end(), by_level);
}

// The declared tier with the lowest level (a valid policy declares one).
std::string lowest_declared_tier(const Policy& policy) {
  std::vector<std::string> declared;
  for (const auto& t : policy.tiers) declared.push_back(t.name);
  return extreme_tier(policy, declared, false);
}

bool names_tiers(const Peer& p) {
  return p.kind == Peer::Kind::Endpoints && !p.selector.tiers.empty();
}

// Reports the worst pair only: the highest initiator against the lowest responder.
void check_write_down(const Policy& policy, const Rule& flow, Diagnostics& diags) {
  if (!names_tiers(flow.from) || !names_tiers(flow.to)) return;
  const std::string from = extreme_tier(policy, flow.from.selector.tiers, true);
  const std::string to = extreme_tier(policy, flow.to.selector.tiers, false);
  if (policy.level_of(from) <= policy.level_of(to)) return;
  diags.warning(flow.loc, "write-down",
                "flow '" + flow.name + "' lets tier " + describe_tier(policy, from) +
                    " initiate to " + describe_tier(policy, to) +
                    ": data may move to a less sensitive tier");
}

void check_world_to_sensitive(const Policy& policy, const Rule& flow, Diagnostics& diags) {
  if (flow.from.kind != Peer::Kind::World || flow.to.kind != Peer::Kind::Endpoints) return;
  const bool every_tier = flow.to.selector.tiers.empty();
  const std::vector<std::string> tiers = every_tier ? all_tiers(policy) : flow.to.selector.tiers;
  const std::string top = extreme_tier(policy, tiers, true);
  if (policy.level_of(top) <= policy.lowest_level()) return;
  std::string target = every_tier ? "every tier (its 'to' names none), including " : "tier ";
  diags.warning(flow.loc, "world-to-sensitive",
                "flow '" + flow.name + "' lets " + flow.from.to_string() + " initiate to " +
                    target + describe_tier(policy, top) + ", above the lowest tier " +
                    describe_tier(policy, lowest_declared_tier(policy)));
}

void check_broad(const Rule& flow, Diagnostics& diags) {
  const bool everyone = flow.from.kind == Peer::Kind::Endpoints && flow.from.selector.empty() &&
                        flow.to.kind == Peer::Kind::Endpoints && flow.to.selector.empty();
  if (!everyone || !flow.any_port()) return;
  diags.warning(flow.loc, "broad",
                "flow '" + flow.name +
                    "' allows every endpoint to reach every endpoint on any port ({} to {}, "
                    "ports any): it turns segmentation off between endpoints");
}

// ---- shadowed --------------------------------------------------------------

std::string rule_ref(std::string_view kind, const Rule& r) {
  return std::string(kind) + " '" + r.name + "' (" + r.loc.to_string() + ")";
}

// The first rule of `earlier` (up to `end`) that `rule` is within and that
// `eligible` accepts; nullptr when none.
template <typename Eligible>
const Rule* first_cover(const Rule& rule, const std::vector<Rule>& earlier, std::size_t end,
                        const Policy& policy, Eligible eligible) {
  for (std::size_t i = 0; i < end && i < earlier.size(); ++i) {
    if (eligible(earlier[i]) && rule_within(rule, earlier[i], policy)) return &earlier[i];
  }
  return nullptr;
}

bool enforced(const Rule& d) { return !d.audit; }
bool staged(const Rule& d) { return d.audit; }

// Enforced denies are all tried before anything else, so any of them (not
// only an earlier one) keeps a staged deny from deciding.
void check_shadowed_denies(const Policy& policy, Diagnostics& diags) {
  const auto& denies = policy.denies;
  for (std::size_t i = 0; i < denies.size(); ++i) {
    const Rule& d = denies[i];
    if (enforced(d)) {
      if (const Rule* by = first_cover(d, denies, i, policy, enforced)) {
        diags.warning(d.loc, "shadowed",
                      "deny '" + d.name + "' is shadowed by " + rule_ref("deny", *by) +
                          ", which denies every connection it matches first");
      }
      continue;
    }
    if (const Rule* by = first_cover(d, denies, denies.size(), policy, enforced)) {
      diags.warning(d.loc, "shadowed",
                    "staged deny '" + d.name + "' never decides: " + rule_ref("deny", *by) +
                        " enforces a deny on every connection it matches");
    } else if (const Rule* first = first_cover(d, denies, i, policy, staged)) {
      diags.warning(d.loc, "shadowed",
                    "staged deny '" + d.name + "' is shadowed by " +
                        rule_ref("staged deny", *first) +
                        ", which is reported first for every connection it matches");
    }
  }
}

void check_shadowed_flows(const Policy& policy, Diagnostics& diags) {
  const auto& flows = policy.flows;
  auto any_rule = [](const Rule&) { return true; };
  for (std::size_t i = 0; i < flows.size(); ++i) {
    const Rule& f = flows[i];
    if (const Rule* by = first_cover(f, policy.denies, policy.denies.size(), policy, enforced)) {
      diags.warning(f.loc, "shadowed",
                    "flow '" + f.name + "' can never allow: " + rule_ref("deny", *by) +
                        " denies every connection it matches first");
    } else if (const Rule* first = first_cover(f, flows, i, policy, any_rule)) {
      diags.warning(f.loc, "shadowed",
                    "flow '" + f.name + "' is shadowed by " + rule_ref("flow", *first) +
                        ", which allows every connection it matches first");
    }
  }
}

std::string assignment_ref(const Policy& policy, std::size_t index) {
  const Assignment& a = policy.assignments[index];
  return "assignment " + (a.name.empty() ? "#" + std::to_string(index + 1) : "'" + a.name + "'");
}

void check_shadowed_assignments(const Policy& policy, Diagnostics& diags) {
  const auto& as = policy.assignments;
  for (std::size_t i = 0; i < as.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (!identity_within(as[i].match, as[j].match)) continue;
      std::string message = assignment_ref(policy, i) + " is shadowed by " +
                            assignment_ref(policy, j) + " (" + as[j].loc.to_string() +
                            "): every endpoint it matches is assigned to tier '" + as[j].tier +
                            "' first";
      if (as[j].tier != as[i].tier) message += " (it would assign '" + as[i].tier + "')";
      diags.warning(as[i].loc, "shadowed", std::move(message));
      break;
    }
  }
}

// ---- unused-tier -----------------------------------------------------------

void check_unused_tiers(const Policy& policy, Diagnostics& diags) {
  for (const auto& t : policy.tiers) {
    const bool used = std::any_of(policy.assignments.begin(), policy.assignments.end(),
                                  [&](const Assignment& a) { return a.tier == t.name; });
    if (used) continue;
    diags.warning(t.loc, "unused-tier",
                  "tier '" + t.name +
                      "' is declared but no assignment puts endpoints in it (add an assignment "
                      "with 'tier: " +
                      t.name + "', or remove the tier)");
  }
}

}  // namespace

bool peer_within(const Peer& inner, const Peer& outer, const Policy& policy) {
  if (inner.kind != outer.kind) return false;
  switch (inner.kind) {
    case Peer::Kind::Host:
      return true;
    case Peer::Kind::World:
      return cidrs_within(inner.world, outer.world);
    case Peer::Kind::Endpoints:
      return tiers_within(inner.selector, outer.selector, policy) &&
             identity_within(inner.selector, outer.selector);
  }
  return false;
}

bool rule_within(const Rule& inner, const Rule& outer, const Policy& policy) {
  return peer_within(inner.from, outer.from, policy) && peer_within(inner.to, outer.to, policy) &&
         ports_within(inner.ports, outer.ports);
}

void lint(const Policy& policy, Diagnostics& diags) {
  for (const Rule& f : policy.flows) check_write_down(policy, f, diags);
  for (const Rule& f : policy.flows) check_world_to_sensitive(policy, f, diags);
  check_shadowed_denies(policy, diags);
  check_shadowed_flows(policy, diags);
  check_shadowed_assignments(policy, diags);
  for (const Rule& f : policy.flows) check_broad(f, diags);
  check_unused_tiers(policy, diags);
}

}  // namespace tierwall::lint
