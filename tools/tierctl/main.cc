// tierctl: the command line of tierwall. Parses flags and calls tw_cli.
#include <iostream>

#include <CLI/CLI.hpp>

#include "tierwall/cli/commands.h"

namespace {

using tierwall::cli::kExitUsage;

int run(int argc, char** argv) {
  CLI::App app{
      "tierctl — validate, lint and explain tierwall segmentation policies.\n"
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
