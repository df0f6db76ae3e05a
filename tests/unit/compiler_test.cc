// The compiler: rules over tier and selector ids (never endpoints), endpoint
// binding by first matching assignment, interned membership profiles.
#include "tierwall/compiler/compiler.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tests/common/compile.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/identity/resolver.h"
#include "tierwall/policy/loader.h"

namespace tierwall::compiler {
namespace {

using dataplane::CompiledPolicy;
using dataplane::Mode;
using dataplane::PeerMatch;
using dataplane::RuleKind;
using dataplane::SelectorId;
using dataplane::TierId;

using testkit::diag_text;

policy::Policy load(std::string_view text) {
  policy::Diagnostics diags;
  auto p = policy::parse_policy(text, "c.yaml", diags);
  EXPECT_TRUE(p.has_value()) << diag_text(diags);
  return p.value_or(policy::Policy{});
}

IpAddress ip(std::string_view s) { return IpAddress::parse(s).value(); }

identity::Endpoint endpoint(std::string name,
                            std::vector<std::pair<std::string, std::string>> labels,
                            std::string image = {}, std::vector<IpAddress> addresses = {}) {
  identity::Endpoint ep;
  ep.name = std::move(name);
  ep.image = std::move(image);
  ep.labels = identity::Labels(std::move(labels));
  ep.addresses = std::move(addresses);
  return ep;
}

constexpr std::string_view kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: shop}
spec:
  mode: enforce
  intraTier: allow
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20, mode: audit}
    - {name: restricted, level: 30, mode: enforce}
  assignments:
    - name: pay-db
      match: {labels: {app: payments, role: db}}
      tier: restricted
    - name: payments
      match: {labels: {app: payments}}
      tier: internal
    - name: web
      match: {image: "reg/web/*"}
      tier: public
    - name: by-role
      match: {labels: {role: [api, worker]}}
      tier: internal
  denies:
    - name: d-telnet
      from: {}
      to: {}
      ports: [tcp/23]
    - name: d-staged
      from: {tier: [restricted, public]}
      to: {labels: {role: db, app: payments}}
      ports: [tcp/22]
      audit: true
  flows:
    - name: f-web-api
      from: {tier: public, labels: {role: web}}
      to: {tier: internal, labels: {app: payments, role: db}}
      ports: [tcp/8080-8090]
      log: true
    - name: f-same-selector
      from: {labels: {role: web}}
      to: {labels: {role: db, app: payments}}
      ports: [tcp/5432]
    - name: f-host
      from: {tier: [restricted, internal, public]}
      to: {host: true}
      ports: [udp/53]
    - name: f-world
      from: {image: "reg/web/*"}
      to: {world: ["0.0.0.0/0", "::/0"]}
)";

// ---------------------------------------------------------------------------
// Tiers
// ---------------------------------------------------------------------------

TEST(CompilerTiers, QuarantineFirstThenDeclarationOrder) {
  const policy::Policy p = load(kPolicy);
  const Compilation c(p, 7);
  const CompiledPolicy& cp = *c.policy();
  ASSERT_EQ(cp.tiers.size(), 4U);
  EXPECT_EQ(cp.tiers[0].name, "quarantine");
  EXPECT_EQ(cp.tiers[0].level, -1);
  EXPECT_FALSE(cp.tiers[0].declared);
  EXPECT_EQ(dataplane::kQuarantineTier, 0);
  EXPECT_EQ(cp.tiers[1].name, "public");
  EXPECT_EQ(cp.tiers[1].level, 10);
  EXPECT_EQ(cp.tiers[2].name, "internal");
  EXPECT_EQ(cp.tiers[3].name, "restricted");
  EXPECT_EQ(cp.tiers[3].level, 30);
  for (std::size_t i = 1; i < cp.tiers.size(); ++i) EXPECT_TRUE(cp.tiers[i].declared);
  EXPECT_EQ(cp.find_tier("quarantine"), TierId{0});
  EXPECT_EQ(cp.find_tier("internal"), TierId{2});
  EXPECT_EQ(cp.find_tier("nope"), std::nullopt);
}

TEST(CompilerTiers, TierIdsFollowDeclarationOrderNotLevel) {
  const policy::Policy p = load(R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: x}
spec:
  tiers:
    - {name: high, level: 900}
    - {name: low, level: 1}
    - {name: mid, level: 50}
)");
  const Compilation c(p, 1);
  const auto& tiers = c.policy()->tiers;
  ASSERT_EQ(tiers.size(), 4U);
  EXPECT_EQ(tiers[1].name, "high");
  EXPECT_EQ(tiers[2].name, "low");
  EXPECT_EQ(tiers[3].name, "mid");
}

struct ModeCase {
  const char* spec_mode;  // "" for unset
  Mode quarantine;
  Mode public_tier;  // no own mode
  Mode internal;     // mode: audit
  Mode restricted;   // mode: enforce
};

TEST(CompilerTiers, EffectiveModes) {
  const ModeCase cases[] = {
      {"", Mode::Enforce, Mode::Enforce, Mode::Audit, Mode::Enforce},
      {"enforce", Mode::Enforce, Mode::Enforce, Mode::Audit, Mode::Enforce},
      {"audit", Mode::Audit, Mode::Audit, Mode::Audit, Mode::Enforce},
  };
  for (const auto& mc : cases) {
    SCOPED_TRACE(mc.spec_mode);
    std::string text = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: x}
spec:
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20, mode: audit}
    - {name: restricted, level: 30, mode: enforce}
)";
    if (*mc.spec_mode != '\0') text += std::string("  mode: ") + mc.spec_mode + "\n";
    const Compilation c(load(text), 1);
    const CompiledPolicy& cp = *c.policy();
    ASSERT_EQ(cp.tiers.size(), 4U);
    EXPECT_EQ(cp.mode, *mc.spec_mode == 'a' ? Mode::Audit : Mode::Enforce);
    EXPECT_EQ(cp.tiers[0].mode, mc.quarantine);
    EXPECT_EQ(cp.tiers[1].mode, mc.public_tier);
    EXPECT_EQ(cp.tiers[2].mode, mc.internal);
    EXPECT_EQ(cp.tiers[3].mode, mc.restricted);
  }
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

TEST(CompilerRules, IdsStartAtFirstPolicyRuleDeniesThenFlows) {
  const policy::Policy p = load(kPolicy);
  const Compilation c(p, 7);
  const CompiledPolicy& cp = *c.policy();
  ASSERT_EQ(cp.denies.size(), 2U);
  ASSERT_EQ(cp.flows.size(), 4U);
  EXPECT_EQ(cp.rule_count(), 6U);
  const char* names[] = {"d-telnet",        "d-staged", "f-web-api",
                         "f-same-selector", "f-host",   "f-world"};
  for (std::size_t i = 0; i < 6; ++i) {
    const auto& r = i < 2 ? cp.denies[i] : cp.flows[i - 2];
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(r.id, dataplane::kFirstPolicyRule + i);
    EXPECT_EQ(r.origin.name, names[i]);
    EXPECT_EQ(r.origin.kind, i < 2 ? RuleKind::Deny : RuleKind::Flow);
    EXPECT_EQ(r.origin.file, "c.yaml");
    EXPECT_GT(r.origin.line, 0);
    EXPECT_EQ(cp.find_rule(r.id), &r);
    EXPECT_EQ(cp.find_rule(std::string_view(names[i])), &r);
  }
  EXPECT_EQ(cp.find_rule(dataplane::RuleId{3}), nullptr);
  EXPECT_EQ(cp.find_rule(std::string_view("nope")), nullptr);
  EXPECT_EQ(cp.name, "shop");
  EXPECT_EQ(cp.digest, p.digest);
  EXPECT_EQ(cp.generation, 7U);
  EXPECT_TRUE(cp.intra_tier_allow);
}

TEST(CompilerRules, PeersPortsAndFlags) {
  const Compilation c(load(kPolicy), 1);
  const CompiledPolicy& cp = *c.policy();
  const auto tier = [&](const char* n) { return cp.find_tier(n).value(); };

  const auto& telnet = cp.denies[0];
  EXPECT_EQ(telnet.from.entity, PeerMatch::Entity::Endpoint);
  EXPECT_TRUE(telnet.from.tiers.empty());  // {}: every tier, quarantine included
  EXPECT_FALSE(telnet.from.selector.has_value());
  EXPECT_FALSE(telnet.staged);
  ASSERT_EQ(telnet.ports.size(), 1U);
  EXPECT_EQ(telnet.ports[0].to_string(), "tcp/23");

  const auto& staged = cp.denies[1];
  EXPECT_TRUE(staged.staged);
  EXPECT_FALSE(staged.log);
  // Tier lists are sorted by id whatever order the policy wrote.
  EXPECT_EQ(staged.from.tiers, (std::vector<TierId>{tier("public"), tier("restricted")}));

  const auto& web_api = cp.flows[0];
  EXPECT_TRUE(web_api.log);
  EXPECT_FALSE(web_api.staged);
  EXPECT_EQ(web_api.from.tiers, std::vector<TierId>{tier("public")});
  ASSERT_TRUE(web_api.from.selector.has_value());
  ASSERT_TRUE(web_api.to.selector.has_value());
  EXPECT_EQ(web_api.ports[0].to_string(), "tcp/8080-8090");

  const auto& host = cp.flows[2];
  EXPECT_EQ(host.to.entity, PeerMatch::Entity::Host);
  EXPECT_EQ(host.from.tiers,
            (std::vector<TierId>{tier("public"), tier("internal"), tier("restricted")}));

  const auto& world = cp.flows[3];
  EXPECT_EQ(world.to.entity, PeerMatch::Entity::World);
  ASSERT_EQ(world.to.cidrs.size(), 2U);
  EXPECT_EQ(world.to.cidrs[0].to_string(), "0.0.0.0/0");
  EXPECT_EQ(world.to.cidrs[1].to_string(), "::/0");
  ASSERT_EQ(world.ports.size(), 1U);
  EXPECT_TRUE(world.ports[0].any);  // ports omitted -> {any}
  EXPECT_TRUE(world.from.tiers.empty());
  ASSERT_TRUE(world.from.selector.has_value());
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

TEST(CompilerSelectors, IdenticalSelectorsShareOneId) {
  const Compilation c(load(kPolicy), 1);
  const CompiledPolicy& cp = *c.policy();
  // {labels: {app: payments, role: db}} appears three times (once with a
  // tier, keys in another order); {role: web} twice (once with a tier).
  const auto& staged_to = cp.denies[1].to.selector;
  const auto& web_api_to = cp.flows[0].to.selector;
  const auto& same_to = cp.flows[1].to.selector;
  ASSERT_TRUE(staged_to && web_api_to && same_to);
  EXPECT_EQ(*staged_to, *web_api_to);
  EXPECT_EQ(*staged_to, *same_to);
  EXPECT_EQ(*cp.flows[0].from.selector, *cp.flows[1].from.selector);
  EXPECT_NE(*cp.flows[0].from.selector, *staged_to);
  EXPECT_NE(*cp.flows[3].from.selector, *staged_to);
  // Distinct selectors: {app,role=db}, {role=web}, {image=reg/web/*}.
  EXPECT_EQ(cp.selectors.size(), 3U);
  for (SelectorId id = 0; id < cp.selectors.size(); ++id) {
    EXPECT_TRUE(c.selector(id).tiers.empty()) << "selector keeps only its identity part";
  }
}

TEST(CompilerSelectors, ValueOrderAndDuplicatesDoNotMatter) {
  const Compilation c(load(R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: x}
spec:
  tiers: [{name: t, level: 1}]
  flows:
    - {name: a, from: {labels: {env: [prod, stage]}}, to: {}}
    - {name: b, from: {labels: {env: [stage, prod, prod]}}, to: {}}
    - {name: c, from: {labels: {env: prod}}, to: {}}
    - {name: d, from: {name: "web-*"}, to: {name: "web-*"}}
    - {name: e, from: {image: "web-*"}, to: {tier: t}}
)"),
                      1);
  const CompiledPolicy& cp = *c.policy();
  EXPECT_EQ(*cp.flows[0].from.selector, *cp.flows[1].from.selector);
  EXPECT_NE(*cp.flows[0].from.selector, *cp.flows[2].from.selector);
  EXPECT_EQ(*cp.flows[3].from.selector, *cp.flows[3].to.selector);
  // The same pattern as an image and as a name selects different things.
  EXPECT_NE(*cp.flows[3].from.selector, *cp.flows[4].from.selector);
  EXPECT_FALSE(cp.flows[4].to.selector.has_value());  // tier only
  EXPECT_EQ(cp.selectors.size(), 4U);
}

// Two selectors that select different endpoints must never share a
// SelectorId, whatever characters their label values or globs contain.
TEST(CompilerSelectors, DistinctSelectorsNeverCollide) {
  const policy::Policy p = load(R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: x}
spec:
  tiers: [{name: t, level: 1}]
  flows:
    - {name: pipe-value, from: {labels: {app: "a|b"}}, to: {}, ports: [tcp/1]}
    - {name: value-list, from: {labels: {app: [a, b]}}, to: {}, ports: [tcp/2]}
    - {name: image-with-space, from: {image: "reg/* name=web"}, to: {}, ports: [tcp/3]}
    - {name: image-and-name, from: {image: "reg/*", name: web}, to: {}, ports: [tcp/4]}
)");
  const Compilation c(p, 1);
  const CompiledPolicy& cp = *c.policy();
  EXPECT_NE(*cp.flows[0].from.selector, *cp.flows[1].from.selector)
      << "labels {app: 'a|b'} and {app: [a, b]} are different selectors";
  EXPECT_NE(*cp.flows[2].from.selector, *cp.flows[3].from.selector)
      << "image 'reg/* name=web' and image 'reg/*' + name 'web' are different selectors";

  // End to end: what each flow lets through.
  identity::Inventory inv;
  inv.node.addresses = {ip("192.0.2.1")};
  inv.endpoints = {
      endpoint("a", {{"app", "a"}}, "", {ip("10.0.0.1")}),
      endpoint("pipe", {{"app", "a|b"}}, "", {ip("10.0.0.2")}),
      endpoint("web", {}, "reg/x", {ip("10.0.0.3")}),
      endpoint("dst", {}, "", {ip("10.0.0.9")}),
  };
  const auto rs = compile(p, inv);
  auto verdict = [&](const char* src, std::uint16_t port) {
    return std::string(dataplane::to_string(
        dataplane::decide(rs, dataplane::Connection{ip(src), ip("10.0.0.9"), proto::kTcp, port})
            .verdict));
  };

  EXPECT_EQ(verdict("10.0.0.1", 1), "deny") << "app=a is not app='a|b'";
  EXPECT_EQ(verdict("10.0.0.1", 2), "allow") << "app=a is in [a, b]";
  EXPECT_EQ(verdict("10.0.0.2", 1), "allow") << "app='a|b' matches itself";
  EXPECT_EQ(verdict("10.0.0.2", 2), "deny") << "app='a|b' is not in [a, b]";
  EXPECT_EQ(verdict("10.0.0.3", 3), "deny") << "image reg/x is not 'reg/* name=web'";
  EXPECT_EQ(verdict("10.0.0.3", 4), "allow") << "image reg/x, name web";
}

// ---------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------

TEST(CompilerBind, FirstMatchingAssignmentWins) {
  const Compilation c(load(kPolicy), 1);
  const CompiledPolicy& cp = *c.policy();
  struct Case {
    identity::Endpoint ep;
    const char* tier;
    int assignment;
  };
  const Case cases[] = {
      // matches pay-db (0) and payments (1) and by-role? no: role db.
      {endpoint("db", {{"app", "payments"}, {"role", "db"}}), "restricted", 0},
      // matches payments (1) and by-role (3).
      {endpoint("api", {{"app", "payments"}, {"role", "api"}}), "internal", 1},
      // matches web (2) and by-role (3): the image assignment comes first.
      {endpoint("w", {{"role", "worker"}}, "reg/web/front:1"), "public", 2},
      {endpoint("w2", {{"role", "worker"}}, "reg/other:1"), "internal", 3},
      {endpoint("stray", {{"app", "shop"}}, "reg/other:1"), "quarantine", -1},
      {endpoint("none", {}), "quarantine", -1},
  };
  for (const auto& cs : cases) {
    SCOPED_TRACE(cs.ep.name);
    const EndpointBinding b = c.bind(cs.ep);
    EXPECT_EQ(cp.tiers.at(b.tier).name, cs.tier);
    EXPECT_EQ(b.assignment, cs.assignment);
    const auto r = identity::resolve_tier(c.source(), cs.ep);
    EXPECT_EQ(r.tier, cs.tier);
    EXPECT_EQ(r.assignment, cs.assignment);
  }
}

// bind() narrows the candidates through a label index; it must agree with
// the plain linear definition for every endpoint.
TEST(CompilerBind, AgreesWithLinearResolutionAndMembership) {
  const policy::Policy p = load(R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: x}
spec:
  tiers:
    - {name: t1, level: 1}
    - {name: t2, level: 2}
    - {name: t3, level: 3}
  assignments:
    - {match: {labels: {role: db, env: prod}}, tier: t3}
    - {match: {labels: {env: [prod, stage]}, name: "svc-?"}, tier: t2}
    - {match: {image: "reg/a/*"}, tier: t1}
    - {match: {labels: {app: [x, y]}}, tier: t2}
    - {match: {labels: {zone: a}}, tier: t1}
  flows:
    - {name: f1, from: {labels: {app: x}}, to: {labels: {env: prod, role: [db, api]}}}
    - {name: f2, from: {image: "reg/*"}, to: {name: "svc-*"}}
    - {name: f3, from: {labels: {zone: [a, b]}, image: "*:1"}, to: {labels: {role: api}}}
)");
  const Compilation c(p, 1);
  const CompiledPolicy& cp = *c.policy();
  std::mt19937 rng(12345);
  const std::vector<std::string> keys = {"role", "env", "app", "zone", "other"};
  const std::vector<std::string> values = {"db", "api", "prod", "stage", "x", "y", "a", "b"};
  const std::vector<std::string> images = {"", "reg/a/b:1", "reg/c:1", "reg/a/z:2", "x:1"};
  const std::vector<std::string> names = {"svc-1", "svc-10", "web", "svc-a"};
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::pair<std::string, std::string>> labels;
    for (const auto& k : keys) {
      if (rng() % 2 == 0) labels.emplace_back(k, values[rng() % values.size()]);
    }
    const identity::Endpoint ep =
        endpoint(names[rng() % names.size()], labels, images[rng() % images.size()]);
    const EndpointBinding b = c.bind(ep);
    const auto r = identity::resolve_tier(p, ep);
    ASSERT_EQ(b.assignment, r.assignment) << "endpoint #" << i;
    ASSERT_EQ(cp.tiers.at(b.tier).name, r.tier) << "endpoint #" << i;
    std::vector<SelectorId> expected;
    for (SelectorId id = 0; id < cp.selectors.size(); ++id) {
      if (identity::matches_identity(c.selector(id), ep)) expected.push_back(id);
    }
    ASSERT_EQ(b.selectors, expected) << "endpoint #" << i;
  }
}

TEST(CompilerBind, BindAllFillsTheEndpointTable) {
  const policy::Policy p = load(kPolicy);
  identity::Inventory inv;
  inv.node.name = "n";
  inv.node.addresses = {ip("192.0.2.1"), ip("2001:db8::1")};
  inv.endpoints = {
      endpoint("db", {{"app", "payments"}, {"role", "db"}}, "", {ip("10.0.0.1"), ip("fd00::1")}),
      endpoint("web", {{"role", "web"}}, "reg/web/x:1", {ip("10.0.0.2")}),
  };
  const Compilation c(p, 1);
  const auto table = c.bind_all(inv, {*Cidr::parse("10.0.0.0/8")});
  EXPECT_EQ(table->endpoint_count(), 2U);
  EXPECT_EQ(table->address_count(), 3U);
  EXPECT_EQ(table->node_addresses(), inv.node.addresses);
  ASSERT_EQ(table->container_cidrs().size(), 1U);
  EXPECT_TRUE(table->in_container_cidr(ip("10.9.9.9")));
  EXPECT_EQ(table->find(ip("fd00::1")), dataplane::EndpointId{0});
  EXPECT_EQ(table->find(ip("10.0.0.2")), dataplane::EndpointId{1});
  const auto* db = table->entry(0);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->tier, c.policy()->find_tier("restricted").value());
  const auto* web = table->entry(1);
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->tier, c.policy()->find_tier("public").value());
  const auto sel = table->selectors(*web);
  EXPECT_TRUE(std::is_sorted(sel.begin(), sel.end()));
  EXPECT_EQ(sel.size(), 2U);  // {role: web} and {image: reg/web/*}
}

// ---------------------------------------------------------------------------
// Scale: rules are independent of endpoints; profiles are interned.
// ---------------------------------------------------------------------------

identity::Inventory generated_inventory(std::size_t n) {
  identity::Inventory inv;
  inv.node.name = "node";
  inv.node.addresses = {ip("192.0.2.1")};
  inv.endpoints.reserve(n);
  const std::vector<std::vector<std::pair<std::string, std::string>>> label_sets = {
      {{"app", "payments"}, {"role", "db"}},
      {{"app", "payments"}, {"role", "api"}},
      {{"role", "web"}},
      {{"app", "shop"}},
  };
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = static_cast<std::uint32_t>(0x0a000000U + i + 1);  // 10.0.0.1 + i
    inv.endpoints.push_back(endpoint("ep-" + std::to_string(i), label_sets[i % label_sets.size()],
                                     i % 3 == 0 ? "reg/web/app:1" : "reg/other:1",
                                     {IpAddress::v4(v)}));
  }
  return inv;
}

TEST(CompilerScale, RulesNeverGrowWithEndpoints) {
  const policy::Policy p = load(kPolicy);
  const auto small = compile(p, generated_inventory(10));
  const auto large = compile(p, generated_inventory(10000));
  EXPECT_EQ(small.endpoints->endpoint_count(), 10U);
  EXPECT_EQ(large.endpoints->endpoint_count(), 10000U);
  EXPECT_EQ(small.policy->rule_count(), large.policy->rule_count());
  EXPECT_EQ(small.policy->rule_count(), 6U);
  EXPECT_EQ(small.policy->selectors.size(), large.policy->selectors.size());
  EXPECT_EQ(small.policy->tiers.size(), large.policy->tiers.size());
  ASSERT_EQ(small.policy->denies.size(), large.policy->denies.size());
  ASSERT_EQ(small.policy->flows.size(), large.policy->flows.size());
  for (std::size_t i = 0; i < small.policy->flows.size(); ++i) {
    const auto& a = small.policy->flows[i];
    const auto& b = large.policy->flows[i];
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.from, b.from);
    EXPECT_EQ(a.to, b.to);
    EXPECT_EQ(a.ports, b.ports);
  }
  // 4 label sets x 2 images -> at most 8 distinct membership sets (+ the
  // empty profile 0), however many endpoints.
  EXPECT_LE(large.endpoints->profile_count(), 9U);
  EXPECT_EQ(small.endpoints->profile_count(), large.endpoints->profile_count());
}

TEST(CompilerScale, EndpointsWithEqualLabelsShareOneProfile) {
  const policy::Policy p = load(kPolicy);
  identity::Inventory inv;
  inv.node.addresses = {ip("192.0.2.1")};
  for (std::uint32_t i = 0; i < 100; ++i) {
    inv.endpoints.push_back(endpoint("db-" + std::to_string(i),
                                     {{"app", "payments"}, {"role", "db"}}, "",
                                     {IpAddress::v4(0x0a000100U + i)}));
  }
  const auto rs = compile(p, inv);
  // Profile 0 (member of nothing) plus the one profile all 100 share.
  EXPECT_EQ(rs.endpoints->profile_count(), 2U);
  const auto* first = rs.endpoints->entry(0);
  ASSERT_NE(first, nullptr);
  for (dataplane::EndpointId id = 1; id < 100; ++id) {
    const auto* e = rs.endpoints->entry(id);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->profile, first->profile);
  }
  // An endpoint that is a member of no selector uses profile 0.
  inv.endpoints.push_back(endpoint("loner", {{"x", "y"}}, "", {ip("10.0.9.9")}));
  const auto rs2 = compile(p, inv);
  EXPECT_EQ(rs2.endpoints->profile_count(), 2U);
  EXPECT_EQ(rs2.endpoints->entry(100)->profile, 0U);
  EXPECT_EQ(rs2.endpoints->entry(100)->tier, dataplane::kQuarantineTier);
}

}  // namespace
}  // namespace tierwall::compiler
