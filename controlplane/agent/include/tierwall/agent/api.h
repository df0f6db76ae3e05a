// The agent's local API: HTTP/JSON over a unix socket (HttpServer), with a
// role for every caller taken from the kernel's view of the peer
// (SO_PEERCRED uid/gid + SO_PEERGROUPS), never from anything it sends.
//
//   GET  /v1/status     auditor+   the agent's state (policy, generation,
//                                  endpoints per tier, sources, dataplane)
//   GET  /v1/endpoints  operator+  every endpoint with its tier and addresses
//   POST /v1/reload     operator+  re-read the policy files and the inventory
//   POST /v1/policy     admin      validate the submitted policy files, then
//                                  install them as the agent's policy
//   POST /v1/flush      admin      remove tierwall's table and stop enforcing
//                                  until the next accepted apply or reload
//   GET  /v1/flows      auditor+   the flow log, filtered (query parameters as
//                                  tierctl flows' flags: since, until, verdict,
//                                  tier, src-tier, dst-tier, endpoint, rule,
//                                  address, port, type, limit (default 1000,
//                                  at most 100000), output=json|table)
//   GET  /v1/whoami     any role   the caller's uid, gid and role
//
// Roles are ordered: admin > operator > auditor; a role may do what the
// roles below it may. Callers without a role are refused every request.
// Errors are JSON {"error": MESSAGE, ...} with 400 (bad request), 403
// (role), 404, 405, 409 (the agent cannot do it in its configuration),
// 422 (invalid policy: "diagnostics"), 500.
//
// ApiHandler is the routing, role check and JSON mapping; the daemon
// implements AgentControl. Thread contract: the daemon's control thread
// calls everything.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include "tierwall/agent/config.h"
#include "tierwall/agent/http_server.h"
#include "tierwall/agent/reconciler.h"
#include "tierwall/cluster/cluster_source.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/loader.h"

namespace tierwall::agent {

enum class Role : std::uint8_t { None = 0, Auditor = 1, Operator = 2, Admin = 3 };
std::string_view to_string(Role role);

// Resolved role membership (numeric ids).
struct RoleMap {
  // index: static_cast<size_t>(Role) - 1 (Auditor, Operator, Admin)
  std::array<std::vector<uid_t>, 3> users;
  std::array<std::vector<gid_t>, 3> groups;

  // The highest role any of the caller's uid, gid or groups has.
  [[nodiscard]] Role role_of(const PeerCredentials& peer) const;
};

// Resolves AgentConfig::Api::roles: user and group names through the
// system databases (getpwnam/getgrnam), numbers as given. nullopt with
// `error` naming the unknown name.
std::optional<RoleMap> resolve_roles(const AgentConfig::Api& api, std::string* error);
// The group the socket is given (api.group), resolved the same way.
std::optional<gid_t> resolve_group(const std::string& name, std::string* error);

struct Caller {
  PeerCredentials peer;
  Role role = Role::None;
  // "uid 1000 (alice) gid 1000 pid 4242": for logs.
  [[nodiscard]] std::string describe() const;
};

struct AgentState {
  std::string node;
  std::string table;      // nft: tierwall's table; empty with the DPDK dataplane
  std::string dataplane;  // "nft" | "dpdk"
  std::string version;
  bool holding = false;    // adopting an existing table, waiting for the sources
  bool suspended = false;  // flushed through the API: not enforcing
  std::string suspended_by;
  std::string not_ready;  // empty when ready (as /readyz)
  std::vector<std::string> policy_paths;
  double uptime_seconds = 0;
  std::array<bool, kSourceCount> sources_configured{};  // index: Source
  ReconcilerStatus reconciler;
  // Cluster mode: the store's state; nullopt when not in cluster mode.
  struct Cluster {
    std::string name;
    std::vector<std::string> store;
    cluster::ClusterStatus status;
    std::string rejected;  // why the store's latest policy was not applied, if so
  };
  std::optional<Cluster> cluster;
};

struct ReloadResult {
  PolicyResult policy;
  bool inventory_configured = false;
  bool inventory_ok = true;
  policy::Diagnostics inventory_diagnostics;
  ReconcilerStatus after;
};

struct ApplyResult {
  // 200 accepted (or unchanged), 422 invalid (diagnostics), 409 the agent's
  // policy location cannot take an apply, 500 the files could not be written.
  int status = 200;
  std::string error;
  policy::Diagnostics diagnostics;
  bool unchanged = false;
  std::vector<std::string> written;  // files written on the agent's side
  ReconcilerStatus after;
};

// Query parameters in order, percent-decoded ("a=1&b=x%20y").
using QueryParams = std::vector<std::pair<std::string, std::string>>;
QueryParams parse_query(std::string_view query);

class AgentControl {
 public:
  virtual ~AgentControl() = default;
  virtual AgentState state() = 0;
  virtual std::vector<EndpointView> endpoints() = 0;
  virtual ReloadResult reload(const Caller& caller) = 0;
  virtual ApplyResult apply(const Caller& caller, std::vector<policy::SourceFile> files) = 0;
  // false with `error` when the table could not be removed.
  virtual bool flush(const Caller& caller, std::string* error) = 0;
  // The flow log, filtered: a whole response (200 with the records, 400 for
  // bad parameters, 409 when the agent writes no flow log).
  virtual HttpResponse flows(const Caller& caller, const QueryParams& params) = 0;
};

class ApiHandler {
 public:
  // Refusals are reported here (the daemon logs them with the caller).
  using RefusalLog = std::function<void(const Caller&, std::string_view action, Role required)>;

  ApiHandler(AgentControl& control, RoleMap roles, RefusalLog refused);

  HttpResponse handle(const HttpRequest& request);

  // Largest accepted request body (a policy upload).
  static constexpr std::size_t kMaxBody = 16 * 1024 * 1024;

 private:
  AgentControl& control_;
  RoleMap roles_;
  RefusalLog refused_;
};

// JSON shapes of the API (also used by tierctl's tests).
std::string status_json(const AgentState& state);
std::string endpoints_json(const std::vector<EndpointView>& endpoints);
std::string diagnostics_json_array(const policy::Diagnostics& diags);

// Where an apply puts the submitted files, given the agent's policy paths:
//   - one path that is a directory: each file under its base name in it,
//     and the other *.yaml/*.yml files of the directory removed;
//   - one path that is a file (or does not exist yet): the files joined
//     into it as one multi-document YAML stream;
//   - several paths: refused (409), the agent cannot tell where they go.
// Base names must be unique and end in .yaml or .yml.
struct PolicyInstall {
  std::vector<policy::SourceFile> files;  // path = target on the agent
  std::optional<std::string> directory;   // prune other YAML files there
};
std::optional<PolicyInstall> plan_policy_install(const std::vector<std::string>& policy_paths,
                                                 const std::vector<policy::SourceFile>& submitted,
                                                 std::string* error);
// Writes each file atomically (temporary + fsync + rename), then prunes.
// Returns false with `error` at the first failure.
bool write_policy_install(const PolicyInstall& install, std::vector<std::string>* written,
                          std::string* error);

}  // namespace tierwall::agent
