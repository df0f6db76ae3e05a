// The cluster's policy and inventory in etcd, as tierwall reads and writes
// them (key layout and encodings: layout.h, docs/cluster.md).
//
// Publishing is all or nothing: every document, the removal of documents
// the previous policy had and this one has not, and the new meta go in ONE
// etcd transaction, guarded by the meta's mod_revision as it was read. Two
// publishers that race therefore never interleave: the second one's compare
// fails and it is told who published in between (Kind::Conflict); nothing
// of it is written. Validation is the caller's job (the CLI runs the same
// loader as `tierctl validate`): this layer stores bytes.
//
// Thread contract: the functions use the given client, so the client's
// contract applies (one thread at a time). Costs: publish is one range
// (the policy prefix) and one transaction of (documents + stale + 1) ops,
// bounded by etcd's --max-txn-ops (default 128) and request size (1.5 MiB);
// read_cluster is three ranges at one revision, endpoints keys only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"
#include "tierwall/store/result.h"

namespace tierwall::store {

struct PolicyDocument {
  std::string name;     // valid_document_name()
  std::string content;  // the file's bytes
};

struct StoredPolicy {
  PolicyMeta meta;
  std::int64_t meta_mod_revision = 0;     // the revision of the publish
  std::int64_t revision = 0;              // the store revision it was read at
  std::vector<PolicyDocument> documents;  // meta.documents, in order
  // Problems a reader must not ignore: a document the meta names that is
  // missing, or documents the meta does not name. Empty when consistent.
  std::vector<std::string> problems;
};

// The published policy, nullopt when none was ever published (an empty
// prefix); a read failure is an Error, never "none".
[[nodiscard]] Result<std::optional<StoredPolicy>> read_policy(EtcdClient& client,
                                                              const Layout& layout);

struct PublishRequest {
  std::string policy_name;                // metadata.name
  std::string digest;                     // over `documents`, each named by its name
  std::vector<PolicyDocument> documents;  // read order; names unique
  std::string author;
  std::string user;          // the etcd user, recorded in the meta
  std::string published_at;  // RFC 3339 UTC; now when empty
};

struct PublishResult {
  bool unchanged = false;  // the same digest and documents were already published
  std::uint64_t generation = 0;
  std::int64_t revision = 0;         // the store revision of the transaction
  std::vector<std::string> removed;  // stale documents deleted
};

// Kind::Conflict when another publisher committed between our read and our
// transaction; Kind::Invalid for bad or duplicate document names.
[[nodiscard]] Result<PublishResult> publish_policy(EtcdClient& client, const Layout& layout,
                                                   const PublishRequest& request);

struct NodeView {
  std::string name;
  std::optional<NodeRecord> record;  // nullopt: endpoints without a node key
  std::string record_error;          // a node value that does not decode
  std::int64_t lease = 0;
  std::int64_t endpoints = 0;
};

struct ClusterView {
  std::int64_t revision = 0;
  std::optional<StoredPolicy> policy;
  std::vector<NodeView> nodes;  // by name
};

[[nodiscard]] Result<ClusterView> read_cluster(EtcdClient& client, const Layout& layout);

// Creates the root user (password given) unless auth is already on, the
// author role (and an author user when `author_user` is set), and enables
// authentication. Idempotent. `client` must be unauthenticated before auth
// is on, or root afterwards.
struct AuthSetup {
  std::string root_password;
  std::string author_user;  // optional
  std::string author_password;
};
[[nodiscard]] Result<Done> init_auth(EtcdClient& client, const Layout& layout,
                                     const AuthSetup& setup);

// Role tierwall-node-<node> (node_permissions) and user tierwall-node-<node>
// with `password`. As root. Idempotent (re-running sets the password).
[[nodiscard]] Result<std::string> add_node_user(EtcdClient& client, const Layout& layout,
                                                const std::string& node,
                                                const std::string& password);

// RFC 3339 UTC, seconds: "2026-01-31T12:00:00Z".
[[nodiscard]] std::string utc_now();

}  // namespace tierwall::store
