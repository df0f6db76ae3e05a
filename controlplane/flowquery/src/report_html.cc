#include "tierwall/flowquery/report_html.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "tierwall/flowquery/time.h"

namespace tierwall::flowquery {

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
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
        if ((static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
          out += "\xEF\xBF\xBD";
        } else {
          out += c;
        }
    }
  }
  return out;
}

namespace {

using Rgb = std::array<double, 3>;

struct Palette {
  const char* verdict;  // data-verdict, CSS class
  const char* title;
  Rgb dark;
};

constexpr Rgb kLight{0.965, 0.965, 0.965};
constexpr std::array<Palette, 3> kPanels{{
    {"allowed", "Allowed", {0.10, 0.50, 0.22}},
    {"denied", "Denied", {0.77, 0.16, 0.16}},
    {"audited", "Audited (would be denied)", {0.80, 0.50, 0.05}},
}};

std::uint64_t pick(const CellCounts& c, std::size_t panel) {
  return panel == 0 ? c.allowed : panel == 1 ? c.denied : c.audited;
}

std::string hex(const Rgb& c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x",
                static_cast<unsigned>(std::lround(std::clamp(c[0], 0.0, 1.0) * 255)),
                static_cast<unsigned>(std::lround(std::clamp(c[1], 0.0, 1.0) * 255)),
                static_cast<unsigned>(std::lround(std::clamp(c[2], 0.0, 1.0) * 255)));
  return buf;
}

// Log scale, so that a cell with 3 denies is visible next to one with 3M.
double intensity(std::uint64_t v, std::uint64_t max) {
  if (v == 0 || max == 0) return 0;
  return 0.18 + 0.82 * std::log1p(static_cast<double>(v)) / std::log1p(static_cast<double>(max));
}

Rgb mix(const Rgb& a, const Rgb& b, double t) {
  return {a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t};
}

std::string grouped(std::uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string compact(std::uint64_t n) {
  char buf[32];
  const auto d = static_cast<double>(n);
  if (n < 1000) return std::to_string(n);
  if (n < 10'000) {
    std::snprintf(buf, sizeof buf, "%.1fk", d / 1e3);
  } else if (n < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.0fk", d / 1e3);
  } else if (n < 10'000'000) {
    std::snprintf(buf, sizeof buf, "%.1fM", d / 1e6);
  } else if (n < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.0fM", d / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fG", d / 1e9);
  }
  return buf;
}

std::string fixed(double v, int decimals = 1) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string duration_text(std::int64_t us) {
  std::int64_t s = us / 1'000'000;
  if (s < 60) return fixed(static_cast<double>(us) / 1e6, 1) + " s";
  std::ostringstream o;
  if (s >= 86400) o << s / 86400 << "d ";
  if (s >= 3600) o << (s % 86400) / 3600 << "h ";
  o << (s % 3600) / 60 << "m";
  if (s < 3600) o << " " << s % 60 << "s";
  return o.str();
}

// "2026-11-25 17:00:00" (UTC), for axis labels.
std::string format_time_us_short(std::int64_t us) {
  std::string t = format_time_us(us).substr(0, 19);
  t[10] = ' ';
  return t;
}

// Long labels are cut for the axes; the full text is in a <title>.
std::string cut(std::string_view s, std::size_t n) {
  if (s.size() <= n) return std::string(s);
  return std::string(s.substr(0, n - 1)) + "\xE2\x80\xA6";
}

std::string pct(std::uint64_t v, std::uint64_t max) {
  if (max == 0) return "0";
  return fixed(100.0 * static_cast<double>(v) / static_cast<double>(max), 1);
}

constexpr std::string_view kStyle = R"(
:root{--ink:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:0;color:var(--ink);background:#fff}
main{max-width:1360px;margin:0 auto;padding:1.2em 1.5em 2em}
header.top{background:#24292f;color:#fff;padding:1.1em 1.5em}
header.top .wrap{max-width:1360px;margin:0 auto;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}
header.top h1{font-size:1.35em;margin:0 0 .2em}
header.top .meta{color:#d0d7de;font-size:.9em;line-height:1.5}
header.top .meta b{color:#fff;font-weight:600}
.badge{margin-left:auto;border-radius:8px;padding:.6em 1em;font-weight:600;min-width:16em;max-width:32em}
.badge small{display:block;font-weight:400;font-size:.8em;margin-top:.25em;word-break:break-all}
.badge.intact{background:#1a7f37;color:#fff}
.badge.broken{background:#cf222e;color:#fff}
.badge.unverified{background:#8c959f;color:#fff}
h2{font-size:1.15em;margin:1.8em 0 .6em;padding-bottom:.3em;border-bottom:1px solid var(--line)}
p.note{color:var(--muted);font-size:.85em;margin:.3em 0}
.cards{display:flex;gap:.8em;flex-wrap:wrap;margin-top:1em}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:.6em 1em;min-width:10em}
.card .n{font-size:1.5em;font-weight:700}
.card .l{color:var(--muted);font-size:.8em}
.card.allowed .n{color:#1a7f37}.card.denied .n{color:#c62828}.card.audited .n{color:#b7791f}
.card.loss .n{color:#8250df}
.panels{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:.6em}
figcaption{font-weight:600;margin-bottom:.3em}
svg text{font-family:"DejaVu Sans",sans-serif}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0 .8em}
th,td{border-bottom:1px solid var(--line);padding:.3em .6em;text-align:left;vertical-align:middle}
th{background:var(--bg);font-weight:600}
td.pair{white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono,span.mono{font-family:"DejaVu Sans Mono",monospace;font-size:.95em}
td.bar{width:220px}
td.bar div{height:.9em;border-radius:3px;background:#c62828;min-width:2px}
.tier{display:inline-block;border-radius:4px;padding:0 .35em;background:#eaeef2;color:#424a53;font-size:.85em}
.tier.quarantine,.tier.unassigned{background:#ffebe9;color:#a40e26}
.two{display:flex;gap:2em;flex-wrap:wrap}
.two>div{flex:1 1 520px;min-width:0}
.empty{color:var(--muted);font-style:italic}
footer{margin-top:2.5em;padding-top:.8em;border-top:1px solid var(--line);color:var(--muted);font-size:.8em;line-height:1.5}
)";

void heatmap(const Summary& s, std::size_t panel, std::ostream& out) {
  const Palette& pal = kPanels[panel];
  const std::size_t n = s.peers.size();
  std::uint64_t max = 0, total = 0;
  for (const auto& [k, c] : s.matrix) {
    max = std::max(max, pick(c, panel));
    total += pick(c, panel);
  }
  const int cell = std::clamp(300 / static_cast<int>(std::max<std::size_t>(n, 1)), 16, 46);
  const int left = 100, top = 84;
  const int side = cell * static_cast<int>(n);
  const int width = left + side + 10, height = top + side + 52;
  const bool labels = cell >= 26;
  const int font = std::min(12, cell / 3 + 1);

  out << "<figure><figcaption>" << pal.title << " <span class=\"note\">(" << grouped(total)
      << ")</span></figcaption>\n<svg class=\"heatmap\" data-verdict=\"" << pal.verdict
      << "\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" role=\"img\" aria-label=\""
      << pal.title << " connection attempts by source and destination tier\">\n";
  out << "<defs><linearGradient id=\"g-" << pal.verdict << "\">";
  for (int stop = 0; stop <= 4; ++stop) {
    const double t = stop / 4.0;
    out << "<stop offset=\"" << fixed(t, 2) << "\" stop-color=\""
        << hex(mix(kLight, pal.dark, 0.18 + 0.82 * t)) << "\"/>";
  }
  out << "</linearGradient></defs>\n";
  // Column labels (destination), rotated; row labels (source).
  for (std::size_t i = 0; i < n; ++i) {
    const int x = left + static_cast<int>(i) * cell + cell / 2;
    out << "<text class=\"col\" transform=\"translate(" << x + 4 << "," << top - 6
        << ") rotate(-50)\" font-size=\"11\" fill=\"#424a53\"><title>" << html_escape(s.peers[i])
        << "</title>" << html_escape(cut(s.peers[i], 14)) << "</text>\n";
  }
  for (std::size_t i = 0; i < n; ++i) {
    const int y = top + static_cast<int>(i) * cell + cell / 2 + 4;
    out << "<text class=\"row\" x=\"" << left - 6 << "\" y=\"" << y
        << "\" text-anchor=\"end\" font-size=\"11\" fill=\"#424a53\"><title>"
        << html_escape(s.peers[i]) << "</title>" << html_escape(cut(s.peers[i], 15)) << "</text>\n";
  }
  out << "<text x=\"" << left - 6 << "\" y=\"" << top - 8
      << "\" text-anchor=\"end\" font-size=\"10\" fill=\"#656d76\">from \xE2\x86\x93 to "
         "\xE2\x86\x92</text>\n";
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < n; ++c) {
      const std::uint64_t v = pick(s.cell(s.peers[r], s.peers[c]), panel);
      const double t = intensity(v, max);
      const int x = left + static_cast<int>(c) * cell, y = top + static_cast<int>(r) * cell;
      out << "<rect class=\"cell\" x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell - 1
          << "\" height=\"" << cell - 1 << "\" rx=\"2\" fill=\""
          << (v == 0 ? std::string("#eef0f2") : hex(mix(kLight, pal.dark, t))) << "\" data-from=\""
          << html_escape(s.peers[r]) << "\" data-to=\"" << html_escape(s.peers[c])
          << "\" data-count=\"" << v << "\"><title>" << html_escape(s.peers[r]) << " \xE2\x86\x92 "
          << html_escape(s.peers[c]) << ": " << grouped(v) << " " << pal.verdict
          << "</title></rect>\n";
      if (labels && v > 0) {
        out << "<text x=\"" << x + (cell - 1) / 2 << "\" y=\"" << y + (cell - 1) / 2 + font / 3
            << "\" text-anchor=\"middle\" font-size=\"" << font << "\" fill=\""
            << (t > 0.55 ? "#ffffff" : "#1f2328") << "\">" << compact(v) << "</text>\n";
      }
    }
  }
  // Colour scale.
  const int ly = top + side + 18;
  out << "<rect x=\"" << left << "\" y=\"" << ly << "\" width=\"" << std::max(side, 120)
      << "\" height=\"10\" fill=\"url(#g-" << pal.verdict << ")\"/>\n"
      << "<text x=\"" << left << "\" y=\"" << ly + 24
      << "\" font-size=\"10\" fill=\"#656d76\">1</text>\n"
      << "<text x=\"" << left + std::max(side, 120) << "\" y=\"" << ly + 24
      << "\" text-anchor=\"end\" font-size=\"10\" fill=\"#656d76\">" << grouped(max)
      << " (log scale)</text>\n";
  out << "</svg></figure>\n";
}

std::string tier_span(const std::string& tier) {
  const bool flagged = tier == "quarantine" || tier == "unassigned";
  return std::string(flagged ? "<span class=\"tier quarantine\">" : "<span class=\"tier\">") +
         html_escape(tier) + "</span>";
}

void top_denied(const Summary& s, std::ostream& out) {
  out << "<div><h3>Top denied pairs</h3>\n";
  if (s.top_denied.empty()) {
    out << "<p class=\"empty\">No denied connection attempts.</p></div>\n";
    return;
  }
  const std::uint64_t max = s.top_denied.front().count;
  out << "<table id=\"top-denied\"><thead><tr><th>source</th><th>destination</th><th>port</th>"
         "<th>denied</th><th></th></tr></thead><tbody>\n";
  for (const auto& p : s.top_denied) {
    out << "<tr><td class=\"pair\">" << tier_span(p.src_tier) << " " << html_escape(p.src_name)
        << "</td><td class=\"pair\">" << tier_span(p.dst_tier) << " " << html_escape(p.dst_name)
        << "</td><td class=\"mono\">" << html_escape(p.proto);
    if (p.port >= 0) out << "/" << p.port;
    out << "</td><td class=\"num\">" << grouped(p.count)
        << "</td><td class=\"bar\"><div style=\"width:" << pct(p.count, max)
        << "%\"></div></td></tr>\n";
  }
  out << "</tbody></table></div>\n";
}

void top_rules(const Summary& s, std::ostream& out) {
  out << "<div><h3>Top denying rules</h3>\n";
  if (s.top_denied_rules.empty()) {
    out << "<p class=\"empty\">No denied connection attempts.</p></div>\n";
    return;
  }
  const std::uint64_t max = s.top_denied_rules.front().count;
  out << "<table id=\"top-rules\"><thead><tr><th>rule</th><th>kind</th><th>denied</th><th></th>"
         "</tr></thead><tbody>\n";
  for (const auto& r : s.top_denied_rules) {
    out << "<tr><td>"
        << (r.name.empty() ? "<span class=\"empty\">(unnamed)</span>" : html_escape(r.name))
        << "</td><td class=\"mono\">" << html_escape(r.kind) << "</td><td class=\"num\">"
        << grouped(r.count) << "</td><td class=\"bar\"><div style=\"width:" << pct(r.count, max)
        << "%\"></div></td></tr>\n";
  }
  out << "</tbody></table></div>\n";
}

void endpoints(const std::vector<EndpointSeen>& list, const char* id, const char* title,
               const char* none, bool with_name, std::ostream& out) {
  out << "<div><h3>" << title << " (" << list.size() << ")</h3>\n";
  if (list.empty()) {
    out << "<p class=\"empty\">" << none << "</p></div>\n";
    return;
  }
  out << "<table id=\"" << id << "\"><thead><tr>" << (with_name ? "<th>name</th>" : "")
      << "<th>address</th><th>records</th><th>first seen</th><th>last seen</th></tr></thead>"
         "<tbody>\n";
  for (const auto& e : list) {
    out << "<tr>";
    if (with_name) out << "<td>" << html_escape(e.name) << "</td>";
    out << "<td class=\"mono\">" << html_escape(e.ip) << "</td><td class=\"num\">"
        << grouped(e.records) << "</td><td class=\"mono\">" << html_escape(e.first_time)
        << "</td><td class=\"mono\">" << html_escape(e.last_time) << "</td></tr>\n";
  }
  out << "</tbody></table></div>\n";
}

void timeline(const Summary& s, std::ostream& out) {
  if (s.policies.empty()) {
    out << "<p class=\"empty\">No policy records in this log.</p>\n";
    return;
  }
  std::int64_t t0 = s.first_us, t1 = s.last_us;
  std::int64_t g0 = s.policies.front().generation, g1 = g0;
  for (const auto& p : s.policies) {
    t0 = std::min(t0, p.time_us);
    t1 = std::max(t1, p.time_us);
    g0 = std::min(g0, p.generation);
    g1 = std::max(g1, p.generation);
  }
  if (t1 <= t0) t1 = t0 + 1;
  const int width = 1300, height = 190, left = 60, right = 30, top = 34, bottom = 40;
  const int plot_w = width - left - right, plot_h = height - top - bottom;
  auto x_of = [&](std::int64_t t) {
    return left + static_cast<int>(std::lround(static_cast<double>(t - t0) /
                                               static_cast<double>(t1 - t0) * plot_w));
  };
  auto y_of = [&](std::int64_t g) {
    if (g1 == g0) return top + plot_h / 2;
    return top + plot_h -
           static_cast<int>(
               std::lround(static_cast<double>(g - g0) / static_cast<double>(g1 - g0) * plot_h));
  };
  out << "<svg id=\"policy-timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
      << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << " " << height
      << "\" role=\"img\" aria-label=\"policy generations over time\">\n"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\""
      << plot_h << "\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>\n";
  // Time axis: 5 ticks.
  for (int i = 0; i <= 4; ++i) {
    const std::int64_t t = t0 + (t1 - t0) * i / 4;
    const int x = x_of(t);
    const std::string label = format_time_us_short(t);
    out << "<line x1=\"" << x << "\" y1=\"" << top + plot_h << "\" x2=\"" << x << "\" y2=\""
        << top + plot_h + 5 << "\" stroke=\"#8c959f\"/><text x=\"" << x << "\" y=\""
        << top + plot_h + 20 << "\" font-size=\"11\" fill=\"#656d76\" text-anchor=\""
        << (i == 0   ? "start"
            : i == 4 ? "end"
                     : "middle")
        << "\">" << html_escape(label) << "</text>\n";
  }
  out << "<text x=\"" << left - 8 << "\" y=\"" << y_of(g1) + 4
      << "\" font-size=\"11\" fill=\"#656d76\" text-anchor=\"end\">" << g1 << "</text>\n";
  if (g1 != g0) {
    out << "<text x=\"" << left - 8 << "\" y=\"" << y_of(g0) + 4
        << "\" font-size=\"11\" fill=\"#656d76\" text-anchor=\"end\">" << g0 << "</text>\n";
  }
  // The generation in force as a step line, one marker per policy record.
  std::string path;
  for (std::size_t i = 0; i < s.policies.size(); ++i) {
    const auto& p = s.policies[i];
    const int x = x_of(p.time_us), y = y_of(p.generation);
    path += (i == 0 ? "M" : "H") + std::to_string(x) + (i == 0 ? " " + std::to_string(y) : "");
    if (i > 0) path += " V" + std::to_string(y);
  }
  path += " H" + std::to_string(left + plot_w);
  out << "<path d=\"" << path << "\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\"/>\n";
  const bool label_all = s.policies.size() <= 24;
  for (const auto& p : s.policies) {
    const int x = x_of(p.time_us), y = y_of(p.generation);
    out << "<circle class=\"generation\" cx=\"" << x << "\" cy=\"" << y
        << "\" r=\"5\" fill=\"#0969da\" stroke=\"#fff\" stroke-width=\"1.5\"><title>generation "
        << p.generation << " " << html_escape(p.name) << " at " << html_escape(p.time) << " by "
        << html_escape(p.by) << " on " << html_escape(p.node) << "</title></circle>\n";
    if (label_all) {
      out << "<text x=\"" << x << "\" y=\"" << y - 10
          << "\" font-size=\"11\" fill=\"#0969da\" text-anchor=\"middle\">" << p.generation
          << "</text>\n";
    }
  }
  out << "</svg>\n";
}

void policy_table(const Summary& s, std::ostream& out) {
  if (s.policies.empty()) return;
  out << "<table id=\"policies\"><thead><tr><th>time</th><th>node</th><th>generation</th>"
         "<th>policy</th><th>digest</th><th>applied by</th></tr></thead><tbody>\n";
  const std::size_t shown = std::min<std::size_t>(s.policies.size(), 100);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& p = s.policies[i];
    out << "<tr><td class=\"mono\">" << html_escape(p.time) << "</td><td>" << html_escape(p.node)
        << "</td><td class=\"num\">" << p.generation << "</td><td>" << html_escape(p.name)
        << "</td><td class=\"mono\" title=\"" << html_escape(p.digest) << "\">"
        << html_escape(p.digest.substr(0, 16)) << "</td><td>" << html_escape(p.by)
        << "</td></tr>\n";
  }
  out << "</tbody></table>\n";
  if (shown < s.policies.size())
    out << "<p class=\"note\">" << s.policies.size() - shown << " more not listed.</p>\n";
}

void loss(const Summary& s, std::ostream& out) {
  if (s.loss_records == 0) {
    out << "<p class=\"empty\" id=\"no-loss\">No loss records: the node reports that it missed "
           "no events.</p>\n";
    return;
  }
  out << "<p><b>" << grouped(s.loss_events) << (s.loss_lower_bound ? "+" : "")
      << "</b> events known lost in " << grouped(s.loss_records)
      << " loss records. These connection attempts are missing from the figures above.</p>\n";
  out << "<table id=\"loss-sources\"><thead><tr><th>source</th><th>records</th><th>events "
         "lost</th></tr></thead><tbody>\n";
  for (const auto& l : s.loss_by_source) {
    out << "<tr><td class=\"mono\">" << html_escape(l.source) << "</td><td class=\"num\">"
        << grouped(l.records) << "</td><td class=\"num\">" << grouped(l.events)
        << (l.lower_bound ? " (at least)" : "") << "</td></tr>\n";
  }
  out << "</tbody></table>\n<table id=\"loss\"><thead><tr><th>time</th><th>node</th>"
         "<th>source</th><th>reason</th><th>events</th></tr></thead><tbody>\n";
  for (const auto& l : s.loss) {
    out << "<tr><td class=\"mono\">" << html_escape(l.time) << "</td><td>" << html_escape(l.node)
        << "</td><td class=\"mono\">" << html_escape(l.source) << "</td><td>"
        << html_escape(l.reason) << "</td><td class=\"num\">" << grouped(l.count)
        << (l.lower_bound ? "+" : "") << "</td></tr>\n";
  }
  out << "</tbody></table>\n";
  if (s.loss.size() < s.loss_records)
    out << "<p class=\"note\">First " << s.loss.size() << " loss records listed.</p>\n";
}

void badge(const Verification& v, std::ostream& out) {
  if (!v.ran) {
    out << "<div class=\"badge unverified\" id=\"verification\">Not verified<small>"
        << html_escape(v.message.empty() ? "the hash chain was not checked for this report"
                                         : v.message)
        << "</small></div>\n";
  } else if (v.ok) {
    out << "<div class=\"badge intact\" id=\"verification\">\xE2\x9C\x94 Chain intact<small>"
        << html_escape(v.message.empty() ? "every record verified" : v.message)
        << "</small></div>\n";
  } else {
    out << "<div class=\"badge broken\" id=\"verification\">\xE2\x9C\x98 Chain broken<small>"
        << html_escape(v.first_problem.empty() ? v.message : v.first_problem) << "</small>";
    if (!v.first_problem.empty() && !v.message.empty())
      out << "<small>" << html_escape(v.message) << "</small>";
    out << "</div>\n";
  }
}

void card(const char* cls, const std::string& n, const char* label, std::ostream& out) {
  out << "<div class=\"card " << cls << "\"><div class=\"n\">" << n << "</div><div class=\"l\">"
      << label << "</div></div>\n";
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

void render_html(const Summary& s, const HtmlOptions& options, std::ostream& out) {
  const std::string nodes = s.nodes.empty() ? "(no records)" : joined(s.nodes);
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
         "'unsafe-inline'; img-src data:\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << "<title>tierwall flow log report: " << html_escape(nodes) << "</title>\n<style>" << kStyle
      << "</style>\n</head>\n<body>\n";

  out << "<header class=\"top\"><div class=\"wrap\"><div><h1>Flow log report</h1>"
      << "<div class=\"meta\">node" << (s.nodes.size() == 1 ? "" : "s") << " <b id=\"nodes\">"
      << html_escape(nodes) << "</b><br>";
  if (s.first_time.empty()) {
    out << "no records";
  } else {
    out << "from <b>" << html_escape(s.first_time) << "</b> to <b>" << html_escape(s.last_time)
        << "</b> (" << duration_text(s.last_us - s.first_us) << ")";
  }
  out << "<br>" << grouped(s.records) << " records in " << s.files.size() << " file"
      << (s.files.size() == 1 ? "" : "s") << " of <span class=\"mono\">" << html_escape(s.log_dir)
      << "</span></div></div>\n";
  badge(s.verification, out);
  out << "</div></header>\n<main>\n";

  out << "<section class=\"cards\">\n";
  card("", grouped(s.flow_events), "connection attempts", out);
  card("allowed", grouped(s.totals.allowed), "allowed", out);
  card("denied", grouped(s.totals.denied), "denied", out);
  card("audited", grouped(s.totals.audited), "audited (would be denied)", out);
  card("loss", grouped(s.loss_events) + (s.loss_lower_bound ? "+" : ""), "events lost", out);
  card("", std::to_string(s.policies.size()), "policy changes", out);
  card("", std::to_string(s.quarantined.size() + s.unassigned.size()),
       "quarantined / unassigned addresses", out);
  out << "</section>\n";

  out << "<section id=\"matrix\"><h2>Tier \xC3\x97 tier</h2>\n<p class=\"note\">Connection "
         "attempts from the row's tier to the column's, one panel per verdict; colour on a "
         "log scale per panel. <i>host</i> and <i>world</i> are the node itself and addresses "
         "outside the container networks.</p>\n";
  if (s.peers.empty()) {
    out << "<p class=\"empty\">No flow records.</p>\n";
  } else {
    out << "<div class=\"panels\">\n";
    for (std::size_t p = 0; p < kPanels.size(); ++p) heatmap(s, p, out);
    out << "</div>\n";
  }
  out << "</section>\n";

  out << "<section id=\"denied\"><h2>Denied</h2><div class=\"two\">\n";
  top_denied(s, out);
  top_rules(s, out);
  out << "</div></section>\n";

  out << "<section id=\"endpoints\"><h2>Quarantined and unassigned</h2>\n<p class=\"note\">"
         "Quarantined: containers that no assignment places in a tier. Unassigned: addresses "
         "inside the container networks that belong to no known container.</p><div "
         "class=\"two\">\n";
  endpoints(s.quarantined, "quarantined", "Quarantined endpoints",
            "No quarantined endpoint took part in a flow.", true, out);
  endpoints(s.unassigned, "unassigned", "Unassigned addresses",
            "No unknown address of the container networks took part in a flow.", false, out);
  out << "</div></section>\n";

  out << "<section id=\"policy\"><h2>Policy generations</h2>\n";
  timeline(s, out);
  policy_table(s, out);
  out << "</section>\n";

  out << "<section id=\"loss-section\"><h2>Loss</h2>\n";
  loss(s, out);
  out << "</section>\n";

  out << "<section id=\"records\"><h2>Records</h2>\n<table><tbody>\n";
  for (const auto& [type, n] : s.records_by_type) {
    out << "<tr><td>" << html_escape(type) << "</td><td class=\"num\">" << grouped(n)
        << "</td></tr>\n";
  }
  out << "<tr><th>total</th><td class=\"num\"><b>" << grouped(s.records) << "</b></td></tr>\n"
      << "</tbody></table>\n";
  if (s.malformed > 0) {
    out << "<p><b>" << grouped(s.malformed)
        << " lines are not records</b> and were left out of every figure:</p><ul>\n";
    for (const auto& m : s.malformed_examples)
      out << "<li class=\"mono\">" << html_escape(m) << "</li>\n";
    out << "</ul>\n";
  }
  for (const auto& t : s.torn) {
    out << "<p class=\"note\">Incomplete last line (torn write, e.g. a crash): " << html_escape(t)
        << "; not counted.</p>\n";
  }
  out << "</section>\n";

  out << "<footer>Produced by <span class=\"mono\">" << html_escape(options.produced_by)
      << "</span> from " << s.files.size() << " log file" << (s.files.size() == 1 ? "" : "s")
      << " in <span class=\"mono\">" << html_escape(s.log_dir) << "</span>";
  if (!s.files.empty()) {
    out << " (" << html_escape(s.files.front());
    if (s.files.size() > 1) out << " \xE2\x80\xA6 " << html_escape(s.files.back());
    out << ")";
  }
  if (!options.generated_at.empty()) out << " at " << html_escape(options.generated_at);
  out << ".<br>Counts are connection attempts: flow records with event <i>start</i>, summing "
         "their <i>count</i> (identical denies are folded into one record). The verification "
         "badge is the result of checking the hash chain and signed checkpoints (<span "
         "class=\"mono\">tierctl audit verify</span>); a report of an unverified log shows what "
         "the files say, not that nobody changed them.<br>This page is self-contained: no "
         "scripts, fonts or images are loaded.</footer>\n</main>\n</body>\n</html>\n";
}

}  // namespace tierwall::flowquery
