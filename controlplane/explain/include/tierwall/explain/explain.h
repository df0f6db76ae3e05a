// `tierctl explain`: why one connection is allowed, denied or audited.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/endpoint.h"

namespace tierwall::explain {

// One side of the connection as the user sees it.
struct Side {
  dataplane::ResolvedPeer peer;
  const identity::Endpoint* endpoint = nullptr;  // for endpoints the inventory knows
  std::string tier;                              // endpoints only
  std::string assignment;                        // endpoints with a tier other than quarantine
};

// A rule that would have allowed the connection but for `differences`.
struct NearMiss {
  const dataplane::Rule* rule = nullptr;
  std::vector<std::string> differences;  // "from: tier is public, rule wants internal", ...
};

struct Explanation {
  dataplane::Decision decision;
  Side from;
  Side to;
  std::uint8_t protocol = 0;
  std::uint16_t port = 0;
  bool port_given = false;
  std::vector<NearMiss> nearest;  // only for deny and audit-of-deny verdicts
};

struct ExplainError {
  int exit_code = 2;  // 1 invalid input, 2 usage
  std::string message;
};

class Explainer {
 public:
  // The compilation and inventory must outlive the Explainer.
  Explainer(const compiler::Compilation& compilation, const identity::Inventory& inventory);

  // X and Y: an endpoint name, an IP address, or `host`. `port`: a concrete
  // spec such as tcp/5432, udp/53 or icmp/echo-request; may be omitted when
  // the verdict does not depend on it.
  [[nodiscard]] std::variant<Explanation, ExplainError> explain(
      std::string_view from, std::string_view to, std::optional<std::string_view> port) const;

  [[nodiscard]] const dataplane::EndpointTable& endpoints() const { return *table_; }

 private:
  std::variant<Side, ExplainError> side(std::string_view text, const Side* other) const;
  Side describe(const dataplane::ResolvedPeer& peer) const;
  std::vector<NearMiss> nearest(const Explanation& e) const;

  const compiler::Compilation& compilation_;
  const identity::Inventory& inventory_;
  std::shared_ptr<dataplane::EndpointTable> table_;
  std::vector<int> assignment_of_;  // endpoint index -> assignment index
  std::unordered_map<std::string, std::size_t> by_name_;
};

// The JSON document of spec/cli.md.
nlohmann::json to_json(const Explanation& e);
// The same facts for a person, plus the nearest allowing rules for a deny.
void print_human(const Explanation& e, const dataplane::CompiledPolicy& policy, std::ostream& out);

}  // namespace tierwall::explain
