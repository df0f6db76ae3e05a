// tierctl: the command line of tierwall. Parses flags and calls tw_cli.
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "tierwall/cli/agent_commands.h"
#include "tierwall/cli/commands.h"

namespace {

using tierwall::cli::kExitUsage;

int run(int argc, char** argv) {
  CLI::App app{
      "tierctl — validate, lint and explain tierwall segmentation policies, and talk to the\n"
      "node agent (status, endpoints, apply, reload, flush) through its local API.\n"
      "Exit codes: 0 success, 1 invalid input or failed check, 2 usage error,\n"
      "3 agent or kernel unreachable.",
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
      "installs it as its policy files and enforces it (role: admin)");
  add_agent_flags(ap);
  ap->add_option("PATH", apply_paths, "policy file or directory of *.yaml")->required();
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
  if (*st) return tierwall::cli::agent_status(agent, std::cout, std::cerr);
  if (*ep) return tierwall::cli::agent_endpoints(agent, endpoints_tier, std::cout, std::cerr);
  if (*ap) return tierwall::cli::agent_apply(agent, apply_paths, std::cout, std::cerr);
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
