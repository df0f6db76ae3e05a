// A compact YAML document tree with source positions, and the two parsers
// that build it: yaml-cpp for policy files (hand-written, small) and libyaml
// for inventories (machine-written, up to 100k endpoints; libyaml's event
// parser is ~8x faster there, see docs/architecture.md). Both produce the same
// tree, so every check is written once against it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/policy/diagnostics.h"

namespace tierwall::policy::yaml {

enum class Kind : std::uint8_t { Null, Scalar, Sequence, Map };

struct Node {
  Kind kind = Kind::Null;
  bool quoted = false;  // a quoted scalar is always a string
  int line = 0;         // 1-based
  int column = 0;       // 1-based
  std::string scalar;
  // Sequence: the items. Map: key, value, key, value, ... (keys are scalars).
  std::vector<Node> children;

  [[nodiscard]] bool is_map() const { return kind == Kind::Map; }
  [[nodiscard]] bool is_sequence() const { return kind == Kind::Sequence; }
  [[nodiscard]] bool is_scalar() const { return kind == Kind::Scalar; }
  [[nodiscard]] bool is_null() const { return kind == Kind::Null; }
  [[nodiscard]] std::size_t map_size() const { return children.size() / 2; }
  // The value of `key` in a map (first occurrence); null when absent.
  [[nodiscard]] const Node* find(std::string_view key) const;
};

struct Document {
  Node root;
  std::shared_ptr<const std::string> file;
  int index = 0;  // 0-based position in its file
};

enum class Parser { YamlCpp, LibYaml };

// Streams the items of one top-level list instead of keeping them in the
// tree: each item of `root[key]` is handed to `on_item` as soon as it is
// complete (and the list in the returned tree stays empty). Bulk data
// (inventory endpoints) is validated item by item without holding it all.
struct StreamHook {
  std::string key;
  std::function<void(Node&& item)> on_item;
};

// Parses every document of `text`. Syntax errors are reported with their
// position; documents before the error are still returned.
std::vector<Document> parse(std::string_view text, std::shared_ptr<const std::string> file,
                            Parser parser, Diagnostics& diags, const StreamHook* hook = nullptr);

// Short description of a node's type for messages ("a map", "a list", ...).
std::string_view describe(const Node& node);

}  // namespace tierwall::policy::yaml
