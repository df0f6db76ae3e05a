// The interface every dataplane implements. The agent owns one and drives it
// from a single control thread; implementations need not be thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane {

struct DataplaneError {
  std::string message;
  RuleId rule = 0;                 // the policy rule the dataplane rejected, when known
  bool concurrent_change = false;  // someone else changed the dataplane mid-apply
};

// One endpoint joining, changing or leaving, relative to the last applied
// generation. Produced by the control plane (compiler::Compilation::bind).
struct EndpointChange {
  EndpointId id = 0;
  bool removed = false;
  std::vector<IpAddress> addresses;
  TierId tier = kQuarantineTier;
  std::vector<SelectorId> selectors;  // sorted
};

class Dataplane {
 public:
  virtual ~Dataplane() = default;

  // Installs a whole generation atomically: traffic sees the old or the new
  // generation, never a mix. On error nothing changed.
  virtual std::optional<DataplaneError> apply(const RuleSet& rules) = 0;

  // Endpoint membership changes under the current policy: set elements only.
  virtual std::optional<DataplaneError> update_endpoints(
      std::span<const EndpointChange> changes) = 0;

  // Removes everything this dataplane installed, and nothing else.
  virtual std::optional<DataplaneError> flush() = 0;
};

}  // namespace tierwall::dataplane
