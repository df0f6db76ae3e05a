// The audit report as one self-contained HTML page: inline CSS and inline
// SVG, no scripts, nothing fetched (a Content-Security-Policy forbids it in
// case anything slipped through). Every string that comes from the log is
// attacker-influenced (container names, images, rule names) and is escaped.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

#include "tierwall/flowquery/summary.h"

namespace tierwall::flowquery {

struct HtmlOptions {
  std::string generated_at;                    // shown in the footer; empty: omitted
  std::string produced_by = "tierctl report";  // the command, for the footer
};

// Sections: header (nodes, time span, verification badge), totals, the
// tier x tier heatmaps (allowed / denied / audited panels, one
// <svg class="heatmap" data-verdict=".."> each with a <rect class="cell">
// per (row, column) pair), top denied pairs and rules with bars,
// quarantined and unassigned endpoints, a policy generation timeline, loss,
// record counts, footer.
void render_html(const Summary& s, const HtmlOptions& options, std::ostream& out);

// &, <, >, ", ' as entities; control characters other than tab/newline as
// U+FFFD so that nothing can break out of text or attribute context.
std::string html_escape(std::string_view s);

}  // namespace tierwall::flowquery
