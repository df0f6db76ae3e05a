// What the control plane knows of a container: its identity and addresses.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/policy/diagnostics.h"

namespace tierwall::identity {

// Labels sorted by key, keys unique.
class Labels {
 public:
  Labels() = default;
  explicit Labels(std::vector<std::pair<std::string, std::string>> kv);

  [[nodiscard]] const std::string* get(std::string_view key) const;
  void set(std::string key, std::string value);
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& items() const {
    return kv_;
  }
  [[nodiscard]] bool empty() const { return kv_.empty(); }

  friend bool operator==(const Labels&, const Labels&) = default;

 private:
  std::vector<std::pair<std::string, std::string>> kv_;
};

struct Endpoint {
  std::string name;
  std::string id;
  std::string image;
  Labels labels;
  std::vector<IpAddress> addresses;
  policy::SourceLoc loc;  // where it was declared, for inventory diagnostics

  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.name == b.name && a.id == b.id && a.image == b.image && a.labels == b.labels &&
           a.addresses == b.addresses;
  }
};

struct NodeInfo {
  std::string name;
  std::vector<IpAddress> addresses;
};

struct Inventory {
  NodeInfo node;
  std::vector<Endpoint> endpoints;

  [[nodiscard]] const Endpoint* find(std::string_view name) const;
  [[nodiscard]] const Endpoint* find(const IpAddress& address) const;
};

}  // namespace tierwall::identity
