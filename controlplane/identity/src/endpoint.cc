#include "tierwall/identity/endpoint.h"

#include <algorithm>

namespace tierwall::identity {

Labels::Labels(std::vector<std::pair<std::string, std::string>> kv) : kv_(std::move(kv)) {
  std::stable_sort(kv_.begin(), kv_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Last value wins for a repeated key.
  std::vector<std::pair<std::string, std::string>> unique;
  for (auto& p : kv_) {
    if (!unique.empty() && unique.back().first == p.first) {
      unique.back().second = std::move(p.second);
    } else {
      unique.push_back(std::move(p));
    }
  }
  kv_ = std::move(unique);
}

const std::string* Labels::get(std::string_view key) const {
  auto it = std::lower_bound(kv_.begin(), kv_.end(), key,
                             [](const auto& p, std::string_view k) { return p.first < k; });
  if (it == kv_.end() || it->first != key) return nullptr;
  return &it->second;
}

void Labels::set(std::string key, std::string value) {
  auto it = std::lower_bound(kv_.begin(), kv_.end(), key,
                             [](const auto& p, const std::string& k) { return p.first < k; });
  if (it != kv_.end() && it->first == key) {
    it->second = std::move(value);
  } else {
    kv_.insert(it, {std::move(key), std::move(value)});
  }
}

const Endpoint* Inventory::find(std::string_view name) const {
  for (const auto& e : endpoints) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

const Endpoint* Inventory::find(const IpAddress& address) const {
  for (const auto& e : endpoints) {
    if (std::find(e.addresses.begin(), e.addresses.end(), address) != e.addresses.end()) return &e;
  }
  return nullptr;
}

}  // namespace tierwall::identity
