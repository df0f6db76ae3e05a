// tierctl: the command line of tierwall. Parses flags and calls tw_cli.
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "tierwall/cli/agent_commands.h"
#include "tierwall/cli/audit_commands.h"
#include "tierwall/cli/commands.h"
#include "tierwall/cli/flow_commands.h"
#include "tierwall/cli/store_commands.h"

namespace {

using tierwall::cli::kExitUsage;

int run(int argc, char** argv) {
  CLI::App app{
      "tierctl — validate, lint and explain tierwall segmentation policies, and talk to the\n"
      "node agent (status, endpoints, apply, reload, flush) through its local API; publish\n"
      "a policy to a cluster's etcd (apply --store, store show|init-auth|add-node); read,\n"
      "verify and report its flow logs (flows, audit verify, report).\n"
      "Exit codes: 0 success, 1 invalid input or failed check, 2 usage error,\n"
      "3 agent, kernel or etcd unreachable.",
      "tierctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tierctl 0.1.0");

  tierwall::cli::ValidateOptions validate;
  auto* v = app.add_subcommand("validate",
                               "Parse and check policy files/directories and inventory files; "
                               "print every diagnostic as FILE:LINE:COL: error|warning: MESSAGE");
  v->add_option("PATH", validate.paths, "policy or inventory file, or a directory of *.yaml")
      ->required();
  v->add_option("-o,--output", validate.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  tierwall::cli::ValidateOptions lint;
  lint.lint = true;
  auto* l = app.add_subcommand(
      "lint",
      "Validate and report lint warnings (write-down, world-to-sensitive, shadowed, broad, "
      "unused-tier, quarantined); exit 1 on errors, or on warnings with --strict");
  l->add_option("PATH", lint.paths, "policy or inventory file, or a directory of *.yaml")
      ->required();
  l->add_option("-o,--output", lint.output, "text or json")->check(CLI::IsMember({"text", "json"}));
  l->add_flag("--strict", lint.strict, "exit 1 when there is any warning");
  l->add_option("--disable", lint.disabled_lints, "a lint code to silence (repeatable)");

  tierwall::cli::ExplainOptions explain;
  auto* e = app.add_subcommand("explain",
                               "Why is a connection allowed, denied or audited? Shows the "
                               "deciding rule and, for a deny, the nearest rules that would allow");
  e->add_option("--policy", explain.policy, "policy file or directory")->required();
  e->add_option("--inventory", explain.inventory, "inventory file (endpoints and node addresses)");
  e->add_option("--from", explain.from, "initiator: endpoint name, IP address or 'host'")
      ->required();
  e->add_option("--to", explain.to, "responder: endpoint name, IP address or 'host'")->required();
  e->add_option("--port", explain.port,
                "tcp/N, udp/N, sctp/N, icmp/TYPE or icmpv6/TYPE; may be omitted when the "
                "verdict does not depend on it");
  e->add_option("-o,--output", explain.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));

  tierwall::cli::MatrixOptions matrix;
  auto* m = app.add_subcommand("matrix",
                               "The tier-by-tier view: what each tier may open to each other "
                               "tier, the host and the world, and by which rules");
  m->add_option("--policy", matrix.policy, "policy file or directory")->required();
  m->add_option("--inventory", matrix.inventory,
                "inventory file: keep only rules that select real endpoints, count endpoints");
  m->add_option("-o,--output", matrix.output, "table, json, csv or html")
      ->check(CLI::IsMember({"table", "json", "csv", "html"}));

  tierwall::cli::CompileOptions compile;
  auto* c = app.add_subcommand("compile",
                               "Print the ruleset a dataplane would install (nft syntax), for "
                               "review; nothing is applied");
  c->add_option("--policy", compile.policy, "policy file or directory")->required();
  c->add_option("--inventory", compile.inventory, "inventory file");
  c->add_option("--backend", compile.backend, "dataplane backend (nft)")
      ->check(CLI::IsMember({"nft"}));
  c->add_option("--container-cidr", compile.container_cidrs,
                "container network; unknown addresses in it are quarantined (repeatable)");
  c->add_option("--log-group", compile.log_group, "NFLOG group for deny/audit/logged flows");
  c->add_flag("!--no-elements", compile.elements, "omit endpoint set elements");

  // Commands against the running agent.
  tierwall::cli::AgentOptions agent;
  if (const char* env = std::getenv("TIERWALL_API_SOCKET"); env != nullptr && *env != '\0') {
    agent.socket = env;
  }
  auto add_agent_flags = [&agent](CLI::App* cmd) {
    cmd->add_option("--socket", agent.socket,
                    "the agent's API socket (default $TIERWALL_API_SOCKET or " +
                        std::string(tierwall::cli::kDefaultAgentSocket) + ")");
    cmd->add_option("-o,--output", agent.output, "text or json")
        ->check(CLI::IsMember({"text", "json"}));
  };
  auto* st = app.add_subcommand(
      "status",
      "The agent's state: policy generation and digest, endpoints per tier, identity "
      "sources, dataplane health (role: auditor)");
  add_agent_flags(st);
  std::string endpoints_tier;
  auto* ep = app.add_subcommand(
      "endpoints",
      "Every endpoint the agent enforces, with its tier and addresses (role: operator)");
  add_agent_flags(ep);
  ep->add_option("--tier", endpoints_tier, "only endpoints in this tier");
  std::vector<std::string> apply_paths;
  auto* ap = app.add_subcommand(
      "apply",
      "Submit a policy to the agent: it validates it (diagnostics come back here), "
      "installs it as its policy files and enforces it (role: admin). With --store: "
      "validate here and publish it to the cluster's etcd for every node, in one "
      "transaction (role tierwall-author)");
  add_agent_flags(ap);
  ap->add_option("PATH", apply_paths, "policy file or directory of *.yaml")->required();

  // The cluster store (etcd), docs/cluster.md.
  tierwall::cli::StoreOptions store;
  if (const char* env = std::getenv("TIERWALL_STORE_PASSWORD"); env != nullptr) {
    store.password_env = env;
  }
  auto add_store_flags = [&store](CLI::App* cmd, bool required) {
    auto* o =
        cmd->add_option("--store", store.endpoints,
                        "etcd client URLs, comma-separated (http://host:2379 or https://...); "
                        "the next is tried when one cannot be reached");
    if (required) o->required();
    cmd->add_option("--cluster", store.cluster, "cluster name: keys under /tierwall/NAME/")
        ->capture_default_str();
    cmd->add_option("--store-user", store.user, "etcd user (authentication enabled)");
    cmd->add_option("--store-password-file", store.password_file,
                    "file whose first line is the etcd user's password (else "
                    "$TIERWALL_STORE_PASSWORD)");
    cmd->add_option("--store-ca", store.ca_file, "PEM CA that signed etcd's certificate");
    cmd->add_option("--store-cert", store.cert_file, "PEM client certificate for etcd");
    cmd->add_option("--store-key", store.key_file, "PEM private key of --store-cert");
  };
  add_store_flags(ap, false);
  ap->add_option("--author", store.author,
                 "recorded as the policy's author with --store (default: login@hostname)");
  auto* sg = app.add_subcommand("store", "The cluster store (etcd): show it, set up its users");
  sg->require_subcommand(1);
  auto* ss = sg->add_subcommand(
      "show",
      "The published policy (generation, digest, author, documents), the nodes and "
      "their endpoint counts");
  add_store_flags(ss, true);
  ss->add_option("-o,--output", store.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  tierwall::cli::InitAuthOptions init_auth;
  auto* si = sg->add_subcommand(
      "init-auth",
      "Create the tierwall-author role (and an author user), the root user, and enable "
      "etcd authentication");
  add_store_flags(si, true);
  si->add_option("--root-password-file", init_auth.root_password_file,
                 "file whose first line is the password for etcd's root user")
      ->required();
  si->add_option("--author-user", init_auth.author_user, "also create this author user");
  si->add_option("--author-password-file", init_auth.author_password_file,
                 "file whose first line is the author user's password");
  si->add_option("-o,--output", store.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  std::string add_node_name;
  std::string add_node_password_file;
  auto* sn = sg->add_subcommand(
      "add-node",
      "Create role and user tierwall-node-NODE: read the policy, nodes and endpoints; write "
      "only its own node key and endpoints (run as root: --store-user root)");
  add_store_flags(sn, true);
  sn->add_option("NODE", add_node_name, "node name")->required();
  sn->add_option("--password-file", add_node_password_file,
                 "file whose first line is the node user's password")
      ->required();
  sn->add_option("-o,--output", store.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  auto* rl = app.add_subcommand(
      "reload",
      "Make the agent re-read its policy files and inventory, as SIGHUP (role: operator)");
  add_agent_flags(rl);
  bool flush_yes = false;
  auto* fl = app.add_subcommand(
      "flush",
      "Remove tierwall's rules from the node until the next apply or reload: NOTHING "
      "is enforced meanwhile (role: admin; needs --yes)");
  add_agent_flags(fl);
  fl->add_flag("--yes", flush_yes, "confirm: stop enforcing on this node");

  // Flow logs (auditors).
  tierwall::cli::FlowsOptions flows;
  auto* fw = app.add_subcommand(
      "flows",
      "List and filter the flow log: time range, verdict, tier, endpoint, rule, address, "
      "port; table or -o json (one record per line); --follow");
  fw->add_option("--log", flows.log_dir,
                 "flow-log directory (default: ask the running agent through --socket)");
  fw->add_option("--socket", agent.socket, "the agent's API socket, when --log is not given");
  fw->add_option("--since", flows.since, "from (RFC 3339, a date, now, or 15m/2h/7d ago)");
  fw->add_option("--until", flows.until, "until, exclusive (same forms)");
  fw->add_option("--verdict", flows.verdicts, "allow, deny or audit (repeatable, or a,b)");
  fw->add_option("--tier", flows.tiers, "source or destination tier (host, world too)");
  fw->add_option("--src-tier", flows.src_tiers, "source tier");
  fw->add_option("--dst-tier", flows.dst_tiers, "destination tier");
  fw->add_option("--endpoint", flows.endpoints, "source or destination endpoint name (glob)");
  fw->add_option("--rule", flows.rules, "deciding rule name (glob), or kind when unnamed");
  fw->add_option("--address", flows.addresses, "source or destination address or CIDR");
  fw->add_option("--port", flows.ports, "destination port N or range N-M");
  fw->add_option("--type", flows.types,
                 "flow, loss, policy, agent, checkpoint or all "
                 "(default flow and loss)");
  fw->add_flag("-f,--follow", flows.follow, "keep reading as the log grows (Ctrl-C ends)");
  fw->add_option("-o,--output", flows.output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  fw->add_option("--limit", flows.limit, "stop after N matching records");

  auto* audit = app.add_subcommand("audit", "Verify the flow log and export its public key");
  audit->require_subcommand(1);
  tierwall::cli::AuditVerifyOptions verify;
  auto* av = audit->add_subcommand(
      "verify",
      "Check the hash chain and the signed checkpoints across every file of DIR; exit "
      "0 when intact, else 1 naming the first bad record (FILE:LINE) and what is wrong");
  av->add_option("DIR", verify.dir, "flow-log directory")->required();
  av->add_option("--pubkey", verify.pubkey,
                 "the node's public key (PEM); without it, the key named in the log is used");
  av->add_option("-o,--output", verify.output, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  std::string pubkey_key{tierwall::cli::kDefaultFlowLogKey};
  auto* ap_key = audit->add_subcommand("pubkey", "Print the flow log's public key (PEM)");
  ap_key->add_option("--key", pubkey_key, "the agent's signing key file (its .pub is read)");

  tierwall::cli::ReportOptions report;
  std::string report_out = "report.html";
  std::optional<std::string> report_pubkey;
  bool no_verify = false;
  auto* rp = app.add_subcommand(
      "report",
      "One self-contained HTML report of the flow log (tier heatmap, top denied, "
      "quarantine, policy generations, loss, verification); -o json for the data");
  rp->add_option("--log", report.log_dir, "flow-log directory")->required();
  rp->add_option("-o,--output", report_out,
                 "FILE (.html or .json), '-' for stdout, or 'json'/'html' for stdout");
  rp->add_option("--since", report.since, "from (RFC 3339, a date, now, or 15m/2h/7d ago)");
  rp->add_option("--until", report.until, "until, exclusive");
  rp->add_option("--top", report.top, "rows of the top-denied tables");
  rp->add_option("--pubkey", report_pubkey, "verify the chain with this public key (PEM)");
  rp->add_flag("--no-verify", no_verify, "do not verify the chain (grey badge)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << "tierctl 0.1.0\n";
    return 0;
  } catch (const CLI::ParseError& err) {
    std::cerr << "tierctl: " << err.what() << "\n";
    std::cerr << "run 'tierctl --help' or 'tierctl COMMAND --help' for usage\n";
    return kExitUsage;
  }

  if (*v) return tierwall::cli::validate(validate, std::cout, std::cerr);
  if (*l) return tierwall::cli::validate(lint, std::cout, std::cerr);
  if (*e) return tierwall::cli::explain(explain, std::cout, std::cerr);
  if (*m) return tierwall::cli::matrix(matrix, std::cout, std::cerr);
  if (*c) return tierwall::cli::compile(compile, std::cout, std::cerr);
  if (*fw) {
    if (flows.log_dir.empty()) {
      agent.output = flows.output;
      return tierwall::cli::agent_flows(agent, flows, std::cout, std::cerr);
    }
    return tierwall::cli::flows(flows, std::cout, std::cerr);
  }
  if (*av) return tierwall::cli::audit_verify(verify, std::cout, std::cerr);
  if (*ap_key) return tierwall::cli::audit_pubkey(pubkey_key, std::cout, std::cerr);
  if (*rp) {
    if (report_out == "json" || report_out == "html") {
      report.format = report_out;
      report.output = "-";
    } else {
      report.output = report_out;
      const bool json =
          report_out.size() > 5 && report_out.substr(report_out.size() - 5) == ".json";
      report.format = json ? "json" : "html";
    }
    if (!no_verify) {
      report.verify = [report_pubkey](const std::string& dir) {
        return tierwall::cli::report_verification(dir, report_pubkey);
      };
    }
    return tierwall::cli::report(report, std::cout, std::cerr);
  }
  if (*st) return tierwall::cli::agent_status(agent, std::cout, std::cerr);
  if (*ep) return tierwall::cli::agent_endpoints(agent, endpoints_tier, std::cout, std::cerr);
  if (*ap) {
    if (ap->count("--store") > 0) {  // even an empty value: never fall back to the agent
      store.output = agent.output;
      return tierwall::cli::store_apply(store, apply_paths, std::cout, std::cerr);
    }
    return tierwall::cli::agent_apply(agent, apply_paths, std::cout, std::cerr);
  }
  if (*ss) return tierwall::cli::store_show(store, std::cout, std::cerr);
  if (*si) return tierwall::cli::store_init_auth(store, init_auth, std::cout, std::cerr);
  if (*sn) {
    return tierwall::cli::store_add_node(store, add_node_name, add_node_password_file, std::cout,
                                         std::cerr);
  }
  if (*rl) return tierwall::cli::agent_reload(agent, std::cout, std::cerr);
  if (*fl) {
    if (!flush_yes) {
      std::cerr << "tierctl: flush stops all enforcement on the node; pass --yes to confirm\n";
      return kExitUsage;
    }
    return tierwall::cli::agent_flush(agent, std::cout, std::cerr);
  }
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& ex) {
    std::cerr << "tierctl: internal error: " << ex.what() << "\n";
    return 1;
  }
}
