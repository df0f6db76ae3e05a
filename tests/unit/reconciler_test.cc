// The reconcile loop against a fake dataplane: one small update per identity
// event, whole generations for policy changes, fail-closed on disconnects,
// retries after dataplane errors, stable ids, address conflicts.
#include "tierwall/agent/reconciler.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/temp_dir.h"

namespace tierwall::agent {
namespace {

using dataplane::EndpointChange;
using dataplane::EndpointId;

class FakeDataplane : public dataplane::Dataplane {
 public:
  struct Applied {
    std::uint64_t generation = 0;
    std::size_t endpoints = 0;
    std::shared_ptr<const dataplane::EndpointTable> table;
    std::shared_ptr<const dataplane::CompiledPolicy> policy;
  };

  std::optional<dataplane::DataplaneError> apply(const dataplane::RuleSet& rules) override {
    ++apply_attempts;
    if (fail_apply) return dataplane::DataplaneError{"apply refused", 0, false};
    applies.push_back(Applied{rules.policy->generation, rules.endpoints->endpoint_count(),
                              rules.endpoints, rules.policy});
    return std::nullopt;
  }
  std::optional<dataplane::DataplaneError> update_endpoints(
      std::span<const EndpointChange> changes) override {
    if (fail_update) return dataplane::DataplaneError{"update refused", 0, false};
    updates.emplace_back(changes.begin(), changes.end());
    return std::nullopt;
  }
  std::optional<dataplane::DataplaneError> flush() override { return std::nullopt; }

  std::vector<Applied> applies;
  std::vector<std::vector<EndpointChange>> updates;
  int apply_attempts = 0;
  bool fail_apply = false;
  bool fail_update = false;
};

constexpr std::string_view kPolicyV1 = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: shop}
spec:
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20}
    - {name: restricted, level: 30}
  assignments:
    - name: db
      match: {labels: {role: db}}
      tier: restricted
    - name: api
      match: {labels: {role: api}}
      tier: internal
    - name: web
      match: {labels: {role: web}}
      tier: public
  flows:
    - name: web-api
      from: {tier: public}
      to: {tier: internal}
      ports: [tcp/8080]
)";

// v2 moves api to restricted.
constexpr std::string_view kPolicyV2 = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: shop}
spec:
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20}
    - {name: restricted, level: 30}
  assignments:
    - name: db
      match: {labels: {role: [db, api]}}
      tier: restricted
    - name: web
      match: {labels: {role: web}}
      tier: public
)";

IpAddress ip(std::string_view s) { return IpAddress::parse(s).value(); }

identity::Endpoint ep(std::string name, std::string role, std::vector<std::string> addrs,
                      std::string id = {}) {
  identity::Endpoint e;
  e.name = std::move(name);
  e.id = std::move(id);
  e.labels = identity::Labels({{"role", std::move(role)}});
  for (const auto& a : addrs) e.addresses.push_back(ip(a));
  return e;
}

using tierwall::testsupport::TempDir;

class ReconcilerTest : public ::testing::Test {
 protected:
  ReconcilerTest() : rec_(dp_, Reconciler::Options{{Cidr::parse("10.88.0.0/16").value()}, {}}) {}

  dataplane::TierId tier(std::string_view name) const {
    return rec_.compilation()->policy()->find_tier(name).value();
  }
  void load(const std::string& file) {
    auto r = rec_.load_and_set_policy({file});
    std::ostringstream out;
    r.diagnostics.print(out);
    ASSERT_TRUE(r.accepted) << out.str();
  }

  FakeDataplane dp_;
  Reconciler rec_;
  TempDir dir_;
};

TEST_F(ReconcilerTest, SnapshotThenUpsertsAreSingleSmallUpdates) {
  load(dir_.write("p.yaml", kPolicyV1));
  ASSERT_EQ(dp_.applies.size(), 1U);
  EXPECT_EQ(dp_.applies[0].generation, 1U);
  EXPECT_EQ(dp_.applies[0].endpoints, 0U);

  rec_.on_snapshot(Source::Runtime, {ep("web1", "web", {"10.88.0.2"}, "aaa"),
                                     ep("db1", "db", {"10.88.0.3"}, "bbb")});
  ASSERT_EQ(dp_.updates.size(), 1U);
  ASSERT_EQ(dp_.updates[0].size(), 2U);
  EXPECT_EQ(dp_.applies.size(), 1U);  // never a full apply for churn

  rec_.on_upsert(Source::Runtime, ep("api1", "api", {"10.88.0.4"}, "ccc"));
  ASSERT_EQ(dp_.updates.size(), 2U);
  ASSERT_EQ(dp_.updates[1].size(), 1U);
  const auto& c = dp_.updates[1][0];
  EXPECT_FALSE(c.removed);
  EXPECT_EQ(c.tier, tier("internal"));
  EXPECT_EQ(c.addresses, std::vector<IpAddress>{ip("10.88.0.4")});

  // An unchanged upsert sends nothing.
  rec_.on_upsert(Source::Runtime, ep("api1", "api", {"10.88.0.4"}, "ccc"));
  EXPECT_EQ(dp_.updates.size(), 2U);

  // A relabel moves the endpoint: one change with the new tier.
  rec_.on_upsert(Source::Runtime, ep("api1", "db", {"10.88.0.4"}, "ccc"));
  ASSERT_EQ(dp_.updates.size(), 3U);
  ASSERT_EQ(dp_.updates[2].size(), 1U);
  EXPECT_EQ(dp_.updates[2][0].tier, tier("restricted"));
  EXPECT_EQ(dp_.updates[2][0].id, c.id);

  rec_.on_remove(Source::Runtime, "ccc");
  ASSERT_EQ(dp_.updates.size(), 4U);
  ASSERT_EQ(dp_.updates[3].size(), 1U);
  EXPECT_TRUE(dp_.updates[3][0].removed);
  EXPECT_EQ(dp_.updates[3][0].id, c.id);

  // A snapshot that changes one endpoint sends one change.
  rec_.on_snapshot(Source::Runtime, {ep("web1", "web", {"10.88.0.2"}, "aaa"),
                                     ep("db1", "db", {"10.88.0.9"}, "bbb")});
  ASSERT_EQ(dp_.updates.size(), 5U);
  EXPECT_EQ(dp_.updates[4].size(), 1U);

  const auto s = rec_.status();
  EXPECT_EQ(s.endpoints, 2U);
  EXPECT_EQ(s.tier_counts.at("public"), 1U);
  EXPECT_EQ(s.tier_counts.at("restricted"), 1U);
  EXPECT_EQ(s.tier_counts.at("internal"), 0U);
  EXPECT_EQ(s.tier_counts.at("quarantine"), 0U);
  EXPECT_TRUE(s.sources[static_cast<std::size_t>(Source::Runtime)].connected);
  EXPECT_EQ(s.sources[static_cast<std::size_t>(Source::Runtime)].endpoints, 2U);
}

TEST_F(ReconcilerTest, EveryDataplaneCallLatencyIsKeptForTheHistogram) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_upsert(Source::Runtime, ep("api1", "api", {"10.88.0.4"}, "ccc"));
  rec_.on_upsert(Source::Runtime, ep("api2", "api", {"10.88.0.5"}, "ddd"));
  rec_.on_upsert(Source::Runtime, ep("api2", "api", {"10.88.0.5"}, "ddd"));  // no call
  EXPECT_EQ(rec_.take_latencies().size(), 3U);                               // 1 apply + 2 updates
  EXPECT_TRUE(rec_.take_latencies().empty());
  rec_.repair_drift();
  EXPECT_EQ(rec_.take_latencies().size(), 1U);
}

TEST_F(ReconcilerTest, AddressLookupAndRemovedEndpointsForTheFlowLog) {
  load(dir_.write("p.yaml", kPolicyV1));
  auto web = ep("web1", "web", {"10.88.0.2"}, "aaa");
  web.image = "reg.example/shop/web:1.4";
  rec_.on_upsert(Source::Runtime, web);
  auto v = rec_.find_address(ip("10.88.0.2"));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->name, "web1");
  EXPECT_EQ(v->runtime_id, "aaa");
  EXPECT_EQ(v->image, "reg.example/shop/web:1.4");
  EXPECT_EQ(v->tier, "public");
  EXPECT_FALSE(rec_.find_address(ip("10.88.0.3")));
  EXPECT_TRUE(rec_.take_removed().empty());
  rec_.on_remove(Source::Runtime, "aaa");
  EXPECT_FALSE(rec_.find_address(ip("10.88.0.2")));
  const auto gone = rec_.take_removed();
  ASSERT_EQ(gone.size(), 1U);
  EXPECT_EQ(gone[0].name, "web1");
  EXPECT_EQ(gone[0].tier, "public");
  EXPECT_EQ(gone[0].addresses, std::vector<IpAddress>{ip("10.88.0.2")});
  EXPECT_TRUE(rec_.take_removed().empty());
}

TEST_F(ReconcilerTest, EndpointsBeforePolicyAreAppliedWithTheFirstGeneration) {
  rec_.on_snapshot(Source::Inventory,
                   {ep("web1", "web", {"10.88.0.2"}), ep("x", "other", {"10.88.0.5"})});
  EXPECT_TRUE(dp_.updates.empty());
  EXPECT_TRUE(dp_.applies.empty());
  load(dir_.write("p.yaml", kPolicyV1));
  ASSERT_EQ(dp_.applies.size(), 1U);
  EXPECT_EQ(dp_.applies[0].endpoints, 2U);
  const auto& table = *dp_.applies[0].table;
  auto id = table.find(ip("10.88.0.5"));
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(table.entry(*id)->tier, dataplane::kQuarantineTier);
  EXPECT_EQ(rec_.status().tier_counts.at("quarantine"), 1U);
  ASSERT_EQ(table.container_cidrs().size(), 1U);
}

TEST_F(ReconcilerTest, InvalidPolicyIsRejectedAndTheOldOneStays) {
  load(dir_.write("p.yaml", kPolicyV1));
  const auto digest = rec_.status().policy_digest;
  ASSERT_EQ(dp_.applies.size(), 1U);

  const auto bad = dir_.write("bad.yaml", std::string(kPolicyV1) + "  bogus: 1\n");
  auto r = rec_.load_and_set_policy({bad});
  EXPECT_FALSE(r.accepted);
  EXPECT_TRUE(r.diagnostics.has_errors());
  EXPECT_EQ(dp_.applies.size(), 1U);
  EXPECT_EQ(dp_.apply_attempts, 1);
  const auto s = rec_.status();
  EXPECT_EQ(s.generation, 1U);
  EXPECT_EQ(s.policy_digest, digest);
  EXPECT_EQ(s.rejected_policies, 1U);
  EXPECT_NE(s.last_error.find("bad.yaml:"), std::string::npos) << s.last_error;
  EXPECT_TRUE(s.last_rejection.has_errors());

  auto missing = rec_.load_and_set_policy({dir_.write("x", "") + ".nope"});
  EXPECT_FALSE(missing.accepted);
  EXPECT_EQ(rec_.status().rejected_policies, 2U);
  EXPECT_EQ(rec_.status().generation, 1U);
}

TEST_F(ReconcilerTest, UnchangedPolicyIsNotReapplied) {
  const auto p = dir_.write("p.yaml", kPolicyV1);
  load(p);
  auto r = rec_.load_and_set_policy({p});
  EXPECT_TRUE(r.accepted);
  EXPECT_TRUE(r.unchanged);
  EXPECT_EQ(dp_.applies.size(), 1U);
  EXPECT_EQ(rec_.status().generation, 1U);
}

TEST_F(ReconcilerTest, PolicyChangeReappliesAndRebinds) {
  const auto p = dir_.write("p.yaml", kPolicyV1);
  load(p);
  rec_.on_snapshot(Source::Runtime, {ep("api1", "api", {"10.88.0.4"}, "ccc")});
  const EndpointId id = dp_.updates.at(0).at(0).id;
  EXPECT_EQ(rec_.status().tier_counts.at("internal"), 1U);

  load(dir_.write("p.yaml", kPolicyV2));
  ASSERT_EQ(dp_.applies.size(), 2U);
  EXPECT_EQ(dp_.applies[1].generation, 2U);
  const auto& table = *dp_.applies[1].table;
  EXPECT_EQ(table.find(ip("10.88.0.4")), id);
  EXPECT_EQ(table.entry(id)->tier, *dp_.applies[1].policy->find_tier("restricted"));
  const auto s = rec_.status();
  EXPECT_EQ(s.generation, 2U);
  EXPECT_EQ(s.applied_generation, 2U);
  EXPECT_EQ(s.tier_counts.at("restricted"), 1U);
  EXPECT_EQ(s.tier_counts.count("internal"), 1U);
  EXPECT_EQ(s.tier_counts.at("internal"), 0U);
  EXPECT_EQ(dp_.updates.size(), 1U);
}

TEST_F(ReconcilerTest, RuntimeDisconnectKeepsEndpoints) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_snapshot(Source::Runtime, {ep("web1", "web", {"10.88.0.2"}, "aaa")});
  rec_.on_state(Source::Runtime, true, {});
  const auto updates = dp_.updates.size();
  rec_.on_state(Source::Runtime, false, "connection refused");
  EXPECT_EQ(dp_.updates.size(), updates);
  auto s = rec_.status();
  const auto& rt = s.sources[static_cast<std::size_t>(Source::Runtime)];
  EXPECT_FALSE(rt.connected);
  EXPECT_EQ(rt.reason, "connection refused");
  EXPECT_EQ(rt.endpoints, 1U);
  EXPECT_EQ(s.endpoints, 1U);
  EXPECT_TRUE(rec_.tick());
  EXPECT_EQ(dp_.updates.size(), updates);

  // Reconnect: the new snapshot replaces; the same container keeps its id.
  rec_.on_snapshot(Source::Runtime, {ep("web1", "web", {"10.88.0.2"}, "aaa")});
  EXPECT_EQ(dp_.updates.size(), updates);
  EXPECT_TRUE(rec_.status().sources[static_cast<std::size_t>(Source::Runtime)].connected);
}

TEST_F(ReconcilerTest, DataplaneFailureIsRetriedOnTick) {
  dp_.fail_apply = true;
  load(dir_.write("p.yaml", kPolicyV1));
  auto s = rec_.status();
  EXPECT_FALSE(s.dataplane_ok);
  EXPECT_EQ(s.dataplane_error, "apply refused");
  EXPECT_EQ(s.generation, 1U);
  EXPECT_EQ(s.applied_generation, 0U);

  // Endpoint events while a full apply is pending only change desired state.
  rec_.on_upsert(Source::Runtime, ep("web1", "web", {"10.88.0.2"}, "aaa"));
  EXPECT_TRUE(dp_.updates.empty());
  EXPECT_FALSE(rec_.tick());
  EXPECT_EQ(dp_.apply_attempts, 2);

  dp_.fail_apply = false;
  EXPECT_TRUE(rec_.tick());
  ASSERT_EQ(dp_.applies.size(), 1U);
  EXPECT_EQ(dp_.applies[0].endpoints, 1U);
  s = rec_.status();
  EXPECT_TRUE(s.dataplane_ok);
  EXPECT_TRUE(s.dataplane_error.empty());
  EXPECT_EQ(s.applied_generation, 1U);
  EXPECT_TRUE(rec_.tick());
  EXPECT_EQ(dp_.apply_attempts, 3);  // nothing pending: no apply

  // A failed update: desired state kept, next tick applies everything.
  dp_.fail_update = true;
  rec_.on_upsert(Source::Runtime, ep("db1", "db", {"10.88.0.3"}, "bbb"));
  EXPECT_FALSE(rec_.status().dataplane_ok);
  dp_.fail_update = false;
  EXPECT_TRUE(rec_.tick());
  ASSERT_EQ(dp_.applies.size(), 2U);
  EXPECT_EQ(dp_.applies[1].endpoints, 2U);
  EXPECT_EQ(dp_.applies[1].generation, 1U);
  // And increments resume.
  rec_.on_remove(Source::Runtime, "db1");  // by name works for the runtime too
  ASSERT_EQ(dp_.updates.size(), 1U);
  EXPECT_TRUE(dp_.updates[0][0].removed);
}

TEST_F(ReconcilerTest, EndpointIdsAreStableAndNotReusedWhileAlive) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_snapshot(Source::Runtime,
                   {ep("a", "web", {"10.88.0.2"}, "1"), ep("b", "web", {"10.88.0.3"}, "2")});
  std::map<std::string, EndpointId> ids;
  for (const auto& v : rec_.endpoints()) ids[v.runtime_id] = v.id;
  ASSERT_EQ(ids.size(), 2U);
  EXPECT_NE(ids["1"], ids["2"]);

  // Address and label changes keep the id.
  rec_.on_upsert(Source::Runtime, ep("a", "db", {"10.88.0.7"}, "1"));
  EXPECT_EQ(dp_.updates.back().at(0).id, ids["1"]);

  rec_.on_upsert(Source::Runtime, ep("c", "web", {"10.88.0.4"}, "3"));
  const EndpointId c = dp_.updates.back().at(0).id;
  EXPECT_NE(c, ids["1"]);
  EXPECT_NE(c, ids["2"]);

  // An inventory endpoint with the same name is a different endpoint.
  rec_.on_upsert(Source::Inventory, ep("a", "web", {"10.88.1.1"}));
  std::set<EndpointId> live;
  for (const auto& v : rec_.endpoints()) EXPECT_TRUE(live.insert(v.id).second);
  EXPECT_EQ(live.size(), 4U);

  // Snapshot order does not matter.
  const auto before = dp_.updates.size();
  rec_.on_snapshot(Source::Runtime,
                   {ep("c", "web", {"10.88.0.4"}, "3"), ep("b", "web", {"10.88.0.3"}, "2"),
                    ep("a", "db", {"10.88.0.7"}, "1")});
  EXPECT_EQ(dp_.updates.size(), before);
  for (const auto& v : rec_.endpoints()) {
    if (v.source == Source::Runtime && v.runtime_id != "3") {
      EXPECT_EQ(v.id, ids[v.runtime_id]);
    }
  }
}

TEST_F(ReconcilerTest, AddressConflictKeepsTheFirstAndIsReported) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_upsert(Source::Inventory, ep("static-db", "db", {"10.88.0.5"}));
  ASSERT_EQ(dp_.updates.size(), 1U);
  const EndpointId first = dp_.updates[0][0].id;

  rec_.on_upsert(Source::Runtime, ep("intruder", "web", {"10.88.0.5", "10.88.0.6"}, "zz"));
  ASSERT_EQ(dp_.updates.size(), 2U);
  ASSERT_EQ(dp_.updates[1].size(), 1U);
  EXPECT_EQ(dp_.updates[1][0].addresses, std::vector<IpAddress>{ip("10.88.0.6")});
  const EndpointId second = dp_.updates[1][0].id;

  auto s = rec_.status();
  ASSERT_EQ(s.conflicts.size(), 1U);
  EXPECT_EQ(s.conflicts[0].address, ip("10.88.0.5"));
  EXPECT_EQ(s.conflicts[0].holder, "inventory:static-db");
  EXPECT_EQ(s.conflicts[0].claimant, "runtime:intruder");

  // The holder leaves: the waiting claimant gets the address, in one update.
  rec_.on_remove(Source::Inventory, "static-db");
  ASSERT_EQ(dp_.updates.size(), 3U);
  ASSERT_EQ(dp_.updates[2].size(), 2U);
  bool removed_first = false;
  bool second_grew = false;
  for (const auto& c : dp_.updates[2]) {
    if (c.id == first) removed_first = c.removed;
    if (c.id == second) second_grew = c.addresses.size() == 2;
  }
  EXPECT_TRUE(removed_first);
  EXPECT_TRUE(second_grew);
  EXPECT_TRUE(rec_.status().conflicts.empty());
}

TEST_F(ReconcilerTest, FullyConflictingEndpointIsNotInstalled) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_upsert(Source::Runtime, ep("a", "db", {"10.88.0.5"}, "1"));
  rec_.on_upsert(Source::Runtime, ep("b", "web", {"10.88.0.5"}, "2"));
  EXPECT_EQ(dp_.updates.size(), 1U);
  EXPECT_EQ(rec_.status().endpoints, 1U);
  EXPECT_EQ(rec_.status().conflicts.size(), 1U);
  // a moves away: b takes the address.
  rec_.on_upsert(Source::Runtime, ep("a", "db", {"10.88.0.8"}, "1"));
  ASSERT_EQ(dp_.updates.size(), 2U);
  EXPECT_EQ(dp_.updates[1].size(), 2U);
  EXPECT_EQ(rec_.status().endpoints, 2U);
  EXPECT_TRUE(rec_.status().conflicts.empty());
}

}  // namespace
// Remote endpoints from the cluster store are a source of their own: tiered
// by the same assignments, in the same tier sets, removed by their key
// ("<node>/<id>"), and a disconnected store removes nothing.
TEST_F(ReconcilerTest, ClusterEndpointsAreTieredLikeLocalOnes) {
  load(dir_.write("p.yaml", kPolicyV1));
  rec_.on_snapshot(Source::Inventory, {ep("web1", "web", {"10.88.0.2"})});
  rec_.on_snapshot(Source::Cluster, {ep("api9", "api", {"10.88.9.4"}, "node-b/api9"),
                                     ep("db9", "db", {"10.88.9.5"}, "node-b/db9")});
  auto found = rec_.find_address(ip("10.88.9.4"));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->tier, "internal");
  EXPECT_EQ(found->source, Source::Cluster);
  EXPECT_EQ(dp_.updates.back().back().tier, tier("restricted"));
  EXPECT_EQ(dp_.applies.size(), 1U);  // churn, not a re-apply

  rec_.on_state(Source::Cluster, false, "etcd unreachable");
  auto s = rec_.status();
  EXPECT_FALSE(s.sources[static_cast<std::size_t>(Source::Cluster)].connected);
  EXPECT_EQ(s.sources[static_cast<std::size_t>(Source::Cluster)].endpoints, 2U);
  EXPECT_TRUE(rec_.find_address(ip("10.88.9.5")).has_value());

  rec_.on_remove(Source::Cluster, "node-b/db9");
  EXPECT_FALSE(rec_.find_address(ip("10.88.9.5")).has_value());
  EXPECT_TRUE(dp_.updates.back().back().removed);
  EXPECT_EQ(rec_.source_endpoints(Source::Inventory).size(), 1U);
  EXPECT_EQ(rec_.source_endpoints(Source::Cluster).size(), 1U);
}

TEST_F(ReconcilerTest, PolicyFromDocumentsInMemory) {
  auto r = rec_.load_and_set_policy_sources({{"10-shop.yaml", std::string(kPolicyV1)}});
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(rec_.status().policy_digest,
            policy::digest_sources({{"10-shop.yaml", std::string(kPolicyV1)}}));
  auto bad = rec_.load_and_set_policy_sources({{"10-shop.yaml", "kind: Nonsense\n"}});
  EXPECT_FALSE(bad.accepted);
  EXPECT_EQ(rec_.status().generation, 1U);  // the last valid one stays
  EXPECT_NE(rec_.status().last_error.find("10-shop.yaml"), std::string::npos)
      << rec_.status().last_error;
}

}  // namespace tierwall::agent
