// tierwalld: the node agent. Parses flags and calls tw_agent.
#include <iostream>

#include <CLI/CLI.hpp>

#include "tierwall/agent/once.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tierwalld — the tierwall node agent: enforces a segmentation policy in this node's\n"
      "kernel (nftables). Exit codes: 0 success, 1 invalid policy, 2 usage error,\n"
      "3 the kernel could not be reached or rejected the ruleset.",
      "tierwalld"};
  tierwall::agent::OnceOptions options;
  bool once = false;
  bool do_flush = false;
  bool no_bridge = false;
  app.add_option("--policy", options.policy, "policy file or directory");
  app.add_option("--inventory", options.inventory, "inventory file (endpoints, node addresses)");
  app.add_option("--container-cidr", options.container_cidrs,
                 "container network; its unknown addresses are quarantined (repeatable)");
  app.add_option("--log-group", options.log_group, "NFLOG group for deny/audit/logged flows");
  app.add_option("--table", options.table, "name of tierwall's inet table");
  app.add_flag("--once", once, "apply the policy, leave it enforced and exit");
  app.add_flag("--flush", do_flush, "remove everything tierwall installed (its table) and exit");
  app.add_flag("--no-bridge-netfilter", no_bridge,
               "do not enable br_netfilter for bridged container traffic");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "tierwalld: " << e.what() << "\nrun 'tierwalld --help' for usage\n";
    return 2;
  }
  options.bridge_netfilter = !no_bridge;
  if (do_flush) return tierwall::agent::flush(options.table, std::cout, std::cerr);
  if (options.policy.empty()) {
    std::cerr << "tierwalld: --policy is required\n";
    return 2;
  }
  if (!once) {
    std::cerr << "tierwalld: only --once is available in this version (the long-running agent "
                 "with identity sources and reconciliation is not built yet)\n";
    return 2;
  }
  return tierwall::agent::apply_once(options, std::cout, std::cerr);
}
