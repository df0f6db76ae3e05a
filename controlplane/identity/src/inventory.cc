#include "tierwall/identity/inventory.h"

#include <unordered_map>

#include "tierwall/policy/loader.h"
#include "tierwall/policy/yaml_reader.h"

namespace tierwall::identity {

using policy::Diagnostics;
using policy::SourceLoc;
using policy::YamlReader;
using policy::yaml::Node;

namespace {

bool valid_endpoint_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool read_addresses(YamlReader& r, const Node& n, std::string_view what,
                    std::vector<IpAddress>& out) {
  if (!r.check_list(n, what)) return false;
  bool ok = true;
  for (const Node& item : n.children) {
    auto s = r.string(item, "an address");
    if (!s) {
      ok = false;
      continue;
    }
    auto a = IpAddress::parse(*s);
    if (!a) {
      r.error(item, "invalid IP address '" + *s + "'");
      ok = false;
      continue;
    }
    out.push_back(*a);
  }
  return ok;
}

class InventoryBuilder {
 public:
  explicit InventoryBuilder(Diagnostics& diags) : diags_(diags) {}

  void reserve(std::size_t endpoints) {
    inv_.endpoints.reserve(endpoints);
    names_.reserve(endpoints);
    addresses_.reserve(endpoints + endpoints / 4);
  }

  void add(const policy::yaml::Document& doc) {
    YamlReader r(doc.file, diags_);
    const Node& root = doc.root;
    if (!r.check_map(root, "an inventory document", {"apiVersion", "kind", "node", "endpoints"}))
      return;
    if (const Node* node = root.find("node")) {
      read_node(r, *node);
    }
    if (const Node* eps = root.find("endpoints")) {
      if (eps->is_null()) return;
      if (!r.check_list(*eps, "endpoints")) return;
      inv_.endpoints.reserve(inv_.endpoints.size() + eps->children.size());
      names_.reserve(names_.size() + eps->children.size());
      addresses_.reserve(addresses_.size() + eps->children.size());
      for (const Node& e : eps->children) read_endpoint(r, e);
    }
  }

  std::optional<Inventory> finish(const SourceLoc& first) {
    if (!have_node_) diags_.error(first, "the inventory has no 'node' (name and addresses)");
    // Checked once every document is read: the node may come after endpoints.
    for (const auto& [address, owner] : addresses_) {
      if (auto it = node_addrs_.find(address); it != node_addrs_.end()) {
        diags_.error(loc_of(owner), "address " + address.to_string() +
                                        " is the node's own address (" + it->second.to_string() +
                                        ")");
      }
    }
    if (diags_.has_errors()) return std::nullopt;
    return std::move(inv_);
  }

  void read_node(YamlReader& r, const Node& n) {
    if (!r.check_map(n, "node", {"name", "addresses"})) return;
    if (have_node_) {
      r.error(n, "node is already given at " + node_loc_.to_string());
      return;
    }
    have_node_ = true;
    node_loc_ = r.loc(n);
    if (const Node* name = n.find("name")) {
      if (auto s = r.string(*name, "node.name")) inv_.node.name = *s;
    } else {
      r.missing(n, "name", "node");
    }
    if (const Node* addrs = n.find("addresses")) {
      if (!r.check_list(*addrs, "node.addresses")) return;
      for (const Node& item : addrs->children) {
        auto s = r.string(item, "an address");
        if (!s) continue;
        auto a = IpAddress::parse(*s);
        if (!a) {
          r.error(item, "invalid IP address '" + *s + "'");
          continue;
        }
        inv_.node.addresses.push_back(*a);
        node_addrs_.emplace(*a, r.loc(item));
      }
    }
  }

  // One item of `endpoints`; public so that items can be streamed in.
  void read_endpoint(YamlReader& r, const Node& n) {
    if (!r.check_map(n, "an endpoint", {"name", "id", "image", "labels", "addresses"})) return;
    Endpoint ep;
    ep.loc = r.loc(n);
    const std::size_t index = read_count_++;
    bool ok = true;
    if (const Node* name = n.find("name")) {
      if (auto s = r.string(*name, "endpoint name")) {
        if (!valid_endpoint_name(*s)) {
          r.error(*name,
                  "endpoint name '" + *s + "' is not valid (letters, digits, '-', '_' and '.')");
          ok = false;
        }
        auto [it, fresh] = names_.emplace(*s, Pos{ep.loc.line, ep.loc.column});
        if (!fresh) {
          r.error(*name, "duplicate endpoint name '" + *s + "' (first at " +
                             at(r, it->second).to_string() + ")");
          ok = false;
        }
        ep.name = *s;
      } else {
        ok = false;
      }
    } else {
      r.missing(n, "name", "an endpoint");
      ok = false;
    }
    if (const Node* id = n.find("id")) {
      if (auto s = r.string(*id, "endpoint id")) ep.id = *s;
    }
    if (const Node* image = n.find("image")) {
      if (auto s = r.string(*image, "endpoint image")) ep.image = *s;
    }
    if (const Node* labels = n.find("labels")) {
      if (!labels->is_null() && !labels->is_map()) {
        r.error(*labels,
                "labels must be a map, not " + std::string(policy::yaml::describe(*labels)));
        ok = false;
      } else {
        std::vector<std::pair<std::string, std::string>> kv;
        kv.reserve(labels->map_size());
        for (std::size_t i = 0; i + 1 < labels->children.size(); i += 2) {
          const Node& key = labels->children[i];
          const Node& value = labels->children[i + 1];
          if (!key.is_scalar() || key.scalar.empty()) {
            r.error(key, "label keys must be non-empty strings");
            ok = false;
            continue;
          }
          for (const auto& seen : kv) {
            if (seen.first == key.scalar) {
              r.error(key, "duplicate label key '" + key.scalar + "'");
              ok = false;
            }
          }
          auto v = r.string(value, "label '" + key.scalar + "'");
          if (!v) {
            ok = false;
            continue;
          }
          kv.emplace_back(key.scalar, std::move(*v));
        }
        ep.labels = Labels(std::move(kv));
      }
    }
    if (const Node* addrs = n.find("addresses")) {
      std::vector<IpAddress> list;
      if (read_addresses(r, *addrs, "addresses", list)) {
        if (list.empty()) {
          r.error(*addrs, "an endpoint needs at least one address");
          ok = false;
        }
        for (std::size_t i = 0; i < list.size(); ++i) {
          const SourceLoc at = r.loc(addrs->children[i]);
          auto [it, fresh] = addresses_.emplace(
              list[i], Owner{Pos{at.line, at.column}, index, file_index(at.file)});
          if (!fresh) {
            const bool same = it->second.endpoint == index;
            r.error(addrs->children[i], "address " + list[i].to_string() +
                                            (same ? " is listed twice for this endpoint ("
                                                  : " already belongs to another endpoint (") +
                                            loc_of(it->second).to_string() + ")");
            ok = false;
          }
        }
        ep.addresses = std::move(list);
      } else {
        ok = false;
      }
    } else {
      r.missing(n, "addresses", ep.name.empty() ? "an endpoint" : "endpoint '" + ep.name + "'");
      ok = false;
    }
    if (ok) inv_.endpoints.push_back(std::move(ep));
  }

 private:
  Diagnostics& diags_;
  Inventory inv_;
  bool have_node_ = false;
  SourceLoc node_loc_;
  // Positions are kept as two ints (not a SourceLoc with its shared file
  // name) because there is one per endpoint of a 100k-endpoint inventory.
  struct Pos {
    int line;
    int column;
  };
  static SourceLoc at(YamlReader& r, Pos p) { return SourceLoc{r.file(), p.line, p.column}; }
  std::unordered_map<std::string, Pos> names_;
  struct Owner {
    Pos pos;
    std::size_t endpoint;    // index of the endpoint being read
    std::uint32_t file = 0;  // index into files_
  };
  std::vector<std::shared_ptr<const std::string>> files_;
  std::uint32_t file_index(const std::shared_ptr<const std::string>& f) {
    if (files_.empty() || files_.back() != f) files_.push_back(f);
    return static_cast<std::uint32_t>(files_.size() - 1);
  }
  [[nodiscard]] SourceLoc loc_of(const Owner& o) const {
    return SourceLoc{files_[o.file], o.pos.line, o.pos.column};
  }
  std::unordered_map<IpAddress, Owner, IpAddressHash> addresses_;
  std::size_t read_count_ = 0;
  std::unordered_map<IpAddress, SourceLoc, IpAddressHash> node_addrs_;
};

}  // namespace

std::optional<Inventory> build_inventory(const std::vector<const policy::yaml::Document*>& docs,
                                         Diagnostics& diags) {
  InventoryBuilder b(diags);
  SourceLoc first;
  for (const auto* d : docs) {
    if (first.file == nullptr) first = SourceLoc{d->file, d->root.line, d->root.column};
    b.add(*d);
  }
  if (docs.empty()) {
    diags.error(first, "no Inventory document found");
    return std::nullopt;
  }
  return b.finish(first);
}

std::optional<Inventory> parse_inventory(std::string_view text, const std::string& name,
                                         Diagnostics& diags) {
  auto file = std::make_shared<std::string>(name);
  // Endpoints are validated as the parser completes each one, so a large
  // inventory is never held as a YAML tree.
  InventoryBuilder builder(diags);
  builder.reserve(text.size() / 160);  // about 160 bytes of YAML per endpoint
  YamlReader reader(file, diags);
  const policy::yaml::StreamHook hook{"endpoints",
                                      [&](Node&& item) { builder.read_endpoint(reader, item); }};
  auto docs = policy::yaml::parse(text, file, policy::yaml::Parser::LibYaml, diags, &hook);
  std::vector<const policy::yaml::Document*> inv_docs;
  for (const auto& d : docs) {
    const std::string kind = policy::document_kind(d, diags);
    if (kind == policy::kInventoryKind) {
      inv_docs.push_back(&d);
    } else if (kind == policy::kPolicyKind) {
      diags.error(SourceLoc{d.file, d.root.line, d.root.column},
                  "a SegmentationPolicy document is not an inventory (pass it with --policy)");
    }
  }
  if (inv_docs.empty()) {
    if (!diags.has_errors()) diags.error(SourceLoc{file, 0, 0}, "no Inventory document found");
    return std::nullopt;
  }
  for (const auto* d : inv_docs) builder.add(*d);
  auto inv =
      builder.finish(SourceLoc{file, inv_docs.front()->root.line, inv_docs.front()->root.column});
  if (diags.has_errors()) return std::nullopt;
  return inv;
}

std::optional<Inventory> load_inventory(const std::string& path, Diagnostics& diags) {
  std::string text;
  if (!policy::read_file(path, text, diags)) return std::nullopt;
  return parse_inventory(text, path, diags);
}

}  // namespace tierwall::identity
