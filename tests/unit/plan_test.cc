// The nft plan compiler: differential against the reference evaluator
// (through PlanInterpreter), scaling with tiers not endpoints, endpoint
// elements, log prefixes, and golden renderings of the example policies.
#include "tierwall/dataplane/nft/plan.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "plan_interpreter.h"
#include "tests/common/compile.h"
#include "tests/common/random_policy.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace {

using namespace tierwall;
using dataplane::nft::Hook;

using testkit::diag_text;

struct Loaded {
  policy::Policy policy;
  identity::Inventory inventory;
};

Loaded load(const std::string& policy_yaml, const std::string& inventory_yaml) {
  policy::Diagnostics d;
  auto p = policy::parse_policy(policy_yaml, "gen.yaml", d);
  auto i = identity::parse_inventory(inventory_yaml, "inv.yaml", d);
  if (!p || !i) throw std::runtime_error(diag_text(d) + "\n" + policy_yaml);
  return Loaded{std::move(*p), std::move(*i)};
}

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

struct Probe {
  std::uint8_t protocol;
  std::uint16_t port;
};

std::vector<Probe> probes(bool v6) {
  std::vector<Probe> out{{proto::kTcp, 80},   {proto::kTcp, 443},  {proto::kTcp, 5432},
                         {proto::kTcp, 8080}, {proto::kTcp, 4000}, {proto::kUdp, 53},
                         {proto::kUdp, 5000}, {proto::kSctp, 80}};
  if (v6) {
    out.push_back({proto::kIcmpv6, 128});
    out.push_back({proto::kIcmpv6, 129});
  } else {
    out.push_back({proto::kIcmp, 8});
    out.push_back({proto::kIcmp, 0});
  }
  return out;
}

// Kernel-side reading of an interpreted verdict.
dataplane::Decision as_decision(const testkit::PlanVerdict& v, const dataplane::CompiledPolicy& p,
                                dataplane::RuleId& rule_id) {
  rule_id = v.counter.empty() ? 0 : static_cast<dataplane::RuleId>(std::stoul(v.counter.substr(1)));
  dataplane::Decision d;
  if (!v.accept) {
    d.verdict = dataplane::Verdict::Deny;
  } else if (!v.log.empty() && v.log[3] == 'a') {
    d.verdict = dataplane::Verdict::Audit;
  } else {
    d.verdict = dataplane::Verdict::Allow;
  }
  d.rule = p.find_rule(rule_id);
  return d;
}

// Interprets the plan of every generated policy for seeds 1..`seeds` and
// compares each connection with the reference evaluator, counting them in
// `compared`. Packets arrive on eth0 and leave through eth1 (never an
// overlay device).
void compare_with_evaluator(std::uint32_t seeds, const dataplane::nft::Options& options,
                            int& compared) {
  for (std::uint32_t seed = 1; seed <= seeds; ++seed) {
    const auto gen = testkit::generate_case(seed);
    const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
    const auto rules =
        compiler::compile(l.policy, l.inventory, seed,
                          {*Cidr::parse(gen.container_cidr4), *Cidr::parse(gen.container_cidr6)});
    const auto plan = dataplane::nft::build_plan(rules, options);
    const testkit::PlanInterpreter interp(plan);
    for (bool v6 : {false, true}) {
      std::vector<std::string> addrs = v6 ? gen.endpoint_v6 : gen.endpoint_v4;
      for (const auto& a : v6 ? gen.unknown_v6 : gen.unknown_v4) addrs.push_back(a);
      for (const auto& a : v6 ? gen.world_v6 : gen.world_v4) addrs.push_back(a);
      for (const auto& a : v6 ? gen.node_v6 : gen.node_v4) addrs.push_back(a);
      for (const auto& s : addrs) {
        for (const auto& d : addrs) {
          if (s == d) continue;
          const auto src = dataplane::resolve(*rules.endpoints, ip(s));
          const auto dst = dataplane::resolve(*rules.endpoints, ip(d));
          using E = dataplane::PeerMatch::Entity;
          // The dataplane polices traffic with a container on a policed side.
          Hook hook = Hook::Forward;
          if (dst.entity == E::Host && src.entity == E::Host) continue;
          if (dst.entity == E::Host) hook = Hook::Input;
          if (src.entity == E::Host) hook = Hook::Output;
          const bool src_c = src.entity == E::Endpoint;
          const bool dst_c = dst.entity == E::Endpoint;
          if (hook == Hook::Input && !src_c) continue;
          if (hook == Hook::Output && !dst_c) continue;
          if (hook == Hook::Forward && !src_c && !dst_c) continue;
          for (const auto& pr : probes(v6)) {
            const auto want = dataplane::decide(*rules.policy, src, dst, pr.protocol, pr.port);
            const auto got_v = interp.run({hook, ip(s), ip(d), pr.protocol, pr.port, false});
            dataplane::RuleId got_rule = 0;
            const auto got = as_decision(got_v, *rules.policy, got_rule);
            ASSERT_EQ(got.verdict, want.verdict)
                << "seed " << seed << ": " << s << " -> " << d << " proto " << int(pr.protocol)
                << "/" << pr.port << " want rule " << want.rule_id() << " got " << got_rule << " ("
                << got_v.log << ")\n"
                << gen.policy_yaml;
            ASSERT_EQ(got_rule, want.rule_id())
                << "seed " << seed << ": " << s << " -> " << d << " proto " << int(pr.protocol)
                << "/" << pr.port << "\n"
                << gen.policy_yaml;
            ++compared;
          }
        }
      }
    }
  }
}

TEST(PlanDifferential, InterpretedPlanEqualsReferenceEvaluator) {
  int compared = 0;
  compare_with_evaluator(150, {}, compared);
  EXPECT_GT(compared, 100000);
}

TEST(PlanDifferential, EstablishedTrafficIsAcceptedWithoutEvaluation) {
  const auto gen = testkit::generate_case(7);
  const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
  const auto plan = dataplane::nft::build_plan(compiler::compile(l.policy, l.inventory));
  const testkit::PlanInterpreter interp(plan);
  auto v = interp.run({Hook::Forward, ip("10.88.0.10"), ip("10.88.0.11"), proto::kTcp, 1, true});
  EXPECT_TRUE(v.accept);
  EXPECT_EQ(v.counter, "");
  v = interp.run({Hook::Forward, ip("fd00:88::10"), ip("ff02::1:ff00:11"), 58, 135, false});
  EXPECT_TRUE(v.accept) << "neighbour discovery must pass";
  // Outside the container scope: not ours.
  v = interp.run({Hook::Forward, ip("198.51.100.7"), ip("203.0.113.5"), proto::kTcp, 22, false});
  EXPECT_TRUE(v.accept);
  EXPECT_EQ(v.counter, "");
}

std::size_t count_rules(const dataplane::nft::Plan& p) { return p.rules.size(); }

TEST(PlanScaling, RulesAndChainsDoNotGrowWithEndpoints) {
  const auto small = testkit::generate_case(11, 5);
  const auto large = testkit::generate_case(11, 180);
  ASSERT_EQ(small.policy_yaml, large.policy_yaml);
  const Loaded a = load(small.policy_yaml, small.inventory_yaml);
  const Loaded b = load(large.policy_yaml, large.inventory_yaml);
  const auto pa = dataplane::nft::build_plan(compiler::compile(a.policy, a.inventory));
  const auto pb = dataplane::nft::build_plan(compiler::compile(b.policy, b.inventory));
  EXPECT_EQ(count_rules(pa), count_rules(pb));
  EXPECT_EQ(pa.chains.size(), pb.chains.size());
  EXPECT_EQ(pa.sets.size(), pb.sets.size());
  // With an overlay too: endpoints add tag map elements, never rules.
  dataplane::nft::Options ovl;
  ovl.overlay.devices = {"vx0"};
  const auto oa = dataplane::nft::build_plan(compiler::compile(a.policy, a.inventory), ovl);
  const auto ob = dataplane::nft::build_plan(compiler::compile(b.policy, b.inventory), ovl);
  EXPECT_EQ(count_rules(oa), count_rules(ob));
  EXPECT_EQ(oa.chains.size(), ob.chains.size());
  EXPECT_EQ(ob.find_set("tag4")->addresses.size(), pb.find_set("ep4")->addresses.size());
  std::size_t ea = 0, eb = 0;
  for (const auto& s : pa.sets) ea += s.addresses.size();
  for (const auto& s : pb.sets) eb += s.addresses.size();
  EXPECT_GT(eb, ea * 10);
}

TEST(PlanElements, EndpointElementsNameItsSets) {
  const auto gen = testkit::generate_case(3, 4);
  const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
  const auto rules = compiler::compile(l.policy, l.inventory);
  const auto plan = dataplane::nft::build_plan(rules);
  for (dataplane::EndpointId id = 0; id < 4; ++id) {
    const auto elems = dataplane::nft::endpoint_elements(*rules.policy, *rules.endpoints, id);
    ASSERT_GE(elems.size(), 4U);  // ep + tier, for each of two addresses
    for (const auto& e : elems) {
      const auto* s = plan.find_set(e.set);
      ASSERT_NE(s, nullptr) << e.set;
      EXPECT_NE(std::find(s->addresses.begin(), s->addresses.end(), e.address), s->addresses.end());
    }
  }
}

TEST(PlanLogPrefix, RoundTrips) {
  const auto p = dataplane::nft::log_prefix('a', 4242, 77);
  EXPECT_EQ(p, "tw:a:4242:77");
  const auto t = dataplane::nft::parse_log_prefix(p);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->verdict, 'a');
  EXPECT_EQ(t->rule, 4242U);
  EXPECT_EQ(t->generation, 77U);
  EXPECT_FALSE(dataplane::nft::parse_log_prefix("tw:x:1:1"));
  // The shortest prefix: one-digit rule and generation (default-deny at
  // generations 1-9).
  ASSERT_TRUE(dataplane::nft::parse_log_prefix("tw:d:3:1"));
  EXPECT_EQ(dataplane::nft::parse_log_prefix("tw:d:3:1")->rule, 3U);
  EXPECT_FALSE(dataplane::nft::parse_log_prefix("tw:d:1"));
  EXPECT_FALSE(dataplane::nft::parse_log_prefix("tw:d:1:2x"));
  EXPECT_FALSE(dataplane::nft::parse_log_prefix("iptables"));
}

// `tierctl compile --backend nft` output for the example policies, compared
// with tests/golden/<example>.nft. Regenerate with TIERWALL_UPDATE_GOLDEN=1.
class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, RenderedRulesetMatches) {
  const std::string root = TIERWALL_SOURCE_DIR;
  const std::string dir = root + "/policies/" + GetParam();
  policy::Diagnostics d;
  auto p = policy::load_policy({dir + "/policy"}, d);
  auto i = identity::load_inventory(dir + "/inventory.yaml", d);
  ASSERT_TRUE(p && i) << diag_text(d);
  // Paths in the golden files are relative to the repository root.
  const auto rules =
      compiler::compile(*p, *i, 1, {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("fd00::/64")});
  std::string text = dataplane::nft::render(dataplane::nft::build_plan(rules));
  const std::string golden = root + "/tests/golden/" + GetParam() + ".nft";
  if (std::getenv("TIERWALL_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(golden) << text;
  }
  std::ifstream in(golden);
  ASSERT_TRUE(in) << "missing " << golden << " (run with TIERWALL_UPDATE_GOLDEN=1)";
  std::stringstream want;
  want << in.rdbuf();
  // The digest depends on absolute paths: compare from the second line on.
  auto body = [](const std::string& s) { return s.substr(s.find('\n') + 1); };
  EXPECT_EQ(body(text), body(want.str()));
}

INSTANTIATE_TEST_SUITE_P(Examples, Golden,
                         ::testing::Values("nist-800-190", "dev-test-prod", "pci-cardholder"));

// ---- Overlay: the tier on the wire (VXLAN-GBP) ----

namespace overlay {

using dataplane::nft::gbp_tag;
using E = dataplane::PeerMatch::Entity;

dataplane::nft::Options overlay_options() {
  dataplane::nft::Options o;
  o.overlay.devices = {"vx0"};
  o.overlay.peers = {ip("192.0.2.200"), ip("2001:db8:ff::2")};
  return o;
}

// An overlay packet: arrives on vx0 (ingress) or leaves through it (egress).
testkit::PlanPacket packet(Hook hook, const std::string& s, const std::string& d, Probe pr,
                           std::string iif, std::string oif, std::uint32_t mark) {
  testkit::PlanPacket p{hook, ip(s), ip(d), pr.protocol, pr.port, false};
  p.iif = std::move(iif);
  p.oif = std::move(oif);
  p.mark = mark;
  return p;
}

void expect_decision(const testkit::PlanVerdict& got_v, const dataplane::Decision& want,
                     const dataplane::CompiledPolicy& policy, const std::string& what) {
  dataplane::RuleId got_rule = 0;
  const auto got = as_decision(got_v, policy, got_rule);
  ASSERT_EQ(got.verdict, want.verdict)
      << what << " want rule " << want.rule_id() << " got " << got_rule << " (" << got_v.log << ")";
  ASSERT_EQ(got_rule, want.rule_id()) << what;
}

// With an overlay configured, traffic that never touches it is decided
// exactly as without one.
TEST(PlanOverlay, TrafficOffTheOverlayIsDecidedAsBefore) {
  int compared = 0;
  compare_with_evaluator(60, overlay_options(), compared);
  EXPECT_GT(compared, 40000);
}

TEST(PlanOverlay, WithoutAnOverlayThePlanIsThePlainOne) {
  const auto gen = testkit::generate_case(5);
  const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
  const auto rules = compiler::compile(l.policy, l.inventory);
  dataplane::nft::Options peers_only;
  peers_only.overlay.peers = {ip("192.0.2.200")};  // no device: no overlay
  EXPECT_EQ(dataplane::nft::render(dataplane::nft::build_plan(rules)),
            dataplane::nft::render(dataplane::nft::build_plan(rules, peers_only)));
  const auto with = dataplane::nft::render(dataplane::nft::build_plan(rules, overlay_options()));
  EXPECT_NE(with.find("map tag4 {"), std::string::npos) << with;
  EXPECT_NE(with.find("iifname @ovl jump ovl_check"), std::string::npos) << with;
}

// Every generated policy, with an overlay: traffic that does not touch the
// overlay is decided exactly as without it; a tagged unknown source is
// decided as decide_tagged() says; a known source must carry its own tag;
// egress is tagged with the source's tier whatever mark it came with.
TEST(PlanOverlay, InterpretedOverlayPlanEqualsEvaluators) {
  int compared = 0;
  for (std::uint32_t seed = 1; seed <= 60; ++seed) {
    const auto gen = testkit::generate_case(seed);
    const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
    const auto rules =
        compiler::compile(l.policy, l.inventory, seed,
                          {*Cidr::parse(gen.container_cidr4), *Cidr::parse(gen.container_cidr6)});
    const auto& policy = *rules.policy;
    const auto plan = dataplane::nft::build_plan(rules, overlay_options());
    const testkit::PlanInterpreter interp(plan);
    const auto tiers = static_cast<std::uint32_t>(policy.tiers.size());
    for (bool v6 : {false, true}) {
      const auto& eps = v6 ? gen.endpoint_v6 : gen.endpoint_v4;
      const auto& unknown = v6 ? gen.unknown_v6 : gen.unknown_v4;
      const auto& world = v6 ? gen.world_v6 : gen.world_v4;
      const auto& node = v6 ? gen.node_v6 : gen.node_v4;
      std::vector<std::string> dsts = eps;
      for (const auto* list : {&unknown, &world, &node})
        dsts.insert(dsts.end(), list->begin(), list->end());
      std::vector<std::string> remote = unknown;  // sources the receiver does not know
      remote.insert(remote.end(), world.begin(), world.end());
      for (const auto& pr : probes(v6)) {
        for (const auto& d : dsts) {
          const auto dst = dataplane::resolve(*rules.endpoints, ip(d));
          const Hook hook = dst.entity == E::Host ? Hook::Input : Hook::Forward;
          // Ingress, unknown source: decided by its tag.
          for (const auto& s : remote) {
            const auto src = dataplane::resolve(*rules.endpoints, ip(s));
            for (std::uint32_t t = 0; t <= tiers + 1; ++t) {
              // Flag bits of the GBP header land in the high half: ignored.
              const std::uint32_t mark = t | 0x00480000U;
              const auto v = interp.run(packet(hook, s, d, pr, "vx0", "eth1", mark));
              const std::string what = "seed " + std::to_string(seed) + " " + s + " tag " +
                                       std::to_string(t) + " -> " + d + " " +
                                       std::to_string(pr.protocol) + "/" + std::to_string(pr.port);
              if (t > tiers) {
                EXPECT_FALSE(v.accept) << what;
                EXPECT_EQ(v.counter, "ovl_badtag") << what;
              } else if (t > 0) {
                const auto want = dataplane::decide_tagged(
                    policy, static_cast<dataplane::TierId>(t - 1), dst, pr.protocol, pr.port);
                expect_decision(v, want, policy, what);
              } else if (src.entity == E::Endpoint || dst.entity == E::Endpoint) {
                expect_decision(v, dataplane::decide(policy, src, dst, pr.protocol, pr.port),
                                policy, what);
              } else {
                EXPECT_TRUE(v.accept) << what;  // world to world/host: not ours
                EXPECT_EQ(v.counter, "") << what;
              }
              ++compared;
            }
          }
          // Ingress, known source: its own tag is decided by address, any
          // other (none included) is a spoof.
          for (const auto& s : eps) {
            if (s == d) continue;
            const auto src = dataplane::resolve(*rules.endpoints, ip(s));
            const std::uint32_t own = gbp_tag(src.tier);
            const std::string what = "seed " + std::to_string(seed) + " known " + s + " -> " + d;
            expect_decision(interp.run(packet(hook, s, d, pr, "vx0", "eth1", own)),
                            dataplane::decide(policy, src, dst, pr.protocol, pr.port), policy,
                            what);
            for (std::uint32_t other : {0U, own % tiers + 1}) {
              if (other == own) continue;
              const auto v = interp.run(packet(hook, s, d, pr, "vx0", "eth1", other));
              EXPECT_FALSE(v.accept) << what << " tag " << other;
              EXPECT_EQ(v.counter, "ovl_spoof") << what << " tag " << other;
            }
            compared += 2;
          }
        }
        // Egress: the mark is the source's tag whatever it was; towards an
        // address this node does not know the receiver decides.
        std::vector<std::string> srcs = eps;
        srcs.insert(srcs.end(), unknown.begin(), unknown.end());
        srcs.insert(srcs.end(), world.begin(), world.end());
        for (const auto& s : srcs) {
          const auto src = dataplane::resolve(*rules.endpoints, ip(s));
          const std::uint32_t want_mark = src.entity != E::Endpoint ? 0U : gbp_tag(src.tier);
          for (const auto& d : unknown) {
            if (s == d) continue;
            for (bool established : {false, true}) {
              auto p = packet(Hook::Forward, s, d, pr, "eth0", "vx0", 0x00ff0007U);
              p.established = established;
              const auto v = interp.run(p);
              EXPECT_TRUE(v.accept) << s << " -> " << d;
              EXPECT_EQ(v.mark, want_mark) << s << " -> " << d;
              EXPECT_EQ(v.counter, "") << s << " -> " << d;
            }
          }
          for (const auto& d : eps) {
            if (s == d) continue;
            const auto dst = dataplane::resolve(*rules.endpoints, ip(d));
            const auto v = interp.run(packet(Hook::Forward, s, d, pr, "eth0", "vx0", 5));
            EXPECT_EQ(v.mark, want_mark);
            expect_decision(v, dataplane::decide(policy, src, dst, pr.protocol, pr.port), policy,
                            "egress to known " + s + " -> " + d);
            ++compared;
          }
        }
        // The node's own packets leave untagged.
        for (const auto& s : node) {
          const auto v = interp.run(packet(Hook::Output, s, unknown[0], pr, "lo", "vx0", 0x2));
          EXPECT_TRUE(v.accept);
          EXPECT_EQ(v.mark, 0U);
        }
      }
    }
  }
  EXPECT_GT(compared, 100000);
}

TEST(PlanOverlay, OnlyVxlanFromTrustedPeersReachesTheNode) {
  const auto gen = testkit::generate_case(9);
  const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
  const auto rules =
      compiler::compile(l.policy, l.inventory, 1, {*Cidr::parse(gen.container_cidr4)});
  const auto plan = dataplane::nft::build_plan(rules, overlay_options());
  const testkit::PlanInterpreter interp(plan);
  const Probe vxlan{proto::kUdp, 4789};
  auto v = interp.run(packet(Hook::Input, "192.0.2.200", "10.88.0.1", vxlan, "ul0", "", 0));
  EXPECT_TRUE(v.accept);
  EXPECT_EQ(v.counter, "");
  v = interp.run(packet(Hook::Input, "2001:db8:ff::2", "fd00:88::1", vxlan, "ul0", "", 0));
  EXPECT_TRUE(v.accept);
  for (const char* rogue : {"192.0.2.201", "198.51.100.7", "10.88.0.10"}) {
    v = interp.run(packet(Hook::Input, rogue, "10.88.0.1", vxlan, "ul0", "", 0));
    EXPECT_FALSE(v.accept) << rogue;
    EXPECT_EQ(v.counter, "ovl_untrusted") << rogue;
  }
  // Even a packet conntrack thinks established.
  auto p = packet(Hook::Input, "192.0.2.9", "10.88.0.1", vxlan, "ul0", "", 0);
  p.established = true;
  EXPECT_FALSE(interp.run(p).accept);
  v = interp.run(packet(Hook::Input, "2001:db8:ff::3", "fd00:88::1", vxlan, "ul0", "", 0));
  EXPECT_FALSE(v.accept);
}

// Hand-written: the fail-closed reading of selectors for a source known only
// by its tier.
TEST(PlanOverlay, TaggedSourcesReadSelectorsFailClosed) {
  const std::string policy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: tags}
spec:
  tiers:
    - {name: web, level: 10}
    - {name: db, level: 30}
    - {name: lab, level: 5, mode: audit}
  assignments:
    - {match: {labels: {role: web}}, tier: web}
    - {match: {labels: {role: db}}, tier: db}
    - {match: {labels: {role: lab}}, tier: lab}
  denies:
    - {name: dev-never-db, from: {labels: {env: dev}}, to: {tier: db}, ports: [tcp/5432]}
    - {name: staged-web-db, from: {tier: web, labels: {team: x}}, to: {tier: db}, ports: [tcp/443], audit: true}
  flows:
    - {name: web-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432, tcp/443, udp/5000]}
    - {name: ops-db, from: {tier: web, labels: {team: ops}}, to: {tier: db}, ports: [tcp/22]}
    - {name: any-db, from: {}, to: {tier: db}, ports: [tcp/9100]}
)";
  const std::string inventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: n, addresses: [10.88.0.1]}
endpoints:
  - {name: db-1, labels: {role: db}, addresses: [10.88.0.20]}
  - {name: lab-1, labels: {role: lab}, addresses: [10.88.0.30]}
)";
  const Loaded l = load(policy, inventory);
  const auto rules = compiler::compile(l.policy, l.inventory, 1, {*Cidr::parse("10.88.0.0/16")});
  const auto& p = *rules.policy;
  const auto web = *p.find_tier("web");
  const auto lab = *p.find_tier("lab");
  const auto db = dataplane::resolve(*rules.endpoints, ip("10.88.0.20"));
  const auto labp = dataplane::resolve(*rules.endpoints, ip("10.88.0.30"));
  using dataplane::Verdict;
  auto tagged = [&](dataplane::TierId t, const dataplane::ResolvedPeer& d, std::uint16_t port,
                    std::uint8_t protocol = proto::kTcp) {
    return dataplane::decide_tagged(p, t, d, protocol, port);
  };
  // The selector-guarded deny holds for every web source.
  EXPECT_EQ(tagged(web, db, 5432).verdict, Verdict::Deny);
  EXPECT_EQ(tagged(web, db, 5432).rule, p.find_rule("dev-never-db"));
  // A flow that needs a source selector never matches a tag.
  EXPECT_EQ(tagged(web, db, 22).verdict, Verdict::Deny);
  EXPECT_EQ(tagged(web, db, 22).kind, dataplane::RuleKind::DefaultDeny);
  // A flow without one does; a staged deny with one turns it into audit.
  EXPECT_EQ(tagged(web, db, 5000, proto::kUdp).verdict, Verdict::Allow);
  EXPECT_EQ(tagged(web, db, 443).verdict, Verdict::Audit);
  EXPECT_EQ(tagged(web, db, 443).rule, p.find_rule("staged-web-db"));
  EXPECT_EQ(tagged(web, db, 9100).verdict, Verdict::Allow);
  // Audit tiers: a deny between two audit endpoints is audited.
  EXPECT_EQ(tagged(lab, labp, 80).verdict, Verdict::Audit);
  EXPECT_EQ(tagged(lab, db, 80).verdict, Verdict::Deny);

  // Never more permissive than the endpoint's real identity: a web endpoint
  // with team: ops passes tcp/22 by address, not by tag.
  const auto plan = dataplane::nft::build_plan(rules, overlay_options());
  const testkit::PlanInterpreter interp(plan);
  for (std::uint16_t port : {std::uint16_t{5432}, std::uint16_t{22}, std::uint16_t{443},
                             std::uint16_t{9100}, std::uint16_t{80}}) {
    const auto v = interp.run(packet(Hook::Forward, "10.88.7.7", "10.88.0.20",
                                     Probe{proto::kTcp, port}, "vx0", "eth1", gbp_tag(web)));
    expect_decision(v, tagged(web, db, port), p, "tcp/" + std::to_string(port));
  }
  const auto v = interp.run(packet(Hook::Forward, "10.88.7.7", "10.88.0.30", Probe{proto::kTcp, 80},
                                   "vx0", "eth1", gbp_tag(lab)));
  expect_decision(v, tagged(lab, labp, 80), p, "lab -> lab");
}

}  // namespace overlay

}  // namespace
