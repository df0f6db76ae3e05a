// tierctl's commands as functions: flags in, text out, an exit code back.
// The binary only parses flags and calls these (see spec/cli.md).
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace tierwall::cli {

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

struct ValidateOptions {
  std::vector<std::string> paths;
  std::string output = "text";  // text | json
  bool lint = false;            // tierctl lint: also inventory-aware lints (quarantined)
  bool strict = false;          // warnings fail too (exit 1)
  std::vector<std::string> disabled_lints;
};
int validate(const ValidateOptions& options, std::ostream& out, std::ostream& err);

struct ExplainOptions {
  std::vector<std::string> policy;
  std::string inventory;
  std::string from;
  std::string to;
  std::optional<std::string> port;
  std::string output = "text";  // text | json
};
int explain(const ExplainOptions& options, std::ostream& out, std::ostream& err);

struct MatrixOptions {
  std::vector<std::string> policy;
  std::optional<std::string> inventory;
  std::string output = "table";  // table | json | csv | html
};
int matrix(const MatrixOptions& options, std::ostream& out, std::ostream& err);

struct CompileOptions {
  std::vector<std::string> policy;
  std::optional<std::string> inventory;
  std::vector<std::string> container_cidrs;
  std::string backend = "nft";
  std::uint16_t log_group = 100;
  bool elements = true;  // print set elements (endpoint addresses)
};
// Prints the ruleset a backend would install, for review.
int compile(const CompileOptions& options, std::ostream& out, std::ostream& err);

}  // namespace tierwall::cli
