#include "tierwall/policy/model.h"

#include <algorithm>
#include <climits>

namespace tierwall::policy {

namespace {
std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += sep;
    out += v[i];
  }
  return out;
}
}  // namespace

std::string EndpointSelector::identity_key() const {
  std::string out;
  if (!labels.empty()) {
    out += "labels{";
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) out += ",";
      out += labels[i].key + "=" + join(labels[i].values, "|");
    }
    out += "}";
  }
  if (image) out += (out.empty() ? "" : " ") + std::string("image=") + image->pattern();
  if (name) out += (out.empty() ? "" : " ") + std::string("name=") + name->pattern();
  return out;
}

std::string EndpointSelector::to_string() const {
  if (empty()) return "{}";
  std::string out;
  if (!tiers.empty()) out = "tier=" + join(tiers, "|");
  std::string id = identity_key();
  if (!id.empty()) out += (out.empty() ? "" : " ") + id;
  return out;
}

std::string Peer::to_string() const {
  switch (kind) {
    case Kind::Host:
      return "host";
    case Kind::World: {
      std::string out = "world[";
      for (std::size_t i = 0; i < world.size(); ++i) {
        if (i > 0) out += ",";
        out += world[i].to_string();
      }
      return out + "]";
    }
    case Kind::Endpoints:
      return selector.to_string();
  }
  return "?";
}

bool Rule::any_port() const {
  return std::any_of(ports.begin(), ports.end(), [](const PortMatch& p) { return p.any; });
}

const TierDecl* Policy::find_tier(std::string_view tier_name) const {
  for (const auto& t : tiers) {
    if (t.name == tier_name) return &t;
  }
  return nullptr;
}

int Policy::level_of(std::string_view tier) const {
  if (const TierDecl* t = find_tier(tier)) return t->level;
  return -1;  // quarantine
}

int Policy::lowest_level() const {
  int low = INT_MAX;
  for (const auto& t : tiers) low = std::min(low, t.level);
  return tiers.empty() ? 0 : low;
}

}  // namespace tierwall::policy
