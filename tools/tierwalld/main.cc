// tierwalld: the node agent. Parses flags and calls tw_agent.
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "tierwall/agent/config.h"
#include "tierwall/agent/daemon.h"
#include "tierwall/agent/once.h"
#include "tierwall/cli/commands.h"
#include "tierwall/cli/flow_commands.h"

namespace {

namespace agent = tierwall::agent;

// GET /v1/flows: the query parameters are tierctl flows' flags.
int flows_query(const std::string& dir,
                const std::vector<std::pair<std::string, std::string>>& params, std::ostream& out,
                std::ostream& err) {
  constexpr std::uint64_t kDefaultLimit = 1000;
  constexpr std::uint64_t kMaxLimit = 100000;
  tierwall::cli::FlowsOptions o;
  o.log_dir = dir;
  o.output = "json";
  o.limit = kDefaultLimit;
  for (const auto& [key, value] : params) {
    if (key == "since") {
      o.since = value;
    } else if (key == "until") {
      o.until = value;
    } else if (key == "verdict") {
      o.verdicts.push_back(value);
    } else if (key == "tier") {
      o.tiers.push_back(value);
    } else if (key == "src-tier") {
      o.src_tiers.push_back(value);
    } else if (key == "dst-tier") {
      o.dst_tiers.push_back(value);
    } else if (key == "endpoint") {
      o.endpoints.push_back(value);
    } else if (key == "rule") {
      o.rules.push_back(value);
    } else if (key == "address") {
      o.addresses.push_back(value);
    } else if (key == "port") {
      o.ports.push_back(value);
    } else if (key == "type") {
      o.types.push_back(value);
    } else if (key == "output" && (value == "json" || value == "table")) {
      o.output = value;
    } else if (key == "limit") {
      try {
        o.limit = std::min<std::uint64_t>(std::stoull(value), kMaxLimit);
      } catch (const std::exception&) {
        err << "limit '" << value << "' is not a number";
        return tierwall::cli::kExitUsage;
      }
    } else {
      err << "unknown parameter '" << key << "'";
      return tierwall::cli::kExitUsage;
    }
  }
  return tierwall::cli::flows(o, out, err);
}

// The configuration file (or the defaults) with the flags applied. nullopt
// after printing why; `exit_code` is 1 for an invalid file, 2 for bad flags.
std::optional<agent::AgentConfig> merged_config(const std::string& config_path,
                                                const agent::Overrides& flags, int& exit_code) {
  tierwall::policy::Diagnostics diags;
  std::optional<agent::AgentConfig> config = agent::default_config();
  if (!config_path.empty()) {
    config = agent::load_config(config_path, diags);
    if (!config) {
      diags.print(std::cerr);
      std::cerr << "tierwalld: the configuration " << config_path << " is invalid\n";
      exit_code = 1;
      return std::nullopt;
    }
  }
  if (!agent::apply_overrides(*config, flags, diags)) {
    diags.print(std::cerr);
    exit_code = 2;
    return std::nullopt;
  }
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tierwalld — the tierwall node agent: enforces a segmentation policy in this node's\n"
      "kernel (nftables) or, with --dataplane dpdk, in its own DPDK forwarding thread\n"
      "between the ports of the config's dpdk section: container ports, and overlay\n"
      "uplinks that carry VXLAN-GBP to trusted peer nodes (a port's `overlay:` block:\n"
      "localVtep, vni, udpPort, peers [{vtep, mac}], macAgeingSeconds; docs/dpdk.md).\n"
      "Without --once or --flush it runs until SIGTERM/SIGINT, following its identity\n"
      "sources and policy files (SIGHUP reloads them); stopping leaves the nftables rules\n"
      "enforced (the DPDK dataplane stops forwarding with the agent). With --store it joins\n"
      "a cluster: the policy comes from etcd, this node's endpoints are published there and\n"
      "other nodes' endpoints enforced here. Exit codes: 0 success, 1 invalid policy or\n"
      "configuration, 2 usage error, 3 the kernel (or the DPDK EAL, ports or overlay\n"
      "uplinks) could not be reached or rejected the ruleset.",
      "tierwalld"};
  agent::OnceOptions options;
  agent::Overrides flags;
  std::string config_path;
  bool once = false;
  bool do_flush = false;
  bool no_bridge = false;
  std::string log_format = "text";
  app.add_option("--config", config_path, "agent configuration file (YAML); flags override it")
      ->check(CLI::ExistingFile);
  app.add_option("--policy", options.policy, "policy file or directory (repeatable)");
  app.add_option("--inventory", options.inventory, "inventory file (endpoints, node addresses)");
  app.add_option("--runtime-socket", flags.runtime_socket,
                 "Docker Engine API socket of the container runtime (Docker, podman service)");
  app.add_option("--container-cidr", options.container_cidrs,
                 "container network; its unknown addresses are quarantined (repeatable)");
  app.add_option("--api-socket", flags.api_socket,
                 "local API socket (tierctl status/endpoints/apply/reload); \"\" disables it");
  app.add_option("--metrics", flags.metrics, "metrics address, ADDR:PORT");
  app.add_option("--node-name", flags.node_name, "this node's name (default: the host name)");
  app.add_option("--flow-log", flags.flow_log,
                 "write the flow log (hash-chained JSON Lines, signed checkpoints) to DIR");
  app.add_option("--ipfix", flags.ipfix,
                 "also export the flow log's flows over IPFIX (UDP) to HOST:PORT");
  app.add_option("--flow-log-key", flags.flow_log_key,
                 "the flow log's Ed25519 signing key (created when missing; default " +
                     std::string(agent::kDefaultFlowLogKey) + ")");
  app.add_option("--dataplane", flags.dataplane,
                 "nft (the kernel's nftables, default) or dpdk (af_packet/NIC ports from the "
                 "config's dpdk section, bridged and policed by the agent's DPDK thread; a port "
                 "with an overlay: block is a VXLAN-GBP uplink to peer nodes)")
      ->check(CLI::IsMember({"nft", "dpdk"}));
  app.add_option("--store", flags.store,
                 "cluster mode: etcd client URLs (URL[,URL...]); the policy then comes from the "
                 "store (no --policy), and this node's endpoints are published there");
  app.add_option("--cluster", flags.cluster,
                 "cluster name in the store: keys under /tierwall/NAME/ (default 'default')");
  auto* log_group =
      app.add_option("--log-group", options.log_group, "NFLOG group for deny/audit/logged flows");
  auto* table = app.add_option("--table", options.table, "name of tierwall's inet table");
  app.add_flag("--once", once, "apply the policy, leave it enforced and exit");
  app.add_flag("--flush", do_flush, "remove everything tierwall installed (its table) and exit");
  app.add_flag("--no-bridge-netfilter", no_bridge,
               "do not enable br_netfilter for bridged container traffic");
  app.add_option("--log-format", log_format, "text or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}));
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
  flags.policy = options.policy;
  flags.inventory = options.inventory;
  flags.container_cidrs = options.container_cidrs;

  if ((once || do_flush) && flags.dataplane == "dpdk") {
    std::cerr << "tierwalld: --once and --flush apply to the nftables dataplane; the DPDK "
                 "dataplane runs inside the agent and stops with it\n";
    return 2;
  }
  if (do_flush) {
    std::string flush_table = options.table;
    if (!config_path.empty() && table->count() == 0) {
      tierwall::policy::Diagnostics diags;
      const auto file = agent::load_config(config_path, diags);
      if (!file) {
        diags.print(std::cerr);
        return 1;
      }
      flush_table = file->nft.table;
    }
    return agent::flush(flush_table, std::cout, std::cerr);
  }
  std::optional<agent::AgentConfig> config;
  if (!config_path.empty() || !once) {
    if (config_path.empty() && options.policy.empty() && !flags.store) {
      std::cerr << "tierwalld: --policy (or --store) is required\n";
      return 2;
    }
    int exit_code = 0;
    config = merged_config(config_path, flags, exit_code);
    if (!config) return exit_code;
    if (table->count() > 0) config->nft.table = options.table;
    if (log_group->count() > 0) config->nft.log_group = options.log_group;
  }
  if (once && config && config->cluster_mode()) {
    std::cerr
        << "tierwalld: --once applies local policy files; it does not follow a cluster store\n";
    return 2;
  }
  if (!config && options.policy.empty()) {
    std::cerr << "tierwalld: --policy is required\n";
    return 2;
  }
  if (once) {
    if (config && config->dataplane == "dpdk") {
      std::cerr << "tierwalld: --once applies to the nftables dataplane; the configuration "
                   "selects dpdk, which runs only inside the daemon\n";
      return 2;
    }
    if (config) {
      options.policy = config->policy;
      options.inventory = config->inventory;
      options.container_cidrs.clear();
      for (const auto& c : config->container_cidrs)
        options.container_cidrs.push_back(c.to_string());
      options.table = config->nft.table;
      options.log_group = config->nft.log_group;
    }
    return agent::apply_once(options, std::cout, std::cerr);
  }
  agent::DaemonOptions daemon;
  daemon.bridge_netfilter = !no_bridge;
  daemon.log_json = log_format == "json";
  daemon.flows_query = flows_query;
  return agent::run_daemon(*config, daemon, std::cerr);
}
