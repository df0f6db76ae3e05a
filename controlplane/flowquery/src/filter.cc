#include "tierwall/flowquery/filter.h"

#include <algorithm>
#include <charconv>

namespace tierwall::flowquery {

namespace {

std::size_t type_index(RecordType t) { return static_cast<std::size_t>(t); }

bool parse_port(std::string_view s, std::int32_t& out) {
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out >= 0 && out <= 65535;
}

bool tier_matches(const std::vector<std::string>& wanted, const Peer& p) {
  for (const auto& t : wanted) {
    switch (p.entity) {
      case Entity::Host:
        if (t == "host") return true;
        break;
      case Entity::World:
        if (t == "world") return true;
        break;
      default:
        if (!p.tier.empty() && p.tier == t) return true;
    }
  }
  return false;
}

}  // namespace

std::optional<PortRange> parse_port_range(std::string_view text, std::string* error) {
  PortRange r;
  const auto dash = text.find('-');
  const bool ok = dash == std::string_view::npos
                      ? parse_port(text, r.first) && ((r.last = r.first), true)
                      : parse_port(text.substr(0, dash), r.first) &&
                            parse_port(text.substr(dash + 1), r.last) && r.first <= r.last;
  if (!ok) {
    if (error) *error = "'" + std::string(text) + "' is not a port (N or N-M, 0-65535)";
    return std::nullopt;
  }
  return r;
}

std::optional<Filter> Filter::compile(const FilterSpec& spec, std::string* error) {
  Filter f;
  f.spec_ = spec;
  for (const auto& e : spec.endpoints) {
    auto g = policy::Glob::compile(e, error);
    if (!g) return std::nullopt;
    f.endpoint_globs_.push_back(std::move(*g));
  }
  for (const auto& e : spec.rules) {
    auto g = policy::Glob::compile(e, error);
    if (!g) return std::nullopt;
    f.rule_globs_.push_back(std::move(*g));
  }
  f.flow_only_ = !spec.verdicts.empty() || !spec.tiers.empty() || !spec.src_tiers.empty() ||
                 !spec.dst_tiers.empty() || !spec.endpoints.empty() || !spec.rules.empty() ||
                 !spec.addresses.empty() || !spec.ports.empty();
  if (spec.types.empty()) {
    f.want_type_[type_index(RecordType::Flow)] = true;
    f.want_type_[type_index(RecordType::Loss)] = true;
  } else {
    for (const auto t : spec.types) f.want_type_[type_index(t)] = true;
  }
  return f;
}

bool Filter::header_ok(const Record& r) const {
  if (!want_type_[type_index(r.type)]) return false;
  if (flow_only_ && r.type != RecordType::Flow) return false;
  if (spec_.since_us && r.time_us < *spec_.since_us) return false;
  if (spec_.until_us && r.time_us >= *spec_.until_us) return false;
  return true;
}

bool Filter::flow_head_ok(const Record& r) const {
  if (r.type != RecordType::Flow || spec_.verdicts.empty()) return true;
  return std::find(spec_.verdicts.begin(), spec_.verdicts.end(), r.verdict) != spec_.verdicts.end();
}

bool Filter::rest_ok(const Record& r) const {
  if (r.type != RecordType::Flow) return true;
  if (!spec_.tiers.empty() && !tier_matches(spec_.tiers, r.src) &&
      !tier_matches(spec_.tiers, r.dst)) {
    return false;
  }
  if (!spec_.src_tiers.empty() && !tier_matches(spec_.src_tiers, r.src)) return false;
  if (!spec_.dst_tiers.empty() && !tier_matches(spec_.dst_tiers, r.dst)) return false;
  if (!spec_.ports.empty()) {
    const auto port = r.dst.port;
    if (port < 0 || std::none_of(spec_.ports.begin(), spec_.ports.end(), [port](PortRange p) {
          return port >= p.first && port <= p.last;
        })) {
      return false;
    }
  }
  if (!endpoint_globs_.empty()) {
    const bool any =
        std::any_of(endpoint_globs_.begin(), endpoint_globs_.end(), [&](const auto& g) {
          return (!r.src.name.empty() && g.matches(r.src.name)) ||
                 (!r.dst.name.empty() && g.matches(r.dst.name));
        });
    if (!any) return false;
  }
  if (!rule_globs_.empty()) {
    const std::string_view rule = r.rule_name.empty() ? r.rule_kind : r.rule_name;
    if (std::none_of(rule_globs_.begin(), rule_globs_.end(),
                     [&](const auto& g) { return g.matches(rule); })) {
      return false;
    }
  }
  if (!spec_.addresses.empty()) {
    const auto src = IpAddress::parse(r.src.ip);
    const auto dst = IpAddress::parse(r.dst.ip);
    const bool any = std::any_of(
        spec_.addresses.begin(), spec_.addresses.end(),
        [&](const Cidr& c) { return (src && c.contains(*src)) || (dst && c.contains(*dst)); });
    if (!any) return false;
  }
  return true;
}

bool Filter::matches(const Record& r) const {
  return header_ok(r) && flow_head_ok(r) && rest_ok(r);
}

Filter::Result Filter::match(std::string_view line, RecordParser& parser, Record& r,
                             std::string* error) const {
  // Fast path: reject at the earliest field that decides.
  if (parser.header(line, r)) {
    if (!header_ok(r)) return Result::NoMatch;
    if (r.type != RecordType::Flow || parser.flow_head(r)) {
      if (!flow_head_ok(r)) return Result::NoMatch;
      if (parser.rest(r)) return rest_ok(r) ? Result::Match : Result::NoMatch;
    }
  }
  // The line is not of the expected shape: decide on a full parse.
  if (!parser.parse_full(line, r, error)) return Result::Malformed;
  return matches(r) ? Result::Match : Result::NoMatch;
}

}  // namespace tierwall::flowquery
