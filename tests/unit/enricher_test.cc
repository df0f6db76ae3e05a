// Kernel flow events -> flow-log records, above a fake identity lookup:
// identities, rules by generation, NFLOG/conntrack duplicates, ends named by
// their starts, tombstones, quarantine/host/world, losses.
#include "tierwall/flowpipe/enricher.h"

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/policy/loader.h"

namespace {

using namespace tierwall;
using dataplane::nft::FlowEventKind;
using dataplane::nft::RawFlowEvent;
using flowpipe::Identity;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: enrich}
spec:
  tiers:
    - {name: web, level: 100}
    - {name: db, level: 200}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: db, match: {labels: {role: db}}, tier: db}
  denies:
    - {name: no-web-ssh, from: {tier: web}, to: {host: true}, ports: [tcp/22]}
    - {name: staged-db-ping, from: {tier: web}, to: {tier: db}, ports: [icmp/echo-request], audit: true}
  flows:
    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432]}
    - {name: web-to-db-admin, from: {tier: web}, to: {tier: db}, ports: [tcp/6000], log: true}
)";

class FakeLookup : public flowpipe::IdentityLookup {
 public:
  std::optional<Identity> endpoint(const IpAddress& a) const override {
    auto it = endpoints.find(a.to_string());
    if (it == endpoints.end()) return std::nullopt;
    return it->second;
  }
  bool is_node(const IpAddress& a) const override { return a.to_string() == "10.88.0.1"; }
  bool in_container_cidr(const IpAddress& a) const override {
    return a.to_string().rfind("10.88.", 0) == 0;
  }
  std::map<std::string, Identity> endpoints;
};

class EnricherTest : public ::testing::Test {
 protected:
  EnricherTest() : enricher_({}, lookup_) {
    lookup_.endpoints["10.88.0.10"] = {"web-1", "c0ffee", "reg.example/shop/web:1.4", "web"};
    lookup_.endpoints["10.88.0.20"] = {"db-1", "", "", "db"};
    enricher_.set_policy(compile(1));
  }

  std::shared_ptr<const dataplane::CompiledPolicy> compile(std::uint64_t generation,
                                                           const std::string& extra = "") {
    policy::Diagnostics diags;
    auto p = policy::parse_policy(std::string(kPolicy) + extra, "p.yaml", diags);
    EXPECT_TRUE(p);
    compiler::Compilation c(*p, generation);
    return c.policy();
  }
  dataplane::RuleId rule(const std::string& name, std::uint64_t generation = 1) {
    return compile(generation)->find_rule(name)->id;
  }
  static RawFlowEvent start(const char* src, std::uint16_t sport, const char* dst,
                            std::uint16_t dport, dataplane::RuleId rule, dataplane::Verdict verdict,
                            std::uint64_t generation, std::uint32_t ct = 0) {
    RawFlowEvent e;
    e.kind = FlowEventKind::Start;
    e.proto = 6;
    e.src = *IpAddress::parse(src);
    e.dst = *IpAddress::parse(dst);
    e.sport = sport;
    e.dport = dport;
    e.rule = rule;
    e.verdict = verdict;
    e.generation = generation;
    e.conntrack_id = ct;
    e.time = dataplane::nft::WallClock::time_point{std::chrono::seconds{1'795'000'000}};
    return e;
  }
  static const flowlog::Flow& flow(const std::optional<flowlog::FlowRecord>& r) {
    return std::get<flowlog::Flow>(r->body);
  }

  FakeLookup lookup_;
  flowpipe::Enricher enricher_;
};

TEST_F(EnricherTest, NflogDenyIsNamedWithIdentityRuleAndGeneration) {
  auto r = enricher_.enrich(
      start("10.88.0.10", 40000, "10.88.0.1", 22, rule("no-web-ssh"), dataplane::Verdict::Deny, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->time_us, 1'795'000'000'000'000LL);
  const auto& f = flow(r);
  EXPECT_EQ(f.event, flowlog::FlowEvent::Start);
  EXPECT_EQ(f.verdict, flowlog::Verdict::Deny);
  EXPECT_EQ(f.generation, 1U);
  EXPECT_EQ(f.rule_kind, flowlog::RuleKind::Deny);
  EXPECT_EQ(f.rule_name, "no-web-ssh");
  EXPECT_EQ(f.src.entity, flowlog::Entity::Endpoint);
  EXPECT_EQ(f.src.name, "web-1");
  EXPECT_EQ(f.src.id, "c0ffee");
  EXPECT_EQ(f.src.image, "reg.example/shop/web:1.4");
  EXPECT_EQ(f.src.tier, "web");
  EXPECT_EQ(f.src.port, 40000);
  EXPECT_EQ(f.dst.entity, flowlog::Entity::Host);
  EXPECT_EQ(f.dst.port, 22);
}

TEST_F(EnricherTest, UnknownAddressesAreQuarantineOrWorld) {
  auto r = enricher_.enrich(start("10.88.0.99", 1, "198.51.100.7", 443, dataplane::kRuleDefaultDeny,
                                  dataplane::Verdict::Deny, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(flow(r).src.entity, flowlog::Entity::Endpoint);
  EXPECT_EQ(flow(r).src.tier, "quarantine");
  EXPECT_TRUE(flow(r).src.name.empty());
  EXPECT_EQ(flow(r).dst.entity, flowlog::Entity::World);
  EXPECT_EQ(flow(r).rule_kind, flowlog::RuleKind::DefaultDeny);
  EXPECT_TRUE(flow(r).rule_name.empty());
}

TEST_F(EnricherTest, ConntrackAllowStartsAndEndsKeepTheStartIdentity) {
  auto s = enricher_.enrich(start("10.88.0.10", 40001, "10.88.0.20", 5432, rule("web-to-db"),
                                  dataplane::Verdict::Allow, 0, 77));
  ASSERT_TRUE(s);
  EXPECT_EQ(flow(s).verdict, flowlog::Verdict::Allow);
  EXPECT_EQ(flow(s).generation, 1U);  // conntrack: the current generation
  EXPECT_EQ(flow(s).rule_name, "web-to-db");
  // The container goes away before its connection ends.
  lookup_.endpoints.erase("10.88.0.10");
  RawFlowEvent end = start("10.88.0.10", 40001, "10.88.0.20", 5432, rule("web-to-db"),
                           dataplane::Verdict::Allow, 0, 77);
  end.kind = FlowEventKind::End;
  end.packets_orig = 10;
  end.packets_reply = 8;
  end.bytes_orig = 1000;
  end.bytes_reply = 800;
  auto e = enricher_.enrich(end);
  ASSERT_TRUE(e);
  EXPECT_EQ(flow(e).event, flowlog::FlowEvent::End);
  EXPECT_EQ(flow(e).src.name, "web-1");
  EXPECT_EQ(flow(e).rule_name, "web-to-db");
  EXPECT_EQ(flow(e).packets_orig, 10U);
  EXPECT_EQ(flow(e).bytes_reply, 800U);
  EXPECT_EQ(enricher_.stats().ends_without_start, 0U);
  // A second end of the same id is resolved afresh (and counted).
  auto again = enricher_.enrich(end);
  ASSERT_TRUE(again);
  EXPECT_EQ(flow(again).src.tier, "quarantine");
  EXPECT_EQ(enricher_.stats().ends_without_start, 1U);
}

TEST_F(EnricherTest, ConntrackStartsNflogReportedAreNotWrittenTwice) {
  // Audited (accepted by a staged deny): NFLOG wrote it; the ct end says audit.
  auto audited = start("10.88.0.10", 0, "10.88.0.20", 0, rule("staged-db-ping"),
                       dataplane::Verdict::Allow, 0, 5);
  EXPECT_FALSE(enricher_.enrich(audited));
  audited.kind = FlowEventKind::End;
  auto end = enricher_.enrich(audited);
  ASSERT_TRUE(end);
  EXPECT_EQ(flow(end).verdict, flowlog::Verdict::Audit);
  EXPECT_EQ(flow(end).rule_name, "staged-db-ping");
  // A logged flow: NFLOG wrote it too.
  EXPECT_FALSE(enricher_.enrich(start("10.88.0.10", 1, "10.88.0.20", 6000, rule("web-to-db-admin"),
                                      dataplane::Verdict::Allow, 0, 6)));
  EXPECT_EQ(enricher_.stats().duplicates_dropped, 2U);
  // The NFLOG side of the logged flow is written, as an allow.
  auto logged = enricher_.enrich(start("10.88.0.10", 1, "10.88.0.20", 6000, rule("web-to-db-admin"),
                                       dataplane::Verdict::Allow, 1));
  ASSERT_TRUE(logged);
  EXPECT_EQ(flow(logged).verdict, flowlog::Verdict::Allow);
}

TEST_F(EnricherTest, EventsOfAnOlderGenerationUseItsRules) {
  // Generation 2 inserts a flow first: every flow id shifts.
  auto g2 =
      compile(2, "    - {name: a-new-one, from: {tier: db}, to: {tier: web}, ports: [tcp/1]}\n");
  enricher_.set_policy(g2);
  const auto id_g1 = rule("web-to-db", 1);
  auto r = enricher_.enrich(
      start("10.88.0.10", 1, "10.88.0.20", 5432, id_g1, dataplane::Verdict::Allow, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(flow(r).rule_name, "web-to-db");
  EXPECT_EQ(flow(r).generation, 1U);
  // A generation nobody remembers: the id is kept, the kind from the verdict.
  auto old = enricher_.enrich(
      start("10.88.0.10", 1, "10.88.0.20", 5432, 9999, dataplane::Verdict::Deny, 77));
  ASSERT_TRUE(old);
  EXPECT_EQ(flow(old).rule_name, "rule 9999");
  EXPECT_EQ(enricher_.stats().unknown_rules, 1U);
}

TEST_F(EnricherTest, RemovedEndpointsAreStillNamedForLateEvents) {
  lookup_.endpoints.erase("10.88.0.20");
  enricher_.endpoint_gone(*IpAddress::parse("10.88.0.20"), {"db-1", "", "", "db"});
  auto r = enricher_.enrich(start("10.88.0.10", 1, "10.88.0.20", 23, dataplane::kRuleDefaultDeny,
                                  dataplane::Verdict::Deny, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(flow(r).dst.name, "db-1");
  EXPECT_EQ(flow(r).dst.tier, "db");
}

TEST_F(EnricherTest, LossesAreRecords) {
  RawFlowEvent e;
  e.kind = FlowEventKind::Loss;
  e.loss_source = dataplane::nft::LossSource::Nflog;
  e.loss_reason = dataplane::nft::LossReason::SequenceGap;
  e.loss_count = 42;
  auto r = enricher_.enrich(e);
  ASSERT_TRUE(r);
  const auto& loss = std::get<flowlog::Loss>(r->body);
  EXPECT_EQ(loss.source, flowlog::LossSource::Nflog);
  EXPECT_EQ(loss.reason, "sequence gap");
  EXPECT_EQ(loss.count, 42U);
  EXPECT_GT(r->time_us, 0);  // stamped now when the kernel gave no time
}

TEST(Enricher, NothingIsNamedBeforeAPolicy) {
  FakeLookup lookup;
  flowpipe::Enricher e({}, lookup);
  RawFlowEvent ev;
  ev.kind = FlowEventKind::Start;
  EXPECT_FALSE(e.enrich(ev));
}

}  // namespace
