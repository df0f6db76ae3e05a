// tierctl commands that talk to a running agent through its local API
// (HTTP/JSON on a unix socket, see tierwall/agent/api.h).
//
// Exit codes as every tierctl command: 0 success; 1 the agent refused
// (invalid policy, missing role, cannot install); 2 usage; 3 the agent
// could not be reached (no socket, permission to open it denied, no
// answer), or it accepted a policy the kernel did not take.
// Results on `out` (one JSON document with -o json), diagnostics on `err`.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/cli/flow_commands.h"

namespace tierwall::cli {

inline constexpr std::string_view kDefaultAgentSocket = "/run/tierwall/api.sock";

struct AgentOptions {
  std::string socket{kDefaultAgentSocket};  // --socket, or $TIERWALL_API_SOCKET
  std::string output = "text";              // text | json
  std::chrono::milliseconds timeout{30'000};
};

int agent_status(const AgentOptions& options, std::ostream& out, std::ostream& err);
int agent_endpoints(const AgentOptions& options, const std::string& tier, std::ostream& out,
                    std::ostream& err);
// Reads PATHs (files, directories of *.yaml) and submits them to the agent.
int agent_apply(const AgentOptions& options, const std::vector<std::string>& paths,
                std::ostream& out, std::ostream& err);
int agent_reload(const AgentOptions& options, std::ostream& out, std::ostream& err);
int agent_flush(const AgentOptions& options, std::ostream& out, std::ostream& err);
// tierctl flows without --log: the agent filters its own flow log
// (GET /v1/flows; role auditor). --follow is not served this way.
int agent_flows(const AgentOptions& options, const FlowsOptions& flows, std::ostream& out,
                std::ostream& err);

}  // namespace tierwall::cli
