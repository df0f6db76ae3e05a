// The policy as the engineer wrote it (merged across files and documents),
// with a source location on everything a diagnostic may point at.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/ports.h"
#include "tierwall/dataplane/ruleset.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/glob.h"

namespace tierwall::policy {

using dataplane::Mode;

struct LabelRequirement {
  std::string key;
  std::vector<std::string> values;  // one of them must be the label's value
  SourceLoc loc;

  friend bool operator==(const LabelRequirement& a, const LabelRequirement& b) {
    return a.key == b.key && a.values == b.values;
  }
};

// An endpoint selector: all given keys must hold. `{}` selects every
// endpoint, quarantined ones included.
struct EndpointSelector {
  std::vector<std::string> tiers;  // empty: any tier
  SourceLoc tiers_loc;
  std::vector<LabelRequirement> labels;  // sorted by key, keys unique
  std::optional<Glob> image;
  std::optional<Glob> name;

  [[nodiscard]] bool empty() const { return tiers.empty() && labels.empty() && !image && !name; }
  // True when it constrains more than the tier.
  [[nodiscard]] bool has_identity_part() const { return !labels.empty() || image || name; }
  // Canonical text of the label/image/name part, e.g.
  // `labels{app=payments,role=db|cache} image=reg/*`. Equal text, equal set.
  [[nodiscard]] std::string identity_key() const;
  [[nodiscard]] std::string to_string() const;  // for people, tiers included
};

// `from` / `to`: endpoints, the node itself, or world prefixes.
struct Peer {
  enum class Kind { Endpoints, Host, World };
  Kind kind = Kind::Endpoints;
  EndpointSelector selector;  // Endpoints
  std::vector<Cidr> world;    // World
  SourceLoc loc;

  [[nodiscard]] std::string to_string() const;
};

struct TierDecl {
  std::string name;
  int level = 0;
  std::optional<Mode> mode;
  std::string description;
  SourceLoc loc;
  SourceLoc level_loc;
};

struct Assignment {
  std::string name;  // may be empty
  EndpointSelector match;
  std::string tier;
  SourceLoc loc;
  SourceLoc tier_loc;
};

struct Rule {
  std::string name;
  Peer from;
  Peer to;
  std::vector<PortMatch> ports;  // never empty after loading: {any} by default
  bool ports_given = false;
  bool audit = false;  // denies: staged
  bool log = false;    // flows
  SourceLoc loc;
  SourceLoc ports_loc;

  [[nodiscard]] bool any_port() const;
};

struct Policy {
  std::string name;
  SourceLoc name_loc;
  Mode mode = Mode::Enforce;
  std::optional<SourceLoc> mode_loc;
  bool intra_tier_allow = false;
  std::optional<SourceLoc> intra_tier_loc;
  std::vector<TierDecl> tiers;
  std::vector<Assignment> assignments;
  std::vector<Rule> denies;
  std::vector<Rule> flows;

  std::vector<std::string> files;  // in read order
  std::string digest;              // hex SHA-256 over the sources

  [[nodiscard]] const TierDecl* find_tier(std::string_view tier_name) const;
  // Level of a tier by name; quarantine is below every declared tier.
  [[nodiscard]] int level_of(std::string_view tier) const;
  [[nodiscard]] int lowest_level() const;
};

inline constexpr std::string_view kApiVersion = "tierwall.io/v1";
inline constexpr std::string_view kPolicyKind = "SegmentationPolicy";
inline constexpr std::string_view kInventoryKind = "Inventory";

}  // namespace tierwall::policy
