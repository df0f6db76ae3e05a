// The long-running node agent: keeps this node's dataplane (the kernel's
// nftables, or the agent's own DPDK thread) enforcing the policy for the
// containers its identity sources report.
//
// One control thread (the caller of run_daemon) owns the NftBackend and the
// Reconciler and is the only one to call them. It waits (poll) on:
//   - a signalfd: SIGHUP reloads policy and inventory, SIGTERM/SIGINT stop
//     the agent cleanly and LEAVE the rules enforced (never a flush);
//   - an inotify fd: the policy paths and the inventory file are watched
//     through their directories (editors replace files by rename), and a
//     change is reloaded once the directory has been quiet for `settle`;
//   - an eventfd: the RuntimeSource thread (when runtime.socket is set)
//     posts its callbacks to a queue that only the control thread drains;
//   - a timer: Reconciler::tick() every `tick_interval` retries a failed
//     dataplane apply.
//   - a netlink socket on NFNLGRP_NFTABLES (dataplane::nft::ChangeMonitor):
//     a change to tierwall's table committed by anyone but this agent's own
//     NftSocket (flush, delete, an inserted rule) is drift, repaired by a
//     full apply (Reconciler::repair_drift) as soon as the foreign commit's
//     NEWGEN arrived, logged ("drift: ...") and counted. Lost notifications
//     (ENOBUFS) count as drift, re-applied at most once per 2 s.
// An invalid policy is logged with its diagnostics and the last valid one
// stays enforced; an invalid inventory keeps its last valid endpoints.
//
// With dataplane: dpdk (config or --dataplane), the control thread owns a
// DpdkDataplane instead (docs/dpdk.md, "In the agent"): no nftables
// backend, drift monitor, NFLOG, conntrack or br_netfilter; the policy is
// applied at once (nothing to adopt); a timer drains the forwarding
// thread's event ring every 50 ms into the same flow-log pipeline (records
// say "dataplane":"dpdk"; what the lcore could not report becomes exact
// loss records); /metrics adds tierwall_dpdk_*. Stopping the agent stops the
// forwarding thread (after draining its last events): DPDK ports do not
// forward without the agent.
//
// Restart without disruption: when tierwall's table already exists at start
// (a previous agent left it enforced), nothing is applied until every
// configured identity source has delivered its first snapshot, or
// `adopt_timeout` passed, so a restart never replaces the working ruleset
// with one where running containers are unknown. The apply then replaces
// the table in one atomic batch; established connections the policy allows
// keep their conntrack entries. Without an existing table the policy is
// applied at once: containers not yet known are quarantined by the
// dataplane (their addresses are in the container CIDRs).
//
// Local API (api.h): served on the unix socket api.socket by the same poll
// loop; apply and reload run on the control thread like every other change.
// An admin's flush removes the table and closes the dataplane Gate: the
// reconciler keeps following its sources, and the next accepted apply,
// reload or SIGHUP re-applies everything at once.
//
// Logs: structured, through spdlog on `log`: one line per event, text
// ("TIME tierwalld LEVEL MESSAGE key=value ...") or JSON objects
// ({"ts","level","msg",key: value...}) with DaemonOptions::log_json.
// Policy changes carry event=policy-applied, by=WHO, generation, digest;
// API refusals event=api-refused with the caller's uid, gid, pid and role.
#pragma once

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "tierwall/agent/config.h"

namespace tierwall::agent {

struct DaemonOptions {
  // Enable br_netfilter so containers on one bridge are policed.
  bool bridge_netfilter = true;
  std::chrono::milliseconds adopt_timeout{10'000};
  bool log_json = false;  // JSON lines instead of text
  // Serves GET /v1/flows: filters the flow log in `dir` by `params`, writes
  // the answer on `out` and problems on `err`; returns tierctl's exit codes
  // (0 done, 1 unreadable log, 2 bad parameters). Unset: 501.
  std::function<int(const std::string& dir,
                    const std::vector<std::pair<std::string, std::string>>& params,
                    std::ostream& out, std::ostream& err)>
      flows_query;
  std::chrono::milliseconds tick_interval{1'000};
  // Quiet time after a file change before it is reloaded.
  std::chrono::milliseconds settle{150};
};

// Runs until SIGTERM or SIGINT. Blocks SIGTERM, SIGINT and SIGHUP in the
// calling thread (threads it starts inherit that) and restores the mask on
// return. Returns 0 after a clean stop, 3 when the kernel could not be
// reached at start.
int run_daemon(const AgentConfig& config, const DaemonOptions& options, std::ostream& log);

}  // namespace tierwall::agent
