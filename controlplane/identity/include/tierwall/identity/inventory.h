// The built-in identity source: `kind: Inventory` files.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/yaml.h"

namespace tierwall::identity {

// Builds an inventory from Inventory documents (one `node`, endpoints
// concatenated). Reports every problem; returns nullopt on any error.
std::optional<Inventory> build_inventory(const std::vector<const policy::yaml::Document*>& docs,
                                         policy::Diagnostics& diags);

std::optional<Inventory> load_inventory(const std::string& path, policy::Diagnostics& diags);
std::optional<Inventory> parse_inventory(std::string_view text, const std::string& name,
                                         policy::Diagnostics& diags);

}  // namespace tierwall::identity
