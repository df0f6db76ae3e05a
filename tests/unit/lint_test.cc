// Lint warnings as a table: each case is a policy fragment, the lint code,
// the line the warning must point at (found by a marker on that line) and
// fragments the message must contain. A case without a marker expects no
// warning with that code at all.
#include "tierwall/lint/lint.h"

#include <cstddef>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/policy/loader.h"

namespace tierwall::lint {
namespace {

using policy::Diagnostic;
using policy::Diagnostics;
using policy::Severity;

constexpr const char* kHeader = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: lint-test}
spec:
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20}
    - {name: restricted, level: 40}
)";

constexpr const char* kAssignments = R"(  assignments:
    - {name: web, match: {labels: {role: web}}, tier: public}
    - {name: api, match: {labels: {role: api}}, tier: internal}
    - {name: db, match: {labels: {role: db}}, tier: restricted}
)";

struct LintCase {
  std::string label;
  std::string rules;  // `denies:` / `flows:` sections, indented by 2
  std::string code;
  std::string at;                      // marker on the expected line; empty: no warning
  std::vector<std::string> fragments;  // "{loc:MARKER}" stands for "test.yaml:LINE:"
  std::optional<std::string> assignments = std::nullopt;  // replaces kAssignments
};

std::string policy_text(const LintCase& c) {
  return std::string(kHeader) + c.assignments.value_or(kAssignments) + c.rules;
}

// 1-based line of the first line containing `marker`; 0 when none does.
int line_of(const std::string& text, const std::string& marker) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find(marker) != std::string::npos) return n;
  }
  return 0;
}

std::string expand(const std::string& fragment, const std::string& text) {
  const std::string open = "{loc:";
  const auto start = fragment.find(open);
  if (start == std::string::npos) return fragment;
  const auto end = fragment.find('}', start);
  const std::string marker = fragment.substr(start + open.size(), end - start - open.size());
  return fragment.substr(0, start) + "test.yaml:" + std::to_string(line_of(text, marker)) + ":" +
         fragment.substr(end + 1);
}

class LintTable : public ::testing::TestWithParam<LintCase> {};

TEST_P(LintTable, Warns) {
  const LintCase& c = GetParam();
  const std::string text = policy_text(c);
  Diagnostics parse_diags;
  const auto policy = policy::parse_policy(text, "test.yaml", parse_diags);
  std::ostringstream parse_errors;
  parse_diags.print(parse_errors);
  ASSERT_TRUE(policy.has_value()) << parse_errors.str() << text;

  Diagnostics diags;
  lint(*policy, diags);
  EXPECT_FALSE(diags.has_errors());
  std::vector<Diagnostic> found;
  for (const auto& d : diags.items()) {
    EXPECT_EQ(d.severity, Severity::Warning) << d.to_string();
    if (d.code == c.code) found.push_back(d);
  }
  if (c.at.empty()) {
    for (const auto& d : found) ADD_FAILURE() << "unexpected: " << d.to_string();
    return;
  }
  const int line = line_of(text, c.at);
  ASSERT_GT(line, 0) << "marker '" << c.at << "' not in the policy";
  ASSERT_EQ(found.size(), 1U) << "want one '" << c.code << "' warning, text:\n" << text;
  EXPECT_EQ(found[0].loc.line, line) << found[0].to_string();
  EXPECT_EQ(found[0].loc.file_name(), "test.yaml");
  for (const auto& fragment : c.fragments) {
    EXPECT_NE(found[0].message.find(expand(fragment, text)), std::string::npos)
        << "missing '" << expand(fragment, text) << "' in: " << found[0].message;
  }
}

std::string case_name(const ::testing::TestParamInfo<LintCase>& info) { return info.param.label; }

// ---- write-down -------------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    WriteDown, LintTable,
    ::testing::Values(
        LintCase{"Down",
                 "  flows:\n"
                 "    - name: leak\n"
                 "      from: {tier: restricted}\n"
                 "      to: {tier: public}\n",
                 "write-down",
                 "name: leak",
                 {"flow 'leak'", "tier 'restricted' (level 40)", "'public' (level 10)",
                  "less sensitive"}},
        LintCase{"WorstPairOfLists",
                 "  flows:\n"
                 "    - {name: x, from: {tier: [public, restricted]}, to: {tier: [internal, "
                 "restricted]}}\n",
                 "write-down",
                 "name: x",
                 {"'restricted' (level 40)", "'internal' (level 20)"}},
        LintCase{"ToQuarantine",
                 "  flows:\n"
                 "    - {name: q, from: {tier: public}, to: {tier: quarantine}}\n",
                 "write-down",
                 "name: q",
                 {"'public' (level 10)", "'quarantine' (below every tier)"}},
        LintCase{
            "UpIsFine",
            "  flows:\n"
            "    - {name: up, from: {tier: public}, to: {tier: restricted}, ports: [tcp/443]}\n",
            "write-down",
            "",
            {}},
        LintCase{"SameTierIsFine",
                 "  flows:\n"
                 "    - {name: same, from: {tier: internal}, to: {tier: internal}}\n",
                 "write-down",
                 "",
                 {}},
        LintCase{"ToWithoutTiersIsNotChecked",
                 "  flows:\n"
                 "    - {name: any-to, from: {tier: restricted}, to: {labels: {role: web}}}\n",
                 "write-down",
                 "",
                 {}},
        LintCase{"HostIsNotATier",
                 "  flows:\n"
                 "    - {name: h, from: {host: true}, to: {tier: public}}\n",
                 "write-down",
                 "",
                 {}}),
    case_name);

// ---- world-to-sensitive -----------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    WorldToSensitive, LintTable,
    ::testing::Values(
        LintCase{"ToRestricted",
                 "  flows:\n"
                 "    - name: inbound\n"
                 "      from: {world: [0.0.0.0/0]}\n"
                 "      to: {tier: restricted}\n"
                 "      ports: [tcp/443]\n",
                 "world-to-sensitive",
                 "name: inbound",
                 {"flow 'inbound'", "world[0.0.0.0/0]", "tier 'restricted' (level 40)",
                  "lowest tier 'public' (level 10)"}},
        LintCase{"ToEveryTier",
                 "  flows:\n"
                 "    - {name: wide, from: {world: [10.0.0.0/8]}, to: {labels: {role: web}}}\n",
                 "world-to-sensitive",
                 "name: wide",
                 {"every tier", "'restricted' (level 40)"}},
        LintCase{"ToLowestIsFine",
                 "  flows:\n"
                 "    - {name: web-in, from: {world: [0.0.0.0/0, '::/0']}, to: {tier: public}}\n",
                 "world-to-sensitive",
                 "",
                 {}},
        LintCase{"ToQuarantineIsFine",
                 "  flows:\n"
                 "    - {name: q-in, from: {world: [0.0.0.0/0]}, to: {tier: quarantine}}\n",
                 "world-to-sensitive",
                 "",
                 {}},
        LintCase{"ToHostIsFine",
                 "  flows:\n"
                 "    - {name: h-in, from: {world: [0.0.0.0/0]}, to: {host: true}}\n",
                 "world-to-sensitive",
                 "",
                 {}}),
    case_name);

// ---- shadowed -----------------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    Shadowed, LintTable,
    ::testing::Values(
        LintCase{"DenyByDeny",
                 "  denies:\n"
                 "    - {name: a, from: {tier: public}, to: {}}\n"
                 "    - {name: b, from: {tier: public, labels: {role: web}}, to: {tier: "
                 "restricted}, ports: [tcp/22]}\n",
                 "shadowed",
                 "name: b",
                 {"deny 'b' is shadowed by deny 'a' ({loc:{name: a,}"}},
        LintCase{"DenyWiderPortsNotShadowed",
                 "  denies:\n"
                 "    - {name: a, from: {tier: public}, to: {}, ports: [tcp/22]}\n"
                 "    - {name: b, from: {tier: public}, to: {}}\n",
                 "shadowed",
                 "",
                 {}},
        LintCase{
            "FlowByFlowPortRange",
            "  flows:\n"
            "    - {name: a, from: {tier: public}, to: {tier: internal}, ports: [tcp/1-1024]}\n"
            "    - {name: b, from: {tier: public}, to: {tier: internal}, ports: [tcp/443]}\n",
            "shadowed",
            "name: b",
            {"flow 'b' is shadowed by flow 'a' ({loc:{name: a,}", "allows every connection"}},
        LintCase{"FlowByEnforcedDeny",
                 "  denies:\n"
                 "    - {name: no-db, from: {}, to: {tier: restricted}}\n"
                 "  flows:\n"
                 "    - {name: api-db, from: {tier: internal}, to: {tier: restricted}, ports: "
                 "[tcp/5432]}\n",
                 "shadowed",
                 "name: api-db",
                 {"flow 'api-db' can never allow", "deny 'no-db' ({loc:name: no-db}"}},
        LintCase{"FlowNotShadowedByStagedDeny",
                 "  denies:\n"
                 "    - {name: no-db, from: {}, to: {tier: restricted}, audit: true}\n"
                 "  flows:\n"
                 "    - {name: api-db, from: {tier: internal}, to: {tier: restricted}, ports: "
                 "[tcp/5432]}\n",
                 "shadowed",
                 "",
                 {}},
        LintCase{"StagedDenyByEnforcedDeny",
                 "  denies:\n"
                 "    - {name: a, from: {tier: public}, to: {tier: restricted}}\n"
                 "    - {name: b, from: {tier: public}, to: {tier: restricted}, ports: [tcp/22], "
                 "audit: true}\n",
                 "shadowed",
                 "name: b",
                 {"staged deny 'b' never decides", "deny 'a' ({loc:{name: a,}"}},
        LintCase{
            "LaterBroaderFlowDoesNotShadow",
            "  flows:\n"
            "    - {name: narrow, from: {tier: public}, to: {tier: internal}, ports: [tcp/80]}\n"
            "    - {name: wide, from: {tier: [public, internal]}, to: {tier: internal}}\n",
            "shadowed",
            "",
            {}},
        LintCase{"LabelValuesSubset",
                 "  flows:\n"
                 "    - {name: a, from: {labels: {app: [shop, blog]}}, to: {tier: internal}}\n"
                 "    - {name: b, from: {labels: {app: shop, env: prod}}, to: {tier: internal}}\n",
                 "shadowed",
                 "name: b",
                 {"flow 'a'"}},
        LintCase{"LabelValuesDisjoint",
                 "  flows:\n"
                 "    - {name: a, from: {labels: {app: [shop, blog]}}, to: {tier: internal}}\n"
                 "    - {name: b, from: {labels: {app: wiki}}, to: {tier: internal}}\n",
                 "shadowed",
                 "",
                 {}},
        LintCase{"ImageGlobWithin",
                 "  flows:\n"
                 "    - {name: a, from: {image: 'reg.example/*'}, to: {tier: internal}}\n"
                 "    - {name: b, from: {image: 'reg.example/pay/db:1'}, to: {tier: internal}}\n",
                 "shadowed",
                 "name: b",
                 {"flow 'a'"}},
        LintCase{"MissingImageIsWider",
                 "  flows:\n"
                 "    - {name: a, from: {image: 'reg.example/*'}, to: {tier: internal}}\n"
                 "    - {name: b, from: {labels: {role: web}}, to: {tier: internal}}\n",
                 "shadowed",
                 "",
                 {}},
        LintCase{"WorldCidrCovered",
                 "  denies:\n"
                 "    - {name: a, from: {world: [10.0.0.0/8, '::/0']}, to: {}}\n"
                 "    - {name: b, from: {world: [10.1.0.0/16, 'fd00::/8']}, to: {tier: public}}\n",
                 "shadowed",
                 "name: b",
                 {"deny 'a'"}},
        LintCase{"WorldCidrNotCovered",
                 "  denies:\n"
                 "    - {name: a, from: {world: [10.0.0.0/8]}, to: {}}\n"
                 "    - {name: b, from: {world: [0.0.0.0/0]}, to: {}}\n",
                 "shadowed",
                 "",
                 {}},
        LintCase{"HostByHost",
                 "  flows:\n"
                 "    - {name: a, from: {host: true}, to: {}}\n"
                 "    - {name: b, from: {host: true}, to: {tier: public}, ports: [tcp/9100]}\n",
                 "shadowed",
                 "name: b",
                 {"flow 'a'"}},
        LintCase{
            "EveryTierListedCoversEmptyList",
            "  denies:\n"
            "    - {name: a, from: {tier: [public, internal, restricted, quarantine]}, to: {}}\n"
            "    - {name: b, from: {}, to: {}, ports: [tcp/23]}\n",
            "shadowed",
            "name: b",
            {"deny 'a'"}},
        LintCase{
            "AssignmentByAssignment",
            "",
            "shadowed",
            "name: db-only",
            {"assignment 'db-only' is shadowed by assignment 'shop' ({loc:name: shop}",
             "tier 'public'", "would assign 'restricted'"},
            "  assignments:\n"
            "    - {name: shop, match: {labels: {app: shop}}, tier: public}\n"
            "    - {name: api, match: {labels: {role: api}}, tier: internal}\n"
            "    - {name: db-only, match: {labels: {app: shop, role: db}}, tier: restricted}\n"},
        LintCase{"UnnamedAssignment",
                 "",
                 "shadowed",
                 "match: {image: 'reg.example/pay/db:15'}",
                 {"assignment #4", "assignment 'db'"},
                 "  assignments:\n"
                 "    - {name: web, match: {labels: {role: web}}, tier: public}\n"
                 "    - {name: api, match: {labels: {role: api}}, tier: internal}\n"
                 "    - {name: db, match: {image: 'reg.example/pay/*'}, tier: restricted}\n"
                 "    - {match: {image: 'reg.example/pay/db:15'}, tier: restricted}\n"},
        LintCase{"DisjointAssignments", "", "shadowed", "", {}}),
    case_name);

// ---- broad, unused-tier ---------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    BroadAndUnused, LintTable,
    ::testing::Values(LintCase{"Broad",
                               "  flows:\n"
                               "    - {name: open, from: {}, to: {}}\n",
                               "broad",
                               "name: open",
                               {"flow 'open'", "any port"}},
                      LintCase{"BroadWithExplicitAny",
                               "  flows:\n"
                               "    - {name: open, from: {}, to: {}, ports: [tcp/80, any]}\n",
                               "broad",
                               "name: open",
                               {"flow 'open'"}},
                      LintCase{"NarrowPortsNotBroad",
                               "  flows:\n"
                               "    - {name: dns, from: {}, to: {}, ports: [udp/53]}\n",
                               "broad",
                               "",
                               {}},
                      LintCase{"TierNotBroad",
                               "  flows:\n"
                               "    - {name: to-web, from: {}, to: {tier: public}}\n",
                               "broad",
                               "",
                               {}},
                      LintCase{"UnusedTier",
                               "",
                               "unused-tier",
                               "name: restricted",
                               {"tier 'restricted'", "add an assignment with 'tier: restricted'"},
                               "  assignments:\n"
                               "    - {name: web, match: {labels: {role: web}}, tier: public}\n"
                               "    - {name: api, match: {labels: {role: api}}, tier: internal}\n"},
                      LintCase{"EveryTierUsed", "", "unused-tier", "", {}}),
    case_name);

TEST(Lint, CleanPolicyHasNoWarnings) {
  const std::string text = std::string(kHeader) + kAssignments +
                           "  denies:\n"
                           "    - {name: no-ssh, from: {tier: public}, to: {}, ports: [tcp/22]}\n"
                           "  flows:\n"
                           "    - {name: web-api, from: {tier: public}, to: {tier: internal}, "
                           "ports: [tcp/8080]}\n"
                           "    - {name: api-db, from: {tier: internal}, to: {tier: restricted}, "
                           "ports: [tcp/5432]}\n"
                           "    - {name: lb, from: {world: [0.0.0.0/0]}, to: {tier: public}, "
                           "ports: [tcp/443]}\n";
  Diagnostics parse_diags;
  const auto policy = policy::parse_policy(text, "test.yaml", parse_diags);
  ASSERT_TRUE(policy.has_value());
  Diagnostics diags;
  lint(*policy, diags);
  std::ostringstream out;
  diags.print(out);
  EXPECT_EQ(diags.items().size(), 0U) << out.str();
}

TEST(Lint, PrintedWithCode) {
  const std::string text = std::string(kHeader) + kAssignments +
                           "  flows:\n"
                           "    - {name: open, from: {}, to: {}}\n";
  Diagnostics parse_diags;
  const auto policy = policy::parse_policy(text, "test.yaml", parse_diags);
  ASSERT_TRUE(policy.has_value());
  Diagnostics diags;
  lint(*policy, diags);
  std::ostringstream out;
  diags.print(out);
  EXPECT_NE(out.str().find("test.yaml:14:7: warning: flow 'open'"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("[broad]"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace tierwall::lint
