// Which records an auditor asked for (`tierctl flows` flags). Values of one
// criterion are alternatives (OR); criteria combine with AND. A criterion on
// a flow field (verdict, tiers, endpoint, rule, address, port) only matches
// records that have that field, i.e. flow records.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/flowquery/record.h"
#include "tierwall/policy/glob.h"

namespace tierwall::flowquery {

struct PortRange {
  std::int32_t first = 0, last = 0;
};

struct FilterSpec {
  std::optional<std::int64_t> since_us;  // time >= since
  std::optional<std::int64_t> until_us;  // time < until
  std::vector<Verdict> verdicts;
  std::vector<std::string> tiers;      // src or dst tier; "host"/"world" match the entity
  std::vector<std::string> src_tiers;  // same, src only
  std::vector<std::string> dst_tiers;  // same, dst only
  std::vector<std::string> endpoints;  // globs on src or dst name
  std::vector<std::string> rules;      // globs on the rule name (or kind, when unnamed)
  std::vector<Cidr> addresses;         // src or dst ip inside
  std::vector<PortRange> ports;        // dst port
  std::vector<RecordType> types;       // empty: flow + loss
};

// Parsers for flag values; nullopt with a message for the user.
std::optional<PortRange> parse_port_range(std::string_view text, std::string* error);

class Filter {
 public:
  static std::optional<Filter> compile(const FilterSpec& spec, std::string* error);

  enum class Result : std::uint8_t { Match, NoMatch, Malformed };
  // Extracts only as much of the line as the criteria need, rejecting as
  // early as it can. On Match the record is complete (every field).
  // Malformed: neither the fast path nor a full parse made a record of it.
  Result match(std::string_view line, RecordParser& parser, Record& r, std::string* error) const;

  // The criteria on a complete record.
  [[nodiscard]] bool matches(const Record& r) const;

  [[nodiscard]] const FilterSpec& spec() const { return spec_; }

 private:
  [[nodiscard]] bool header_ok(const Record& r) const;
  [[nodiscard]] bool flow_head_ok(const Record& r) const;
  [[nodiscard]] bool rest_ok(const Record& r) const;

  FilterSpec spec_;
  std::vector<policy::Glob> endpoint_globs_, rule_globs_;
  bool flow_only_ = false;  // some criterion only flows can meet
  bool want_type_[6] = {};
};

}  // namespace tierwall::flowquery
