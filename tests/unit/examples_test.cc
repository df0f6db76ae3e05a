// The example policies in policies/ are documentation and tests at once:
// each must validate without diagnostics, and every row of the "expected
// explain answers" table in its README must be what `tierctl explain` says.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/cli/commands.h"

namespace {

const std::string kRoot = TIERWALL_SOURCE_DIR;

struct Row {
  std::string from, to, port, verdict, kind, name;
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t`");
  const auto e = s.find_last_not_of(" \t`");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Rows of the markdown table whose header is
// | from | to | port | verdict | rule kind | rule name |
std::vector<Row> expected_rows(const std::string& readme) {
  std::ifstream in(readme);
  std::vector<Row> rows;
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (line.rfind("|", 0) != 0) {
      in_table = false;
      continue;
    }
    std::vector<std::string> cells;
    std::stringstream ss(line.substr(1));
    std::string cell;
    while (std::getline(ss, cell, '|')) cells.push_back(trim(cell));
    if (!cells.empty() && cells.back().empty()) cells.pop_back();
    if (cells.size() == 6 && cells[0] == "from" && cells[3] == "verdict") {
      in_table = true;
      continue;
    }
    if (!in_table || cells.size() != 6 || cells[0].rfind("---", 0) == 0) continue;
    rows.push_back(Row{cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]});
  }
  return rows;
}

class Example : public ::testing::TestWithParam<std::string> {};

TEST_P(Example, ValidatesWithoutDiagnostics) {
  const std::string dir = kRoot + "/policies/" + GetParam();
  tierwall::cli::ValidateOptions opts;
  opts.paths = {dir + "/policy", dir + "/inventory.yaml"};
  opts.strict = true;
  std::ostringstream out, err;
  EXPECT_EQ(tierwall::cli::validate(opts, out, err), 0) << err.str();
  EXPECT_EQ(err.str(), "");
}

TEST_P(Example, ReadmeExplainAnswersHold) {
  const std::string dir = kRoot + "/policies/" + GetParam();
  const auto rows = expected_rows(dir + "/README.md");
  ASSERT_GE(rows.size(), 5U) << "README table of expected explain answers not found";
  for (const auto& row : rows) {
    tierwall::cli::ExplainOptions opts;
    opts.policy = {dir + "/policy"};
    opts.inventory = dir + "/inventory.yaml";
    opts.from = row.from;
    opts.to = row.to;
    if (row.port != "-" && !row.port.empty()) opts.port = row.port;
    opts.output = "json";
    std::ostringstream out, err;
    ASSERT_EQ(tierwall::cli::explain(opts, out, err), 0) << err.str();
    const auto j = nlohmann::json::parse(out.str());
    const std::string what = row.from + " -> " + row.to + " " + row.port;
    EXPECT_EQ(j["verdict"], row.verdict) << what;
    EXPECT_EQ(j["rule"]["kind"], row.kind) << what;
    if (row.name == "-") {
      EXPECT_FALSE(j["rule"].contains("name")) << what;
    } else {
      EXPECT_EQ(j["rule"].value("name", ""), row.name) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, Example,
                         ::testing::Values("nist-800-190", "dev-test-prod", "pci-cardholder",
                                           "shop-demo"));

}  // namespace
