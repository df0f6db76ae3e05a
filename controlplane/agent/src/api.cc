#include "tierwall/agent/api.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <grp.h>
#include <pwd.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tierwall/policy/diagnostics_json.h"

namespace tierwall::agent {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::optional<unsigned long> number(const std::string& s) {
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<uid_t> resolve_user(const std::string& name, std::string* error) {
  if (auto n = number(name)) return static_cast<uid_t>(*n);
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &out) == 0 && out != nullptr) {
    return out->pw_uid;
  }
  if (error) *error = "unknown user '" + name + "'";
  return std::nullopt;
}

std::string user_name(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &out) == 0 && out != nullptr) {
    return out->pw_name;
  }
  return {};
}

bool role_at_least(Role have, Role need) {
  return static_cast<std::uint8_t>(have) >= static_cast<std::uint8_t>(need);
}

HttpResponse json_response(int status, const json& body) {
  return HttpResponse{status, "application/json", body.dump() + "\n"};
}

HttpResponse error_response(int status, const std::string& message) {
  return json_response(status, json{{"error", message}});
}

json status_object(const ReconcilerStatus& st) {
  json tiers = json::object();
  for (const auto& [tier, n] : st.tier_counts) tiers[tier] = n;
  json sources = json::object();
  for (std::size_t i = 0; i < kSourceCount; ++i) {
    const auto& s = st.sources[i];
    json j{{"connected", s.connected}, {"endpoints", s.endpoints}, {"snapshots", s.snapshots}};
    if (!s.reason.empty()) j["reason"] = s.reason;
    sources[std::string(to_string(static_cast<Source>(i)))] = std::move(j);
  }
  json conflicts = json::array();
  for (const auto& c : st.conflicts) {
    conflicts.push_back(
        {{"address", c.address.to_string()}, {"holder", c.holder}, {"claimant", c.claimant}});
  }
  json policy{{"name", st.policy_name},
              {"digest", st.policy_digest},
              {"generation", st.generation},
              {"appliedGeneration", st.applied_generation},
              {"rejected", st.rejected_policies}};
  if (!st.last_error.empty()) policy["lastError"] = st.last_error;
  json dataplane{
      {"ok", st.dataplane_ok},
      {"failures", st.dataplane_failures},
      {"applies", st.applies},
      {"updates", st.updates},
      {"lastApplyMs", std::chrono::duration<double, std::milli>(st.last_apply_latency).count()},
      {"lastUpdateMs", std::chrono::duration<double, std::milli>(st.last_update_latency).count()},
      {"driftRepairs", st.drift_repairs}};
  if (!st.dataplane_error.empty()) dataplane["error"] = st.dataplane_error;
  return json{{"policy", std::move(policy)},   {"endpoints", st.endpoints},
              {"tiers", std::move(tiers)},     {"dataplane", std::move(dataplane)},
              {"sources", std::move(sources)}, {"conflicts", std::move(conflicts)}};
}

bool is_yaml_name(const std::string& name) {
  auto ends = [&](std::string_view suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".yaml") || ends(".yml");
}

bool write_atomic(const std::string& path, const std::string& content, std::string* error) {
  const std::string tmp = path + ".tierwall-tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = "cannot write " + tmp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    *error = "cannot flush " + tmp + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot rename " + tmp + " to " + path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

QueryParams parse_query(std::string_view query) {
  auto decode = [](std::string_view in) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (in[i] == '+') {
        out += ' ';
      } else if (in[i] == '%' && i + 2 < in.size()) {
        unsigned v = 0;
        auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
        if (ec == std::errc() && p == in.data() + i + 3) {
          out += static_cast<char>(v);
          i += 2;
        } else {
          out += '%';
        }
      } else {
        out += in[i];
      }
    }
    return out;
  };
  QueryParams out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    out.emplace_back(decode(part.substr(0, eq)),
                     eq == std::string_view::npos ? std::string() : decode(part.substr(eq + 1)));
  }
  return out;
}

std::string_view to_string(Role role) {
  switch (role) {
    case Role::Admin:
      return "admin";
    case Role::Operator:
      return "operator";
    case Role::Auditor:
      return "auditor";
    case Role::None:
      break;
  }
  return "none";
}

Role RoleMap::role_of(const PeerCredentials& peer) const {
  if (peer.uid == 0) return Role::Admin;
  for (int r = 2; r >= 0; --r) {
    const auto& u = users[static_cast<std::size_t>(r)];
    const auto& g = groups[static_cast<std::size_t>(r)];
    const bool by_user = std::find(u.begin(), u.end(), peer.uid) != u.end();
    const bool by_group = std::find(g.begin(), g.end(), peer.gid) != g.end() ||
                          std::any_of(peer.groups.begin(), peer.groups.end(), [&](gid_t x) {
                            return std::find(g.begin(), g.end(), x) != g.end();
                          });
    if (by_user || by_group) return static_cast<Role>(r + 1);
  }
  return Role::None;
}

std::optional<gid_t> resolve_group(const std::string& name, std::string* error) {
  if (auto n = number(name)) return static_cast<gid_t>(*n);
  std::vector<char> buf(16384);
  group gr{};
  group* out = nullptr;
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &out) == 0 && out != nullptr) {
    return out->gr_gid;
  }
  if (error) *error = "unknown group '" + name + "'";
  return std::nullopt;
}

std::optional<RoleMap> resolve_roles(const AgentConfig::Api& api, std::string* error) {
  RoleMap map;
  for (std::size_t i = 0; i < api.roles.size(); ++i) {
    for (const auto& u : api.roles[i].users) {
      auto uid = resolve_user(u, error);
      if (!uid) return std::nullopt;
      map.users[i].push_back(*uid);
    }
    for (const auto& g : api.roles[i].groups) {
      auto gid = resolve_group(g, error);
      if (!gid) return std::nullopt;
      map.groups[i].push_back(*gid);
    }
  }
  return map;
}

std::string Caller::describe() const {
  std::string s = "uid " + std::to_string(peer.uid);
  if (auto name = user_name(peer.uid); !name.empty()) s += " (" + name + ")";
  s += " gid " + std::to_string(peer.gid) + " pid " + std::to_string(peer.pid);
  return s;
}

std::string diagnostics_json_array(const policy::Diagnostics& diags) {
  return policy::diagnostics_json(diags).dump();
}

std::string status_json(const AgentState& state) {
  json j = status_object(state.reconciler);
  j["node"] = state.node;
  j["table"] = state.table;
  j["dataplane"]["kind"] = state.dataplane.empty() ? "nft" : state.dataplane;
  j["version"] = state.version;
  j["ready"] = state.not_ready.empty();
  if (!state.not_ready.empty()) j["notReady"] = state.not_ready;
  j["holding"] = state.holding;
  j["suspended"] = state.suspended;
  if (state.suspended) j["suspendedBy"] = state.suspended_by;
  j["policy"]["paths"] = state.policy_paths;
  j["uptimeSeconds"] = state.uptime_seconds;
  for (std::size_t i = 0; i < kSourceCount; ++i) {
    j["sources"][std::string(to_string(static_cast<Source>(i)))]["configured"] =
        state.sources_configured[i];
  }
  if (state.cluster) {
    const auto& c = *state.cluster;
    const auto& cs = c.status;
    json cj{{"name", c.name},
            {"store", c.store},
            {"connected", cs.connected},
            {"lastError", cs.last_error},
            {"revision", cs.revision},
            {"policy",
             {{"name", cs.policy_name},
              {"digest", cs.policy_digest},
              {"generation", cs.policy_generation},
              {"revision", cs.policy_revision}}},
            {"lease", cs.lease},
            {"publishedEndpoints", cs.published_endpoints},
            {"remoteEndpoints",
             state.reconciler.sources[static_cast<std::size_t>(Source::Cluster)].endpoints},
            {"watchRestarts", cs.watch_restarts},
            {"relists", cs.relists},
            {"leaseGrants", cs.lease_grants},
            {"leaseRenewals", cs.lease_renewals},
            {"errors", cs.errors},
            {"unresponsiveWatches", cs.unresponsive},
            {"watching", {{"policy", cs.policy_watch}, {"endpoints", cs.endpoints_watch}}}};
    if (!c.rejected.empty()) cj["policyRejected"] = c.rejected;
    j["cluster"] = std::move(cj);
  }
  return j.dump();
}

std::string endpoints_json(const std::vector<EndpointView>& endpoints) {
  json list = json::array();
  for (const auto& e : endpoints) {
    json addrs = json::array();
    for (const auto& a : e.addresses) addrs.push_back(a.to_string());
    json j{{"id", e.id},
           {"source", std::string(to_string(e.source))},
           {"name", e.name},
           {"tier", e.tier},
           {"addresses", std::move(addrs)}};
    if (!e.runtime_id.empty()) j["runtimeId"] = e.runtime_id;
    list.push_back(std::move(j));
  }
  return json{{"endpoints", std::move(list)}}.dump();
}

ApiHandler::ApiHandler(AgentControl& control, RoleMap roles, RefusalLog refused)
    : control_(control), roles_(std::move(roles)), refused_(std::move(refused)) {}

HttpResponse ApiHandler::handle(const HttpRequest& request) {
  if (!request.peer) return error_response(403, "the caller's credentials are unknown");
  Caller caller{*request.peer, roles_.role_of(*request.peer)};

  struct Route {
    std::string_view method;
    std::string_view path;
    Role required;
    std::string_view action;
  };
  static constexpr std::array<Route, 7> kRoutes = {{
      {"GET", "/v1/whoami", Role::Auditor, "whoami"},
      {"GET", "/v1/status", Role::Auditor, "status"},
      {"GET", "/v1/flows", Role::Auditor, "flows"},
      {"GET", "/v1/endpoints", Role::Operator, "endpoints"},
      {"POST", "/v1/reload", Role::Operator, "reload"},
      {"POST", "/v1/policy", Role::Admin, "apply"},
      {"POST", "/v1/flush", Role::Admin, "flush"},
  }};
  const Route* route = nullptr;
  bool path_known = false;
  for (const auto& r : kRoutes) {
    if (r.path != request.path) continue;
    path_known = true;
    if (r.method == request.method || (r.method == "GET" && request.method == "HEAD")) route = &r;
  }
  if (!path_known) return error_response(404, "no such endpoint: " + request.path);
  if (route == nullptr) return error_response(405, "method not allowed: " + request.method);

  if (caller.role == Role::None && route->action == "whoami") {
    // Anyone who can open the socket may learn that they have no role.
  } else if (!role_at_least(caller.role, route->required)) {
    if (refused_) refused_(caller, route->action, route->required);
    return json_response(
        403, json{{"error", std::string(route->action) + " needs the " +
                                std::string(to_string(route->required)) + " role; " +
                                caller.describe() + " has " +
                                (caller.role == Role::None
                                     ? std::string("no role")
                                     : "the " + std::string(to_string(caller.role)) + " role")},
                  {"role", std::string(to_string(caller.role))},
                  {"required", std::string(to_string(route->required))}});
  }

  if (route->action == "whoami") {
    return json_response(200, json{{"uid", caller.peer.uid},
                                   {"gid", caller.peer.gid},
                                   {"pid", caller.peer.pid},
                                   {"user", user_name(caller.peer.uid)},
                                   {"role", std::string(to_string(caller.role))}});
  }
  if (route->action == "status") {
    return HttpResponse{200, "application/json", status_json(control_.state()) + "\n"};
  }
  if (route->action == "flows") return control_.flows(caller, parse_query(request.query));
  if (route->action == "endpoints") {
    return HttpResponse{200, "application/json", endpoints_json(control_.endpoints()) + "\n"};
  }
  if (route->action == "reload") {
    const auto r = control_.reload(caller);
    json policy{{"accepted", r.policy.accepted},
                {"unchanged", r.policy.unchanged},
                {"diagnostics", policy::diagnostics_json(r.policy.diagnostics)}};
    json body{{"policy", std::move(policy)}, {"status", status_object(r.after)}};
    if (r.inventory_configured) {
      body["inventory"] = {{"accepted", r.inventory_ok},
                           {"diagnostics", policy::diagnostics_json(r.inventory_diagnostics)}};
    }
    const bool ok = r.policy.accepted && r.inventory_ok;
    return json_response(ok ? 200 : 422, body);
  }
  if (route->action == "apply") {
    json req;
    try {
      req = json::parse(request.body);
    } catch (const json::exception& e) {
      return error_response(400, std::string("the body is not JSON: ") + e.what());
    }
    std::vector<policy::SourceFile> files;
    if (!req.is_object() || !req.contains("files") || !req["files"].is_array() ||
        req["files"].empty()) {
      return error_response(400, "expected {\"files\": [{\"name\": ..., \"content\": ...}, ...]}");
    }
    for (const auto& f : req["files"]) {
      if (!f.is_object() || !f.contains("name") || !f["name"].is_string() ||
          !f.contains("content") || !f["content"].is_string()) {
        return error_response(400, "each file needs a string \"name\" and \"content\"");
      }
      files.push_back(
          policy::SourceFile{f["name"].get<std::string>(), f["content"].get<std::string>()});
    }
    const auto r = control_.apply(caller, std::move(files));
    json body{{"accepted", r.status == 200},
              {"unchanged", r.unchanged},
              {"diagnostics", policy::diagnostics_json(r.diagnostics)},
              {"written", r.written},
              {"status", status_object(r.after)}};
    if (!r.error.empty()) body["error"] = r.error;
    return json_response(r.status, body);
  }
  if (route->action == "flush") {
    std::string error;
    if (!control_.flush(caller, &error)) return error_response(500, error);
    return json_response(200, json{{"flushed", true}});
  }
  return error_response(404, "no such endpoint: " + request.path);
}

std::optional<PolicyInstall> plan_policy_install(const std::vector<std::string>& policy_paths,
                                                 const std::vector<policy::SourceFile>& submitted,
                                                 std::string* error) {
  auto fail = [&](std::string why) -> std::optional<PolicyInstall> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (policy_paths.size() != 1) {
    return fail("the agent reads its policy from " + std::to_string(policy_paths.size()) +
                " paths; tierctl apply needs exactly one policy file or directory in the "
                "agent's configuration");
  }
  if (submitted.empty()) return fail("no policy files submitted");
  const std::string& target = policy_paths.front();
  PolicyInstall install;
  std::error_code ec;
  if (fs::is_directory(target, ec)) {
    std::set<std::string> names;
    for (const auto& f : submitted) {
      const std::string base = fs::path(f.path).filename().string();
      if (base.empty() || base.front() == '.' || !is_yaml_name(base)) {
        return fail("'" + f.path + "': policy file names must end in .yaml or .yml");
      }
      if (!names.insert(base).second) {
        return fail("two submitted files are named '" + base +
                    "'; the agent's policy directory holds them by base name");
      }
      std::string dir = target;
      while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
      install.files.push_back(policy::SourceFile{dir + "/" + base, f.content});
    }
    install.directory = target;
    return install;
  }
  if (fs::exists(target, ec) && !fs::is_regular_file(target, ec)) {
    return fail("the agent's policy path " + target + " is neither a file nor a directory");
  }
  std::string joined;
  if (submitted.size() == 1) {
    joined = submitted.front().content;
  } else {
    for (const auto& f : submitted) {
      if (!joined.empty()) joined += "---\n";
      joined += "# " + fs::path(f.path).filename().string() + "\n" + f.content;
      if (!joined.empty() && joined.back() != '\n') joined += '\n';
    }
  }
  install.files.push_back(policy::SourceFile{target, std::move(joined)});
  return install;
}

bool write_policy_install(const PolicyInstall& install, std::vector<std::string>* written,
                          std::string* error) {
  std::set<std::string> keep;
  std::set<std::string> dirs;
  for (const auto& f : install.files) {
    if (!write_atomic(f.path, f.content, error)) return false;
    keep.insert(fs::path(f.path).filename().string());
    dirs.insert(fs::path(f.path).parent_path().string());
    if (written) written->push_back(f.path);
  }
  if (install.directory) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(*install.directory, ec)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || !is_yaml_name(name) || keep.count(name) > 0) continue;
      if (!fs::remove(entry.path(), ec) || ec) {
        *error = "cannot remove " + entry.path().string() + ": " + ec.message();
        return false;
      }
    }
    if (ec) {
      *error = "cannot list " + *install.directory + ": " + ec.message();
      return false;
    }
  }
  for (const auto& d : dirs) sync_directory(d.empty() ? "." : d);
  return true;
}

}  // namespace tierwall::agent
