#include "tierwall/policy/diagnostics.h"

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tierwall::policy {
namespace {

SourceLoc at(const char* file, int line, int column) {
  return SourceLoc{file != nullptr ? std::make_shared<const std::string>(file) : nullptr, line,
                   column};
}

struct LocCase {
  SourceLoc loc;
  std::string expected;
};

class SourceLocFormat : public ::testing::TestWithParam<LocCase> {};

TEST_P(SourceLocFormat, Table) { EXPECT_EQ(GetParam().loc.to_string(), GetParam().expected); }

INSTANTIATE_TEST_SUITE_P(Table, SourceLocFormat,
                         ::testing::Values(LocCase{at("policy.yaml", 12, 5), "policy.yaml:12:5"},
                                           LocCase{at("policy.yaml", 3, 0), "policy.yaml:3"},
                                           LocCase{at("policy.yaml", 0, 0), "policy.yaml"},
                                           LocCase{at("policy.yaml", 0, 7), "policy.yaml"},
                                           LocCase{at(nullptr, 1, 2), "<input>:1:2"},
                                           LocCase{at(nullptr, 0, 0), "<input>"}));

TEST(SourceLoc, FileName) {
  EXPECT_EQ(at(nullptr, 1, 1).file_name(), "<input>");
  EXPECT_EQ(SourceLoc{}.file_name(), "<input>");
  EXPECT_EQ(at("a/b.yaml", 1, 1).file_name(), "a/b.yaml");
}

struct DiagCase {
  Diagnostic diag;
  std::string expected;
};

class DiagnosticFormat : public ::testing::TestWithParam<DiagCase> {};

TEST_P(DiagnosticFormat, Table) { EXPECT_EQ(GetParam().diag.to_string(), GetParam().expected); }

INSTANTIATE_TEST_SUITE_P(
    Table, DiagnosticFormat,
    ::testing::Values(
        DiagCase{{Severity::Error, at("p.yaml", 4, 9), "unknown tier 'confidental'", ""},
                 "p.yaml:4:9: error: unknown tier 'confidental'"},
        DiagCase{{Severity::Warning, at("p.yaml", 20, 3), "flow 'x' writes down", "write-down"},
                 "p.yaml:20:3: warning: flow 'x' writes down [write-down]"},
        DiagCase{{Severity::Error, at("dir", 0, 0), "no policy files", ""},
                 "dir: error: no policy files"},
        DiagCase{{Severity::Warning, at(nullptr, 0, 0), "odd", "broad"},
                 "<input>: warning: odd [broad]"},
        DiagCase{{Severity::Warning, at("p.yaml", 1, 1), "no code", ""},
                 "p.yaml:1:1: warning: no code"}));

TEST(Diagnostics, CountsAndItems) {
  Diagnostics d;
  EXPECT_FALSE(d.has_errors());
  EXPECT_EQ(d.error_count(), 0U);
  EXPECT_EQ(d.warning_count(), 0U);
  d.warning(at("a.yaml", 2, 1), "broad", "w1");
  EXPECT_FALSE(d.has_errors());
  d.error(at("a.yaml", 1, 1), "e1");
  d.error(at("a.yaml", 3, 1), "e2");
  EXPECT_TRUE(d.has_errors());
  EXPECT_EQ(d.error_count(), 2U);
  EXPECT_EQ(d.warning_count(), 1U);
  ASSERT_EQ(d.items().size(), 3U);
  EXPECT_EQ(d.items()[0].code, "broad");
  EXPECT_EQ(d.items()[0].severity, Severity::Warning);
  EXPECT_EQ(d.items()[1].message, "e1");
  EXPECT_TRUE(d.items()[1].code.empty());
}

TEST(Diagnostics, Append) {
  Diagnostics a;
  a.error(at("a.yaml", 1, 1), "e");
  Diagnostics b;
  b.warning(at("b.yaml", 1, 1), "shadowed", "w");
  b.error(at("b.yaml", 2, 1), "e");
  a.append(b);
  EXPECT_EQ(a.error_count(), 2U);
  EXPECT_EQ(a.warning_count(), 1U);
  EXPECT_EQ(a.items().size(), 3U);
  a.append(Diagnostics{});
  EXPECT_EQ(a.items().size(), 3U);
}

TEST(Diagnostics, SortedByFileLineColumnAndStable) {
  Diagnostics d;
  d.error(at("b.yaml", 1, 1), "b1");
  d.error(at("a.yaml", 10, 2), "a10-2");
  d.warning(at("a.yaml", 2, 5), "broad", "a2-5 first");
  d.error(at("a.yaml", 2, 5), "a2-5 second");
  d.error(at("a.yaml", 2, 1), "a2-1");
  d.error(at("a.yaml", 0, 0), "a-file");
  d.error(at(nullptr, 1, 1), "input");

  std::vector<std::string> messages;
  for (const Diagnostic& x : d.sorted()) messages.push_back(x.message);
  EXPECT_EQ(messages, (std::vector<std::string>{"input", "a-file", "a2-1", "a2-5 first",
                                                "a2-5 second", "a10-2", "b1"}));
  // sorted() does not reorder the items themselves.
  EXPECT_EQ(d.items().front().message, "b1");
}

TEST(Diagnostics, PrintWritesOneSortedLineEach) {
  Diagnostics d;
  d.warning(at("p.yaml", 9, 3), "write-down", "flow 'a' moves data down");
  d.error(at("p.yaml", 2, 7), "unknown key 'tiersx' (did you mean 'tiers'?)");
  std::ostringstream out;
  d.print(out);
  EXPECT_EQ(out.str(),
            "p.yaml:2:7: error: unknown key 'tiersx' (did you mean 'tiers'?)\n"
            "p.yaml:9:3: warning: flow 'a' moves data down [write-down]\n");

  std::ostringstream empty;
  Diagnostics{}.print(empty);
  EXPECT_EQ(empty.str(), "");
}

struct Suggest {
  std::string word;
  std::vector<std::string> candidates;
  std::string match;
};

class ClosestMatch : public ::testing::TestWithParam<Suggest> {};

TEST_P(ClosestMatch, Table) {
  const Suggest& c = GetParam();
  EXPECT_EQ(closest_match(c.word, c.candidates), c.match) << c.word;
  EXPECT_EQ(did_you_mean(c.word, c.candidates),
            c.match.empty() ? "" : " (did you mean '" + c.match + "'?)")
      << c.word;
}

const std::vector<std::string> kTiers{"public", "internal", "confidential", "restricted"};

INSTANTIATE_TEST_SUITE_P(
    Table, ClosestMatch,
    ::testing::Values(Suggest{"confidental", kTiers, "confidential"},  // deletion
                      Suggest{"internl", kTiers, "internal"},
                      Suggest{"pubilc", kTiers, "public"},  // swap
                      Suggest{"restrictd", kTiers, "restricted"},
                      Suggest{"Public", kTiers, "public"},
                      Suggest{"RESTRICTED", kTiers, "restricted"},  // case-insensitive
                      Suggest{"secret", kTiers, ""}, Suggest{"", kTiers, ""},
                      Suggest{"pub", kTiers, ""},  // 3 edits from "public", threshold 1
                      Suggest{"publc", {}, ""},
                      // Threshold is max(1, len/3): short words still get one edit.
                      Suggest{"ab", {"ac", "xy"}, "ac"}, Suggest{"ab", {"xy"}, ""},
                      Suggest{"mode", {"mod", "node", "modes"}, "mod"},  // first of equal distance
                      Suggest{"intraTeir", {"intraTier", "tiers"}, "intraTier"},
                      Suggest{"metdata", {"apiVersion", "kind", "metadata", "spec"}, "metadata"},
                      Suggest{"abcdefghi", {"abcxyzghi"}, "abcxyzghi"},  // 3 edits, len 9 -> 3
                      Suggest{"abcdefghi", {"axcxyzghi"}, ""}));         // 4 edits

}  // namespace
}  // namespace tierwall::policy
