// Prometheus metrics and health endpoints of tierwalld.
//
// render_metrics() is a pure function: the reconciler's status plus what only
// the daemon knows (apply latency histogram, per-rule kernel counters, which
// identity sources are configured) -> text exposition format 0.0.4.
//
// The daemon serves them through an HttpServer (http_server.h) on TCP.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tierwall/agent/config.h"
#include "tierwall/agent/http_server.h"
#include "tierwall/agent/reconciler.h"
#include "tierwall/cluster/cluster_source.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::agent {

// Apply/update latencies in seconds, Prometheus buckets (upper bounds).
struct LatencyHistogram {
  static constexpr std::array<double, 13> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
  std::array<std::uint64_t, kBounds.size()> buckets{};  // per bucket, NOT cumulative
  std::uint64_t count = 0;                              // includes observations > 10 s
  double sum = 0;

  void observe(double seconds);
  void observe(std::chrono::nanoseconds d) { observe(std::chrono::duration<double>(d).count()); }
};

struct RuleCounter {
  std::string rule;  // the policy rule's name, or "self", "intra-tier", "default-deny"
  std::string kind;  // flow, deny, intra-tier, default-deny, self, unknown
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};

// The DPDK dataplane's counters (dataplane: dpdk), as the daemon read them
// from DpdkDataplane::stats(); rendered as tierwall_dpdk_* (docs/operator.md).
struct DpdkMetrics {
  struct Value {
    std::string name;  // without the tierwall_dpdk_ prefix, e.g. "rx_frames_total"
    std::string type;  // "counter" or "gauge"
    std::string help;
    std::uint64_t value = 0;
  };
  struct Port {
    std::string name;
    std::uint64_t rx_packets = 0;
    std::uint64_t tx_packets = 0;
    std::uint64_t rx_missed = 0;
    std::uint64_t rx_errors = 0;
    std::uint64_t tx_errors = 0;
    std::uint64_t rx_nombuf = 0;
  };
  // One forwarding worker's share (index = worker = its queue of every port).
  struct Worker {
    std::uint64_t rx_frames = 0;
    std::uint64_t ip_allowed = 0;
    std::uint64_t policy_dropped = 0;
    std::uint64_t flow_inserts = 0;
    std::uint64_t flow_hits = 0;
  };
  std::vector<Value> values;
  std::vector<std::pair<std::string, std::uint64_t>> parse_status;  // status -> frames
  // Frames refused on overlay uplinks, per reason (OverlayRefusal names).
  std::vector<std::pair<std::string, std::uint64_t>> overlay_refused;
  std::vector<Port> ports;
  std::vector<Worker> workers;
};

struct ExtraCounters {
  LatencyHistogram apply_duration;
  std::optional<DpdkMetrics> dpdk;  // set when the DPDK dataplane runs
  std::vector<RuleCounter> rules;
  // Sources rendered in tierwall_identity_source_connected (index: Source).
  std::array<bool, kSourceCount> source_configured{true, true, false};
  // Cluster mode: the store's state (tierwall_cluster_*); nullopt otherwise.
  std::optional<cluster::ClusterStatus> cluster;
};

// Kernel counters (NftBackend::rule_counters) named through `policy`
// (nullptr: ids only). Counters of one (rule, kind) are summed; sorted.
std::vector<RuleCounter> name_rule_counters(
    const dataplane::CompiledPolicy* policy,
    const std::map<dataplane::RuleId, std::pair<std::uint64_t, std::uint64_t>>& counters);

// A label value escaped for the text format: \ -> \\, " -> \", newline -> \n.
std::string escape_label_value(std::string_view value);

std::string render_metrics(const ReconcilerStatus& status, const ExtraCounters& extra);

// The answer of the daemon's endpoints: /metrics (render()), /healthz ("ok"),
// /readyz (200 when not_ready() is empty, else 503 with the reason), else 404.
// Only GET and HEAD are answered (405 otherwise).
HttpResponse health_response(const HttpRequest& request, const std::function<std::string()>& render,
                             const std::function<std::string()>& not_ready);

}  // namespace tierwall::agent
