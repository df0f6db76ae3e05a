// Reading policy sources: files and directories -> documents -> one merged,
// validated Policy. Every problem is reported; a policy with any error is
// never returned.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/model.h"
#include "tierwall/policy/yaml.h"

namespace tierwall::policy {

struct SourceFile {
  std::string path;  // as the user named it (directory + file name)
  std::string content;
};

// Files named by `paths` in read order: a file as given; a directory's
// `*.yaml`/`*.yml` files (not recursive) in byte order of their names.
std::vector<std::string> expand_paths(const std::vector<std::string>& paths, Diagnostics& diags);

bool read_file(const std::string& path, std::string& out, Diagnostics& diags);

// The parser for a file: libyaml for `kind: Inventory` files, yaml-cpp otherwise.
yaml::Parser parser_for(std::string_view content);

// `kind` of a document, or empty (with a diagnostic) when missing/invalid.
// Also checks apiVersion.
std::string document_kind(const yaml::Document& doc, Diagnostics& diags);

// Merges and validates SegmentationPolicy documents. `sources` give the
// bytes for the digest (in read order).
std::optional<Policy> build_policy(const std::vector<const yaml::Document*>& docs,
                                   const std::vector<SourceFile>& sources, Diagnostics& diags);

// Reads policy files/directories; any document of another kind is an error.
std::optional<Policy> load_policy(const std::vector<std::string>& paths, Diagnostics& diags);

// The same for files already read (the agent's API receives them): each
// source is parsed under its `path`, which diagnostics name.
std::optional<Policy> load_policy_sources(const std::vector<SourceFile>& sources,
                                          Diagnostics& diags);

// Parses policy text held in memory (tests, fuzzing).
std::optional<Policy> parse_policy(std::string_view text, const std::string& name,
                                   Diagnostics& diags);

// Hex SHA-256 over the sources, each framed by its path and length.
std::string digest_sources(const std::vector<SourceFile>& sources);

}  // namespace tierwall::policy
