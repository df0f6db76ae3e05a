// DPDK flow events without an EAL: the lcore's FlowEventEmitter (starts,
// folded denies, cuts, the fold window, the rate limit, a full sink, exact
// packet accounting) and their conversion into flow-log records through the
// Enricher ("dataplane":"dpdk", rule, generation, count, loss records).
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/dpdk/flow_events.h"
#include "tierwall/flowlog/record.h"
#include "tierwall/flowpipe/dpdk_events.h"
#include "tierwall/flowpipe/enricher.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace {

using namespace tierwall;
using dataplane::dpdk::FastDecision;
using dataplane::dpdk::FlowEnd;
using dataplane::dpdk::FlowEndReason;
using dataplane::dpdk::FlowEndSink;
using dataplane::dpdk::FlowEventCounters;
using dataplane::dpdk::FlowEventEmitter;
using dataplane::dpdk::FlowEventOptions;
using dataplane::dpdk::FlowEventRecord;
using dataplane::dpdk::FlowEventSink;
using dataplane::dpdk::FlowEventType;
using dataplane::dpdk::FlowOutcome;
using dataplane::dpdk::FlowPacket;
using dataplane::dpdk::FlowTable;
using dataplane::dpdk::FlowTableOptions;
using dataplane::dpdk::PacketInfo;

constexpr std::uint64_t kMs = 1'000'000;

class VectorSink : public FlowEventSink {
 public:
  bool push(const FlowEventRecord& e) override {
    if (events.size() >= capacity) return false;
    events.push_back(e);
    return true;
  }
  std::size_t capacity = 1000;
  std::vector<FlowEventRecord> events;
};

PacketInfo tcp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport) {
  PacketInfo p;
  p.status = dataplane::dpdk::ParseStatus::Ok;
  p.ip_version = 4;
  p.src = *IpAddress::parse(src);
  p.dst = *IpAddress::parse(dst);
  p.protocol = 6;
  p.src_port = sport;
  p.dst_port = dport;
  p.flags = dataplane::dpdk::kFlagPorts;
  return p;
}

PacketInfo ping(const char* src, const char* dst) {
  PacketInfo p;
  p.status = dataplane::dpdk::ParseStatus::Ok;
  p.ip_version = 4;
  p.src = *IpAddress::parse(src);
  p.dst = *IpAddress::parse(dst);
  p.protocol = 1;
  p.icmp_type = 8;
  p.icmp_id = 77;
  p.flags = dataplane::dpdk::kFlagIcmp;
  return p;
}

const FastDecision kAllow{dataplane::Verdict::Allow, dataplane::RuleKind::Flow, 20};
const FastDecision kDeny{dataplane::Verdict::Deny, dataplane::RuleKind::DefaultDeny,
                         dataplane::kRuleDefaultDeny};

std::uint64_t accounted(const FlowEventCounters& c) { return c.packets + c.lost + c.rate_limited; }

TEST(DpdkFlowEvents, StartsAndCutsAreOneEventEach) {
  VectorSink sink;
  FlowEventEmitter em(sink);
  em.start(tcp("10.0.0.1", 40000, "10.0.0.2", 8080), kAllow, 3, 1, 5 * kMs);
  em.cut(tcp("10.0.0.2", 8080, "10.0.0.1", 40000), kDeny, 4, 0, 6 * kMs);
  em.publish();
  ASSERT_EQ(sink.events.size(), 2U);
  const auto& s = sink.events[0];
  EXPECT_EQ(s.type, FlowEventType::Start);
  EXPECT_EQ(s.src.to_string(), "10.0.0.1");
  EXPECT_EQ(s.src_port, 40000);
  EXPECT_EQ(s.dst_port, 8080);
  EXPECT_EQ(s.protocol, 6);
  EXPECT_EQ(s.generation, 3U);
  EXPECT_EQ(s.rule, 20U);
  EXPECT_EQ(s.verdict, dataplane::Verdict::Allow);
  EXPECT_EQ(s.port, 1);
  EXPECT_EQ(s.time_ns, 5 * kMs);
  EXPECT_EQ(sink.events[1].type, FlowEventType::Cut);
  const auto c = em.counters();
  EXPECT_EQ(c.starts, 1U);
  EXPECT_EQ(c.cuts, 1U);
  EXPECT_EQ(c.events, 2U);
  EXPECT_EQ(accounted(c), 2U);
}

TEST(DpdkFlowEvents, DeniesFoldWithinTheWindowAndEveryPacketCounts) {
  VectorSink sink;
  FlowEventOptions o;
  o.fold_window_ns = 100 * kMs;
  FlowEventEmitter em(sink, o);
  // 50 SYN retries of one connection attempt (source port varies: folded
  // like the writer does, by addresses, protocol, destination port).
  for (int i = 0; i < 50; ++i) {
    em.deny(tcp("10.0.0.1", static_cast<std::uint16_t>(40000 + (i % 3)), "10.0.0.2", 22), kDeny, 1,
            0, static_cast<std::uint64_t>(i) * kMs);
  }
  em.deny(ping("10.0.0.1", "10.0.0.2"), kDeny, 1, 0, 10 * kMs);
  em.tick(60 * kMs);  // windows still open
  EXPECT_TRUE(sink.events.empty());
  em.tick(200 * kMs);  // both closed
  em.publish();
  ASSERT_EQ(sink.events.size(), 2U);
  std::map<std::uint8_t, FlowEventRecord> by_proto;
  for (const auto& e : sink.events) by_proto[e.protocol] = e;
  EXPECT_EQ(by_proto[6].count, 50U);
  EXPECT_EQ(by_proto[6].type, FlowEventType::Deny);
  EXPECT_EQ(by_proto[6].src_port, 40000);  // the first packet's
  EXPECT_EQ(by_proto[6].time_ns, 0U);
  EXPECT_EQ(by_proto[1].count, 1U);
  EXPECT_EQ(by_proto[1].icmp_type, 8);
  const auto c = em.counters();
  EXPECT_EQ(c.folded, 49U);
  EXPECT_EQ(c.denies, 2U);
  EXPECT_EQ(accounted(c), 51U);

  // After the window a new event starts; flush() emits what is pending.
  em.deny(tcp("10.0.0.1", 40001, "10.0.0.2", 22), kDeny, 1, 0, 300 * kMs);
  em.deny(tcp("10.0.0.1", 40001, "10.0.0.2", 22), kDeny, 1, 0, 301 * kMs);
  em.flush();
  em.publish();
  ASSERT_EQ(sink.events.size(), 3U);
  EXPECT_EQ(sink.events.back().count, 2U);
  EXPECT_EQ(accounted(em.counters()), 53U);
}

TEST(DpdkFlowEvents, AnotherGenerationOrRuleIsAnotherEvent) {
  VectorSink sink;
  FlowEventEmitter em(sink);
  em.deny(tcp("10.0.0.1", 1, "10.0.0.2", 22), kDeny, 1, 0, 0);
  em.deny(tcp("10.0.0.1", 1, "10.0.0.2", 22), kDeny, 2, 0, kMs);
  em.flush();
  em.publish();
  // Two events, whether or not they share a slot.
  ASSERT_EQ(sink.events.size(), 2U);
  EXPECT_NE(sink.events[0].generation, sink.events[1].generation);
  EXPECT_EQ(accounted(em.counters()), 2U);
}

TEST(DpdkFlowEvents, FullSinkAndRateLimitAreCountedExactly) {
  VectorSink sink;
  sink.capacity = 3;
  FlowEventOptions o;
  o.fold_slots = 16;
  o.deny_events_per_second = 40;  // 10 deny events at once, then 40/s
  FlowEventEmitter em(sink, o);
  for (int i = 0; i < 5; ++i) {
    em.start(tcp("10.0.0.1", static_cast<std::uint16_t>(1000 + i), "10.0.0.2", 80), kAllow, 1, 0,
             kMs);
  }
  // 100 distinct denied destinations in one millisecond: evictions and
  // window ends need 100 deny events; 10 may leave, 3 fit in the sink.
  for (int i = 0; i < 100; ++i) {
    const std::string dst = "10.0.1." + std::to_string(i);
    em.deny(tcp("10.0.0.1", 5, dst.c_str(), 22), kDeny, 1, 0, kMs);
  }
  em.flush();
  em.publish();
  const auto c = em.counters();
  EXPECT_EQ(sink.events.size(), 3U);
  EXPECT_EQ(c.events, 3U);
  EXPECT_EQ(c.starts, 3U);
  EXPECT_GT(c.lost, 0U);
  EXPECT_GT(c.rate_limited, 0U);
  EXPECT_EQ(accounted(c), 105U);
}

// --- conversion into flow-log records ---------------------------------------

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: dpdk-events}
spec:
  tiers:
    - {name: web, level: 100}
    - {name: db, level: 200}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: db, match: {labels: {role: db}}, tier: db}
  denies:
    - {name: no-db-to-web, from: {tier: db}, to: {tier: web}}
  flows:
    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432, icmp/echo-request]}
)";

class Lookup : public flowpipe::IdentityLookup {
 public:
  std::optional<flowpipe::Identity> endpoint(const IpAddress& a) const override {
    if (a.to_string() == "10.88.0.10") return flowpipe::Identity{"web-1", "c0", "", "web"};
    if (a.to_string() == "10.88.0.20") return flowpipe::Identity{"db-1", "", "", "db"};
    return std::nullopt;
  }
  bool is_node(const IpAddress& a) const override { return a.to_string() == "10.88.0.1"; }
  bool in_container_cidr(const IpAddress& a) const override {
    return a.to_string().rfind("10.88.", 0) == 0;
  }
};

class DpdkEventConversion : public ::testing::Test {
 protected:
  DpdkEventConversion() : enricher_(options(), lookup_) {
    policy::Diagnostics diags;
    auto p = policy::parse_policy(kPolicy, "p.yaml", diags);
    EXPECT_TRUE(p);
    compiler::Compilation c(*p, 7);
    policy_ = c.policy();
    enricher_.set_policy(policy_);
  }
  static flowpipe::Enricher::Options options() {
    flowpipe::Enricher::Options o;
    o.dataplane = flowlog::Dataplane::Dpdk;
    return o;
  }
  FlowEventRecord event(FlowEventType type, const char* src, const char* dst, std::uint16_t dport,
                        const std::string& rule, dataplane::Verdict verdict) const {
    FlowEventRecord e;
    e.type = type;
    e.time_ns = 2'000'000'000;
    e.generation = 7;
    e.src = *IpAddress::parse(src);
    e.dst = *IpAddress::parse(dst);
    e.src_port = 41000;
    e.dst_port = dport;
    e.protocol = 6;
    e.verdict = verdict;
    const auto* r = policy_->find_rule(rule);
    e.rule = r != nullptr ? r->id : dataplane::kRuleDefaultDeny;
    e.kind = r != nullptr ? r->origin.kind : dataplane::RuleKind::DefaultDeny;
    return e;
  }

  Lookup lookup_;
  flowpipe::Enricher enricher_;
  std::shared_ptr<const dataplane::CompiledPolicy> policy_;
};

TEST_F(DpdkEventConversion, StartIsAnAllowRecordOfTheDpdkDataplane) {
  const auto e = event(FlowEventType::Start, "10.88.0.10", "10.88.0.20", 5432, "web-to-db",
                       dataplane::Verdict::Allow);
  const auto offset = std::chrono::seconds{1'795'000'000};
  auto r = flowpipe::enrich_dpdk(enricher_, e, offset);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->time_us, 1'795'000'002'000'000LL);
  const auto& f = std::get<flowlog::Flow>(r->body);
  EXPECT_EQ(f.dataplane, flowlog::Dataplane::Dpdk);
  EXPECT_EQ(f.event, flowlog::FlowEvent::Start);
  EXPECT_EQ(f.verdict, flowlog::Verdict::Allow);
  EXPECT_EQ(f.generation, 7U);
  EXPECT_EQ(f.rule_kind, flowlog::RuleKind::Flow);
  EXPECT_EQ(f.rule_name, "web-to-db");
  EXPECT_EQ(f.src.name, "web-1");
  EXPECT_EQ(f.src.tier, "web");
  EXPECT_EQ(f.src.port, 41000);
  EXPECT_EQ(f.dst.name, "db-1");
  EXPECT_EQ(f.dst.port, 5432);
  EXPECT_EQ(f.count, 1U);
  const std::string line = flowlog::serialize_line(*r, 1, "n", flowlog::kZeroHash);
  EXPECT_NE(line.find("\"dataplane\":\"dpdk\""), std::string::npos) << line;
}

TEST_F(DpdkEventConversion, FoldedDenyKeepsItsCountAndRule) {
  auto e = event(FlowEventType::Deny, "10.88.0.20", "10.88.0.10", 8080, "no-db-to-web",
                 dataplane::Verdict::Deny);
  e.count = 12;
  auto r = flowpipe::enrich_dpdk(enricher_, e, std::chrono::nanoseconds{0});
  ASSERT_TRUE(r);
  const auto& f = std::get<flowlog::Flow>(r->body);
  EXPECT_EQ(f.verdict, flowlog::Verdict::Deny);
  EXPECT_EQ(f.rule_kind, flowlog::RuleKind::Deny);
  EXPECT_EQ(f.rule_name, "no-db-to-web");
  EXPECT_EQ(f.count, 12U);
  EXPECT_EQ(f.src.tier, "db");
}

TEST_F(DpdkEventConversion, CutIsADenyOfThePacketUnderTheNewGeneration) {
  auto e =
      event(FlowEventType::Cut, "10.88.0.10", "10.88.0.20", 5432, "", dataplane::Verdict::Deny);
  auto r = flowpipe::enrich_dpdk(enricher_, e, std::chrono::nanoseconds{0});
  ASSERT_TRUE(r);
  const auto& f = std::get<flowlog::Flow>(r->body);
  EXPECT_EQ(f.verdict, flowlog::Verdict::Deny);
  EXPECT_EQ(f.rule_kind, flowlog::RuleKind::DefaultDeny);
  EXPECT_EQ(f.count, 1U);
}

TEST_F(DpdkEventConversion, IcmpCarriesTypeAndCode) {
  auto e = event(FlowEventType::Start, "10.88.0.10", "10.88.0.20", 0, "web-to-db",
                 dataplane::Verdict::Allow);
  e.protocol = 1;
  e.src_port = 0;
  e.icmp_type = 8;
  e.icmp_code = 0;
  auto r = flowpipe::enrich_dpdk(enricher_, e, std::chrono::nanoseconds{0});
  ASSERT_TRUE(r);
  const auto& f = std::get<flowlog::Flow>(r->body);
  EXPECT_EQ(f.protocol, 1);
  EXPECT_EQ(f.icmp_type, 8);
  const std::string line = flowlog::serialize_line(*r, 1, "n", flowlog::kZeroHash);
  EXPECT_NE(line.find("\"icmpType\":8"), std::string::npos) << line;
}

TEST(DpdkLossTracker, EachGrowthIsOneExactLossRecord) {
  flowpipe::DpdkLossTracker t;
  FlowEventCounters c;
  EXPECT_TRUE(t.take(c).empty());
  c.lost = 5;
  c.rate_limited = 7;
  auto first = t.take(c);
  ASSERT_EQ(first.size(), 2U);
  const auto& l0 = std::get<flowlog::Loss>(first[0].body);
  EXPECT_EQ(l0.source, flowlog::LossSource::Dpdk);
  EXPECT_EQ(l0.reason, "ring full");
  EXPECT_EQ(l0.count, 5U);
  EXPECT_FALSE(l0.lower_bound);
  EXPECT_EQ(std::get<flowlog::Loss>(first[1].body).reason, "rate limit");
  EXPECT_EQ(std::get<flowlog::Loss>(first[1].body).count, 7U);
  c.lost = 9;
  auto second = t.take(c);
  ASSERT_EQ(second.size(), 1U);
  EXPECT_EQ(std::get<flowlog::Loss>(second[0].body).count, 4U);
  EXPECT_TRUE(t.take(c).empty());
}

// --- connection ends from the flow table ------------------------------------

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node, addresses: [10.88.0.1]}
endpoints:
  - {name: web-1, labels: {role: web}, addresses: [10.88.0.10]}
  - {name: db-1, labels: {role: db}, addresses: [10.88.0.20]}
)";

std::unique_ptr<const dataplane::dpdk::Generation> build(const std::string& policy_text,
                                                         std::uint64_t generation) {
  policy::Diagnostics diags;
  auto p = policy::parse_policy(policy_text, "p.yaml", diags);
  auto inv = identity::parse_inventory(kInventory, "inv.yaml", diags);
  if (!p || !inv) {
    std::ostringstream text;
    diags.print(text);
    ADD_FAILURE() << text.str();
    return nullptr;
  }
  const auto rules = compiler::compile(*p, *inv, generation, {*Cidr::parse("10.88.0.0/16")});
  auto built = dataplane::dpdk::build_generation(rules);
  EXPECT_TRUE(built.generation) << built.error;
  return std::move(built.generation);
}

FlowPacket packet(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport,
                  std::uint16_t length, std::uint8_t flags = 0) {
  FlowPacket f;
  f.src = *IpAddress::parse(src);
  f.dst = *IpAddress::parse(dst);
  f.src_port = sport;
  f.dst_port = dport;
  f.decision_port = dport;
  f.protocol = 6;
  f.tcp_flags = flags;
  f.length = length;
  return f;
}

class EndSink : public FlowEndSink {
 public:
  void ended(const FlowEnd& e, std::uint64_t) override { ends.push_back(e); }
  std::vector<FlowEnd> ends;
};

TEST(DpdkFlowEnds, CountsPerDirectionAndEndsOnExpiryCutAndStop) {
  const auto g1 = build(kPolicy, 7);
  const std::string without = std::string(kPolicy).replace(std::string(kPolicy).find("tcp/5432, "),
                                                           std::string("tcp/5432, ").size(), "");
  const auto g2 = build(without, 8);
  ASSERT_TRUE(g1 && g2);
  FlowTableOptions o;
  o.capacity = 1024;
  o.count = true;
  FlowTable table(o);
  EndSink sink;
  table.set_end_sink(&sink);

  // A connection: SYN, SYN-ACK, data, data back, ACK.
  const auto syn = table.process(*g1, packet("10.88.0.10", 40000, "10.88.0.20", 5432, 60), kMs);
  ASSERT_EQ(syn.outcome, FlowOutcome::New);
  EXPECT_EQ(syn.flow_id, 1U);
  EXPECT_EQ(
      table.process(*g1, packet("10.88.0.20", 5432, "10.88.0.10", 40000, 60), 2 * kMs).flow_id, 1U);
  table.process(*g1, packet("10.88.0.10", 40000, "10.88.0.20", 5432, 100), 3 * kMs);
  table.process(*g1, packet("10.88.0.20", 5432, "10.88.0.10", 40000, 200), 4 * kMs);
  table.process(*g1, packet("10.88.0.10", 40000, "10.88.0.20", 5432, 52), 5 * kMs);
  EXPECT_TRUE(sink.ends.empty());

  // A second one expires: the sweep ends it with its counts.
  const auto other = table.process(*g1, packet("10.88.0.10", 40001, "10.88.0.20", 5432, 60), kMs);
  EXPECT_EQ(other.flow_id, 2U);
  // The first is established (2 h timeout); the second still New (30 s).
  const std::uint64_t later = 40 * dataplane::dpdk::kNsPerSecond;
  EXPECT_EQ(table.sweep(later, 1024), 1U);
  ASSERT_EQ(sink.ends.size(), 1U);
  EXPECT_EQ(sink.ends[0].flow_id, 2U);
  EXPECT_EQ(sink.ends[0].reason, FlowEndReason::Expired);
  EXPECT_EQ(sink.ends[0].packets_orig, 1U);
  EXPECT_EQ(sink.ends[0].packets_reply, 0U);

  // The first is cut by a generation without tcp/5432: ended with its counts,
  // initiator first even though the cut packet is a reply.
  const auto cut =
      table.process(*g2, packet("10.88.0.20", 5432, "10.88.0.10", 40000, 90), later + kMs);
  EXPECT_EQ(cut.outcome, FlowOutcome::Cut);
  ASSERT_EQ(sink.ends.size(), 2U);
  const FlowEnd& e = sink.ends[1];
  EXPECT_EQ(e.reason, FlowEndReason::Cut);
  EXPECT_EQ(e.flow_id, 1U);
  EXPECT_EQ(e.src.to_string(), "10.88.0.10");
  EXPECT_EQ(e.src_port, 40000);
  EXPECT_EQ(e.dst_port, 5432);
  EXPECT_EQ(e.packets_orig, 3U);
  EXPECT_EQ(e.packets_reply, 2U);
  EXPECT_EQ(e.bytes_orig, 212U);
  EXPECT_EQ(e.bytes_reply, 260U);
  EXPECT_EQ(e.decision.verdict, dataplane::Verdict::Allow);

  // What is left ends at stop.
  table.process(*g1, packet("10.88.0.10", 40002, "10.88.0.20", 5432, 60), later + 2 * kMs);
  EXPECT_EQ(table.end_all(later + 3 * kMs), 1U);
  ASSERT_EQ(sink.ends.size(), 3U);
  EXPECT_EQ(sink.ends[2].reason, FlowEndReason::Stopped);
  EXPECT_EQ(table.live(later + 3 * kMs), 0U);
}

// The workers of one dataplane hand out flow ids by stride (worker w of N:
// w + 1, w + 1 + N, ...), so no two of them share an id; bad strides are
// refused.
TEST(DpdkFlowEnds, FlowIdsOfWorkersNeverCollide) {
  const auto g = build(kPolicy, 7);
  ASSERT_TRUE(g);
  constexpr std::uint32_t kWorkers = 3;
  std::set<std::uint32_t> seen;
  for (std::uint32_t w = 0; w < kWorkers; ++w) {
    FlowTableOptions o;
    o.capacity = 1024;
    o.count = true;
    o.id_first = w + 1;
    o.id_stride = kWorkers;
    FlowTable table(o);
    for (std::uint16_t i = 0; i < 50; ++i) {
      const auto r = table.process(
          *g, packet("10.88.0.10", static_cast<std::uint16_t>(40000 + i), "10.88.0.20", 5432, 60),
          kMs);
      ASSERT_EQ(r.outcome, FlowOutcome::New);
      EXPECT_EQ(r.flow_id, w + 1 + kWorkers * i);
      EXPECT_TRUE(seen.insert(r.flow_id).second) << "flow id " << r.flow_id << " twice";
    }
  }
  EXPECT_EQ(seen.size(), 150U);
  FlowTableOptions bad;
  bad.id_first = 4;
  bad.id_stride = 3;
  EXPECT_THROW(FlowTable{bad}, std::invalid_argument);
  bad.id_first = 0;
  EXPECT_THROW(FlowTable{bad}, std::invalid_argument);
}

TEST(DpdkFlowEnds, WithoutCountingNothingIsReported) {
  const auto g1 = build(kPolicy, 7);
  ASSERT_TRUE(g1);
  FlowTable table(FlowTableOptions{.capacity = 1024, .timeouts = {}, .count = false});
  EndSink sink;
  table.set_end_sink(&sink);
  const auto r = table.process(*g1, packet("10.88.0.10", 40000, "10.88.0.20", 5432, 60), kMs);
  EXPECT_EQ(r.flow_id, 0U);
  EXPECT_EQ(table.end_all(2 * kMs), 0U);
  EXPECT_TRUE(sink.ends.empty());
}

TEST_F(DpdkEventConversion, EndIsNamedByItsStartWithItsCounts) {
  VectorSink ring;
  FlowEventEmitter em(ring);
  PacketInfo p = tcp("10.88.0.10", 41000, "10.88.0.20", 5432);
  const auto* rule = policy_->find_rule("web-to-db");
  ASSERT_NE(rule, nullptr);
  const FastDecision d{dataplane::Verdict::Allow, dataplane::RuleKind::Flow, rule->id};
  em.start(p, d, 7, 0, kMs, 42);
  FlowEnd end;
  end.src = p.src;
  end.dst = p.dst;
  end.src_port = 41000;
  end.dst_port = 5432;
  end.decision_port = 5432;
  end.protocol = 6;
  end.reason = FlowEndReason::Expired;
  end.decision = d;
  end.flow_id = 42;
  end.packets_orig = 5;
  end.packets_reply = 4;
  end.bytes_orig = 500;
  end.bytes_reply = 4000;
  em.ended(end, 9 * kMs);
  em.publish();
  ASSERT_EQ(ring.events.size(), 2U);
  EXPECT_EQ(ring.events[1].type, FlowEventType::End);
  EXPECT_EQ(em.counters().ends, 1U);

  // The identity changes between start and end: the end keeps the start's.
  ASSERT_TRUE(flowpipe::enrich_dpdk(enricher_, ring.events[0], std::chrono::nanoseconds{0}));
  auto r = flowpipe::enrich_dpdk(enricher_, ring.events[1], std::chrono::nanoseconds{0});
  ASSERT_TRUE(r);
  const auto& f = std::get<flowlog::Flow>(r->body);
  EXPECT_EQ(f.event, flowlog::FlowEvent::End);
  EXPECT_EQ(f.verdict, flowlog::Verdict::Allow);
  EXPECT_EQ(f.rule_name, "web-to-db");
  EXPECT_EQ(f.generation, 7U);
  EXPECT_EQ(f.src.name, "web-1");
  EXPECT_EQ(f.packets_orig, 5U);
  EXPECT_EQ(f.packets_reply, 4U);
  EXPECT_EQ(f.bytes_orig, 500U);
  EXPECT_EQ(f.bytes_reply, 4000U);
  EXPECT_EQ(enricher_.stats().ends_without_start, 0U);
  const std::string line = flowlog::serialize_line(*r, 1, "n", flowlog::kZeroHash);
  EXPECT_NE(line.find("\"packets\":{\"orig\":5,\"reply\":4}"), std::string::npos) << line;
}

}  // namespace
