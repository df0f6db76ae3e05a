// Where tierwall keeps a cluster in etcd, and how each value is encoded.
// docs/cluster.md is the reference for operators; this header is the one
// place the code spells a key.
//
//   /tierwall/<cluster>/policy/meta                 PolicyMeta (JSON)
//   /tierwall/<cluster>/policy/documents/<name>     one policy file, its bytes unchanged
//   /tierwall/<cluster>/nodes/<node>                NodeRecord (JSON), under the node's lease
//   /tierwall/<cluster>/endpoints/<node>/<id>       EndpointRecord (JSON), under the node's lease
//
// The policy is written only whole, in one transaction guarded by the
// meta's mod_revision (publish.h); nodes and endpoints are written only by
// their own node, under a lease, so a dead node's entries expire with it.
// Names are restricted so that no name can contain '/' or reach into
// another node's prefix.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tierwall/store/result.h"

namespace tierwall::store {

inline constexpr std::string_view kDefaultCluster = "default";

// Cluster and node names: [a-z0-9]([a-z0-9.-]*[a-z0-9])?, at most 63 bytes
// (a DNS label, plus '.', so host names fit).
[[nodiscard]] bool valid_cluster_name(std::string_view name);
[[nodiscard]] bool valid_node_name(std::string_view name);
// Endpoint ids: [A-Za-z0-9_.:-]+, at most 128 bytes, not "." or "..".
[[nodiscard]] bool valid_endpoint_id(std::string_view id);
// Policy document names: a file's base name, [A-Za-z0-9_.-]+ ending in
// .yaml or .yml, at most 255 bytes.
[[nodiscard]] bool valid_document_name(std::string_view name);

class Layout {
 public:
  // Precondition: valid_cluster_name(cluster).
  explicit Layout(std::string cluster);

  [[nodiscard]] const std::string& cluster() const { return cluster_; }
  [[nodiscard]] std::string root() const;              // /tierwall/<c>/
  [[nodiscard]] std::string policy_prefix() const;     // /tierwall/<c>/policy/
  [[nodiscard]] std::string policy_meta() const;       // /tierwall/<c>/policy/meta
  [[nodiscard]] std::string documents_prefix() const;  // /tierwall/<c>/policy/documents/
  [[nodiscard]] std::string document(std::string_view name) const;
  [[nodiscard]] std::string nodes_prefix() const;  // /tierwall/<c>/nodes/
  [[nodiscard]] std::string node(std::string_view node) const;
  [[nodiscard]] std::string endpoints_prefix() const;  // /tierwall/<c>/endpoints/
  // /tierwall/<c>/endpoints/<node>/ — the trailing '/' keeps node "a"
  // from matching node "ab".
  [[nodiscard]] std::string node_endpoints_prefix(std::string_view node) const;
  [[nodiscard]] std::string endpoint(std::string_view node, std::string_view id) const;

  // The inverse: the name in a key of that kind, nullopt for any other key.
  [[nodiscard]] std::optional<std::string> document_name(std::string_view key) const;
  [[nodiscard]] std::optional<std::string> node_name(std::string_view key) const;
  // (node, endpoint id)
  [[nodiscard]] std::optional<std::pair<std::string, std::string>> endpoint_key(
      std::string_view key) const;

 private:
  std::string cluster_;
};

// /tierwall/<c>/policy/meta. `documents` lists the document names in read
// order (the policy's merge order); `digest` is the policy digest
// (tierwall::policy::digest_sources) over those documents, each named by
// its document name, so an agent that loads them gets the same digest.
struct PolicyMeta {
  int format = 1;                      // bumped on incompatible changes
  std::string name;                    // metadata.name of the policy
  std::string digest;                  // hex SHA-256
  std::uint64_t generation = 0;        // 1, 2, ...: +1 per publish
  std::string author;                  // who published (free text: user@host)
  std::string user;                    // the etcd user that wrote it, if any
  std::string published_at;            // RFC 3339 UTC
  std::vector<std::string> documents;  // names, in read order
};
[[nodiscard]] std::string encode_meta(const PolicyMeta& meta);
[[nodiscard]] Result<PolicyMeta> decode_meta(std::string_view json);

// /tierwall/<c>/nodes/<node>: a node's agent and what it enforces.
struct NodeRecord {
  std::string name;
  std::vector<std::string> addresses;  // the node's own addresses (`host`)
  std::string agent_version;
  std::string started_at;     // RFC 3339 UTC
  std::string policy_digest;  // the policy the node enforces, "" if none
  std::uint64_t policy_generation = 0;
};
[[nodiscard]] std::string encode_node(const NodeRecord& node);
[[nodiscard]] Result<NodeRecord> decode_node(std::string_view json);

// /tierwall/<c>/endpoints/<node>/<id>: one local endpoint's identity, as the
// node's identity sources see it. Tiers are not stored: every agent
// resolves them from the policy it enforces.
struct EndpointRecord {
  std::string id;  // the key's <id>: container id or inventory name
  std::string name;
  std::string image;
  std::map<std::string, std::string> labels;
  std::vector<std::string> addresses;
};
[[nodiscard]] std::string encode_endpoint(const EndpointRecord& endpoint);
[[nodiscard]] Result<EndpointRecord> decode_endpoint(std::string_view json);

// Roles (docs/cluster.md, "Roles"). A permission is a key or, with a
// non-empty range_end, the range [key, range_end).
struct Permission {
  enum class Type : std::uint8_t { Read, Write, ReadWrite };
  Type type = Type::Read;
  std::string key;
  std::string range_end;
};
[[nodiscard]] const char* to_string(Permission::Type type);

inline constexpr std::string_view kAuthorRole = "tierwall-author";
[[nodiscard]] std::string node_role(std::string_view node);  // tierwall-node-<node>

// Authors: read-write on the policy prefix; read on nodes and endpoints
// (`tierctl store show`).
[[nodiscard]] std::vector<Permission> author_permissions(const Layout& layout);
// A node: read the policy, every node and every endpoint; read-write on its
// own node key and its own endpoints prefix, and nothing else.
[[nodiscard]] std::vector<Permission> node_permissions(const Layout& layout, std::string_view node);

}  // namespace tierwall::store
