#include "tierwall/store/policy_store.h"

#include <algorithm>
#include <ctime>
#include <set>

namespace tierwall::store {

namespace {

struct PolicyRead {
  std::int64_t revision = 0;
  std::optional<KeyValue> meta;
  std::map<std::string, KeyValue> documents;  // by name
  std::vector<std::string> foreign;           // other keys under the policy prefix
};

Result<PolicyRead> read_prefix(EtcdClient& client, const Layout& layout,
                               std::int64_t revision = 0) {
  RangeRequest req;
  req.key = layout.policy_prefix();
  req.range_end = prefix_end(req.key);
  req.revision = revision;
  auto r = client.range(req);
  if (!r) return r.error();
  PolicyRead out;
  out.revision = r->revision;
  for (auto& kv : r->kvs) {
    if (kv.key == layout.policy_meta()) {
      out.meta = std::move(kv);
    } else if (auto name = layout.document_name(kv.key)) {
      out.documents.emplace(*name, std::move(kv));
    } else {
      out.foreign.push_back(kv.key);
    }
  }
  return out;
}

Result<std::optional<StoredPolicy>> to_stored(const Layout& layout, PolicyRead&& read) {
  if (!read.meta) {
    if (read.documents.empty()) return std::optional<StoredPolicy>{};
    return Error::make(Error::Kind::Protocol,
                       "policy documents under " + layout.documents_prefix() + " but no " +
                           layout.policy_meta() +
                           ": not written by tierctl apply --store; publish a policy again");
  }
  auto meta = decode_meta(read.meta->value);
  if (!meta) {
    Error e = meta.error();
    e.message = layout.policy_meta() + ": " + e.message;
    return e;
  }
  StoredPolicy p;
  p.meta = std::move(*meta);
  p.meta_mod_revision = read.meta->mod_revision;
  p.revision = read.revision;
  std::set<std::string> named;
  for (const auto& name : p.meta.documents) {
    named.insert(name);
    const auto it = read.documents.find(name);
    if (it == read.documents.end()) {
      p.problems.push_back("document '" + name + "' named by the meta is missing");
      continue;
    }
    p.documents.push_back(PolicyDocument{name, it->second.value});
  }
  for (const auto& [name, kv] : read.documents) {
    if (named.count(name) == 0) p.problems.push_back("document '" + name + "' is not in the meta");
  }
  for (const auto& key : read.foreign) p.problems.push_back("unexpected key " + key);
  return std::optional<StoredPolicy>(std::move(p));
}

}  // namespace

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<std::optional<StoredPolicy>> read_policy(EtcdClient& client, const Layout& layout) {
  auto read = read_prefix(client, layout);
  if (!read) return read.error();
  return to_stored(layout, std::move(*read));
}

Result<PublishResult> publish_policy(EtcdClient& client, const Layout& layout,
                                     const PublishRequest& request) {
  if (request.documents.empty()) {
    return Error::make(Error::Kind::Invalid, "a policy needs at least one document");
  }
  std::set<std::string> names;
  for (const auto& d : request.documents) {
    if (!valid_document_name(d.name)) {
      return Error::make(Error::Kind::Invalid,
                         "'" + d.name +
                             "' cannot be a document name: a base name of letters, digits, "
                             "'_', '.', '-' ending in .yaml or .yml");
    }
    if (!names.insert(d.name).second) {
      return Error::make(Error::Kind::Invalid,
                         "two policy files are named '" + d.name +
                             "': documents are stored by base name, which must be unique");
    }
  }
  auto read = read_prefix(client, layout);
  if (!read) return read.error();

  std::uint64_t generation = 1;
  if (read->meta) {
    auto old = decode_meta(read->meta->value);
    if (!old) {
      Error e = old.error();
      e.message = layout.policy_meta() + ": " + e.message + "; nothing was written";
      return e;
    }
    generation = old->generation + 1;
    // Unchanged: same digest, same documents in the same order, same bytes,
    // nothing stray.
    bool same = old->digest == request.digest &&
                old->documents.size() == request.documents.size() &&
                read->documents.size() == request.documents.size() && read->foreign.empty();
    for (std::size_t i = 0; same && i < request.documents.size(); ++i) {
      const auto& d = request.documents[i];
      const auto it = read->documents.find(d.name);
      same = old->documents[i] == d.name && it != read->documents.end() &&
             it->second.value == d.content;
    }
    if (same) {
      PublishResult r;
      r.unchanged = true;
      r.generation = old->generation;
      r.revision = read->meta->mod_revision;
      return r;
    }
  }

  PolicyMeta meta;
  meta.name = request.policy_name;
  meta.digest = request.digest;
  meta.generation = generation;
  meta.author = request.author;
  meta.user = request.user;
  meta.published_at = request.published_at.empty() ? utc_now() : request.published_at;
  for (const auto& d : request.documents) meta.documents.push_back(d.name);

  TxnRequest txn;
  Compare guard;
  guard.key = layout.policy_meta();
  if (read->meta) {
    guard.target = Compare::Target::Mod;
    guard.number = read->meta->mod_revision;
  } else {
    guard.target = Compare::Target::Version;  // the meta does not exist
    guard.number = 0;
  }
  txn.compare.push_back(guard);
  PublishResult result;
  for (const auto& d : request.documents) {
    const auto it = read->documents.find(d.name);
    if (it != read->documents.end() && it->second.value == d.content) continue;
    txn.success.push_back(TxnOp::put(layout.document(d.name), d.content));
  }
  for (const auto& [name, kv] : read->documents) {
    if (names.count(name) == 0) {
      txn.success.push_back(TxnOp::erase(kv.key));
      result.removed.push_back(name);
    }
  }
  for (const auto& key : read->foreign) txn.success.push_back(TxnOp::erase(key));
  txn.success.push_back(TxnOp::put(layout.policy_meta(), encode_meta(meta)));
  txn.failure.push_back(TxnOp::range(layout.policy_meta()));

  auto committed = client.txn(txn);
  if (!committed) {
    Error e = committed.error();
    if (e.etcd_error.find("too many operations") != std::string::npos) {
      e.message += " (a policy of " + std::to_string(request.documents.size()) +
                   " files needs more operations than etcd's --max-txn-ops allows)";
    }
    return e;
  }
  if (!committed->succeeded) {
    std::string who = "the policy was deleted";
    if (!committed->responses.empty() && !committed->responses[0].kvs.empty()) {
      const auto& kv = committed->responses[0].kvs[0];
      auto now = decode_meta(kv.value);
      who = now ? "generation " + std::to_string(now->generation) + " by " + now->author +
                      " at revision " + std::to_string(kv.mod_revision)
                : "an unreadable meta at revision " + std::to_string(kv.mod_revision);
    }
    Error e = Error::make(Error::Kind::Conflict,
                          "another publisher changed the policy since it was read at revision " +
                              std::to_string(read->revision) + " (" + who +
                              "); nothing was written: review it and apply again");
    e.endpoint = client.current_endpoint();
    return e;
  }
  result.generation = generation;
  result.revision = committed->revision;
  return result;
}

Result<ClusterView> read_cluster(EtcdClient& client, const Layout& layout) {
  auto policy = read_prefix(client, layout);
  if (!policy) return policy.error();
  ClusterView view;
  view.revision = policy->revision;
  auto stored = to_stored(layout, std::move(*policy));
  if (!stored) return stored.error();
  view.policy = std::move(*stored);

  std::map<std::string, NodeView> nodes;
  RangeRequest nreq;
  nreq.key = layout.nodes_prefix();
  nreq.range_end = prefix_end(nreq.key);
  nreq.revision = view.revision;
  auto nr = client.range(nreq);
  if (!nr) return nr.error();
  for (const auto& kv : nr->kvs) {
    auto name = layout.node_name(kv.key);
    if (!name) continue;
    NodeView& n = nodes[*name];
    n.name = *name;
    n.lease = kv.lease;
    auto rec = decode_node(kv.value);
    if (rec) {
      n.record = std::move(*rec);
    } else {
      n.record_error = rec.error().message;
    }
  }
  RangeRequest ereq;
  ereq.key = layout.endpoints_prefix();
  ereq.range_end = prefix_end(ereq.key);
  ereq.revision = view.revision;
  ereq.keys_only = true;
  auto er = client.range(ereq);
  if (!er) return er.error();
  for (const auto& kv : er->kvs) {
    auto ep = layout.endpoint_key(kv.key);
    if (!ep) continue;
    NodeView& n = nodes[ep->first];
    n.name = ep->first;
    ++n.endpoints;
  }
  for (auto& [name, n] : nodes) view.nodes.push_back(std::move(n));
  return view;
}

Result<Done> init_auth(EtcdClient& client, const Layout& layout, const AuthSetup& setup) {
  if (setup.root_password.empty()) {
    return Error::make(Error::Kind::Invalid, "the root password is empty");
  }
  if (auto r = client.role_add(kAuthorRole); !r) return r.error();
  for (const auto& perm : author_permissions(layout)) {
    if (auto r = client.role_grant(kAuthorRole, perm); !r) return r.error();
  }
  if (!setup.author_user.empty()) {
    if (setup.author_password.empty()) {
      return Error::make(Error::Kind::Invalid, "the author's password is empty");
    }
    if (auto r = client.user_add(setup.author_user, setup.author_password); !r) return r.error();
    if (auto r = client.user_grant_role(setup.author_user, kAuthorRole); !r) return r.error();
  }
  if (auto r = client.user_add("root", setup.root_password); !r) return r.error();
  if (auto r = client.user_grant_role("root", "root"); !r) return r.error();
  return client.auth_enable();
}

Result<std::string> add_node_user(EtcdClient& client, const Layout& layout, const std::string& node,
                                  const std::string& password) {
  if (!valid_node_name(node)) {
    return Error::make(Error::Kind::Invalid,
                       "'" + node + "' is not a node name ([a-z0-9]([a-z0-9.-]*[a-z0-9])?)");
  }
  if (password.empty()) return Error::make(Error::Kind::Invalid, "the node's password is empty");
  const std::string role = node_role(node);
  if (auto r = client.role_add(role); !r) return r.error();
  for (const auto& perm : node_permissions(layout, node)) {
    if (auto r = client.role_grant(role, perm); !r) return r.error();
  }
  if (auto r = client.user_add(role, password); !r) return r.error();
  if (auto r = client.user_grant_role(role, role); !r) return r.error();
  return role;
}

}  // namespace tierwall::store
