// Typed, located access to a yaml::Node tree: every wrong type, unknown key
// (with a did-you-mean) and duplicate key becomes a diagnostic, and reading
// goes on so that all problems are reported in one run.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/yaml.h"

namespace tierwall::policy {

class YamlReader {
 public:
  YamlReader(std::shared_ptr<const std::string> file, Diagnostics& diags)
      : file_(std::move(file)), diags_(diags) {}

  [[nodiscard]] SourceLoc loc(const yaml::Node& n) const {
    return SourceLoc{file_, n.line, n.column};
  }
  [[nodiscard]] const std::shared_ptr<const std::string>& file() const { return file_; }
  Diagnostics& diags() { return diags_; }
  void error(const yaml::Node& n, std::string message) { diags_.error(loc(n), std::move(message)); }

  // Checks that `n` is a map whose keys are all in `allowed` and unique.
  // Returns false (after reporting) when `n` is not a map.
  bool check_map(const yaml::Node& n, std::string_view what,
                 std::initializer_list<std::string_view> allowed);

  // Scalars. Each reports a type error and returns nullopt on mismatch.
  std::optional<std::string> string(const yaml::Node& n, std::string_view what);
  std::optional<std::int64_t> integer(const yaml::Node& n, std::string_view what);
  std::optional<bool> boolean(const yaml::Node& n, std::string_view what);
  // A string, or a list of strings (always returned as a list).
  std::optional<std::vector<std::string>> string_or_list(const yaml::Node& n,
                                                         std::string_view what);

  // Checks `n` is a list; reports and returns false otherwise.
  bool check_list(const yaml::Node& n, std::string_view what);
  // Reports a missing required key on the map node `map`.
  void missing(const yaml::Node& map, std::string_view key, std::string_view what);

 private:
  std::shared_ptr<const std::string> file_;
  Diagnostics& diags_;
};

}  // namespace tierwall::policy
