// The nft plan compiler: differential against the reference evaluator
// (through PlanInterpreter), scaling with tiers not endpoints, endpoint
// elements, log prefixes, and golden renderings of the example policies.
#include "tierwall/dataplane/nft/plan.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "plan_interpreter.h"
#include "tests/common/random_policy.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace {

using namespace tierwall;
using dataplane::nft::Hook;

std::string diag_text(const policy::Diagnostics& d) {
  std::ostringstream s;
  d.print(s);
  return s.str();
}

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

TEST(PlanDifferential, InterpretedPlanEqualsReferenceEvaluator) {
  int compared = 0;
  for (std::uint32_t seed = 1; seed <= 150; ++seed) {
    const auto gen = testkit::generate_case(seed);
    const Loaded l = load(gen.policy_yaml, gen.inventory_yaml);
    const auto rules =
        compiler::compile(l.policy, l.inventory, seed,
                          {*Cidr::parse(gen.container_cidr4), *Cidr::parse(gen.container_cidr6)});
    const auto plan = dataplane::nft::build_plan(rules);
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

}  // namespace
