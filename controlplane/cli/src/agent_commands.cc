#include "tierwall/cli/agent_commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tierwall/cli/commands.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/loader.h"
#include "tierwall/runtime/http.h"

namespace tierwall::cli {

namespace {

using nlohmann::json;

struct Reply {
  int status = 0;
  json body;
};

// One request to the agent. nullopt after printing why (exit 3).
std::optional<Reply> call(const AgentOptions& options, std::string_view method,
                          std::string_view target, std::string_view body, std::ostream& err) {
  runtime::UnixHttpClient::Options o;
  o.socket_path = options.socket;
  o.request_timeout = options.timeout;
  runtime::UnixHttpClient client(o);
  auto r = client.request(method, target, body);
  if (!r) {
    err << "tierctl: cannot reach the agent at " << options.socket << ": " << r.error().message
        << "\n";
    if (r.error().kind == runtime::Error::Kind::Connect) {
      err << "tierctl: is tierwalld running, and may you open its socket? (--socket PATH or "
             "TIERWALL_API_SOCKET)\n";
    }
    return std::nullopt;
  }
  Reply reply;
  reply.status = r->status;
  reply.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (reply.body.is_discarded()) {
    err << "tierctl: the agent answered " << r->status << " with a body that is not JSON\n";
    return std::nullopt;
  }
  return reply;
}

std::string str(const json& j, const char* key, std::string fallback = {}) {
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return fallback;
}

// The agent's error for a refused request (403, 404, 409, 500 ...), exit 1.
int refused(const Reply& reply, std::ostream& err) {
  err << "tierctl: the agent refused (" << reply.status << "): " << str(reply.body, "error", "?")
      << "\n";
  return kExitInvalid;
}

void print_diagnostics(const json& list, std::ostream& err) {
  if (!list.is_array()) return;
  for (const auto& d : list) {
    err << str(d, "file") << ":" << d.value("line", 0) << ":" << d.value("column", 0) << ": "
        << str(d, "severity", "error") << ": " << str(d, "message");
    if (const auto code = str(d, "code"); !code.empty()) err << " [" << code << "]";
    err << "\n";
  }
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(seconds);
  std::ostringstream o;
  if (s >= 86400) o << s / 86400 << "d";
  if (s >= 3600) o << (s % 86400) / 3600 << "h";
  if (s >= 60) o << (s % 3600) / 60 << "m";
  o << s % 60 << "s";
  return o.str();
}

std::string ms_text(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms", ms);
  return buf;
}

void print_status(const json& st, std::ostream& out) {
  const auto& policy = st.value("policy", json::object());
  const auto& dp = st.value("dataplane", json::object());
  const std::string kind = dp.contains("kind") ? str(dp, "kind") : "nft";
  const std::string where = kind == "dpdk" ? "DPDK dataplane" : "table inet " + str(st, "table");
  out << "node        " << str(st, "node") << " (" << where << ", up "
      << duration_text(st.value("uptimeSeconds", 0.0)) << ", tierwalld " << str(st, "version")
      << ")\n";
  out << "ready       " << (st.value("ready", false) ? "yes" : "NO: " + str(st, "notReady"))
      << "\n";
  if (st.value("suspended", false)) {
    out << "ENFORCEMENT FLUSHED by " << str(st, "suspendedBy")
        << "; `tierctl reload` or `tierctl apply` restores it\n";
  }
  const auto gen = policy.value("generation", 0ULL);
  out << "policy      ";
  if (gen == 0) {
    out << "none applied";
  } else {
    out << str(policy, "name") << ", generation " << gen << " (applied "
        << policy.value("appliedGeneration", 0ULL) << "), digest "
        << str(policy, "digest").substr(0, 12);
  }
  out << "\n";
  if (st.contains("cluster") && st["cluster"].is_object()) {
    out << "            from the store of cluster " << str(st["cluster"], "name") << "\n";
  } else if (policy.contains("paths") && !policy["paths"].empty()) {
    out << "            from";
    for (const auto& p : policy["paths"]) out << " " << p.get<std::string>();
    out << "\n";
  }
  if (policy.value("rejected", 0ULL) > 0) {
    out << "            " << policy.value("rejected", 0ULL)
        << " rejected change(s); last: " << str(policy, "lastError") << "\n";
  }
  out << "endpoints   " << st.value("endpoints", 0ULL);
  if (st.contains("tiers") && st["tiers"].is_object() && !st["tiers"].empty()) {
    out << ":";
    for (const auto& [tier, n] : st["tiers"].items()) out << " " << tier << "=" << n;
  }
  out << "\n";
  out << "dataplane   " << kind << ", "
      << (dp.value("ok", false) ? "ok" : "ERROR: " + str(dp, "error")) << "; "
      << dp.value("applies", 0ULL) << " applies (last " << ms_text(dp.value("lastApplyMs", 0.0))
      << "), " << dp.value("updates", 0ULL) << " updates (last "
      << ms_text(dp.value("lastUpdateMs", 0.0)) << "), " << dp.value("driftRepairs", 0ULL)
      << " drift repairs\n";
  out << "sources    ";
  bool any = false;
  if (st.contains("sources") && st["sources"].is_object()) {
    for (const auto& [name, s] : st["sources"].items()) {
      if (!s.value("configured", false)) continue;
      any = true;
      out << " " << name << ": "
          << (s.value("connected", false) ? "connected" : "DISCONNECTED (" + str(s, "reason") + ")")
          << ", " << s.value("endpoints", 0ULL) << " endpoints;";
    }
  }
  if (!any) out << " none configured";
  out << "\n";
  if (st.contains("cluster") && st["cluster"].is_object()) {
    const auto& c = st["cluster"];
    const auto& cp = c.value("policy", json::object());
    out << "cluster     " << str(c, "name") << ": store "
        << (c.value("connected", false) ? "connected"
                                        : "DISCONNECTED, enforcing the last known state")
        << ", revision " << c.value("revision", 0LL) << ", " << c.value("remoteEndpoints", 0ULL)
        << " remote endpoints, " << c.value("publishedEndpoints", 0ULL) << " published\n";
    if (!str(cp, "digest").empty()) {
      out << "            store policy " << str(cp, "name") << ", generation "
          << cp.value("generation", 0ULL) << ", digest " << str(cp, "digest").substr(0, 12) << "\n";
    }
    if (c.contains("policyRejected")) {
      out << "            store policy REJECTED: " << str(c, "policyRejected") << "\n";
    }
    if (!str(c, "lastError").empty())
      out << "            last error: " << str(c, "lastError") << "\n";
  }
  if (st.contains("conflicts") && st["conflicts"].is_array()) {
    for (const auto& c : st["conflicts"]) {
      out << "conflict    " << str(c, "address") << " claimed by " << str(c, "claimant")
          << " is held by " << str(c, "holder") << "\n";
    }
  }
}

std::string output_json(const json& j) { return j.dump(2) + "\n"; }

}  // namespace

int agent_status(const AgentOptions& options, std::ostream& out, std::ostream& err) {
  auto reply = call(options, "GET", "/v1/status", {}, err);
  if (!reply) return kExitUnreachable;
  if (reply->status != 200) return refused(*reply, err);
  if (options.output == "json") {
    out << output_json(reply->body);
  } else {
    print_status(reply->body, out);
  }
  return kExitOk;
}

int agent_endpoints(const AgentOptions& options, const std::string& tier, std::ostream& out,
                    std::ostream& err) {
  auto reply = call(options, "GET", "/v1/endpoints", {}, err);
  if (!reply) return kExitUnreachable;
  if (reply->status != 200) return refused(*reply, err);
  json list = json::array();
  for (const auto& e : reply->body.value("endpoints", json::array())) {
    if (tier.empty() || str(e, "tier") == tier) list.push_back(e);
  }
  if (options.output == "json") {
    out << output_json(json{{"endpoints", list}});
    return kExitOk;
  }
  std::vector<const json*> rows;
  for (const auto& e : list) rows.push_back(&e);
  std::sort(rows.begin(), rows.end(), [](const json* a, const json* b) {
    return std::make_pair(str(*a, "tier"), str(*a, "name")) <
           std::make_pair(str(*b, "tier"), str(*b, "name"));
  });
  std::size_t wname = 4, wtier = 4;
  for (const auto* e : rows) {
    wname = std::max(wname, str(*e, "name").size());
    wtier = std::max(wtier, str(*e, "tier").size());
  }
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(w, s.size()), ' ');
    return s;
  };
  out << pad("NAME", wname) << "  " << pad("TIER", wtier) << "  " << pad("SOURCE", 9)
      << "  ADDRESSES\n";
  for (const auto* e : rows) {
    std::string addrs;
    for (const auto& a : e->value("addresses", json::array())) {
      addrs += (addrs.empty() ? "" : " ") + a.get<std::string>();
    }
    out << pad(str(*e, "name"), wname) << "  " << pad(str(*e, "tier"), wtier) << "  "
        << pad(str(*e, "source"), 9) << "  " << addrs << "\n";
  }
  out << rows.size() << " endpoint(s)\n";
  return kExitOk;
}

int agent_apply(const AgentOptions& options, const std::vector<std::string>& paths,
                std::ostream& out, std::ostream& err) {
  policy::Diagnostics read_errors;
  json files = json::array();
  for (const auto& path : policy::expand_paths(paths, read_errors)) {
    std::string content;
    if (policy::read_file(path, content, read_errors)) {
      files.push_back(json{{"name", path}, {"content", std::move(content)}});
    }
  }
  if (read_errors.has_errors() || files.empty()) {
    read_errors.print(err);
    if (files.empty()) err << "tierctl: no policy files to apply\n";
    return kExitInvalid;
  }
  auto reply = call(options, "POST", "/v1/policy", json{{"files", files}}.dump(), err);
  if (!reply) return kExitUnreachable;
  const json& b = reply->body;
  if (options.output == "json") out << output_json(b);
  if (reply->status == 422) {
    print_diagnostics(b.value("diagnostics", json::array()), err);
    err << "tierctl: " << str(b, "error", "the policy is invalid") << "\n";
    return kExitInvalid;
  }
  if (reply->status != 200) {
    print_diagnostics(b.value("diagnostics", json::array()), err);
    return refused(*reply, err);
  }
  print_diagnostics(b.value("diagnostics", json::array()), err);  // warnings
  const auto& st = b.value("status", json::object());
  const auto& policy = st.value("policy", json::object());
  const auto& dp = st.value("dataplane", json::object());
  if (options.output != "json") {
    if (b.value("unchanged", false)) {
      out << "policy " << str(policy, "name") << " unchanged (digest "
          << str(policy, "digest").substr(0, 12) << ", generation "
          << policy.value("generation", 0ULL) << ")\n";
    } else {
      out << "policy " << str(policy, "name") << " accepted: generation "
          << policy.value("generation", 0ULL) << ", digest " << str(policy, "digest").substr(0, 12)
          << ", " << st.value("endpoints", 0ULL) << " endpoints\n";
    }
    for (const auto& w : b.value("written", json::array())) {
      out << "  written on the agent: " << w.get<std::string>() << "\n";
    }
  }
  if (!dp.value("ok", true)) {
    err << "tierctl: the agent accepted the policy but the kernel did not take it yet: "
        << str(dp, "error") << " (retried every second)\n";
    return kExitUnreachable;
  }
  return kExitOk;
}

int agent_reload(const AgentOptions& options, std::ostream& out, std::ostream& err) {
  auto reply = call(options, "POST", "/v1/reload", {}, err);
  if (!reply) return kExitUnreachable;
  const json& b = reply->body;
  if (reply->status != 200 && reply->status != 422) return refused(*reply, err);
  if (options.output == "json") out << output_json(b);
  const auto& p = b.value("policy", json::object());
  print_diagnostics(p.value("diagnostics", json::array()), err);
  if (b.contains("inventory")) {
    print_diagnostics(b["inventory"].value("diagnostics", json::array()), err);
  }
  const auto& st = b.value("status", json::object());
  const auto& policy = st.value("policy", json::object());
  if (options.output != "json") {
    if (!p.value("accepted", false)) {
      out << "policy rejected; generation " << policy.value("generation", 0ULL)
          << " stays enforced\n";
    } else {
      out << "policy " << str(policy, "name")
          << (p.value("unchanged", false) ? " unchanged" : " reloaded") << ": generation "
          << policy.value("generation", 0ULL) << ", digest " << str(policy, "digest").substr(0, 12)
          << "\n";
    }
    if (b.contains("inventory")) {
      out << "inventory " << (b["inventory"].value("accepted", false) ? "reloaded" : "rejected")
          << "\n";
    }
  }
  return reply->status == 200 ? kExitOk : kExitInvalid;
}

int agent_flush(const AgentOptions& options, std::ostream& out, std::ostream& err) {
  auto reply = call(options, "POST", "/v1/flush", {}, err);
  if (!reply) return kExitUnreachable;
  if (reply->status != 200) return refused(*reply, err);
  if (options.output == "json") {
    out << output_json(reply->body);
  } else {
    out << "enforcement flushed: tierwall's table is removed until the next apply or reload\n";
  }
  return kExitOk;
}

int agent_flows(const AgentOptions& options, const FlowsOptions& flows, std::ostream& out,
                std::ostream& err) {
  if (flows.follow) {
    err << "tierctl flows: --follow reads the files: give --log DIR\n";
    return kExitUsage;
  }
  std::string query = "output=" + flows.output;
  auto add = [&query](const char* key, const std::string& value) {
    query += std::string("&") + key + "=" + runtime::percent_encode(value);
  };
  if (flows.since) add("since", *flows.since);
  if (flows.until) add("until", *flows.until);
  for (const auto& v : flows.verdicts) add("verdict", v);
  for (const auto& v : flows.tiers) add("tier", v);
  for (const auto& v : flows.src_tiers) add("src-tier", v);
  for (const auto& v : flows.dst_tiers) add("dst-tier", v);
  for (const auto& v : flows.endpoints) add("endpoint", v);
  for (const auto& v : flows.rules) add("rule", v);
  for (const auto& v : flows.addresses) add("address", v);
  for (const auto& v : flows.ports) add("port", v);
  for (const auto& v : flows.types) add("type", v);
  if (flows.limit) add("limit", std::to_string(*flows.limit));
  runtime::UnixHttpClient::Options o;
  o.socket_path = options.socket;
  o.request_timeout = options.timeout;
  runtime::UnixHttpClient client(o);
  auto r = client.request("GET", "/v1/flows?" + query);
  if (!r) {
    err << "tierctl: cannot reach the agent at " << options.socket << ": " << r.error().message
        << "\n";
    return kExitUnreachable;
  }
  if (r->status != 200) {
    const auto body = json::parse(r->body, nullptr, false);
    err << "tierctl: the agent refused (" << r->status
        << "): " << (body.is_object() ? str(body, "error", r->body) : r->body) << "\n";
    return r->status == 400 ? kExitUsage : kExitInvalid;
  }
  out << r->body;
  return kExitOk;
}

}  // namespace tierwall::cli
