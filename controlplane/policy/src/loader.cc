#include "tierwall/policy/loader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <openssl/evp.h>

#include "tierwall/policy/yaml_reader.h"

namespace tierwall::policy {

namespace fs = std::filesystem;
using yaml::Node;

namespace {

bool valid_metadata_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok(s.front()) || !ok(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return ok(c) || c == '-'; });
}

bool valid_tier_name(std::string_view s) {
  if (s.empty() || s.size() > 63 || !(s.front() >= 'a' && s.front() <= 'z')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool valid_rule_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s.front())) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool valid_label_key(std::string_view s) {
  if (s.empty() || s.size() > 317) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '/';
  });
}

bool is_reserved_tier(std::string_view s) {
  return s == "quarantine" || s == "host" || s == "world";
}

// A tier name used somewhere, checked once all documents are merged.
struct TierRef {
  std::string name;
  SourceLoc loc;
};

// Accumulates one policy over several documents.
class PolicyBuilder {
 public:
  explicit PolicyBuilder(Diagnostics& diags) : diags_(diags) {}

  void add_document(const yaml::Document& doc);
  std::optional<Policy> finish(const std::vector<SourceFile>& sources);

 private:
  void read_spec(YamlReader& r, const Node& spec);
  void read_tier(YamlReader& r, const Node& n);
  void read_assignment(YamlReader& r, const Node& n);
  void read_rule(YamlReader& r, const Node& n, bool deny);
  bool read_selector(YamlReader& r, const Node& n, std::string_view what, bool in_match,
                     EndpointSelector& out);
  bool read_peer(YamlReader& r, const Node& n, std::string_view what, Peer& out);
  bool read_ports(YamlReader& r, const Node& n, std::vector<PortMatch>& out);
  void set_once(YamlReader& r, const Node& key_node, std::optional<SourceLoc>& slot,
                std::string_view what);

  Diagnostics& diags_;
  Policy policy_;
  bool have_name_ = false;
  bool any_document_ = false;
  SourceLoc first_spec_;
  std::vector<TierRef> tier_refs_;
};

void PolicyBuilder::add_document(const yaml::Document& doc) {
  YamlReader r(doc.file, diags_);
  const Node& root = doc.root;
  if (!r.check_map(root, "a policy document", {"apiVersion", "kind", "metadata", "spec"})) return;
  any_document_ = true;
  const Node* metadata = root.find("metadata");
  if (metadata == nullptr) {
    r.missing(root, "metadata", "the document");
  } else if (r.check_map(*metadata, "metadata", {"name", "labels", "annotations"})) {
    const Node* name = metadata->find("name");
    if (name == nullptr) {
      r.missing(*metadata, "name", "metadata");
    } else if (auto s = r.string(*name, "metadata.name")) {
      if (!valid_metadata_name(*s)) {
        r.error(*name, "metadata.name '" + *s +
                           "' is not a valid name (lower-case letters, digits and '-', starting "
                           "and ending with a letter or digit)");
      } else if (!have_name_) {
        policy_.name = *s;
        policy_.name_loc = r.loc(*name);
        have_name_ = true;
      } else if (*s != policy_.name) {
        r.error(*name, "metadata.name '" + *s + "' differs from '" + policy_.name + "' set at " +
                           policy_.name_loc.to_string() + " (one policy per cluster)");
      }
    }
    for (const char* key : {"labels", "annotations"}) {
      if (const Node* m = metadata->find(key)) {
        if (!m->is_map()) r.error(*m, std::string("metadata.") + key + " must be a map");
      }
    }
  }
  const Node* spec = root.find("spec");
  if (spec == nullptr) {
    r.missing(root, "spec", "the document");
    return;
  }
  if (first_spec_.line == 0) first_spec_ = r.loc(*spec);
  read_spec(r, *spec);
}

void PolicyBuilder::set_once(YamlReader& r, const Node& key_node, std::optional<SourceLoc>& slot,
                             std::string_view what) {
  if (slot) {
    r.error(key_node, "spec." + std::string(what) + " is already set at " + slot->to_string() +
                          " (a setting may appear in one document only)");
  } else {
    slot = r.loc(key_node);
  }
}

void PolicyBuilder::read_spec(YamlReader& r, const Node& spec) {
  if (spec.is_null()) return;  // an empty spec contributes nothing
  if (!r.check_map(spec, "spec", {"mode", "intraTier", "tiers", "assignments", "denies", "flows"}))
    return;
  for (std::size_t i = 0; i + 1 < spec.children.size(); i += 2) {
    const Node& key = spec.children[i];
    const Node& value = spec.children[i + 1];
    if (key.scalar == "mode") {
      bool first = !policy_.mode_loc;
      set_once(r, key, policy_.mode_loc, "mode");
      if (auto s = r.string(value, "spec.mode")) {
        if (*s != "enforce" && *s != "audit") {
          r.error(value, "spec.mode must be 'enforce' or 'audit', not '" + *s + "'" +
                             did_you_mean(*s, {"enforce", "audit"}));
        } else if (first) {
          policy_.mode = *s == "audit" ? Mode::Audit : Mode::Enforce;
        }
      }
    } else if (key.scalar == "intraTier") {
      bool first = !policy_.intra_tier_loc;
      set_once(r, key, policy_.intra_tier_loc, "intraTier");
      if (auto s = r.string(value, "spec.intraTier")) {
        if (*s != "allow" && *s != "deny") {
          r.error(value, "spec.intraTier must be 'allow' or 'deny', not '" + *s + "'" +
                             did_you_mean(*s, {"allow", "deny"}));
        } else if (first) {
          policy_.intra_tier_allow = *s == "allow";
        }
      }
    } else if (key.scalar == "tiers" || key.scalar == "assignments" || key.scalar == "denies" ||
               key.scalar == "flows") {
      if (value.is_null()) continue;
      if (!r.check_list(value, "spec." + key.scalar)) continue;
      for (const Node& item : value.children) {
        if (key.scalar == "tiers") {
          read_tier(r, item);
        } else if (key.scalar == "assignments") {
          read_assignment(r, item);
        } else {
          read_rule(r, item, key.scalar == "denies");
        }
      }
    }
  }
}

void PolicyBuilder::read_tier(YamlReader& r, const Node& n) {
  if (!r.check_map(n, "a tier", {"name", "level", "mode", "description"})) return;
  TierDecl t;
  t.loc = r.loc(n);
  bool ok = true;
  if (const Node* name = n.find("name")) {
    if (auto s = r.string(*name, "tier name")) {
      if (is_reserved_tier(*s)) {
        r.error(*name, "tier name '" + *s + "' is reserved and cannot be declared");
        ok = false;
      } else if (!valid_tier_name(*s)) {
        r.error(*name, "tier name '" + *s +
                           "' is not valid (a lower-case letter, then lower-case letters, digits "
                           "or '-')");
        ok = false;
      }
      t.name = *s;
    } else {
      ok = false;
    }
  } else {
    r.missing(n, "name", "a tier");
    ok = false;
  }
  if (const Node* level = n.find("level")) {
    t.level_loc = r.loc(*level);
    if (auto v = r.integer(*level, "tier level")) {
      if (*v < 0 || *v > 1000) {
        r.error(*level, "tier level " + std::to_string(*v) + " out of range 0..1000");
        ok = false;
      } else {
        t.level = static_cast<int>(*v);
      }
    } else {
      ok = false;
    }
  } else {
    r.missing(n, "level", "tier '" + t.name + "'");
    ok = false;
  }
  if (const Node* mode = n.find("mode")) {
    if (auto s = r.string(*mode, "tier mode")) {
      if (*s == "enforce") {
        t.mode = Mode::Enforce;
      } else if (*s == "audit") {
        t.mode = Mode::Audit;
      } else {
        r.error(*mode, "tier mode must be 'enforce' or 'audit', not '" + *s + "'" +
                           did_you_mean(*s, {"enforce", "audit"}));
      }
    }
  }
  if (const Node* d = n.find("description")) {
    if (auto s = r.string(*d, "tier description")) t.description = *s;
  }
  if (!ok) {
    if (!t.name.empty()) t.level = -1000;  // keep the name for references; level unusable
    if (t.name.empty()) return;
  }
  for (const auto& other : policy_.tiers) {
    if (other.name == t.name) {
      r.error(*n.find("name"),
              "duplicate tier '" + t.name + "' (first declared at " + other.loc.to_string() + ")");
      return;
    }
    if (ok && other.level == t.level) {
      diags_.error(t.level_loc, "tier level " + std::to_string(t.level) +
                                    " is already used by tier '" + other.name + "' at " +
                                    other.loc.to_string() + " (levels must be unique)");
    }
  }
  policy_.tiers.push_back(std::move(t));
}

bool PolicyBuilder::read_selector(YamlReader& r, const Node& n, std::string_view what,
                                  bool in_match, EndpointSelector& out) {
  bool ok = true;
  if (in_match) {
    if (!r.check_map(n, what, {"labels", "image", "name", "tier"})) {
      return false;
    }
    for (std::size_t i = 0; i + 1 < n.children.size(); i += 2) {
      if (n.children[i].scalar == "tier") {
        r.error(n.children[i],
                "'tier' is not allowed in an assignment's match (the assignment decides the "
                "tier)");
        ok = false;
      }
    }
  } else if (!r.check_map(n, what, {"tier", "labels", "image", "name", "host", "world"})) {
    return false;
  }
  if (in_match && n.map_size() == 0) {
    r.error(n, std::string(what) +
                   " must not be empty (an assignment needs labels, image or name to match)");
    return false;
  }
  if (const Node* tier = in_match ? nullptr : n.find("tier")) {
    out.tiers_loc = r.loc(*tier);
    if (auto v = r.string_or_list(*tier, std::string(what) + ".tier")) {
      std::set<std::string> seen;
      for (std::size_t i = 0; i < v->size(); ++i) {
        const std::string& name = (*v)[i];
        const Node& at = tier->is_sequence() ? tier->children[i] : *tier;
        if (!seen.insert(name).second) {
          r.error(at, "tier '" + name + "' listed twice");
          ok = false;
          continue;
        }
        tier_refs_.push_back(TierRef{name, r.loc(at)});
        out.tiers.push_back(name);
      }
    } else {
      ok = false;
    }
  }
  if (const Node* labels = n.find("labels")) {
    if (!labels->is_map()) {
      r.error(*labels, std::string(what) + ".labels must be a map, not " +
                           std::string(yaml::describe(*labels)));
      ok = false;
    } else if (labels->map_size() == 0) {
      r.error(*labels, std::string(what) + ".labels must not be empty (omit it to match any)");
      ok = false;
    } else {
      std::set<std::string> seen;
      for (std::size_t i = 0; i + 1 < labels->children.size(); i += 2) {
        const Node& key = labels->children[i];
        const Node& value = labels->children[i + 1];
        if (!key.is_scalar() || !valid_label_key(key.scalar)) {
          r.error(key, "invalid label key '" + key.scalar + "'");
          ok = false;
          continue;
        }
        if (!seen.insert(key.scalar).second) {
          r.error(key, "duplicate label key '" + key.scalar + "'");
          ok = false;
          continue;
        }
        auto values = r.string_or_list(value, "label '" + key.scalar + "'");
        if (!values) {
          ok = false;
          continue;
        }
        std::sort(values->begin(), values->end());
        values->erase(std::unique(values->begin(), values->end()), values->end());
        out.labels.push_back(LabelRequirement{key.scalar, std::move(*values), r.loc(key)});
      }
      std::sort(out.labels.begin(), out.labels.end(),
                [](const auto& a, const auto& b) { return a.key < b.key; });
    }
  }
  for (const char* key : {"image", "name"}) {
    const Node* g = n.find(key);
    if (g == nullptr) continue;
    auto s = r.string(*g, std::string(what) + "." + key);
    if (!s) {
      ok = false;
      continue;
    }
    std::string err;
    auto glob = Glob::compile(*s, &err);
    if (!glob) {
      r.error(*g, "invalid " + std::string(key) + " glob '" + *s + "': " + err);
      ok = false;
      continue;
    }
    (std::string_view(key) == "image" ? out.image : out.name) = std::move(*glob);
  }
  return ok;
}

bool PolicyBuilder::read_peer(YamlReader& r, const Node& n, std::string_view what, Peer& out) {
  out.loc = r.loc(n);
  if (n.is_map() && (n.find("host") != nullptr || n.find("world") != nullptr)) {
    const bool host = n.find("host") != nullptr;
    const char* key = host ? "host" : "world";
    if (n.map_size() != 1) {
      r.error(n, std::string(what) + ": '" + key +
                     "' must be the only key (an entity cannot be combined with a selector or "
                     "another entity)");
      return false;
    }
    const Node& v = *n.find(key);
    if (host) {
      auto b = r.boolean(v, std::string(what) + ".host");
      if (!b) return false;
      if (!*b) {
        r.error(v, std::string(what) + ".host: only 'host: true' is meaningful");
        return false;
      }
      out.kind = Peer::Kind::Host;
      return true;
    }
    out.kind = Peer::Kind::World;
    if (!r.check_list(v, std::string(what) + ".world")) return false;
    if (v.children.empty()) {
      r.error(v, std::string(what) +
                     ".world must list at least one CIDR (0.0.0.0/0 and ::/0 "
                     "for everything)");
      return false;
    }
    bool ok = true;
    for (const Node& c : v.children) {
      auto s = r.string(c, "a world CIDR");
      if (!s) {
        ok = false;
        continue;
      }
      std::string err;
      auto cidr = Cidr::parse(*s, &err);
      if (!cidr) {
        r.error(c, "invalid CIDR '" + *s + "': " + err);
        ok = false;
        continue;
      }
      out.world.push_back(*cidr);
    }
    return ok;
  }
  out.kind = Peer::Kind::Endpoints;
  return read_selector(r, n, what, false, out.selector);
}

bool PolicyBuilder::read_ports(YamlReader& r, const Node& n, std::vector<PortMatch>& out) {
  if (!r.check_list(n, "ports")) return false;
  if (n.children.empty()) {
    r.error(n, "ports must not be empty (omit it, or write [any], to allow any port)");
    return false;
  }
  bool ok = true;
  for (const Node& item : n.children) {
    auto s = r.string(item, "a port");
    if (!s) {
      ok = false;
      continue;
    }
    std::string err;
    auto p = PortMatch::parse(*s, &err);
    if (!p) {
      r.error(item, "invalid port '" + *s + "': " + err);
      ok = false;
      continue;
    }
    out.push_back(*p);
  }
  return ok;
}

void PolicyBuilder::read_assignment(YamlReader& r, const Node& n) {
  if (!r.check_map(n, "an assignment", {"name", "match", "tier", "description"})) return;
  Assignment a;
  a.loc = r.loc(n);
  if (const Node* name = n.find("name")) {
    if (auto s = r.string(*name, "assignment name")) {
      if (!valid_rule_name(*s)) {
        r.error(*name, "assignment name '" + *s +
                           "' is not valid (letters, digits, '-', '_' and '.', starting with a "
                           "letter or digit)");
      }
      for (const auto& other : policy_.assignments) {
        if (!other.name.empty() && other.name == *s) {
          r.error(*name, "duplicate assignment name '" + *s + "' (first used at " +
                             other.loc.to_string() + ")");
        }
      }
      a.name = *s;
    }
  }
  if (const Node* match = n.find("match")) {
    read_selector(r, *match, "match", true, a.match);
  } else {
    r.missing(n, "match", "an assignment");
  }
  if (const Node* tier = n.find("tier")) {
    a.tier_loc = r.loc(*tier);
    if (auto s = r.string(*tier, "assignment tier")) {
      a.tier = *s;
      tier_refs_.push_back(TierRef{*s, a.tier_loc});
    }
  } else {
    r.missing(n, "tier", "an assignment");
  }
  policy_.assignments.push_back(std::move(a));
}

void PolicyBuilder::read_rule(YamlReader& r, const Node& n, bool deny) {
  const char* what = deny ? "a deny rule" : "a flow";
  bool is_map = deny ? r.check_map(n, what, {"name", "from", "to", "ports", "audit", "description"})
                     : r.check_map(n, what, {"name", "from", "to", "ports", "log", "description"});
  if (!is_map) return;
  Rule rule;
  rule.loc = r.loc(n);
  if (const Node* name = n.find("name")) {
    if (auto s = r.string(*name, "rule name")) {
      if (!valid_rule_name(*s)) {
        r.error(*name, "rule name '" + *s +
                           "' is not valid (letters, digits, '-', '_' and '.', starting with a "
                           "letter or digit)");
      }
      auto check = [&](const std::vector<Rule>& rules) {
        for (const auto& other : rules) {
          if (other.name == *s) {
            r.error(*name, "duplicate rule name '" + *s + "' (first used at " +
                               other.loc.to_string() +
                               "; names are unique across denies and "
                               "flows)");
            return;
          }
        }
      };
      check(policy_.denies);
      check(policy_.flows);
      rule.name = *s;
    }
  } else {
    r.missing(n, "name", what);
  }
  for (const char* side : {"from", "to"}) {
    const Node* p = n.find(side);
    if (p == nullptr) {
      r.missing(n, side, rule.name.empty() ? std::string(what) : "rule '" + rule.name + "'");
      continue;
    }
    read_peer(r, *p, side, std::string_view(side) == "from" ? rule.from : rule.to);
  }
  if (const Node* ports = n.find("ports")) {
    rule.ports_loc = r.loc(*ports);
    rule.ports_given = true;
    read_ports(r, *ports, rule.ports);
  }
  if (rule.ports.empty()) rule.ports.push_back(PortMatch::any_port());
  if (const Node* audit = n.find("audit")) {
    if (auto b = r.boolean(*audit, "audit")) rule.audit = *b;
  }
  if (const Node* log = n.find("log")) {
    if (auto b = r.boolean(*log, "log")) rule.log = *b;
  }
  (deny ? policy_.denies : policy_.flows).push_back(std::move(rule));
}

std::optional<Policy> PolicyBuilder::finish(const std::vector<SourceFile>& sources) {
  if (!any_document_) return std::nullopt;
  if (!have_name_ && !diags_.has_errors()) {
    diags_.error(first_spec_, "metadata.name is required");
  }
  if (policy_.tiers.empty()) {
    diags_.error(first_spec_, "spec.tiers: at least one tier must be declared");
  }
  std::vector<std::string> names{"quarantine"};
  for (const auto& t : policy_.tiers) names.push_back(t.name);
  for (const auto& ref : tier_refs_) {
    if (ref.name == "quarantine" || policy_.find_tier(ref.name) != nullptr) continue;
    if (ref.name == "host" || ref.name == "world") {
      diags_.error(ref.loc, "'" + ref.name + "' is an entity, not a tier (write {" + ref.name +
                                (ref.name == "host" ? ": true}" : ": [CIDR, ...]}") + ")");
      continue;
    }
    diags_.error(ref.loc, "unknown tier '" + ref.name + "'" + did_you_mean(ref.name, names));
  }
  if (diags_.has_errors()) return std::nullopt;
  policy_.digest = digest_sources(sources);
  for (const auto& s : sources) policy_.files.push_back(s.path);
  return std::move(policy_);
}

}  // namespace

std::vector<std::string> expand_paths(const std::vector<std::string>& paths, Diagnostics& diags) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    auto status = fs::status(p, ec);
    if (ec || !fs::exists(status)) {
      diags.error(SourceLoc{std::make_shared<std::string>(p), 0, 0}, "no such file or directory");
      continue;
    }
    if (!fs::is_directory(status)) {
      out.push_back(p);
      continue;
    }
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(p, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(".")) continue;
      const std::string ext = entry.path().extension().string();
      if ((ext == ".yaml" || ext == ".yml") && !entry.is_directory()) names.push_back(name);
    }
    if (ec) {
      diags.error(SourceLoc{std::make_shared<std::string>(p), 0, 0},
                  "cannot read directory: " + ec.message());
      continue;
    }
    std::sort(names.begin(), names.end());
    if (names.empty()) {
      diags.error(SourceLoc{std::make_shared<std::string>(p), 0, 0},
                  "directory holds no *.yaml or *.yml file");
    }
    for (const auto& n : names) out.push_back((fs::path(p) / n).string());
  }
  return out;
}

bool read_file(const std::string& path, std::string& out, Diagnostics& diags) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags.error(SourceLoc{std::make_shared<std::string>(path), 0, 0}, "cannot open file");
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  out = std::move(ss).str();
  return true;
}

yaml::Parser parser_for(std::string_view content) {
  // Inventories are machine-written and large; look for a top-level
  // `kind: Inventory` line without parsing.
  static const std::regex kInventory(
      R"((^|\n)kind:[ \t]*["']?Inventory["']?[ \t]*(#[^\n]*)?\r?(\n|$))");
  const std::string_view head = content.substr(0, std::min<std::size_t>(content.size(), 4096));
  if (std::regex_search(head.begin(), head.end(), kInventory)) return yaml::Parser::LibYaml;
  return yaml::Parser::YamlCpp;
}

std::string document_kind(const yaml::Document& doc, Diagnostics& diags) {
  YamlReader r(doc.file, diags);
  const Node& root = doc.root;
  if (root.is_null()) return {};
  if (!root.is_map()) {
    r.error(root, "a document must be a map with apiVersion, kind, ...; not " +
                      std::string(yaml::describe(root)));
    return {};
  }
  const Node* api = root.find("apiVersion");
  if (api == nullptr) {
    r.missing(root, "apiVersion", "the document");
  } else if (auto s = r.string(*api, "apiVersion")) {
    if (*s != kApiVersion) {
      r.error(*api,
              "unsupported apiVersion '" + *s + "' (expected '" + std::string(kApiVersion) + "')");
    }
  }
  const Node* kind = root.find("kind");
  if (kind == nullptr) {
    r.missing(root, "kind", "the document");
    return {};
  }
  auto s = r.string(*kind, "kind");
  if (!s) return {};
  if (*s != kPolicyKind && *s != kInventoryKind) {
    r.error(*kind, "unknown kind '" + *s + "' (expected SegmentationPolicy or Inventory)" +
                       did_you_mean(*s, {std::string(kPolicyKind), std::string(kInventoryKind)}));
    return {};
  }
  return *s;
}

std::optional<Policy> build_policy(const std::vector<const yaml::Document*>& docs,
                                   const std::vector<SourceFile>& sources, Diagnostics& diags) {
  PolicyBuilder builder(diags);
  for (const auto* d : docs) builder.add_document(*d);
  if (docs.empty()) {
    if (!diags.has_errors()) {
      SourceLoc loc;
      if (!sources.empty()) loc.file = std::make_shared<std::string>(sources.front().path);
      diags.error(loc, "no SegmentationPolicy document found");
    }
    return std::nullopt;
  }
  return builder.finish(sources);
}

std::optional<Policy> load_policy(const std::vector<std::string>& paths, Diagnostics& diags) {
  std::vector<SourceFile> sources;
  for (const auto& path : expand_paths(paths, diags)) {
    SourceFile f{path, {}};
    if (read_file(path, f.content, diags)) sources.push_back(std::move(f));
  }
  return load_policy_sources(sources, diags);
}

std::optional<Policy> load_policy_sources(const std::vector<SourceFile>& sources,
                                          Diagnostics& diags) {
  std::vector<yaml::Document> docs;
  for (const auto& s : sources) {
    auto parsed =
        yaml::parse(s.content, std::make_shared<std::string>(s.path), yaml::Parser::YamlCpp, diags);
    for (auto& d : parsed) docs.push_back(std::move(d));
  }
  std::vector<const yaml::Document*> policy_docs;
  for (const auto& d : docs) {
    const std::string kind = document_kind(d, diags);
    if (kind == kPolicyKind) {
      policy_docs.push_back(&d);
    } else if (kind == kInventoryKind) {
      diags.error(SourceLoc{d.file, d.root.line, d.root.column},
                  "an Inventory document is not part of a policy (pass it with --inventory)");
    }
  }
  if (diags.has_errors()) {
    // Still merge what parsed so that every problem is reported at once.
    if (!policy_docs.empty()) build_policy(policy_docs, sources, diags);
    return std::nullopt;
  }
  return build_policy(policy_docs, sources, diags);
}

std::optional<Policy> parse_policy(std::string_view text, const std::string& name,
                                   Diagnostics& diags) {
  auto file = std::make_shared<std::string>(name);
  auto docs = yaml::parse(text, file, yaml::Parser::YamlCpp, diags);
  std::vector<const yaml::Document*> policy_docs;
  for (const auto& d : docs) {
    const std::string kind = document_kind(d, diags);
    if (kind == kPolicyKind) {
      policy_docs.push_back(&d);
    } else if (kind == kInventoryKind) {
      diags.error(SourceLoc{d.file, d.root.line, d.root.column},
                  "an Inventory document is not part of a policy (pass it with --inventory)");
    }
  }
  std::vector<SourceFile> sources{SourceFile{name, std::string(text)}};
  auto policy = build_policy(policy_docs, sources, diags);
  if (diags.has_errors()) return std::nullopt;
  return policy;
}

std::string digest_sources(const std::vector<SourceFile>& sources) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& s : sources) {
    std::string frame = s.path + "\n" + std::to_string(s.content.size()) + "\n";
    EVP_DigestUpdate(ctx, frame.data(), frame.size());
    EVP_DigestUpdate(ctx, s.content.data(), s.content.size());
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

}  // namespace tierwall::policy
