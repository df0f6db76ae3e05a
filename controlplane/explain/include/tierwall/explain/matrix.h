// `tierctl matrix`: the tier-by-tier view of a policy. For each pair of
// peers (declared tiers, quarantine, host, world) it lists the rules that can
// allow or deny a connection from the row peer to the column peer.
//
// The matrix is computed from the compiled policy (rule order, ids, tier
// modes) and, when an inventory is given, from the endpoints' bindings: an
// entry whose selector matches no endpoint of the tier is dropped.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/ruleset.h"
#include "tierwall/identity/endpoint.h"

namespace tierwall::explain {

struct MatrixEntry {
  std::string rule;  // rule name; "intraTier" for the intra-tier allow
  dataplane::RuleKind kind = dataplane::RuleKind::Flow;  // Flow / Deny / IntraTier
  std::vector<PortMatch> ports;
  bool staged = false;    // staged deny (audit: true)
  std::string condition;  // empty when the rule applies to the whole cell; else e.g.
                          // "from labels{app=web}; to image=reg/*"
  std::string file;       // where the rule is written; empty for intraTier without a location
  int line = 0;
};

struct MatrixCell {
  std::string from, to;            // tier name, "host" or "world"
  std::vector<MatrixEntry> allow;  // flows (and intraTier) that can allow in this cell, policy
                                   // order; a flow that an unconditional enforced deny of the
                                   // cell fully covers cannot allow and is left out
  std::vector<MatrixEntry> deny;   // guardrails that can deny in this cell (enforced and staged)
  bool audited = false;            // denies in this cell (default deny included) are audited

  [[nodiscard]] bool empty() const { return allow.empty() && deny.empty(); }
};

struct Matrix {
  std::vector<std::string> peers;    // row/column order: declared tiers by descending level,
                                     // then quarantine, host, world
  std::vector<int> endpoint_counts;  // per peer when an inventory is given (host/world: -1);
                                     // empty otherwise
  std::vector<MatrixCell> cells;     // peers.size()^2, row-major (from = row)
  std::string policy_name, digest;

  [[nodiscard]] const MatrixCell& at(std::size_t from, std::size_t to) const {
    return cells[from * peers.size() + to];
  }
};

// Builds the matrix. `inventory` may be null; when given it must be the one
// the caller means to show (its endpoints are bound with compilation.bind()).
// Cost: O(peers^2 * rules + endpoints * selectors).
Matrix build_matrix(const compiler::Compilation& compilation, const identity::Inventory* inventory);

// Aligned text grid, rows = from, columns = to. A cell shows the allowed ports
// ("tcp/5432", "any", "-" for nothing) with suffixes: "*" only for some
// endpoints/addresses, "!" a guardrail denies part of the cell, "~" denies
// are audited. A legend then lists the rules of every non-empty cell.
void render_table(const Matrix& m, std::ostream& out);

// {"policy","digest","peers":[...],"endpoint_counts"?:[...],"cells":[{"from","to",
//  "allow":[{"rule","kind","ports":[...],"condition"?,"file"?,"line"?}],
//  "deny":[{..., "staged"}],"audited"}]}; cells without entries are left out
// unless they are audited (then everything in them passes, with a log).
nlohmann::json to_json(const Matrix& m);

// RFC 4180 CSV: header from,to,verdict,rule,kind,ports,condition; one line per
// entry. verdict: allow, deny, or audit (a staged deny, or a deny in an
// audited cell). Ports are separated by spaces.
void render_csv(const Matrix& m, std::ostream& out);

// One self-contained HTML page (inline CSS, no scripts): a colored grid
// (green allowed, amber conditional/audited, red guardrail, grey nothing)
// with rule names and ports in each cell, titled with policy name + digest.
void render_html(const Matrix& m, std::ostream& out);

}  // namespace tierwall::explain
