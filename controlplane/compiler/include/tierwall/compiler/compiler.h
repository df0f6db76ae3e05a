// Policy (+ identities) -> RuleSet.
//
// compile() turns a validated Policy into an immutable CompiledPolicy whose
// rules speak of tier ids and selector ids only, and keeps what is needed to
// bind endpoints to (tier, selector memberships) later: binding an endpoint
// never touches the rules, so endpoint churn is membership data only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tierwall/dataplane/ruleset.h"
#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/model.h"

namespace tierwall::compiler {

// Where an endpoint lands.
struct EndpointBinding {
  dataplane::TierId tier = dataplane::kQuarantineTier;
  int assignment = -1;  // index of the deciding assignment; -1 for quarantine
  std::vector<dataplane::SelectorId> selectors;  // sorted
};

class Compilation {
 public:
  // `policy` must be valid (as returned by the loader).
  Compilation(const policy::Policy& policy, std::uint64_t generation);

  [[nodiscard]] const std::shared_ptr<const dataplane::CompiledPolicy>& policy() const {
    return compiled_;
  }
  [[nodiscard]] const policy::Policy& source() const { return source_; }

  // Tier and selector memberships of one endpoint. Cost: proportional to the
  // selectors that share a label with the endpoint, not to all selectors.
  [[nodiscard]] EndpointBinding bind(const identity::Endpoint& endpoint) const;

  // Endpoint table for an inventory; endpoint id = index in inventory.endpoints.
  // When `assignments` is given, it receives each endpoint's deciding
  // assignment index (-1 for quarantine), in inventory order.
  [[nodiscard]] std::shared_ptr<dataplane::EndpointTable> bind_all(
      const identity::Inventory& inventory, std::vector<Cidr> container_cidrs = {},
      std::vector<int>* assignments = nullptr) const;

  // The identity part of selector `id`, as the policy wrote it.
  [[nodiscard]] const policy::EndpointSelector& selector(dataplane::SelectorId id) const {
    return selectors_[id];
  }

 private:
  // Candidates indexed by the first label requirement (key -> value ->
  // entries); entries without labels are always candidates.
  struct LabelIndex {
    std::unordered_map<std::string, std::unordered_map<std::string, std::vector<std::uint32_t>>>
        by_label;
    std::vector<std::uint32_t> unlabelled;
    void add(const policy::EndpointSelector& sel, std::uint32_t entry);
    void candidates(const identity::Endpoint& ep, std::vector<std::uint32_t>& out) const;
  };

  policy::Policy source_;
  std::shared_ptr<const dataplane::CompiledPolicy> compiled_;
  std::vector<policy::EndpointSelector> selectors_;
  std::vector<dataplane::TierId> assignment_tiers_;
  LabelIndex selector_index_;
  LabelIndex assignment_index_;
  bool uses_names_ = false;  // some selector or assignment matches on names
};

// Convenience: compile a policy and bind an inventory in one go.
dataplane::RuleSet compile(const policy::Policy& policy, const identity::Inventory& inventory,
                           std::uint64_t generation = 1, std::vector<Cidr> container_cidrs = {});

}  // namespace tierwall::compiler
