// Diagnostics as JSON, the one shape every command and the agent's API use:
// [{"file", "line", "column", "severity": "error"|"warning", "message",
//   "code" (warnings only)}], sorted by location.
// Header-only: include it only where nlohmann_json is linked.
#pragma once

#include <nlohmann/json.hpp>

#include "tierwall/policy/diagnostics.h"

namespace tierwall::policy {

inline nlohmann::json diagnostics_json(const Diagnostics& diags) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& d : diags.sorted()) {
    nlohmann::json j;
    j["file"] = d.loc.file_name();
    j["line"] = d.loc.line;
    j["column"] = d.loc.column;
    j["severity"] = d.severity == Severity::Error ? "error" : "warning";
    j["message"] = d.message;
    if (!d.code.empty()) j["code"] = d.code;
    list.push_back(std::move(j));
  }
  return list;
}

}  // namespace tierwall::policy
