#include "tierwall/agent/metrics.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace tierwall::agent {

void LatencyHistogram::observe(double seconds) {
  ++count;
  sum += seconds;
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets[i];
      return;
    }
  }
}

std::vector<RuleCounter> name_rule_counters(
    const dataplane::CompiledPolicy* policy,
    const std::map<dataplane::RuleId, std::pair<std::uint64_t, std::uint64_t>>& counters) {
  std::map<std::pair<std::string, std::string>, std::pair<std::uint64_t, std::uint64_t>> sums;
  for (const auto& [id, value] : counters) {
    std::string rule;
    std::string kind;
    if (id == dataplane::kRuleSelf) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::Self));
    } else if (id == dataplane::kRuleIntraTier) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::IntraTier));
    } else if (id == dataplane::kRuleDefaultDeny) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::DefaultDeny));
    } else if (const auto* r = policy ? policy->find_rule(id) : nullptr) {
      rule = r->origin.name.empty() ? "#" + std::to_string(id) : r->origin.name;
      kind = std::string(dataplane::to_string(r->origin.kind));
    } else {
      rule = "#" + std::to_string(id);
      kind = "unknown";
    }
    auto& s = sums[{rule, kind}];
    s.first += value.first;
    s.second += value.second;
  }
  std::vector<RuleCounter> out;
  out.reserve(sums.size());
  for (const auto& [key, value] : sums) {
    out.push_back(RuleCounter{key.first, key.second, value.first, value.second});
  }
  return out;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // The shortest text that reads back the same, without an exponent if one
  // is that short ("10", not "1e+01").
  for (const bool exponent_ok : {false, true}) {
    for (int prec = 1; prec <= 17; ++prec) {
      char t[64];
      std::snprintf(t, sizeof t, "%.*g", prec, v);
      if (!exponent_ok && std::strchr(t, 'e') != nullptr) continue;
      if (std::strtod(t, nullptr) == v) return t;
    }
  }
  return buf;
}

void header(std::ostringstream& o, std::string_view name, std::string_view type,
            std::string_view help) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

std::string label(std::string_view name, std::string_view value) {
  return std::string(name) + "=\"" + escape_label_value(value) + "\"";
}

}  // namespace

std::string render_metrics(const ReconcilerStatus& st, const ExtraCounters& extra) {
  std::ostringstream o;
  header(o, "tierwall_endpoints", "gauge", "Endpoints known to the agent, by tier.");
  for (const auto& [tier, n] : st.tier_counts) {
    o << "tierwall_endpoints{" << label("tier", tier) << "} " << n << "\n";
  }
  header(o, "tierwall_policy_generation", "gauge", "Generation of the desired policy (0 = none).");
  o << "tierwall_policy_generation " << st.generation << "\n";
  header(o, "tierwall_policy_applied_generation", "gauge",
         "Last policy generation the dataplane accepted.");
  o << "tierwall_policy_applied_generation " << st.applied_generation << "\n";
  header(o, "tierwall_policy_info", "gauge", "The current policy: name and digest.");
  if (st.generation > 0) {
    o << "tierwall_policy_info{" << label("name", st.policy_name) << ","
      << label("digest", st.policy_digest) << "} 1\n";
  }
  header(o, "tierwall_apply_duration_seconds", "histogram",
         "Latency of dataplane applies and endpoint updates.");
  std::uint64_t cumulative = 0;
  const auto& h = extra.apply_duration;
  for (std::size_t i = 0; i < LatencyHistogram::kBounds.size(); ++i) {
    cumulative += h.buckets[i];
    o << "tierwall_apply_duration_seconds_bucket{le=\"" << number(LatencyHistogram::kBounds[i])
      << "\"} " << cumulative << "\n";
  }
  o << "tierwall_apply_duration_seconds_bucket{le=\"+Inf\"} " << h.count << "\n";
  o << "tierwall_apply_duration_seconds_sum " << number(h.sum) << "\n";
  o << "tierwall_apply_duration_seconds_count " << h.count << "\n";
  header(o, "tierwall_policies_rejected_total", "counter",
         "Policy changes rejected by validation.");
  o << "tierwall_policies_rejected_total " << st.rejected_policies << "\n";
  header(o, "tierwall_drift_repairs_total", "counter",
         "Changes by others to tierwall's table that were repaired.");
  o << "tierwall_drift_repairs_total " << st.drift_repairs << "\n";
  header(o, "tierwall_dataplane_errors_total", "counter", "Failed dataplane applies and updates.");
  o << "tierwall_dataplane_errors_total " << st.dataplane_failures << "\n";
  header(o, "tierwall_dataplane_ok", "gauge", "1 when the dataplane holds the desired state.");
  o << "tierwall_dataplane_ok " << (st.dataplane_ok ? 1 : 0) << "\n";
  header(o, "tierwall_identity_source_connected", "gauge",
         "1 when the identity source is connected.");
  for (std::size_t i = 0; i < kSourceCount; ++i) {
    if (!extra.source_configured[i]) continue;
    o << "tierwall_identity_source_connected{" << label("source", to_string(static_cast<Source>(i)))
      << "} " << (st.sources[i].connected ? 1 : 0) << "\n";
  }
  if (extra.cluster) {
    const auto& c = *extra.cluster;
    header(o, "tierwall_cluster_connected", "gauge",
           "1 when the agent reaches the cluster store (every watch and its lease).");
    o << "tierwall_cluster_connected " << (c.connected ? 1 : 0) << "\n";
    header(o, "tierwall_cluster_revision", "gauge",
           "The highest etcd revision the agent has seen.");
    o << "tierwall_cluster_revision " << c.revision << "\n";
    header(o, "tierwall_cluster_policy_generation", "gauge",
           "Generation of the last policy read from the store.");
    o << "tierwall_cluster_policy_generation " << c.policy_generation << "\n";
    header(o, "tierwall_cluster_remote_endpoints", "gauge",
           "Endpoints of other nodes known from the store.");
    o << "tierwall_cluster_remote_endpoints "
      << st.sources[static_cast<std::size_t>(Source::Cluster)].endpoints << "\n";
    header(o, "tierwall_cluster_published_endpoints", "gauge",
           "This node's endpoints written to the store under its lease.");
    o << "tierwall_cluster_published_endpoints " << c.published_endpoints << "\n";
    header(o, "tierwall_cluster_watch_restarts_total", "counter",
           "Watches that ended with an error (each is resumed, or listed again).");
    o << "tierwall_cluster_watch_restarts_total " << c.watch_restarts << "\n";
    header(o, "tierwall_cluster_relists_total", "counter",
           "Listings repeated after a compaction or a failure.");
    o << "tierwall_cluster_relists_total " << c.relists << "\n";
    header(o, "tierwall_cluster_lease_grants_total", "counter",
           "Leases granted (the first, and one per lease lost).");
    o << "tierwall_cluster_lease_grants_total " << c.lease_grants << "\n";
    header(o, "tierwall_cluster_lease_renewals_total", "counter", "Successful lease keepalives.");
    o << "tierwall_cluster_lease_renewals_total " << c.lease_renewals << "\n";
    header(o, "tierwall_cluster_unresponsive_watches_total", "counter",
           "Watches ended because their etcd member stopped answering (moved to another one).");
    o << "tierwall_cluster_unresponsive_watches_total " << c.unresponsive << "\n";
    header(o, "tierwall_cluster_errors_total", "counter", "Failed requests to the store.");
    o << "tierwall_cluster_errors_total " << c.errors << "\n";
  }
  header(
      o, "tierwall_rule_packets_total", "counter",
      "Packets decided by each rule: the first packet of each connection it allowed (later packets "
      "of an established connection are not re-decided), every packet it denied or audited.");
  for (const auto& r : extra.rules) {
    o << "tierwall_rule_packets_total{" << label("rule", r.rule) << "," << label("kind", r.kind)
      << "} " << r.packets << "\n";
  }
  header(o, "tierwall_rule_bytes_total", "counter",
         "Bytes of the packets counted in tierwall_rule_packets_total (not the whole connection).");
  for (const auto& r : extra.rules) {
    o << "tierwall_rule_bytes_total{" << label("rule", r.rule) << "," << label("kind", r.kind)
      << "} " << r.bytes << "\n";
  }
  if (extra.dpdk) {
    const DpdkMetrics& d = *extra.dpdk;
    for (const auto& v : d.values) {
      const std::string name = "tierwall_dpdk_" + v.name;
      header(o, name, v.type, v.help);
      o << name << " " << v.value << "\n";
    }
    header(o, "tierwall_dpdk_parse_frames_total", "counter",
           "Frames received by the DPDK dataplane, by parse status.");
    for (const auto& [status, n] : d.parse_status) {
      o << "tierwall_dpdk_parse_frames_total{" << label("status", status) << "} " << n << "\n";
    }
    header(o, "tierwall_dpdk_overlay_refused_total", "counter",
           "Frames refused on overlay uplinks, by reason (dropped).");
    for (const auto& [reason, n] : d.overlay_refused) {
      o << "tierwall_dpdk_overlay_refused_total{" << label("reason", reason) << "} " << n << "\n";
    }
    const std::pair<const char*, std::uint64_t DpdkMetrics::Worker::*> worker_values[] = {
        {"rx_frames", &DpdkMetrics::Worker::rx_frames},
        {"ip_allowed", &DpdkMetrics::Worker::ip_allowed},
        {"policy_dropped", &DpdkMetrics::Worker::policy_dropped},
        {"flow_inserts", &DpdkMetrics::Worker::flow_inserts},
        {"flow_hits", &DpdkMetrics::Worker::flow_hits}};
    for (const auto& [what, member] : worker_values) {
      const std::string name = std::string("tierwall_dpdk_worker_") + what + "_total";
      header(o, name, "counter",
             std::string("One forwarding worker's share of tierwall_dpdk_") + what + "_total.");
      for (std::size_t w = 0; w < d.workers.size(); ++w) {
        o << name << "{" << label("worker", std::to_string(w)) << "} " << d.workers[w].*member
          << "\n";
      }
    }
    const std::pair<const char*, std::uint64_t DpdkMetrics::Port::*> port_values[] = {
        {"rx_packets", &DpdkMetrics::Port::rx_packets},
        {"tx_packets", &DpdkMetrics::Port::tx_packets},
        {"rx_missed", &DpdkMetrics::Port::rx_missed},
        {"rx_errors", &DpdkMetrics::Port::rx_errors},
        {"tx_errors", &DpdkMetrics::Port::tx_errors},
        {"rx_nombuf", &DpdkMetrics::Port::rx_nombuf}};
    for (const auto& [what, member] : port_values) {
      const std::string name = std::string("tierwall_dpdk_port_") + what + "_total";
      header(o, name, "counter",
             std::string("The port's PMD statistics (rte_eth_stats): ") + what + ".");
      for (const auto& p : d.ports) {
        o << name << "{" << label("port", p.name) << "} " << p.*member << "\n";
      }
    }
  }
  return o.str();
}

// --- HTTP ------------------------------------------------------------------

HttpResponse health_response(const HttpRequest& request, const std::function<std::string()>& render,
                             const std::function<std::string()>& not_ready) {
  HttpResponse r;
  const std::string& path = request.path;
  if (request.method != "GET" && request.method != "HEAD") {
    r.status = 405;
    r.body = "method not allowed\n";
  } else if (path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = render();
  } else if (path == "/healthz") {
    r.body = "ok\n";
  } else if (path == "/readyz") {
    const std::string why = not_ready();
    if (why.empty()) {
      r.body = "ok\n";
    } else {
      r.status = 503;
      r.body = why + "\n";
    }
  } else {
    r.status = 404;
    r.body = "not found\n";
  }
  return r;
}

}  // namespace tierwall::agent
