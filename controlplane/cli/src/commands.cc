#include "tierwall/cli/commands.h"

#include <algorithm>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/plan.h"
#include "tierwall/explain/explain.h"
#include "tierwall/explain/matrix.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/identity/resolver.h"
#include "tierwall/lint/lint.h"
#include "tierwall/policy/diagnostics_json.h"
#include "tierwall/policy/loader.h"

namespace tierwall::cli {

using policy::Diagnostics;
using policy::diagnostics_json;

namespace {

// Drops warnings whose code the user disabled.
Diagnostics without(const Diagnostics& diags, const std::vector<std::string>& disabled) {
  Diagnostics out;
  for (const auto& d : diags.items()) {
    if (d.severity == policy::Severity::Warning &&
        std::find(disabled.begin(), disabled.end(), d.code) != disabled.end()) {
      continue;
    }
    if (d.severity == policy::Severity::Error) {
      out.error(d.loc, d.message);
    } else {
      out.warning(d.loc, d.code, d.message);
    }
  }
  return out;
}

// Every endpoint that no assignment places in a tier.
void warn_quarantined(const policy::Policy& policy, const identity::Inventory& inv,
                      Diagnostics& diags) {
  for (const auto& ep : inv.endpoints) {
    const auto r = identity::resolve_tier(policy, ep);
    if (r.assignment < 0) {
      diags.warning(ep.loc, "quarantined",
                    "endpoint '" + ep.name + "' matches no assignment and is quarantined");
    }
  }
}

}  // namespace

int validate(const ValidateOptions& options, std::ostream& out, std::ostream& err) {
  Diagnostics diags;
  std::vector<policy::SourceFile> sources;
  for (const auto& path : policy::expand_paths(options.paths, diags)) {
    policy::SourceFile f{path, {}};
    if (policy::read_file(path, f.content, diags)) sources.push_back(std::move(f));
  }
  std::vector<policy::yaml::Document> docs;
  for (const auto& s : sources) {
    auto parsed = policy::yaml::parse(s.content, std::make_shared<std::string>(s.path),
                                      policy::parser_for(s.content), diags);
    for (auto& d : parsed) docs.push_back(std::move(d));
  }
  std::vector<const policy::yaml::Document*> policy_docs;
  std::map<std::string, std::vector<const policy::yaml::Document*>> inventory_docs;
  std::vector<policy::SourceFile> policy_sources;
  for (const auto& d : docs) {
    const std::string kind = policy::document_kind(d, diags);
    if (kind == policy::kPolicyKind) {
      policy_docs.push_back(&d);
    } else if (kind == policy::kInventoryKind) {
      inventory_docs[*d.file].push_back(&d);
    }
  }
  for (const auto& s : sources) {
    const bool has_policy = std::any_of(policy_docs.begin(), policy_docs.end(),
                                        [&](const auto* d) { return *d->file == s.path; });
    if (has_policy) policy_sources.push_back(s);
  }
  std::optional<policy::Policy> pol;
  if (!policy_docs.empty()) pol = policy::build_policy(policy_docs, policy_sources, diags);
  std::vector<identity::Inventory> inventories;
  for (const auto& [file, list] : inventory_docs) {
    Diagnostics inv_diags;
    if (auto inv = identity::build_inventory(list, inv_diags))
      inventories.push_back(std::move(*inv));
    diags.append(inv_diags);
  }
  if (docs.empty() && !diags.has_errors()) {
    for (const auto& p : options.paths) {
      diags.error(policy::SourceLoc{std::make_shared<std::string>(p), 0, 0},
                  "no YAML document found");
    }
  }
  if (pol && !diags.has_errors()) {
    lint::lint(*pol, diags);
    if (options.lint) {
      for (const auto& inv : inventories) warn_quarantined(*pol, inv, diags);
    }
  }
  Diagnostics shown = without(diags, options.disabled_lints);
  const bool failed = shown.has_errors() || (options.strict && shown.warning_count() > 0);
  if (options.output == "json") {
    nlohmann::json j;
    j["valid"] = !shown.has_errors();
    j["errors"] = shown.error_count();
    j["warnings"] = shown.warning_count();
    j["diagnostics"] = diagnostics_json(shown);
    if (pol && !shown.has_errors()) {
      j["policy"] = {{"name", pol->name},
                     {"digest", pol->digest},
                     {"tiers", pol->tiers.size()},
                     {"assignments", pol->assignments.size()},
                     {"denies", pol->denies.size()},
                     {"flows", pol->flows.size()}};
    }
    nlohmann::json invs = nlohmann::json::array();
    for (const auto& inv : inventories) {
      invs.push_back({{"node", inv.node.name}, {"endpoints", inv.endpoints.size()}});
    }
    j["inventories"] = invs;
    out << j.dump(2) << "\n";
    return failed ? kExitInvalid : kExitOk;
  }
  shown.print(err);
  if (!shown.has_errors()) {
    if (pol) {
      out << "policy " << pol->name << ": valid (" << pol->tiers.size() << " tiers, "
          << pol->assignments.size() << " assignments, " << pol->denies.size() << " denies, "
          << pol->flows.size() << " flows; digest " << pol->digest.substr(0, 12) << ")\n";
    }
    for (const auto& inv : inventories) {
      out << "inventory " << inv.node.name << ": valid (" << inv.endpoints.size()
          << " endpoints)\n";
    }
  }
  if (shown.error_count() + shown.warning_count() > 0) {
    err << shown.error_count() << " error(s), " << shown.warning_count() << " warning(s)\n";
  }
  return failed ? kExitInvalid : kExitOk;
}

namespace {

struct Loaded {
  std::optional<policy::Policy> policy;
  std::optional<identity::Inventory> inventory;
};

bool load(const std::vector<std::string>& policy_paths, const std::optional<std::string>& inventory,
          Loaded& loaded, std::ostream& err) {
  Diagnostics diags;
  loaded.policy = policy::load_policy(policy_paths, diags);
  if (inventory) loaded.inventory = identity::load_inventory(*inventory, diags);
  if (diags.has_errors()) {
    diags.print(err);
    return false;
  }
  return true;
}

}  // namespace

int explain(const ExplainOptions& options, std::ostream& out, std::ostream& err) {
  Loaded loaded;
  std::optional<std::string> inventory;
  if (!options.inventory.empty()) inventory = options.inventory;
  if (!load(options.policy, inventory, loaded, err)) return kExitInvalid;
  if (!loaded.inventory) loaded.inventory = identity::Inventory{};
  compiler::Compilation compilation(*loaded.policy, 1);
  explain::Explainer explainer(compilation, *loaded.inventory);
  std::optional<std::string_view> port;
  if (options.port) port = *options.port;
  auto result = explainer.explain(options.from, options.to, port);
  if (auto* e = std::get_if<explain::ExplainError>(&result)) {
    err << "tierctl explain: " << e->message << "\n";
    return e->exit_code;
  }
  const auto& ex = std::get<explain::Explanation>(result);
  if (options.output == "json") {
    out << explain::to_json(ex).dump() << "\n";
  } else {
    explain::print_human(ex, *compilation.policy(), out);
  }
  return kExitOk;
}

int matrix(const MatrixOptions& options, std::ostream& out, std::ostream& err) {
  Loaded loaded;
  if (!load(options.policy, options.inventory, loaded, err)) return kExitInvalid;
  compiler::Compilation compilation(*loaded.policy, 1);
  const explain::Matrix m =
      explain::build_matrix(compilation, loaded.inventory ? &*loaded.inventory : nullptr);
  if (options.output == "json") {
    out << explain::to_json(m).dump(2) << "\n";
  } else if (options.output == "csv") {
    explain::render_csv(m, out);
  } else if (options.output == "html") {
    explain::render_html(m, out);
  } else {
    explain::render_table(m, out);
  }
  return kExitOk;
}

int compile(const CompileOptions& options, std::ostream& out, std::ostream& err) {
  if (options.backend != "nft") {
    err << "tierctl compile: unknown backend '" << options.backend << "' (nft)\n";
    return kExitUsage;
  }
  std::vector<Cidr> cidrs;
  for (const auto& text : options.container_cidrs) {
    std::string why;
    auto c = Cidr::parse(text, &why);
    if (!c) {
      err << "tierctl compile: invalid --container-cidr '" << text << "': " << why << "\n";
      return kExitUsage;
    }
    cidrs.push_back(*c);
  }
  Loaded loaded;
  if (!load(options.policy, options.inventory, loaded, err)) return kExitInvalid;
  if (!loaded.inventory) loaded.inventory = identity::Inventory{};
  const auto rules = compiler::compile(*loaded.policy, *loaded.inventory, 1, std::move(cidrs));
  dataplane::nft::Options nft_options;
  nft_options.log_group = options.log_group;
  auto plan = dataplane::nft::build_plan(rules, nft_options);
  if (!options.elements) {
    for (auto& s : plan.sets) {
      if (!s.interval) s.addresses.clear();
    }
  }
  out << dataplane::nft::render(plan);
  return kExitOk;
}

}  // namespace tierwall::cli
