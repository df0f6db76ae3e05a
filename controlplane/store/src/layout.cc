#include "tierwall/store/layout.h"

#include <nlohmann/json.hpp>

#include "tierwall/store/wire.h"

namespace tierwall::store {

using nlohmann::json;

namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool alnum(char c) { return lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

bool dns_like(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!lower_alnum(name.front()) || !lower_alnum(name.back())) return false;
  for (char c : name) {
    if (!lower_alnum(c) && c != '-' && c != '.') return false;
  }
  return true;
}

std::optional<std::string> tail_after(std::string_view key, const std::string& prefix) {
  if (!key.starts_with(prefix)) return std::nullopt;
  return std::string(key.substr(prefix.size()));
}

Error bad_value(const char* what, const std::string& why) {
  return Error::make(Error::Kind::Protocol, std::string("malformed ") + what + " value: " + why);
}

Result<json> parse(std::string_view text, const char* what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad_value(what, "not a JSON object");
  return j;
}

std::string str(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

bool strings(const json& j, const char* key, std::vector<std::string>& out) {
  out.clear();
  const auto it = j.find(key);
  if (it == j.end()) return true;
  if (!it->is_array()) return false;
  for (const auto& s : *it) {
    if (!s.is_string()) return false;
    out.push_back(s.get<std::string>());
  }
  return true;
}

}  // namespace

bool valid_cluster_name(std::string_view name) { return dns_like(name); }
bool valid_node_name(std::string_view name) { return dns_like(name); }

bool valid_endpoint_id(std::string_view id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  for (char c : id) {
    if (!alnum(c) && c != '_' && c != '.' && c != ':' && c != '-') return false;
  }
  return true;
}

bool valid_document_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.') return false;
  for (char c : name) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return name.ends_with(".yaml") || name.ends_with(".yml");
}

Layout::Layout(std::string cluster) : cluster_(std::move(cluster)) {}

std::string Layout::root() const { return "/tierwall/" + cluster_ + "/"; }
std::string Layout::policy_prefix() const { return root() + "policy/"; }
std::string Layout::policy_meta() const { return policy_prefix() + "meta"; }
std::string Layout::documents_prefix() const { return policy_prefix() + "documents/"; }
std::string Layout::document(std::string_view name) const {
  return documents_prefix() + std::string(name);
}
std::string Layout::nodes_prefix() const { return root() + "nodes/"; }
std::string Layout::node(std::string_view node) const { return nodes_prefix() + std::string(node); }
std::string Layout::endpoints_prefix() const { return root() + "endpoints/"; }
std::string Layout::node_endpoints_prefix(std::string_view node) const {
  return endpoints_prefix() + std::string(node) + "/";
}
std::string Layout::endpoint(std::string_view node, std::string_view id) const {
  return node_endpoints_prefix(node) + std::string(id);
}

std::optional<std::string> Layout::document_name(std::string_view key) const {
  auto name = tail_after(key, documents_prefix());
  if (!name || !valid_document_name(*name)) return std::nullopt;
  return name;
}

std::optional<std::string> Layout::node_name(std::string_view key) const {
  auto name = tail_after(key, nodes_prefix());
  if (!name || !valid_node_name(*name)) return std::nullopt;
  return name;
}

std::optional<std::pair<std::string, std::string>> Layout::endpoint_key(
    std::string_view key) const {
  auto rest = tail_after(key, endpoints_prefix());
  if (!rest) return std::nullopt;
  const auto slash = rest->find('/');
  if (slash == std::string::npos) return std::nullopt;
  std::string node = rest->substr(0, slash);
  std::string id = rest->substr(slash + 1);
  if (!valid_node_name(node) || !valid_endpoint_id(id)) return std::nullopt;
  return std::make_pair(std::move(node), std::move(id));
}

std::string encode_meta(const PolicyMeta& meta) {
  json j;
  j["format"] = meta.format;
  j["name"] = meta.name;
  j["digest"] = meta.digest;
  j["generation"] = meta.generation;
  j["author"] = meta.author;
  if (!meta.user.empty()) j["user"] = meta.user;
  j["publishedAt"] = meta.published_at;
  j["documents"] = meta.documents;
  return j.dump();
}

Result<PolicyMeta> decode_meta(std::string_view text) {
  auto j = parse(text, "policy meta");
  if (!j) return j.error();
  PolicyMeta m;
  const json& o = *j;
  if (!o.contains("format") || !o["format"].is_number_integer()) {
    return bad_value("policy meta", "no format");
  }
  m.format = o["format"].get<int>();
  if (m.format != 1) {
    return bad_value("policy meta", "format " + std::to_string(m.format) +
                                        " is newer than this tierwall understands (1)");
  }
  m.name = str(o, "name");
  m.digest = str(o, "digest");
  m.author = str(o, "author");
  m.user = str(o, "user");
  m.published_at = str(o, "publishedAt");
  if (!o.contains("generation") || !o["generation"].is_number_unsigned()) {
    return bad_value("policy meta", "no generation");
  }
  m.generation = o["generation"].get<std::uint64_t>();
  if (!strings(o, "documents", m.documents)) return bad_value("policy meta", "bad documents");
  if (m.digest.size() != 64) return bad_value("policy meta", "bad digest");
  for (const auto& d : m.documents) {
    if (!valid_document_name(d)) return bad_value("policy meta", "bad document name '" + d + "'");
  }
  return m;
}

std::string encode_node(const NodeRecord& node) {
  json j;
  j["name"] = node.name;
  j["addresses"] = node.addresses;
  j["agentVersion"] = node.agent_version;
  j["startedAt"] = node.started_at;
  j["policyDigest"] = node.policy_digest;
  j["policyGeneration"] = node.policy_generation;
  return j.dump();
}

Result<NodeRecord> decode_node(std::string_view text) {
  auto j = parse(text, "node");
  if (!j) return j.error();
  NodeRecord n;
  n.name = str(*j, "name");
  if (!valid_node_name(n.name)) return bad_value("node", "bad name '" + n.name + "'");
  if (!strings(*j, "addresses", n.addresses)) return bad_value("node", "bad addresses");
  n.agent_version = str(*j, "agentVersion");
  n.started_at = str(*j, "startedAt");
  n.policy_digest = str(*j, "policyDigest");
  const auto it = j->find("policyGeneration");
  if (it != j->end()) {
    if (!it->is_number_unsigned()) return bad_value("node", "bad policyGeneration");
    n.policy_generation = it->get<std::uint64_t>();
  }
  return n;
}

std::string encode_endpoint(const EndpointRecord& endpoint) {
  json j;
  j["id"] = endpoint.id;
  j["name"] = endpoint.name;
  if (!endpoint.image.empty()) j["image"] = endpoint.image;
  j["labels"] = endpoint.labels;
  j["addresses"] = endpoint.addresses;
  return j.dump();
}

Result<EndpointRecord> decode_endpoint(std::string_view text) {
  auto j = parse(text, "endpoint");
  if (!j) return j.error();
  EndpointRecord e;
  e.id = str(*j, "id");
  e.name = str(*j, "name");
  e.image = str(*j, "image");
  if (!valid_endpoint_id(e.id)) return bad_value("endpoint", "bad id '" + e.id + "'");
  if (!strings(*j, "addresses", e.addresses) || e.addresses.empty()) {
    return bad_value("endpoint", "no addresses");
  }
  const auto it = j->find("labels");
  if (it != j->end()) {
    if (!it->is_object()) return bad_value("endpoint", "labels is not a map");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) return bad_value("endpoint", "label '" + k + "' is not a string");
      e.labels[k] = v.get<std::string>();
    }
  }
  return e;
}

const char* to_string(Permission::Type type) {
  switch (type) {
    case Permission::Type::Read:
      return "READ";
    case Permission::Type::Write:
      return "WRITE";
    case Permission::Type::ReadWrite:
      return "READWRITE";
  }
  return "READ";
}

std::string node_role(std::string_view node) { return "tierwall-node-" + std::string(node); }

std::vector<Permission> author_permissions(const Layout& layout) {
  using T = Permission::Type;
  return {
      {T::ReadWrite, layout.policy_prefix(), prefix_end(layout.policy_prefix())},
      {T::Read, layout.nodes_prefix(), prefix_end(layout.nodes_prefix())},
      {T::Read, layout.endpoints_prefix(), prefix_end(layout.endpoints_prefix())},
  };
}

std::vector<Permission> node_permissions(const Layout& layout, std::string_view node) {
  using T = Permission::Type;
  const std::string own_endpoints = layout.node_endpoints_prefix(node);
  return {
      {T::Read, layout.policy_prefix(), prefix_end(layout.policy_prefix())},
      {T::Read, layout.nodes_prefix(), prefix_end(layout.nodes_prefix())},
      {T::Read, layout.endpoints_prefix(), prefix_end(layout.endpoints_prefix())},
      {T::ReadWrite, layout.node(node), {}},
      {T::ReadWrite, own_endpoints, prefix_end(own_endpoints)},
  };
}

}  // namespace tierwall::store
