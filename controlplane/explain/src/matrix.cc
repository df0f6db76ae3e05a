// The tier-by-tier matrix and its four renderings. Building is separate from
// rendering so that every output format shows exactly the same facts.
#include "tierwall/explain/matrix.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/evaluator.h"

namespace tierwall::explain {
namespace {

using dataplane::CompiledPolicy;
using dataplane::PeerMatch;
using dataplane::RuleKind;
using dataplane::SelectorId;
using dataplane::TierId;
using Entity = PeerMatch::Entity;

// ---- building --------------------------------------------------------------

// One row/column of the matrix.
struct PeerRef {
  std::string name;
  Entity entity = Entity::Endpoint;
  TierId tier = dataplane::kQuarantineTier;  // Endpoint only
};

// What the inventory holds, per tier id: endpoint counts and the selectors
// that at least one endpoint of the tier is a member of.
struct Presence {
  std::vector<int> counts;
  std::vector<std::set<SelectorId>> selectors;
};

std::vector<PeerRef> peer_order(const CompiledPolicy& cp) {
  std::vector<PeerRef> tiers;
  for (std::size_t i = 0; i < cp.tiers.size(); ++i) {
    if (cp.tiers[i].declared) {
      tiers.push_back(PeerRef{cp.tiers[i].name, Entity::Endpoint, static_cast<TierId>(i)});
    }
  }
  std::stable_sort(tiers.begin(), tiers.end(), [&](const PeerRef& a, const PeerRef& b) {
    return cp.tiers[a.tier].level > cp.tiers[b.tier].level;
  });
  tiers.push_back(PeerRef{std::string(dataplane::kQuarantineName), Entity::Endpoint,
                          dataplane::kQuarantineTier});
  tiers.push_back(PeerRef{"host", Entity::Host, 0});
  tiers.push_back(PeerRef{"world", Entity::World, 0});
  return tiers;
}

std::optional<Presence> presence_of(const compiler::Compilation& c,
                                    const identity::Inventory* inventory) {
  if (inventory == nullptr) return std::nullopt;
  Presence p;
  p.counts.assign(c.policy()->tiers.size(), 0);
  p.selectors.resize(c.policy()->tiers.size());
  for (const auto& ep : inventory->endpoints) {
    const compiler::EndpointBinding b = c.bind(ep);
    ++p.counts[b.tier];
    p.selectors[b.tier].insert(b.selectors.begin(), b.selectors.end());
  }
  return p;
}

bool everywhere(const std::vector<Cidr>& cidrs) {
  auto all_of_family = [&](IpAddress::Family f) {
    return std::any_of(cidrs.begin(), cidrs.end(),
                       [&](const Cidr& c) { return c.base.family == f && c.prefix == 0; });
  };
  return all_of_family(IpAddress::Family::V4) && all_of_family(IpAddress::Family::V6);
}

// True when `side` can select some connection peer of kind `peer`.
bool side_reaches(const PeerMatch& side, const PeerRef& peer) {
  if (side.entity != peer.entity) return false;
  if (side.entity != Entity::Endpoint || side.tiers.empty()) return true;
  return std::binary_search(side.tiers.begin(), side.tiers.end(), peer.tier);
}

// With an inventory: some endpoint of the peer's tier is in the side's selector.
bool side_present(const PeerMatch& side, const PeerRef& peer, const Presence* presence) {
  if (presence == nullptr || side.entity != Entity::Endpoint || !side.selector) return true;
  return presence->selectors[peer.tier].count(*side.selector) > 0;
}

// The part of `side` narrower than its whole peer, for people; empty if none.
std::string side_condition(const CompiledPolicy& cp, const PeerMatch& side) {
  if (side.entity == Entity::Endpoint && side.selector) return cp.selectors[*side.selector].text;
  if (side.entity != Entity::World || everywhere(side.cidrs)) return {};
  std::string out = "world[";
  for (std::size_t i = 0; i < side.cidrs.size(); ++i) {
    out += (i > 0 ? "," : "") + side.cidrs[i].to_string();
  }
  return out + "]";
}

std::string condition_of(const CompiledPolicy& cp, const dataplane::Rule& r) {
  const std::string from = side_condition(cp, r.from);
  const std::string to = side_condition(cp, r.to);
  std::string out;
  if (!from.empty()) out = "from " + from;
  if (!to.empty()) out += (out.empty() ? "to " : "; to ") + to;
  return out;
}

// The entry of `r` in cell (from, to), or nullopt when it cannot match there.
std::optional<MatrixEntry> entry_for(const CompiledPolicy& cp, const dataplane::Rule& r,
                                     const PeerRef& from, const PeerRef& to,
                                     const Presence* presence) {
  if (!side_reaches(r.from, from) || !side_reaches(r.to, to)) return std::nullopt;
  if (!side_present(r.from, from, presence) || !side_present(r.to, to, presence)) {
    return std::nullopt;
  }
  return MatrixEntry{r.origin.name,       r.origin.kind, r.ports,      r.staged,
                     condition_of(cp, r), r.origin.file, r.origin.line};
}

bool ports_covered(const std::vector<PortMatch>& inner, const std::vector<PortMatch>& outer) {
  return std::all_of(inner.begin(), inner.end(), [&](const PortMatch& p) {
    return std::any_of(outer.begin(), outer.end(), [&](const PortMatch& o) { return p.within(o); });
  });
}

// An allow entry never allows when an enforced, unconditional deny of a
// non-audited cell covers all its ports (denies are tried first).
bool blocked(const MatrixEntry& allow, const MatrixCell& cell) {
  if (cell.audited) return false;
  return std::any_of(cell.deny.begin(), cell.deny.end(), [&](const MatrixEntry& d) {
    return !d.staged && d.condition.empty() && ports_covered(allow.ports, d.ports);
  });
}

dataplane::ResolvedPeer as_resolved(const PeerRef& p) {
  dataplane::ResolvedPeer r;
  r.entity = p.entity;
  r.tier = p.tier;
  return r;
}

MatrixCell build_cell(const CompiledPolicy& cp, const PeerRef& from, const PeerRef& to,
                      const Presence* presence) {
  MatrixCell cell;
  cell.from = from.name;
  cell.to = to.name;
  cell.audited = dataplane::deny_is_audited(cp, as_resolved(from), as_resolved(to));
  for (const auto& r : cp.denies) {
    if (auto e = entry_for(cp, r, from, to, presence)) cell.deny.push_back(std::move(*e));
  }
  for (const auto& r : cp.flows) {
    auto e = entry_for(cp, r, from, to, presence);
    if (e && !blocked(*e, cell)) cell.allow.push_back(std::move(*e));
  }
  const bool same_declared_tier = from.entity == Entity::Endpoint &&
                                  to.entity == Entity::Endpoint && from.tier == to.tier &&
                                  cp.tiers[from.tier].declared;
  if (cp.intra_tier_allow && same_declared_tier) {
    MatrixEntry e{"intraTier", RuleKind::IntraTier,       {PortMatch::any_port()},  false,
                  {},          cp.intra_tier_origin.file, cp.intra_tier_origin.line};
    if (!blocked(e, cell)) cell.allow.push_back(std::move(e));
  }
  return cell;
}

// ---- shared by the renderers -----------------------------------------------

std::string join_ports(const std::vector<PortMatch>& ports, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (i > 0) out += sep;
    out += ports[i].to_string();
  }
  return out;
}

bool any_conditional(const std::vector<MatrixEntry>& entries) {
  return std::any_of(entries.begin(), entries.end(),
                     [](const MatrixEntry& e) { return !e.condition.empty(); });
}

// What the cell allows, without markers: "any", "tcp/80,tcp/443" or "-".
std::string allowed_ports(const MatrixCell& cell) {
  std::vector<std::string> ports;
  for (const auto& e : cell.allow) {
    for (const auto& p : e.ports) {
      if (p.any) return "any";
      std::string s = p.to_string();
      if (std::find(ports.begin(), ports.end(), s) == ports.end()) ports.push_back(std::move(s));
    }
  }
  if (ports.empty()) return "-";
  std::string out;
  for (std::size_t i = 0; i < ports.size(); ++i) out += (i > 0 ? "," : "") + ports[i];
  return out;
}

// The table's cell text: allowed ports plus the "*", "!" and "~" markers.
std::string cell_text(const MatrixCell& cell) {
  std::string out = allowed_ports(cell);
  if (any_conditional(cell.allow)) out += '*';
  if (!cell.deny.empty()) out += '!';
  if (cell.audited) out += '~';
  return out;
}

enum class Shade { Allowed, Conditional, Guarded, Nothing };

Shade shade_of(const MatrixCell& cell) {
  const bool all_staged = std::all_of(cell.deny.begin(), cell.deny.end(),
                                      [](const MatrixEntry& e) { return e.staged; });
  if (!cell.allow.empty()) {
    const bool clean = !any_conditional(cell.allow) && cell.deny.empty();
    return clean ? Shade::Allowed : Shade::Conditional;
  }
  if (!cell.deny.empty()) return (cell.audited || all_staged) ? Shade::Conditional : Shade::Guarded;
  return cell.audited ? Shade::Conditional : Shade::Nothing;
}

std::string peer_label(const Matrix& m, std::size_t i) {
  if (m.endpoint_counts.empty() || m.endpoint_counts[i] < 0) return m.peers[i];
  return m.peers[i] + "(" + std::to_string(m.endpoint_counts[i]) + ")";
}

std::string_view deny_verdict(const MatrixEntry& d, const MatrixCell& cell) {
  return (d.staged || cell.audited) ? "audit" : "deny";
}

std::string location(const MatrixEntry& e) {
  if (e.line <= 0) return e.file;
  return e.file + ":" + std::to_string(e.line);
}

// ---- table -----------------------------------------------------------------

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

void legend_line(const MatrixEntry& e, std::string_view verdict, std::ostream& out) {
  out << "    " << pad(std::string(verdict), 5) << "  " << e.rule;
  if (e.kind != RuleKind::IntraTier || !e.file.empty()) {
    out << " (" << dataplane::to_string(e.kind);
    if (!e.file.empty()) out << ", " << location(e);
    out << ")";
  }
  out << "  " << join_ports(e.ports, ",");
  if (!e.condition.empty()) out << "  when " << e.condition;
  if (e.staged) out << "  [staged]";
  out << '\n';
}

void render_legend(const Matrix& m, std::ostream& out) {
  for (const MatrixCell& cell : m.cells) {
    if (cell.empty()) continue;
    out << "  " << cell.from << " -> " << cell.to << (cell.audited ? " (denies audited)" : "")
        << '\n';
    for (const auto& e : cell.allow) legend_line(e, "allow", out);
    for (const auto& e : cell.deny) legend_line(e, deny_verdict(e, cell), out);
  }
}

}  // namespace

Matrix build_matrix(const compiler::Compilation& compilation,
                    const identity::Inventory* inventory) {
  const CompiledPolicy& cp = *compilation.policy();
  const std::vector<PeerRef> peers = peer_order(cp);
  const std::optional<Presence> presence = presence_of(compilation, inventory);
  Matrix m;
  m.policy_name = cp.name;
  m.digest = cp.digest;
  for (const auto& p : peers) {
    m.peers.push_back(p.name);
    if (presence)
      m.endpoint_counts.push_back(p.entity == Entity::Endpoint ? presence->counts[p.tier] : -1);
  }
  m.cells.reserve(peers.size() * peers.size());
  for (const auto& from : peers) {
    for (const auto& to : peers) {
      m.cells.push_back(build_cell(cp, from, to, presence ? &*presence : nullptr));
    }
  }
  return m;
}

void render_table(const Matrix& m, std::ostream& out) {
  const std::size_t n = m.peers.size();
  std::string corner = "from \\ to";
  std::size_t first_width = corner.size();
  std::vector<std::size_t> widths(n);
  for (std::size_t i = 0; i < n; ++i) {
    first_width = std::max(first_width, peer_label(m, i).size());
    widths[i] = peer_label(m, i).size();
    for (std::size_t f = 0; f < n; ++f)
      widths[i] = std::max(widths[i], cell_text(m.at(f, i)).size());
  }
  out << "policy " << m.policy_name << "  digest " << m.digest << "\n\n";
  out << pad(corner, first_width);
  for (std::size_t i = 0; i < n; ++i) out << "  " << pad(peer_label(m, i), widths[i]);
  out << '\n';
  for (std::size_t f = 0; f < n; ++f) {
    out << pad(peer_label(m, f), first_width);
    for (std::size_t t = 0; t < n; ++t) out << "  " << pad(cell_text(m.at(f, t)), widths[t]);
    out << '\n';
  }
  out << "\nrows initiate, columns respond. PORTS allowed, - nothing; * only for some "
         "endpoints/addresses; ! a guardrail denies part; ~ denies are audited\n";
  if (!m.endpoint_counts.empty()) out << "(N) endpoints of the tier in the inventory\n";
  out << "\nrules per cell:\n";
  render_legend(m, out);
}

namespace {

nlohmann::json entry_json(const MatrixEntry& e, bool deny) {
  nlohmann::json j{{"rule", e.rule}, {"kind", std::string(dataplane::to_string(e.kind))}};
  j["ports"] = nlohmann::json::array();
  for (const auto& p : e.ports) j["ports"].push_back(p.to_string());
  if (!e.condition.empty()) j["condition"] = e.condition;
  if (deny) j["staged"] = e.staged;
  if (!e.file.empty()) j["file"] = e.file;
  if (e.line > 0) j["line"] = e.line;
  return j;
}

nlohmann::json entries_json(const std::vector<MatrixEntry>& entries, bool deny) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : entries) out.push_back(entry_json(e, deny));
  return out;
}

// RFC 4180: quote when the field holds a comma, quote or line break.
std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void csv_line(const MatrixCell& cell, std::string_view verdict, const MatrixEntry& e,
              std::ostream& out) {
  out << csv_field(cell.from) << ',' << csv_field(cell.to) << ',' << verdict << ','
      << csv_field(e.rule) << ',' << dataplane::to_string(e.kind) << ','
      << csv_field(join_ports(e.ports, " ")) << ',' << csv_field(e.condition) << "\r\n";
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string_view shade_class(Shade s) {
  switch (s) {
    case Shade::Allowed:
      return "allowed";
    case Shade::Conditional:
      return "conditional";
    case Shade::Guarded:
      return "guarded";
    case Shade::Nothing:
      return "nothing";
  }
  return "nothing";
}

std::string html_entry(const MatrixEntry& e, std::string_view css_class) {
  std::string out = "<li class=\"" + std::string(css_class) + "\" title=\"" +
                    html_escape(location(e)) + "\">" + html_escape(e.rule) + " <span class=\"p\">" +
                    html_escape(join_ports(e.ports, ", ")) + "</span>";
  if (!e.condition.empty())
    out += " <span class=\"c\">when " + html_escape(e.condition) + "</span>";
  if (e.staged) out += " <span class=\"c\">(staged)</span>";
  return out + "</li>";
}

void html_cell(const MatrixCell& cell, std::ostream& out) {
  out << "<td class=\"" << shade_class(shade_of(cell)) << "\"><div class=\"v\">"
      << html_escape(cell_text(cell)) << "</div>";
  if (!cell.empty()) {
    out << "<ul>";
    for (const auto& e : cell.allow) out << html_entry(e, "a");
    for (const auto& e : cell.deny) out << html_entry(e, e.staged || cell.audited ? "s" : "d");
    out << "</ul>";
  }
  out << "</td>";
}

constexpr std::string_view kHtmlStyle = R"(
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin-bottom:.2em}
.digest{font-family:monospace;color:#555;margin-top:0}
table{border-collapse:collapse}
th,td{border:1px solid #999;padding:.35em .5em;vertical-align:top;font-size:.85em}
th{background:#eee}
td .v{font-family:monospace;font-weight:bold}
td ul{margin:.3em 0 0 0;padding-left:1.1em}
td li.d{color:#900}
td li.s{color:#8a5a00}
.p{font-family:monospace}
.c{color:#555;font-style:italic}
.allowed{background:#c8eac8}
.conditional{background:#fbe3a6}
.guarded{background:#f4c0c0}
.nothing{background:#e4e4e4}
.key span{display:inline-block;padding:.1em .6em;margin-right:.5em;border:1px solid #999}
)";

}  // namespace

nlohmann::json to_json(const Matrix& m) {
  nlohmann::json j{{"policy", m.policy_name}, {"digest", m.digest}, {"peers", m.peers}};
  if (!m.endpoint_counts.empty()) j["endpoint_counts"] = m.endpoint_counts;
  j["cells"] = nlohmann::json::array();
  for (const MatrixCell& cell : m.cells) {
    if (cell.empty() && !cell.audited) continue;
    j["cells"].push_back(nlohmann::json{{"from", cell.from},
                                        {"to", cell.to},
                                        {"allow", entries_json(cell.allow, false)},
                                        {"deny", entries_json(cell.deny, true)},
                                        {"audited", cell.audited}});
  }
  return j;
}

void render_csv(const Matrix& m, std::ostream& out) {
  out << "from,to,verdict,rule,kind,ports,condition\r\n";
  for (const MatrixCell& cell : m.cells) {
    for (const auto& e : cell.allow) csv_line(cell, "allow", e, out);
    for (const auto& e : cell.deny) csv_line(cell, deny_verdict(e, cell), e, out);
  }
}

void render_html(const Matrix& m, std::ostream& out) {
  const std::string title = "tierwall matrix: " + m.policy_name;
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>"
      << html_escape(title) << " (" << html_escape(m.digest.substr(0, 12)) << ")</title>\n<style>"
      << kHtmlStyle << "</style>\n</head>\n<body>\n<h1>" << html_escape(title) << "</h1>\n"
      << "<p class=\"digest\">digest " << html_escape(m.digest) << "</p>\n"
      << "<p class=\"key\"><span class=\"allowed\">allowed</span><span class=\"conditional\">"
         "conditional or audited</span><span class=\"guarded\">guardrail</span><span "
         "class=\"nothing\">nothing allowed</span> rows initiate, columns respond</p>\n"
      << "<table>\n<tr><th>from \\ to</th>";
  for (std::size_t i = 0; i < m.peers.size(); ++i)
    out << "<th>" << html_escape(peer_label(m, i)) << "</th>";
  out << "</tr>\n";
  for (std::size_t f = 0; f < m.peers.size(); ++f) {
    out << "<tr><th>" << html_escape(peer_label(m, f)) << "</th>";
    for (std::size_t t = 0; t < m.peers.size(); ++t) html_cell(m.at(f, t), out);
    out << "</tr>\n";
  }
  out << "</table>\n</body>\n</html>\n";
}

}  // namespace tierwall::explain
