#include "tierwall/policy/yaml_reader.h"

#include <charconv>

namespace tierwall::policy {

namespace {
std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }
}  // namespace

bool YamlReader::check_map(const yaml::Node& n, std::string_view what,
                           std::initializer_list<std::string_view> allowed) {
  if (!n.is_map()) {
    error(n, std::string(what) + " must be a map, not " + std::string(yaml::describe(n)));
    return false;
  }
  // Maps here are small (a handful of keys), and this runs once per
  // endpoint of a 100k-endpoint inventory: no allocation on the happy path.
  for (std::size_t i = 0; i + 1 < n.children.size(); i += 2) {
    const yaml::Node& key = n.children[i];
    if (!key.is_scalar()) {
      error(key, "keys of " + std::string(what) + " must be strings");
      continue;
    }
    bool duplicate = false;
    for (std::size_t j = 0; j < i && !duplicate; j += 2) {
      duplicate = n.children[j].is_scalar() && n.children[j].scalar == key.scalar;
    }
    if (duplicate) {
      error(key, "duplicate key " + quote(key.scalar) + " in " + std::string(what));
      continue;
    }
    bool known = false;
    for (auto a : allowed) known = known || a == key.scalar;
    if (!known) {
      std::vector<std::string> candidates(allowed.begin(), allowed.end());
      error(key, "unknown key " + quote(key.scalar) + " in " + std::string(what) +
                     did_you_mean(key.scalar, candidates));
    }
  }
  return true;
}

std::optional<std::string> YamlReader::string(const yaml::Node& n, std::string_view what) {
  if (!n.is_scalar()) {
    error(n, std::string(what) + " must be a string, not " + std::string(yaml::describe(n)));
    return std::nullopt;
  }
  return n.scalar;
}

std::optional<std::int64_t> YamlReader::integer(const yaml::Node& n, std::string_view what) {
  if (n.is_scalar() && !n.quoted && !n.scalar.empty()) {
    std::int64_t v = 0;
    const char* b = n.scalar.data();
    const char* e = b + n.scalar.size();
    if (*b == '+') ++b;
    auto [p, ec] = std::from_chars(b, e, v);
    if (ec == std::errc() && p == e) return v;
    if (ec == std::errc::result_out_of_range) {
      error(n, std::string(what) + " " + n.scalar + " is out of range");
      return std::nullopt;
    }
  }
  error(n, std::string(what) + " must be an integer, not " +
               (n.is_scalar() ? quote(n.scalar) : std::string(yaml::describe(n))));
  return std::nullopt;
}

std::optional<bool> YamlReader::boolean(const yaml::Node& n, std::string_view what) {
  if (n.is_scalar() && !n.quoted) {
    if (n.scalar == "true" || n.scalar == "True" || n.scalar == "TRUE") return true;
    if (n.scalar == "false" || n.scalar == "False" || n.scalar == "FALSE") return false;
  }
  error(n, std::string(what) + " must be true or false, not " +
               (n.is_scalar() ? quote(n.scalar) : std::string(yaml::describe(n))));
  return std::nullopt;
}

std::optional<std::vector<std::string>> YamlReader::string_or_list(const yaml::Node& n,
                                                                   std::string_view what) {
  if (n.is_scalar()) return std::vector<std::string>{n.scalar};
  if (!n.is_sequence()) {
    error(n, std::string(what) + " must be a string or a list of strings, not " +
                 std::string(yaml::describe(n)));
    return std::nullopt;
  }
  if (n.children.empty()) {
    error(n, std::string(what) + " must not be an empty list");
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (const auto& item : n.children) {
    auto s = string(item, what);
    if (s) {
      out.push_back(std::move(*s));
    } else {
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

bool YamlReader::check_list(const yaml::Node& n, std::string_view what) {
  if (n.is_sequence()) return true;
  error(n, std::string(what) + " must be a list, not " + std::string(yaml::describe(n)));
  return false;
}

void YamlReader::missing(const yaml::Node& map, std::string_view key, std::string_view what) {
  error(map, std::string(what) + " is missing required key " + quote(key));
}

}  // namespace tierwall::policy
