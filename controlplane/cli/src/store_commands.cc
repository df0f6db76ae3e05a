#include "tierwall/cli/store_commands.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <pwd.h>
#include <set>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tierwall/cli/commands.h"
#include "tierwall/lint/lint.h"
#include "tierwall/policy/diagnostics_json.h"
#include "tierwall/policy/loader.h"
#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"
#include "tierwall/store/policy_store.h"

namespace tierwall::cli {

namespace {

using nlohmann::json;

int exit_code(const store::Error& e) {
  switch (e.kind) {
    case store::Error::Kind::Unavailable:
    case store::Error::Kind::Tls:
      return kExitUnreachable;
    case store::Error::Kind::Invalid:
      return kExitUsage;
    default:
      return kExitInvalid;
  }
}

int report(const store::Error& e, const StoreOptions& options, std::ostream& out,
           std::ostream& err) {
  err << "tierctl: " << e.message << "\n";
  if (e.kind == store::Error::Kind::Permission && !options.user.empty()) {
    err << "tierctl: user '" << options.user
        << "' may not do this; authors need role tierwall-author (docs/cluster.md)\n";
  }
  if (options.output == "json") {
    json j = {{"error", e.message}, {"kind", store::to_string(e.kind)}};
    if (!e.endpoint.empty()) j["endpoint"] = e.endpoint;
    if (e.http_status != 0) j["httpStatus"] = e.http_status;
    if (!e.etcd_error.empty()) j["etcdError"] = e.etcd_error;
    out << j.dump(2) << "\n";
  }
  return exit_code(e);
}

// The first line of a password file, without its line end.
std::optional<std::string> read_password(const std::string& path, const char* what,
                                         std::ostream& err) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    err << "tierctl: cannot read the " << what << " password file " << path << "\n";
    return std::nullopt;
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.empty()) {
    err << "tierctl: the " << what << " password file " << path << " is empty\n";
    return std::nullopt;
  }
  return line;
}

// Client options from the flags; nullopt after printing why (exit 2).
std::optional<store::ClientOptions> client_options(const StoreOptions& options, std::ostream& err) {
  if (!store::valid_cluster_name(options.cluster)) {
    err << "tierctl: '" << options.cluster
        << "' is not a cluster name ([a-z0-9]([a-z0-9.-]*[a-z0-9])?)\n";
    return std::nullopt;
  }
  auto endpoints = store::parse_endpoints(options.endpoints);
  if (!endpoints) {
    err << "tierctl: --store: " << endpoints.error().message << "\n";
    return std::nullopt;
  }
  store::ClientOptions c;
  c.endpoints = std::move(*endpoints);
  c.ca_file = options.ca_file;
  c.cert_file = options.cert_file;
  c.key_file = options.key_file;
  c.request_timeout = options.timeout;
  for (const auto* f : {&c.ca_file, &c.cert_file, &c.key_file}) {
    if (!f->empty() && !std::filesystem::exists(*f)) {
      err << "tierctl: " << *f << ": no such file\n";
      return std::nullopt;
    }
  }
  if ((c.cert_file.empty()) != (c.key_file.empty())) {
    err << "tierctl: --store-cert and --store-key go together\n";
    return std::nullopt;
  }
  if (!options.user.empty()) {
    c.user = options.user;
    if (!options.password_file.empty()) {
      auto pw = read_password(options.password_file, "store", err);
      if (!pw) return std::nullopt;
      c.password = std::move(*pw);
    } else if (options.password_env) {
      c.password = *options.password_env;
    } else {
      err << "tierctl: --store-user needs a password: --store-password-file FILE or "
             "TIERWALL_STORE_PASSWORD\n";
      return std::nullopt;
    }
  }
  return c;
}

std::string default_author() {
  std::string user;
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr) user = pw->pw_name;
  if (user.empty()) user = "uid" + std::to_string(::geteuid());
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return user;
  return user + "@" + host;
}

std::string short_digest(const std::string& d) { return d.substr(0, 12); }

json meta_json(const store::StoredPolicy& p) {
  return json{{"name", p.meta.name},
              {"digest", p.meta.digest},
              {"generation", p.meta.generation},
              {"author", p.meta.author},
              {"user", p.meta.user},
              {"publishedAt", p.meta.published_at},
              {"revision", p.meta_mod_revision},
              {"documents", p.meta.documents},
              {"problems", p.problems}};
}

}  // namespace

int store_apply(const StoreOptions& options, const std::vector<std::string>& paths,
                std::ostream& out, std::ostream& err) {
  auto copts = client_options(options, err);
  if (!copts) return kExitUsage;

  policy::Diagnostics diags;
  std::vector<policy::SourceFile> sources;
  for (const auto& path : policy::expand_paths(paths, diags)) {
    policy::SourceFile f{path, {}};
    if (policy::read_file(path, f.content, diags)) sources.push_back(std::move(f));
  }
  std::optional<policy::Policy> pol;
  if (!diags.has_errors()) {
    if (sources.empty()) {
      err << "tierctl: no policy files to apply\n";
      return kExitInvalid;
    }
    pol = policy::load_policy_sources(sources, diags);
  }
  if (pol && !diags.has_errors()) lint::lint(*pol, diags);
  if (!pol || diags.has_errors()) {
    diags.print(err);
    err << "tierctl: the policy is invalid; nothing was published\n";
    if (options.output == "json") {
      out << json{{"published", false}, {"diagnostics", policy::diagnostics_json(diags)}}.dump(2)
          << "\n";
    }
    return kExitInvalid;
  }
  diags.print(err);  // warnings

  // Documents are stored under their base names; the digest the cluster
  // sees is computed over those names, as an agent will load them.
  std::vector<store::PolicyDocument> documents;
  std::vector<policy::SourceFile> named;
  std::set<std::string> seen;
  for (const auto& s : sources) {
    const std::string base = std::filesystem::path(s.path).filename().string();
    if (!store::valid_document_name(base)) {
      err << "tierctl: " << s.path
          << ": a published file's name must be letters, digits, '_', '.', '-' and end in "
             ".yaml or .yml\n";
      return kExitInvalid;
    }
    if (!seen.insert(base).second) {
      err << "tierctl: two files are named " << base
          << ": published documents are stored by base name, which must be unique\n";
      return kExitInvalid;
    }
    documents.push_back(store::PolicyDocument{base, s.content});
    named.push_back(policy::SourceFile{base, s.content});
  }

  store::PublishRequest req;
  req.policy_name = pol->name;
  req.digest = policy::digest_sources(named);
  req.documents = std::move(documents);
  req.author = options.author.empty() ? default_author() : options.author;
  req.user = options.user;
  store::EtcdClient client(*copts);
  const store::Layout layout(options.cluster);
  auto published = store::publish_policy(client, layout, req);
  if (!published) return report(published.error(), options, out, err);

  if (options.output == "json") {
    json j = {{"published", !published->unchanged},
              {"unchanged", published->unchanged},
              {"cluster", options.cluster},
              {"policy", pol->name},
              {"digest", req.digest},
              {"generation", published->generation},
              {"revision", published->revision},
              {"author", req.author},
              {"documents", json::array()},
              {"removed", published->removed},
              {"endpoint", client.current_endpoint()},
              {"diagnostics", policy::diagnostics_json(diags)}};
    for (const auto& d : req.documents) j["documents"].push_back(d.name);
    out << j.dump(2) << "\n";
    return kExitOk;
  }
  if (published->unchanged) {
    out << "policy " << pol->name << " unchanged in cluster " << options.cluster << ": generation "
        << published->generation << ", digest " << req.digest << ", etcd revision "
        << published->revision << "\n";
    return kExitOk;
  }
  out << "policy " << pol->name << " published to cluster " << options.cluster << ": generation "
      << published->generation << ", digest " << req.digest << ", etcd revision "
      << published->revision << ", " << req.documents.size() << " document(s)";
  if (!published->removed.empty()) {
    out << ", removed";
    for (const auto& r : published->removed) out << " " << r;
  }
  out << "\n";
  return kExitOk;
}

int store_show(const StoreOptions& options, std::ostream& out, std::ostream& err) {
  auto copts = client_options(options, err);
  if (!copts) return kExitUsage;
  store::EtcdClient client(*copts);
  const store::Layout layout(options.cluster);
  auto view = store::read_cluster(client, layout);
  if (!view) return report(view.error(), options, out, err);

  if (options.output == "json") {
    json j = {{"cluster", options.cluster},
              {"revision", view->revision},
              {"endpoint", client.current_endpoint()},
              {"policy", nullptr},
              {"nodes", json::array()}};
    if (view->policy) j["policy"] = meta_json(*view->policy);
    for (const auto& n : view->nodes) {
      json nj = {{"name", n.name},
                 {"registered", n.record.has_value()},
                 {"endpoints", n.endpoints},
                 {"lease", n.lease}};
      if (n.record) {
        nj["addresses"] = n.record->addresses;
        nj["agentVersion"] = n.record->agent_version;
        nj["startedAt"] = n.record->started_at;
        nj["policyDigest"] = n.record->policy_digest;
        nj["policyGeneration"] = n.record->policy_generation;
      }
      if (!n.record_error.empty()) nj["error"] = n.record_error;
      j["nodes"].push_back(std::move(nj));
    }
    out << j.dump(2) << "\n";
    return kExitOk;
  }
  out << "cluster     " << options.cluster << " (etcd revision " << view->revision << ", via "
      << client.current_endpoint() << ")\n";
  if (!view->policy) {
    out << "policy      none published\n";
  } else {
    const auto& p = *view->policy;
    out << "policy      " << p.meta.name << ", generation " << p.meta.generation << ", digest "
        << short_digest(p.meta.digest) << ", by " << p.meta.author;
    if (!p.meta.user.empty()) out << " (etcd user " << p.meta.user << ")";
    out << " at " << p.meta.published_at << ", revision " << p.meta_mod_revision << "\n";
    out << "documents  ";
    for (const auto& d : p.meta.documents) out << " " << d;
    out << "\n";
    for (const auto& problem : p.problems) out << "PROBLEM     " << problem << "\n";
  }
  out << "nodes       " << view->nodes.size() << "\n";
  for (const auto& n : view->nodes) {
    out << "  " << n.name << ": " << n.endpoints << " endpoint(s)";
    if (n.record) {
      out << ", enforcing ";
      if (n.record->policy_digest.empty()) {
        out << "no policy";
      } else {
        out << "generation " << n.record->policy_generation << " ("
            << short_digest(n.record->policy_digest) << ")";
      }
    } else if (!n.record_error.empty()) {
      out << ", UNREADABLE node record: " << n.record_error;
    } else {
      out << ", no node record";
    }
    out << "\n";
  }
  return kExitOk;
}

int store_init_auth(const StoreOptions& options, const InitAuthOptions& init, std::ostream& out,
                    std::ostream& err) {
  auto copts = client_options(options, err);
  if (!copts) return kExitUsage;
  auto root = read_password(init.root_password_file, "root", err);
  if (!root) return kExitUsage;
  store::AuthSetup setup;
  setup.root_password = *root;
  if (!init.author_user.empty()) {
    if (init.author_password_file.empty()) {
      err << "tierctl: --author-user needs --author-password-file\n";
      return kExitUsage;
    }
    auto pw = read_password(init.author_password_file, "author", err);
    if (!pw) return kExitUsage;
    setup.author_user = init.author_user;
    setup.author_password = *pw;
  }
  store::EtcdClient client(*copts);
  const store::Layout layout(options.cluster);
  if (auto r = store::init_auth(client, layout, setup); !r) {
    return report(r.error(), options, out, err);
  }
  if (options.output == "json") {
    out << json{{"authEnabled", true},
                {"cluster", options.cluster},
                {"roles", {std::string(store::kAuthorRole)}},
                {"users", init.author_user.empty() ? json{"root"} : json{"root", init.author_user}}}
               .dump(2)
        << "\n";
    return kExitOk;
  }
  out << "authentication enabled; role " << store::kAuthorRole << " may write "
      << layout.policy_prefix();
  if (!init.author_user.empty()) out << "; user " << init.author_user << " has it";
  out << "\nnext: tierctl store add-node NODE --password-file FILE --store-user root ... for "
         "each node\n";
  return kExitOk;
}

int store_add_node(const StoreOptions& options, const std::string& node,
                   const std::string& password_file, std::ostream& out, std::ostream& err) {
  auto copts = client_options(options, err);
  if (!copts) return kExitUsage;
  auto pw = read_password(password_file, "node", err);
  if (!pw) return kExitUsage;
  store::EtcdClient client(*copts);
  const store::Layout layout(options.cluster);
  auto user = store::add_node_user(client, layout, node, *pw);
  if (!user) return report(user.error(), options, out, err);
  if (options.output == "json") {
    out << json{{"node", node}, {"user", *user}, {"role", *user}}.dump(2) << "\n";
    return kExitOk;
  }
  out << "user and role " << *user << ": may read the policy, nodes and endpoints, and write only "
      << layout.node(node) << " and " << layout.node_endpoints_prefix(node) << "\n";
  return kExitOk;
}

}  // namespace tierwall::cli
