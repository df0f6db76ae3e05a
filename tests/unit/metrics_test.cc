// render_metrics(): Prometheus text format 0.0.4, label escaping, cumulative
// histogram buckets; the rule counter naming; the health endpoint answers.
#include "tierwall/agent/metrics.h"

#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace {

using tierwall::agent::ExtraCounters;
using tierwall::agent::LatencyHistogram;
using tierwall::agent::ReconcilerStatus;
using tierwall::agent::render_metrics;
using tierwall::agent::Source;

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l == line) return true;
  }
  return false;
}

ReconcilerStatus sample_status() {
  ReconcilerStatus st;
  st.generation = 3;
  st.applied_generation = 3;
  st.policy_name = "prod \"main\"\\x\nnext";
  st.policy_digest = "abc123";
  st.tier_counts = {{"web", 2}, {"db", 1}, {"quarantine", 0}};
  st.rejected_policies = 4;
  st.drift_repairs = 5;
  st.dataplane_failures = 6;
  st.sources[static_cast<std::size_t>(Source::Inventory)].connected = true;
  return st;
}

TEST(Metrics, GaugesCountersAndHelpTypeLines) {
  ExtraCounters extra;
  extra.source_configured = {true, true};
  extra.rules = {{"web-to-db", "flow", 10, 1000}, {"default-deny", "default-deny", 2, 120}};
  const std::string text = render_metrics(sample_status(), extra);

  EXPECT_TRUE(has_line(text, "# TYPE tierwall_endpoints gauge")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_endpoints{tier=\"web\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_endpoints{tier=\"db\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_endpoints{tier=\"quarantine\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_policy_generation gauge"));
  EXPECT_TRUE(has_line(text, "tierwall_policy_generation 3"));
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_policies_rejected_total counter"));
  EXPECT_TRUE(has_line(text, "tierwall_policies_rejected_total 4"));
  EXPECT_TRUE(has_line(text, "tierwall_drift_repairs_total 5"));
  EXPECT_TRUE(has_line(text, "tierwall_dataplane_errors_total 6"));
  EXPECT_TRUE(has_line(text, "tierwall_identity_source_connected{source=\"inventory\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_identity_source_connected{source=\"runtime\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_rule_packets_total counter"));
  EXPECT_TRUE(has_line(text, "tierwall_rule_packets_total{rule=\"web-to-db\",kind=\"flow\"} 10"));
  EXPECT_TRUE(has_line(text, "tierwall_rule_bytes_total{rule=\"web-to-db\",kind=\"flow\"} 1000"));
  EXPECT_TRUE(
      has_line(text, "tierwall_rule_packets_total{rule=\"default-deny\",kind=\"default-deny\"} 2"));

  // Every sample's metric family has HELP and TYPE before it; text ends in \n.
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  std::istringstream in(text);
  std::string family;
  for (std::string l; std::getline(in, l);) {
    ASSERT_FALSE(l.empty());
    if (l.rfind("# HELP ", 0) == 0) continue;
    if (l.rfind("# TYPE ", 0) == 0) {
      family = l.substr(7, l.find(' ', 7) - 7);
      continue;
    }
    EXPECT_EQ(l.rfind(family, 0), 0U) << l << " outside its family " << family;
  }
}

TEST(Metrics, ClusterGaugesAndCountersOnlyInClusterMode) {
  ExtraCounters extra;
  EXPECT_EQ(render_metrics(sample_status(), extra).find("tierwall_cluster_"), std::string::npos);
  auto st = sample_status();
  st.sources[static_cast<std::size_t>(Source::Cluster)].endpoints = 7;
  extra.source_configured = {true, false, true};
  tierwall::cluster::ClusterStatus c;
  c.connected = false;
  c.revision = 1042;
  c.policy_generation = 4;
  c.published_endpoints = 3;
  c.watch_restarts = 2;
  c.relists = 1;
  c.lease_grants = 2;
  c.lease_renewals = 30;
  c.unresponsive = 1;
  c.errors = 9;
  extra.cluster = c;
  const std::string text = render_metrics(st, extra);
  EXPECT_TRUE(has_line(text, "tierwall_identity_source_connected{source=\"cluster\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_cluster_connected gauge")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_cluster_connected 0"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_revision 1042"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_policy_generation 4"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_remote_endpoints 7"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_published_endpoints 3"));
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_cluster_watch_restarts_total counter"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_watch_restarts_total 2"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_relists_total 1"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_lease_grants_total 2"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_lease_renewals_total 30"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_unresponsive_watches_total 1"));
  EXPECT_TRUE(has_line(text, "tierwall_cluster_errors_total 9"));
}

TEST(Metrics, EscapesLabelValues) {
  EXPECT_EQ(tierwall::agent::escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  const std::string text = render_metrics(sample_status(), ExtraCounters{});
  EXPECT_TRUE(has_line(
      text, "tierwall_policy_info{name=\"prod \\\"main\\\"\\\\x\\nnext\",digest=\"abc123\"} 1"))
      << text;
}

TEST(Metrics, NoPolicyInfoBeforeAPolicyAndUnconfiguredSourcesOmitted) {
  ExtraCounters extra;
  extra.source_configured = {true, false};
  const std::string text = render_metrics(ReconcilerStatus{}, extra);
  EXPECT_TRUE(has_line(text, "tierwall_policy_generation 0"));
  EXPECT_EQ(text.find("tierwall_policy_info{"), std::string::npos);
  EXPECT_EQ(text.find("source=\"runtime\""), std::string::npos);
  EXPECT_TRUE(has_line(text, "tierwall_identity_source_connected{source=\"inventory\"} 0"));
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  ExtraCounters extra;
  extra.apply_duration.observe(0.0005);  // le 0.001
  extra.apply_duration.observe(0.001);   // le 0.001 (inclusive)
  extra.apply_duration.observe(0.003);   // le 0.005
  extra.apply_duration.observe(0.2);     // le 0.25
  extra.apply_duration.observe(30.0);    // only +Inf
  const std::string text = render_metrics(ReconcilerStatus{}, extra);
  EXPECT_TRUE(has_line(text, "# TYPE tierwall_apply_duration_seconds histogram"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"0.001\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"0.0025\"} 2"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"0.005\"} 3"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"0.1\"} 3"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"0.25\"} 4"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"10\"} 4"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_bucket{le=\"+Inf\"} 5"));
  EXPECT_TRUE(has_line(text, "tierwall_apply_duration_seconds_count 5"));
  const auto sum_at = text.find("\ntierwall_apply_duration_seconds_sum ");
  ASSERT_NE(sum_at, std::string::npos) << text;
  EXPECT_NEAR(std::stod(text.substr(sum_at + 37)), 30.2045, 1e-9);
  // Monotone, in bound order.
  std::istringstream in(text);
  std::uint64_t prev = 0;
  int buckets = 0;
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("tierwall_apply_duration_seconds_bucket", 0) != 0) continue;
    const auto v = std::stoull(l.substr(l.rfind(' ') + 1));
    EXPECT_GE(v, prev) << l;
    prev = v;
    ++buckets;
  }
  EXPECT_EQ(buckets, static_cast<int>(LatencyHistogram::kBounds.size()) + 1);
}

TEST(Metrics, RuleCountersAreNamedAndSummed) {
  const std::map<tierwall::dataplane::RuleId, std::pair<std::uint64_t, std::uint64_t>> raw = {
      {tierwall::dataplane::kRuleDefaultDeny, {3, 300}},
      {tierwall::dataplane::kRuleIntraTier, {1, 10}},
      {99, {2, 20}}};
  const auto named = tierwall::agent::name_rule_counters(nullptr, raw);
  ASSERT_EQ(named.size(), 3U);
  EXPECT_EQ(named[0].rule, "#99");
  EXPECT_EQ(named[0].kind, "unknown");
  bool seen_deny = false;
  for (const auto& r : named) {
    if (r.rule == "default-deny") {
      seen_deny = true;
      EXPECT_EQ(r.packets, 3U);
      EXPECT_EQ(r.bytes, 300U);
    }
  }
  EXPECT_TRUE(seen_deny);
}

TEST(Metrics, HealthResponses) {
  using tierwall::agent::health_response;
  using tierwall::agent::HttpRequest;
  auto get = [](std::string path) {
    HttpRequest r;
    r.method = "GET";
    r.path = std::move(path);
    return r;
  };
  auto render = [] { return std::string("m 1\n"); };
  auto ready = [] { return std::string(); };
  auto not_ready = [] { return std::string("no valid policy applied yet"); };
  auto r = health_response(get("/metrics"), render, ready);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, "m 1\n");
  EXPECT_EQ(health_response(get("/healthz"), render, not_ready).status, 200);
  EXPECT_EQ(health_response(get("/readyz"), render, ready).status, 200);
  r = health_response(get("/readyz"), render, not_ready);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("no valid policy"), std::string::npos);
  EXPECT_EQ(health_response(get("/nope"), render, ready).status, 404);
  auto post = get("/metrics");
  post.method = "POST";
  EXPECT_EQ(health_response(post, render, ready).status, 405);
}

}  // namespace
