// The DPDK dataplane's decision core (tw_dpdk_classify): table-driven cases
// per rule kind, a differential test against the reference evaluator over
// generated policies, the flow table (injected clock), and RCU publication
// with real reader threads.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/dpdk_reference.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/flow_table.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace tierwall::dataplane::dpdk {
namespace {

using testkit::case_addresses;
using testkit::compile_case;
using testkit::describe;
using testkit::reference;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }
Cidr cidr(const std::string& s) { return *Cidr::parse(s); }

// ------------------------------------------------------------ hand-built policy
//
// tiers: 0 quarantine, 1 web, 2 app, 3 db (audit mode), 4 dev
// selectors: 0 role=front, 1 env=prod, 2 pci
// endpoints: web1 (web, {0}) 10.0.0.10 fd00::10, web2 (web, {0,1}) 10.0.0.11,
//   app1 (app, {1}) 10.0.0.20 fd00::20, db1 (db, {2}) 10.0.0.30,
//   dev1 (dev, {}) 10.0.0.40, q1 (quarantine) 10.0.0.50
// node: 10.0.0.1 fd00::1; container CIDRs 10.0.0.0/16 fd00::/64

PeerMatch tiers(std::vector<TierId> t, std::optional<SelectorId> sel = std::nullopt) {
  PeerMatch p;
  p.tiers = std::move(t);
  p.selector = sel;
  return p;
}
PeerMatch world(std::vector<std::string> cidrs) {
  PeerMatch p;
  p.entity = PeerMatch::Entity::World;
  for (const auto& c : cidrs) p.cidrs.push_back(cidr(c));
  return p;
}
PeerMatch host() {
  PeerMatch p;
  p.entity = PeerMatch::Entity::Host;
  return p;
}
PortMatch port(std::uint8_t protocol, std::uint16_t lo, std::uint16_t hi) {
  return PortMatch{false, protocol, lo, hi};
}

Rule rule(RuleId id, PeerMatch from, PeerMatch to, std::vector<PortMatch> ports,
          bool staged = false) {
  Rule r;
  r.id = id;
  r.origin.name = "r" + std::to_string(id);
  r.from = std::move(from);
  r.to = std::move(to);
  r.ports = ports.empty() ? std::vector<PortMatch>{PortMatch::any_port()} : std::move(ports);
  r.staged = staged;
  return r;
}

RuleSet hand_rules(bool intra_allow = true, Mode policy_mode = Mode::Enforce) {
  auto pol = std::make_shared<CompiledPolicy>();
  pol->name = "hand";
  pol->generation = 7;
  pol->mode = policy_mode;
  pol->intra_tier_allow = intra_allow;
  pol->tiers = {{"quarantine", -1, Mode::Enforce, false},
                {"web", 10, Mode::Enforce, true},
                {"app", 20, Mode::Enforce, true},
                {"db", 30, Mode::Audit, true},
                {"dev", 40, Mode::Enforce, true}};
  pol->selectors = {{"role=front"}, {"env=prod"}, {"pci"}};
  pol->denies = {
      rule(16, tiers({4}), tiers({3}), {}),
      rule(17, tiers({1}), tiers({3}), {port(proto::kTcp, 5432, 5432)}, true),
      rule(18, world({"0.0.0.0/0"}), tiers({}), {port(proto::kTcp, 22, 22)}),
  };
  pol->flows = {
      rule(19, tiers({1}, 0), tiers({2}), {port(proto::kTcp, 8080, 8090)}),
      rule(20, tiers({2}), tiers({3}, 2), {port(proto::kTcp, 5432, 5432)}),
      rule(21, tiers({1}), tiers({3}), {port(proto::kTcp, 5432, 5432)}),
      rule(22, world({"198.51.100.0/24", "2001:db8::/32"}), tiers({1}),
           {port(proto::kTcp, 443, 443)}),
      rule(23, tiers({2}), world({"203.0.113.0/24"}),
           {port(proto::kTcp, 443, 443), port(proto::kUdp, 53, 53)}),
      rule(24, host(), tiers({}), {port(proto::kIcmp, 8, 8)}),
      rule(25, tiers({1}), tiers({2}), {port(proto::kIcmpv6, 128, 128)}),
      rule(26, tiers({0}), host(), {port(proto::kUdp, 67, 67)}),
      rule(27, tiers({4}), tiers({2}), {}),
  };
  auto eps = std::make_shared<EndpointTable>();
  auto add = [&](EndpointId id, std::vector<std::string> addrs, TierId tier,
                 std::vector<SelectorId> sel) {
    std::vector<IpAddress> a;
    for (const auto& s : addrs) a.push_back(ip(s));
    EXPECT_TRUE(eps->upsert(id, a, tier, sel));
  };
  add(0, {"10.0.0.10", "fd00::10"}, 1, {0});
  add(1, {"10.0.0.11"}, 1, {0, 1});
  add(2, {"10.0.0.20", "fd00::20"}, 2, {1});
  add(3, {"10.0.0.30"}, 3, {2});
  add(4, {"10.0.0.40"}, 4, {});
  add(5, {"10.0.0.50"}, 0, {});
  eps->set_node_addresses({ip("10.0.0.1"), ip("fd00::1")});
  eps->set_container_cidrs({cidr("10.0.0.0/16"), cidr("fd00::/64")});
  return RuleSet{pol, eps};
}

struct Case {
  const char* what;
  const char* src;
  const char* dst;
  std::uint8_t protocol;
  std::uint16_t port;
  Verdict verdict;
  RuleId rule;
};

constexpr Verdict A = Verdict::Allow;
constexpr Verdict D = Verdict::Deny;
constexpr Verdict U = Verdict::Audit;
constexpr std::uint8_t TCP = proto::kTcp;
constexpr std::uint8_t UDP = proto::kUdp;

const Case kCases[] = {
    {"flow with selector", "10.0.0.10", "10.0.0.20", TCP, 8080, A, 19},
    {"port range upper edge", "10.0.0.10", "10.0.0.20", TCP, 8090, A, 19},
    {"port range lower edge", "10.0.0.11", "10.0.0.20", TCP, 8080, A, 19},
    {"past the range", "10.0.0.10", "10.0.0.20", TCP, 8091, D, kRuleDefaultDeny},
    {"udp on a tcp rule", "10.0.0.10", "10.0.0.20", UDP, 8080, D, kRuleDefaultDeny},
    {"dst selector", "10.0.0.20", "10.0.0.30", TCP, 5432, A, 20},
    {"enforced deny", "10.0.0.40", "10.0.0.30", TCP, 80, D, 16},
    {"staged deny over a flow", "10.0.0.10", "10.0.0.30", TCP, 5432, U, 17},
    {"default deny, enforce side", "10.0.0.10", "10.0.0.30", TCP, 80, D, kRuleDefaultDeny},
    {"default deny, audit tier only", "10.0.0.30", "8.8.8.8", TCP, 80, U, kRuleDefaultDeny},
    {"self", "10.0.0.10", "10.0.0.10", TCP, 1, A, kRuleSelf},
    {"self across families", "10.0.0.10", "fd00::10", TCP, 1, A, kRuleSelf},
    {"intra-tier", "10.0.0.10", "10.0.0.11", TCP, 1234, A, kRuleIntraTier},
    {"quarantine never intra-tier", "10.0.0.50", "10.0.9.9", TCP, 1, D, kRuleDefaultDeny},
    {"unknown in container CIDR", "10.0.9.9", "10.0.0.1", UDP, 67, A, 26},
    {"quarantine to host", "10.0.0.50", "10.0.0.1", UDP, 67, A, 26},
    {"world CIDR in", "198.51.100.7", "10.0.0.10", TCP, 443, A, 22},
    {"world outside CIDR", "8.8.8.8", "10.0.0.10", TCP, 443, D, kRuleDefaultDeny},
    {"world deny", "8.8.8.8", "10.0.0.10", TCP, 22, D, 18},
    {"world deny to quarantine", "8.8.8.8", "10.0.9.9", TCP, 22, D, 18},
    {"to world tcp", "10.0.0.20", "203.0.113.5", TCP, 443, A, 23},
    {"to world udp", "10.0.0.20", "203.0.113.200", UDP, 53, A, 23},
    {"to world outside", "10.0.0.20", "8.8.8.8", UDP, 53, D, kRuleDefaultDeny},
    {"world to world, enforce policy", "8.8.8.8", "203.0.113.5", TCP, 80, D, kRuleDefaultDeny},
    {"host icmp echo", "10.0.0.1", "10.0.0.30", proto::kIcmp, 8, A, 24},
    {"host icmp other type", "10.0.0.1", "10.0.0.30", proto::kIcmp, 0, U, kRuleDefaultDeny},
    {"host to enforce tier", "10.0.0.1", "10.0.0.10", proto::kIcmp, 3, D, kRuleDefaultDeny},
    {"icmpv6 type", "fd00::10", "fd00::20", proto::kIcmpv6, 128, A, 25},
    {"icmpv6 other type", "fd00::10", "fd00::20", proto::kIcmpv6, 129, D, kRuleDefaultDeny},
    {"ipv6 world CIDR", "2001:db8::5", "fd00::10", TCP, 443, A, 22},
    {"ipv6 world outside", "2001:db9::5", "fd00::10", TCP, 443, D, kRuleDefaultDeny},
    {"ipv6 unknown in container CIDR", "fd00::99", "fd00::1", UDP, 67, A, 26},
    {"any ports: gre", "10.0.0.40", "10.0.0.20", 47, 0, A, 27},
    {"any ports: sctp", "10.0.0.40", "10.0.0.20", proto::kSctp, 9, A, 27},
};

TEST(DpdkClassify, TableCases) {
  const RuleSet rules = hand_rules();
  const auto built = build_generation(rules);
  ASSERT_TRUE(built.generation) << built.error;
  const Generation& g = *built.generation;
  EXPECT_EQ(g.id(), 7U);
  for (const Case& c : kCases) {
    const FastDecision want = reference(rules, ip(c.src), ip(c.dst), c.protocol, c.port);
    EXPECT_EQ(want.verdict, c.verdict) << c.what << " (fixture vs evaluator)";
    EXPECT_EQ(want.rule_id, c.rule) << c.what << " (fixture vs evaluator)";
    const FastDecision got = g.classify(ip(c.src), ip(c.dst), c.protocol, c.port);
    EXPECT_EQ(got, want) << c.what << ": got " << describe(got) << ", want " << describe(want);
  }
}

TEST(DpdkClassify, IntraTierOffAndAuditPolicy) {
  const RuleSet off = hand_rules(false, Mode::Audit);
  const auto g = build_generation(off).generation;
  ASSERT_TRUE(g);
  EXPECT_EQ(g->classify(ip("10.0.0.10"), ip("10.0.0.11"), TCP, 1234),
            (FastDecision{D, RuleKind::DefaultDeny, kRuleDefaultDeny}));
  // No endpoint on either side: the policy's mode decides.
  EXPECT_EQ(g->classify(ip("8.8.8.8"), ip("203.0.113.5"), TCP, 80),
            (FastDecision{U, RuleKind::DefaultDeny, kRuleDefaultDeny}));
  EXPECT_EQ(g->classify(ip("10.0.0.1"), ip("8.8.8.8"), TCP, 80),
            (FastDecision{U, RuleKind::DefaultDeny, kRuleDefaultDeny}));
}

TEST(DpdkClassify, RejectsInconsistentRuleSets) {
  RuleSet rules = hand_rules();
  auto pol = std::make_shared<CompiledPolicy>(*rules.policy);
  pol->flows.push_back(rule(99, tiers({9}), tiers({1}), {}));
  EXPECT_FALSE(build_generation(RuleSet{pol, rules.endpoints}).generation);
  EXPECT_FALSE(build_generation(RuleSet{nullptr, rules.endpoints}).generation);
}

TEST(DpdkClassify, EveryPortOfEveryProtocol) {
  const RuleSet rules = hand_rules();
  const auto g = build_generation(rules).generation;
  const char* addrs[] = {"10.0.0.10", "10.0.0.20", "10.0.0.30",    "10.0.0.40",
                         "10.0.0.1",  "8.8.8.8",   "198.51.100.1", "203.0.113.9"};
  int compared = 0;
  for (const char* s : addrs) {
    for (const char* d : addrs) {
      for (std::uint8_t pr : {proto::kTcp, proto::kUdp, proto::kIcmp, std::uint8_t{47}}) {
        std::vector<std::uint32_t> ports{0,    7,    8,    9,    21,   22,   23,   52,   53,
                                         54,   66,   67,   68,   128,  442,  443,  444,  5431,
                                         5432, 5433, 8079, 8080, 8085, 8090, 8091, 65535};
        for (std::uint32_t p = 1; p < 65536; p += 61) ports.push_back(p);
        for (const std::uint32_t p : ports) {
          const auto port = static_cast<std::uint16_t>(p);
          const FastDecision want = reference(rules, ip(s), ip(d), pr, port);
          const FastDecision got = g->classify(ip(s), ip(d), pr, port);
          ASSERT_EQ(got, want) << s << " -> " << d << " " << int(pr) << "/" << p;
          ++compared;
        }
      }
    }
  }
  EXPECT_GT(compared, 100000);
}

// ------------------------------------------------------------ differential

struct Probe {
  std::uint8_t protocol;
  std::uint16_t port;
};

std::vector<Probe> probes(bool v6, std::mt19937& rng) {
  std::vector<Probe> out{{proto::kTcp, 80},
                         {proto::kTcp, 443},
                         {proto::kTcp, 442},
                         {proto::kTcp, 5432},
                         {proto::kTcp, 5433},
                         {proto::kTcp, 8080},
                         {proto::kTcp, 4000},
                         {proto::kUdp, 53},
                         {proto::kUdp, 5000},
                         {proto::kSctp, 80},
                         {47, 0}};
  if (v6) {
    out.push_back({proto::kIcmpv6, 128});
    out.push_back({proto::kIcmpv6, 129});
  } else {
    out.push_back({proto::kIcmp, 8});
    out.push_back({proto::kIcmp, 0});
  }
  for (int i = 0; i < 4; ++i) {
    const std::uint8_t prs[] = {proto::kTcp, proto::kUdp, proto::kIcmp, proto::kIcmpv6};
    out.push_back({prs[rng() % 4], static_cast<std::uint16_t>(rng() % 65536)});
  }
  return out;
}

TEST(DpdkClassifyDifferential, EqualsReferenceEvaluator) {
  long compared = 0;
  int policies = 0;
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    const auto gen = testkit::generate_case(seed, seed % 4 == 0 ? 40 : 8);
    const RuleSet rules = compile_case(gen, seed);
    ASSERT_TRUE(rules.policy);
    const auto built = build_generation(rules);
    ASSERT_TRUE(built.generation) << built.error;
    const Generation& g = *built.generation;
    ++policies;
    std::mt19937 rng(seed);
    for (bool v6 : {false, true}) {
      const auto addrs = case_addresses(gen, v6);
      const auto prs = probes(v6, rng);
      for (const auto& s : addrs) {
        for (const auto& d : addrs) {
          for (const Probe& pr : prs) {
            const FastDecision want = reference(rules, ip(s), ip(d), pr.protocol, pr.port);
            const FastDecision got = g.classify(ip(s), ip(d), pr.protocol, pr.port);
            ASSERT_EQ(got, want) << "seed " << seed << ": " << s << " -> " << d << " proto "
                                 << int(pr.protocol) << "/" << pr.port << ": got " << describe(got)
                                 << ", want " << describe(want) << "\n"
                                 << gen.policy_yaml << gen.inventory_yaml;
            ++compared;
          }
        }
      }
    }
  }
  std::printf("[differential] %d policies, %ld probes, 0 mismatches\n", policies, compared);
  EXPECT_GE(policies, 150);
  EXPECT_GT(compared, 500000);
}

// ------------------------------------------------------------ port maps
//
// The compiled lists (port maps of programs, classify.cc) on adversarial
// policies built here: heavily overlapping port ranges and ICMP types,
// denies, staged denies with and without selectors before and after flows,
// selectors on either side, world CIDRs nested in each other, host, audit
// modes, intra-tier on and off, endpoints with more selectors than a profile
// holds inline, one class pair with many rules (wide maps, searched by
// bisection) and IPv6. Every probe port is a range edge or its neighbour.
// Each decision is compared with the reference evaluator under three
// builds: the default, a budget that leaves some lists scanned, and every
// list scanned; tagged sources with decide_tagged(), tagged destinations
// with the all-scanned build.

struct Adversarial {
  RuleSet rules;
  std::vector<std::string> addresses;  // v4 and v6: endpoints, host, unknown, world
  std::vector<std::uint16_t> ports;    // edges of every rule's ranges
  std::uint32_t heavy = 0;             // rules of the heavy pair
};

Adversarial adversarial_case(std::uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
  auto pol = std::make_shared<CompiledPolicy>();
  pol->name = "adversarial";
  pol->generation = seed;
  pol->mode = pick(3) == 0 ? Mode::Audit : Mode::Enforce;
  pol->intra_tier_allow = pick(4) != 0;
  pol->tiers = {{"quarantine", -1, Mode::Enforce, false},
                {"web", 10, Mode::Enforce, true},
                {"app", 20, pick(2) == 0 ? Mode::Audit : Mode::Enforce, true},
                {"db", 30, Mode::Enforce, true}};
  constexpr std::uint32_t kSelectors = 10;
  for (std::uint32_t s = 0; s < kSelectors; ++s)
    pol->selectors.push_back({"s" + std::to_string(s)});
  const std::vector<std::string> world_cidrs = {"198.51.100.0/24", "198.51.100.128/25",
                                                "203.0.113.0/24",  "0.0.0.0/0",
                                                "2001:db8::/32",   "2001:db8:1::/48"};
  const std::uint16_t edges[] = {0, 1, 20, 22, 23, 53, 80, 443, 444, 8080, 8081, 65534, 65535};
  const std::uint8_t protocols[] = {proto::kTcp,  proto::kUdp,    proto::kSctp,
                                    proto::kIcmp, proto::kIcmpv6, 47};
  auto peer = [&](bool world_ok) {
    const std::uint32_t k = pick(10);
    if (world_ok && k == 0) {
      std::vector<std::string> c{world_cidrs[pick(6)]};
      if (pick(2) == 0) c.push_back(world_cidrs[pick(6)]);
      return world(c);
    }
    if (k == 1) return host();
    std::vector<TierId> t;
    for (TierId x = 0; x < 4; ++x) {
      if (pick(3) == 0) t.push_back(x);
    }
    std::optional<SelectorId> sel;
    if (pick(2) == 0) sel = pick(kSelectors);
    return tiers(t, sel);
  };
  auto ports = [&] {
    std::vector<PortMatch> out;
    for (std::uint32_t i = 0, n = 1 + pick(3); i < n; ++i) {
      if (pick(8) == 0) {
        out.push_back(PortMatch::any_port());
        continue;
      }
      std::uint16_t lo = edges[pick(13)];
      std::uint16_t hi = edges[pick(13)];
      if (lo > hi && pick(8) != 0) std::swap(lo, hi);  // else an empty range
      out.push_back(port(protocols[pick(6)], lo, hi));
    }
    return out;
  };
  RuleId id = kFirstPolicyRule;
  const std::uint32_t denies = pick(8);
  for (std::uint32_t i = 0; i < denies; ++i) {
    Rule r = rule(id++, peer(true), peer(true), ports(), pick(3) == 0);
    pol->denies.push_back(std::move(r));
  }
  for (std::uint32_t i = 0, n = 4 + pick(24); i < n; ++i) {
    pol->flows.push_back(rule(id++, peer(true), peer(true), ports()));
  }
  // One heavy pair (web -> db): single ports 1000..1000+n, some with a
  // selector: wide maps, bisected past 4 lane groups.
  Adversarial out;
  out.heavy = pick(2) == 0 ? 40 + pick(20) : pick(24);
  for (std::uint32_t i = 0; i < out.heavy; ++i) {
    std::optional<SelectorId> sel;
    if (pick(3) == 0) sel = pick(kSelectors);
    const auto p = static_cast<std::uint16_t>(1000 + 2 * i);
    pol->flows.push_back(rule(id++, tiers({1}), tiers({3}, sel), {port(proto::kTcp, p, p)}));
  }

  auto eps = std::make_shared<EndpointTable>();
  for (EndpointId e = 0; e < 12; ++e) {
    // Profile records of every format: up to 3 selectors, up to 7, more.
    std::vector<SelectorId> sel;
    for (SelectorId x = 0; x < kSelectors; ++x) sel.push_back(x);
    std::shuffle(sel.begin(), sel.end(), rng);
    const std::uint32_t keep[] = {pick(4), pick(4), 4 + pick(4), 8 + pick(3)};
    sel.resize(keep[e % 4]);
    std::vector<IpAddress> a{ip("10.9.0." + std::to_string(10 + e))};
    if (e % 3 != 0) a.push_back(ip("fd09::" + std::to_string(10 + e)));
    EXPECT_TRUE(eps->upsert(e, a, static_cast<TierId>(e % 4), sel));
    for (const auto& x : a) out.addresses.push_back(x.to_string());
  }
  eps->set_node_addresses({ip("10.9.0.1"), ip("fd09::1")});
  eps->set_container_cidrs({cidr("10.9.0.0/16"), cidr("fd09::/64")});
  for (const char* a :
       {"10.9.0.1", "fd09::1", "10.9.7.7", "fd09::7777", "198.51.100.7", "198.51.100.200",
        "203.0.113.9", "8.8.8.8", "2001:db8::5", "2001:db8:1::5", "2001:db9::5"}) {
    out.addresses.push_back(a);
  }
  std::vector<std::uint16_t> ps;
  for (const auto* list : {&pol->denies, &pol->flows}) {
    for (const Rule& r : *list) {
      for (const PortMatch& pm : r.ports) {
        for (const int p : {pm.lo - 1, int{pm.lo}, int{pm.hi}, pm.hi + 1}) {
          if (p >= 0 && p <= 65535) ps.push_back(static_cast<std::uint16_t>(p));
        }
      }
    }
  }
  for (const std::uint16_t e : edges) ps.push_back(e);
  std::sort(ps.begin(), ps.end());
  ps.erase(std::unique(ps.begin(), ps.end()), ps.end());
  out.ports = ps;
  out.rules = RuleSet{pol, eps};
  return out;
}

// Ports probed for one (src, dst, protocol): 0, 65535 and a random sample
// of the policy's range edges.
std::vector<std::uint16_t> sample_ports(const Adversarial& c, std::mt19937& rng) {
  std::vector<std::uint16_t> out{0, 65535};
  for (int i = 0; i < 8; ++i) out.push_back(c.ports[rng() % c.ports.size()]);
  return out;
}

TEST(DpdkClassifyPortMaps, AdversarialPoliciesEqualReference) {
  long compared = 0;
  std::size_t wide = 0;
  for (std::uint32_t seed = 1; seed <= 24; ++seed) {
    const Adversarial c = adversarial_case(seed);
    std::mt19937 rng(seed);
    const RuleSet& rules = c.rules;
    GenerationOptions some_scanned;
    some_scanned.map_units_per_candidate = 1;
    GenerationOptions all_scanned;
    all_scanned.map_units_per_candidate = 0;
    const auto compiled = build_generation(rules).generation;
    const auto mixed = build_generation(rules, some_scanned).generation;
    const auto scanned = build_generation(rules, all_scanned).generation;
    ASSERT_TRUE(compiled && mixed && scanned);
    wide += c.heavy >= 40 ? 1U : 0U;
    const std::uint8_t protocols[] = {proto::kTcp,  proto::kUdp,    proto::kSctp,
                                      proto::kIcmp, proto::kIcmpv6, 47};
    for (const auto& s : c.addresses) {
      for (const auto& d : c.addresses) {
        for (const std::uint8_t pr : protocols) {
          for (const std::uint16_t port : sample_ports(c, rng)) {
            const FastDecision want = reference(rules, ip(s), ip(d), pr, port);
            for (const Generation* g : {compiled.get(), mixed.get(), scanned.get()}) {
              const FastDecision got = g->classify(ip(s), ip(d), pr, port);
              ASSERT_EQ(got, want)
                  << "seed " << seed << ": " << s << " -> " << d << " " << int(pr) << "/" << port
                  << ": got " << describe(got) << ", want " << describe(want);
              ++compared;
            }
          }
        }
      }
    }
    // Tagged peers: a tagged source exactly as decide_tagged(); a tagged
    // destination as the all-scanned build (the scan is the reference path).
    for (TierId t = 0; t < 4; ++t) {
      for (const auto& d : c.addresses) {
        const ResolvedPeer dst = dataplane::resolve(*rules.endpoints, ip(d));
        for (const std::uint8_t pr : protocols) {
          for (const std::uint16_t port : sample_ports(c, rng)) {
            const Decision w = decide_tagged(*rules.policy, t, dst, pr, port);
            const FastDecision want{w.verdict, w.kind, w.rule_id()};
            const FastDecision back_want =
                scanned->decide(scanned->resolve(ip(d)), scanned->tagged_peer(t), pr, port);
            for (const Generation* g : {compiled.get(), mixed.get()}) {
              const FastDecision got = g->decide(g->tagged_peer(t), g->resolve(ip(d)), pr, port);
              ASSERT_EQ(got, want)
                  << "seed " << seed << ": tagged tier " << t << " -> " << d << " " << int(pr)
                  << "/" << port << ": got " << describe(got) << ", want " << describe(want);
              const FastDecision back = g->decide(g->resolve(ip(d)), g->tagged_peer(t), pr, port);
              ASSERT_EQ(back, back_want) << "seed " << seed << ": " << d << " -> tagged tier " << t
                                         << " " << int(pr) << "/" << port;
              compared += 2;
            }
          }
        }
      }
    }
  }
  std::printf("[port maps] %ld decisions compared, %zu policies with a wide map\n", compared, wide);
  EXPECT_GT(compared, 1000000);
  EXPECT_GE(wide, 5U);  // maps past 4 lane groups (bisection) were built
}

TEST(DpdkClassifyPortMaps, AddressHashFindsEveryKeyAndNoOther) {
  // Random addresses (not consecutive: buckets fill unevenly and spill),
  // node addresses among them (the endpoint wins), and absent neighbours.
  auto pol = std::make_shared<CompiledPolicy>();
  pol->name = "hash";
  pol->tiers = {{"quarantine", -1, Mode::Enforce, false}, {"web", 10, Mode::Enforce, true}};
  pol->selectors = {{"a"}};
  auto eps = std::make_shared<EndpointTable>();
  std::mt19937 rng(99);
  std::vector<IpAddress> v4;
  std::vector<IpAddress> v6;
  for (EndpointId e = 0; e < 6000; ++e) {
    const auto a = IpAddress::v4(0x0a000000U | (rng() & 0x00ffffffU));
    IpAddress b = ip("fd00::");
    for (std::size_t i = 8; i < 16; ++i) b.bytes[i] = static_cast<std::uint8_t>(rng());
    const IpAddress addrs[] = {a, b};
    const SelectorId sel[] = {0};
    if (!eps->upsert(
            e, addrs, 1,
            e % 2 == 0 ? std::span<const SelectorId>(sel) : std::span<const SelectorId>())) {
      continue;  // a repeated random address
    }
    v4.push_back(a);
    v6.push_back(b);
  }
  eps->set_node_addresses({v4[0], v6[1], ip("10.255.255.254"), ip("fd00::1")});
  eps->set_container_cidrs({cidr("10.0.0.0/8"), cidr("fd00::/64")});
  const RuleSet rules{pol, eps};
  const auto g = build_generation(rules).generation;
  ASSERT_TRUE(g);
  for (const auto* list : {&v4, &v6}) {
    for (const IpAddress& a : *list) {
      const PeerClass p = g->resolve(a);
      const auto want = eps->find(a);
      ASSERT_TRUE(want);
      ASSERT_EQ(p.entity, PeerMatch::Entity::Endpoint) << a.to_string();
      ASSERT_EQ(p.endpoint, *want) << a.to_string();
      ASSERT_EQ(p.cls, 1U);
    }
  }
  EXPECT_EQ(g->resolve(ip("10.255.255.254")).entity, PeerMatch::Entity::Host);
  EXPECT_EQ(g->resolve(ip("fd00::1")).entity, PeerMatch::Entity::Host);
  for (int i = 0; i < 20000; ++i) {
    const auto a = IpAddress::v4(0x0a000000U | (rng() & 0x00ffffffU));
    const PeerClass p = g->resolve(a);
    const auto want = eps->find(a);
    if (want) {
      EXPECT_EQ(p.endpoint, *want);
    } else if (!eps->is_node_address(a)) {
      EXPECT_EQ(p.endpoint, kUnknownEndpoint) << a.to_string();
      EXPECT_EQ(p.cls, kQuarantineTier);
    }
  }
  EXPECT_EQ(g->stats().endpoint_addresses, v4.size() + v6.size() + 2);
}

// ------------------------------------------------------------ tagged peers
//
// A remote endpoint named only by a trusted overlay peer's tag: a member of
// its tier and of no known selector. Denies whose only unmet check is a
// selector on that side match; flows that need one there do not.
//
// tiers: 0 quarantine, 1 web, 2 app; selectors: 0 role=front, 1 env=prod
// endpoints: web1 (web, {}) 10.1.0.10, web2 (web, {0,1}) 10.1.0.11,
//   app1 (app, {1}) 10.1.0.20, app2 (app, {}) 10.1.0.21

RuleSet tagged_rules() {
  auto pol = std::make_shared<CompiledPolicy>();
  pol->name = "tagged";
  pol->generation = 3;
  pol->intra_tier_allow = true;
  pol->tiers = {{"quarantine", -1, Mode::Enforce, false},
                {"web", 10, Mode::Enforce, true},
                {"app", 20, Mode::Enforce, true}};
  pol->selectors = {{"role=front"}, {"env=prod"}};
  pol->denies = {
      rule(16, tiers({1}, 0), tiers({2}), {port(proto::kTcp, 22, 22)}),
      rule(17, tiers({1}, 1), tiers({2}), {port(proto::kTcp, 8443, 8443)}, true),
      rule(18, tiers({1}), tiers({2}, 1), {port(proto::kTcp, 23, 23)}),
  };
  pol->flows = {
      rule(19, tiers({1}, 0), tiers({2}), {port(proto::kTcp, 8080, 8080)}),
      rule(20, tiers({1}), tiers({2}),
           {port(proto::kTcp, 22, 23), port(proto::kTcp, 8443, 8443),
            port(proto::kTcp, 9000, 9000)}),
      rule(21, tiers({1}), tiers({2}, 1), {port(proto::kTcp, 7000, 7000)}),
      rule(22, tiers({2}, 1), tiers({1}), {port(proto::kTcp, 6000, 6000)}),
  };
  auto eps = std::make_shared<EndpointTable>();
  auto add = [&](EndpointId id, const char* a, TierId tier, std::vector<SelectorId> sel) {
    const IpAddress addr[] = {ip(a)};
    EXPECT_TRUE(eps->upsert(id, addr, tier, sel));
  };
  add(0, "10.1.0.10", 1, {});
  add(1, "10.1.0.11", 1, {0, 1});
  add(2, "10.1.0.20", 2, {1});
  add(3, "10.1.0.21", 2, {});
  eps->set_node_addresses({ip("10.1.0.1")});
  eps->set_container_cidrs({cidr("10.1.0.0/16")});
  return RuleSet{pol, eps};
}

// Deny > Audit > Allow.
int restrictiveness(Verdict v) { return v == Verdict::Deny ? 2 : v == Verdict::Audit ? 1 : 0; }

struct TaggedCase {
  const char* what;
  bool tagged_is_src;  // else the destination is the tagged peer
  TierId tier;         // of the tagged peer
  const char* other;   // the known side
  std::uint16_t port;  // tcp
  Verdict verdict;
  RuleId rule;
};

const TaggedCase kTaggedCases[] = {
    {"deny with a selector on the tagged side matches", true, 1, "10.1.0.20", 22, D, 16},
    {"staged deny with a selector there matches", true, 1, "10.1.0.20", 8443, U, 17},
    {"flow needing a selector there does not match", true, 1, "10.1.0.20", 8080, D,
     kRuleDefaultDeny},
    {"flow without selectors matches", true, 1, "10.1.0.20", 9000, A, 20},
    {"selector on the known side: deny holds", true, 1, "10.1.0.20", 23, D, 18},
    {"selector on the known side: deny does not apply", true, 1, "10.1.0.21", 23, A, 20},
    {"selector on the known side: flow applies", true, 1, "10.1.0.20", 7000, A, 21},
    {"selector on the known side: flow does not", true, 1, "10.1.0.21", 7000, D, kRuleDefaultDeny},
    {"intra-tier: a member of its tier", true, 2, "10.1.0.21", 1234, A, kRuleIntraTier},
    {"quarantine tag", true, 0, "10.1.0.20", 9000, D, kRuleDefaultDeny},
    {"tagged destination: flow needing its selector", false, 2, "10.1.0.10", 7000, D,
     kRuleDefaultDeny},
    {"tagged destination: deny needing its selector", false, 2, "10.1.0.10", 23, D, 18},
    {"tagged destination: flow without selectors", false, 2, "10.1.0.10", 9000, A, 20},
};

TEST(DpdkClassifyTagged, FailsClosedOnUnknownSelectors) {
  const RuleSet rules = tagged_rules();
  const auto built = build_generation(rules);
  ASSERT_TRUE(built.generation) << built.error;
  const Generation& g = *built.generation;
  ASSERT_EQ(g.tier_count(), 3U);
  const char* members[3][2] = {
      {nullptr, nullptr}, {"10.1.0.10", "10.1.0.11"}, {"10.1.0.20", "10.1.0.21"}};
  for (const TaggedCase& c : kTaggedCases) {
    const PeerClass tagged = g.tagged_peer(c.tier);
    EXPECT_TRUE(tagged.unknown_profile);
    EXPECT_EQ(tagged.endpoint, kUnknownEndpoint);
    const PeerClass known = g.resolve(ip(c.other));
    const FastDecision got = c.tagged_is_src ? g.decide(tagged, known, TCP, c.port)
                                             : g.decide(known, tagged, TCP, c.port);
    EXPECT_EQ(got.verdict, c.verdict) << c.what << ": got " << describe(got);
    EXPECT_EQ(got.rule_id, c.rule) << c.what << ": got " << describe(got);
    // Never more permissive than what any known member of the tier gets.
    for (const char* m : members[c.tier]) {
      if (m == nullptr) continue;
      const FastDecision member = c.tagged_is_src
                                      ? reference(rules, ip(m), ip(c.other), TCP, c.port)
                                      : reference(rules, ip(c.other), ip(m), TCP, c.port);
      EXPECT_GE(restrictiveness(got.verdict), restrictiveness(member.verdict))
          << c.what << ": member " << m << " gets " << describe(member);
    }
  }
  // The same classes with a known profile decide exactly as the evaluator.
  PeerClass web2 = g.resolve(ip("10.1.0.11"));
  ASSERT_FALSE(web2.unknown_profile);
  EXPECT_EQ(g.decide(web2, g.resolve(ip("10.1.0.20")), TCP, 8080),
            reference(rules, ip("10.1.0.11"), ip("10.1.0.20"), TCP, 8080));
}

TEST(DpdkClassifyTagged, NeverMorePermissiveThanAnyMemberOnGeneratedPolicies) {
  long compared = 0;
  long stricter = 0;
  for (std::uint32_t seed = 1; seed <= 120; ++seed) {
    const auto gen = testkit::generate_case(seed, 8);
    const RuleSet rules = compile_case(gen, seed);
    ASSERT_TRUE(rules.policy);
    const auto built = build_generation(rules);
    ASSERT_TRUE(built.generation) << built.error;
    const Generation& g = *built.generation;
    std::mt19937 rng(seed);
    const auto addrs = case_addresses(gen, false);
    const auto prs = probes(false, rng);
    for (const auto& m : gen.endpoint_v4) {
      const PeerClass member = g.resolve(ip(m));
      ASSERT_EQ(member.entity, PeerMatch::Entity::Endpoint);
      const PeerClass tagged = g.tagged_peer(static_cast<TierId>(member.cls));
      for (const auto& d : addrs) {
        if (d == m) continue;  // self: the tagged peer has no identity
        for (const Probe& pr : prs) {
          const FastDecision want = reference(rules, ip(m), ip(d), pr.protocol, pr.port);
          const FastDecision got = g.decide(tagged, g.resolve(ip(d)), pr.protocol, pr.port);
          ASSERT_GE(restrictiveness(got.verdict), restrictiveness(want.verdict))
              << "seed " << seed << ": tagged tier " << member.cls << " (member " << m << ") -> "
              << d << " " << int(pr.protocol) << "/" << pr.port << ": got " << describe(got)
              << ", member gets " << describe(want) << "\n"
              << gen.policy_yaml;
          // And in the other direction (the tagged peer as destination).
          const FastDecision back = reference(rules, ip(d), ip(m), pr.protocol, pr.port);
          const FastDecision got_back = g.decide(g.resolve(ip(d)), tagged, pr.protocol, pr.port);
          ASSERT_GE(restrictiveness(got_back.verdict), restrictiveness(back.verdict))
              << "seed " << seed << ": " << d << " -> tagged tier " << member.cls;
          stricter += restrictiveness(got.verdict) > restrictiveness(want.verdict);
          compared += 2;
        }
      }
    }
  }
  std::printf("[tagged] %ld probes, %ld stricter than the member\n", compared, stricter);
  EXPECT_GT(compared, 50000);
  EXPECT_GT(stricter, 0);  // the generated selectors do make a difference
}

// ------------------------------------------------------------ flow table

FlowPacket pkt(const char* s, const char* d, std::uint8_t protocol, std::uint16_t sport,
               std::uint16_t dport, std::uint8_t tcp_flags = 0) {
  FlowPacket p;
  p.src = ip(s);
  p.dst = ip(d);
  p.protocol = protocol;
  p.src_port = sport;
  p.dst_port = dport;
  p.decision_port = dport;
  p.tcp_flags = tcp_flags;
  return p;
}

constexpr std::uint64_t kSec = kNsPerSecond;

TEST(DpdkFlowTable, CachesBothDirectionsAndTimesOut) {
  const auto g = build_generation(hand_rules()).generation;
  FlowTable ft({64, {}});
  const auto syn = pkt("10.0.0.10", "10.0.0.20", TCP, 40000, 8080, 0x02);
  const auto synack = pkt("10.0.0.20", "10.0.0.10", TCP, 8080, 40000, 0x12);
  auto r = ft.process(*g, syn, 0);
  EXPECT_EQ(r.outcome, FlowOutcome::New);
  EXPECT_EQ(r.decision.rule_id, 19U);
  // The reply would be denied as a new connection (app -> web): the flow
  // entry lets it through.
  r = ft.process(*g, synack, 1 * kSec);
  EXPECT_EQ(r.outcome, FlowOutcome::Hit);
  EXPECT_TRUE(r.pass());
  EXPECT_EQ(r.decision.rule_id, 19U);
  // Established: long timeout.
  r = ft.process(*g, syn, 3000 * kSec);
  EXPECT_EQ(r.outcome, FlowOutcome::Hit);
  // FIN: closing timeout (10 s).
  r = ft.process(*g, pkt("10.0.0.10", "10.0.0.20", TCP, 40000, 8080, 0x11), 3001 * kSec);
  EXPECT_EQ(r.outcome, FlowOutcome::Hit);
  EXPECT_EQ(ft.live(3010 * kSec), 1U);
  EXPECT_EQ(ft.live(3012 * kSec), 0U);
  r = ft.process(*g, synack, 3012 * kSec);
  EXPECT_EQ(r.outcome, FlowOutcome::Denied);
  EXPECT_EQ(ft.counters().expired, 1U);
}

TEST(DpdkFlowTable, TimeoutsPerProtocol) {
  const auto g = build_generation(hand_rules()).generation;
  FlowTimeouts t;
  t.tcp_new_ns = 5 * kSec;
  t.udp_ns = 30 * kSec;
  t.icmp_ns = 10 * kSec;
  FlowTable ft({64, t});
  const auto udp = pkt("10.0.0.20", "203.0.113.5", UDP, 5353, 53);
  const auto syn = pkt("10.0.0.10", "10.0.0.20", TCP, 1, 8080, 0x02);
  FlowPacket echo = pkt("10.0.0.1", "10.0.0.30", proto::kIcmp, 77, 77);
  echo.decision_port = 8;
  FlowPacket reply = pkt("10.0.0.30", "10.0.0.1", proto::kIcmp, 77, 77);
  reply.decision_port = 0;
  EXPECT_EQ(ft.process(*g, udp, 0).outcome, FlowOutcome::New);
  EXPECT_EQ(ft.process(*g, syn, 0).outcome, FlowOutcome::New);
  EXPECT_EQ(ft.process(*g, echo, 0).outcome, FlowOutcome::New);
  EXPECT_EQ(ft.process(*g, reply, 1 * kSec).outcome, FlowOutcome::Hit);  // same flow
  EXPECT_EQ(ft.live(4 * kSec), 3U);
  EXPECT_EQ(ft.live(6 * kSec), 2U);   // SYN unanswered: gone after 5 s
  EXPECT_EQ(ft.live(11 * kSec), 1U);  // ICMP: 10 s after the reply
  EXPECT_EQ(ft.live(29 * kSec), 1U);
  EXPECT_EQ(ft.process(*g, udp, 29 * kSec).outcome, FlowOutcome::Hit);  // refreshes
  EXPECT_EQ(ft.live(58 * kSec), 1U);
  EXPECT_EQ(ft.live(60 * kSec), 0U);
  FastDecision d;
  EXPECT_FALSE(ft.peek(udp, 60 * kSec, d));
  EXPECT_TRUE(ft.peek(udp, 58 * kSec, d));
  EXPECT_EQ(d.rule_id, 23U);
}

TEST(DpdkFlowTable, DeniedFlowsAreNotRemembered) {
  const auto g = build_generation(hand_rules()).generation;
  FlowTable ft({64, {}});
  const auto p = pkt("8.8.8.8", "10.0.0.10", TCP, 1, 22);
  EXPECT_EQ(ft.process(*g, p, 0).outcome, FlowOutcome::Denied);
  EXPECT_EQ(ft.process(*g, p, 1).outcome, FlowOutcome::Denied);
  EXPECT_EQ(ft.live(2), 0U);
  EXPECT_EQ(ft.counters().denied, 2U);
}

TEST(DpdkFlowTable, EvictsTheFlowClosestToExpiryWhenFull) {
  const auto g = build_generation(hand_rules()).generation;
  FlowTable ft({8, {}});  // one bucket of 8 ways
  ASSERT_EQ(ft.capacity(), 8U);
  for (std::uint16_t i = 0; i < 9; ++i) {
    const auto p = pkt("10.0.0.20", "203.0.113.5", UDP, static_cast<std::uint16_t>(1000 + i), 53);
    EXPECT_EQ(ft.process(*g, p, i * kSec).outcome, FlowOutcome::New);
  }
  EXPECT_EQ(ft.counters().evicted, 1U);
  EXPECT_EQ(ft.live(9 * kSec), 8U);
  FastDecision d;
  EXPECT_FALSE(ft.peek(pkt("10.0.0.20", "203.0.113.5", UDP, 1000, 53), 9 * kSec, d));
  EXPECT_TRUE(ft.peek(pkt("10.0.0.20", "203.0.113.5", UDP, 1001, 53), 9 * kSec, d));
  // An expired entry is reused before a live one is evicted.
  EXPECT_EQ(ft.process(*g, pkt("10.0.0.20", "203.0.113.5", UDP, 2000, 53), 100 * kSec).outcome,
            FlowOutcome::New);
  EXPECT_EQ(ft.counters().evicted, 1U);
}

// A small table (4 buckets) under churn from a pool of flows three times
// its size, at random times, in both directions: every packet's outcome
// equals a model's (a flow is remembered from its New until the table
// reports its end), every reported end is of a flow the model holds, for
// the right reason, and after every few packets peek() and live() agree
// with the model for the whole pool. A flow kept out of its preferred way
// (displaced) that a lookup missed, or a flow remembered twice, fails it.
TEST(DpdkFlowTable, AgreesWithAModelUnderChurn) {
  const auto g = build_generation(hand_rules()).generation;
  struct Ends : FlowEndSink {
    std::vector<FlowEnd> ends;
    void ended(const FlowEnd& e, std::uint64_t) override { ends.push_back(e); }
  };
  FlowTableOptions o;
  o.capacity = 32;
  o.count = true;
  o.timeouts.udp_ns = 40 * kSec;
  FlowTable ft(o);
  Ends sink;
  ft.set_end_sink(&sink);
  auto flow_of = [](std::uint16_t a, std::uint16_t b) { return a == 53 ? b : a; };
  std::map<std::uint16_t, std::uint64_t> live;  // flow (its client port) -> expiry
  std::mt19937 rng(11);
  std::uint64_t now = 0;
  std::size_t checks = 0;
  for (int step = 0; step < 60000; ++step) {
    now += rng() % (3 * kSec);
    const auto port = static_cast<std::uint16_t>(1000 + rng() % 96);
    const FlowPacket p = rng() % 4 == 0 ? pkt("203.0.113.5", "10.0.0.20", UDP, 53, port)
                                        : pkt("10.0.0.20", "203.0.113.5", UDP, port, 53);
    const auto it = live.find(port);
    const bool was_live = it != live.end() && it->second > now;
    const FastDecision fresh = g->classify(p.src, p.dst, p.protocol, p.decision_port);
    sink.ends.clear();
    const FlowResult r = ft.process(*g, p, now);
    for (const FlowEnd& e : sink.ends) {
      const std::uint16_t f = flow_of(e.src_port, e.dst_port);
      const auto m = live.find(f);
      ASSERT_NE(m, live.end()) << "step " << step << ": end of a flow not remembered: " << f;
      if (e.reason == FlowEndReason::Expired) {
        ASSERT_LE(m->second, now) << "step " << step;
      } else {
        ASSERT_EQ(e.reason, FlowEndReason::Evicted) << "step " << step;
        ASSERT_GT(m->second, now) << "step " << step;
        ASSERT_NE(f, port) << "step " << step << ": the packet's own flow evicted";
      }
      live.erase(m);
    }
    if (was_live) {
      ASSERT_EQ(r.outcome, FlowOutcome::Hit) << "step " << step << " flow " << port;
      live[port] = now + o.timeouts.udp_ns;
    } else if (fresh.verdict == Verdict::Deny) {
      ASSERT_EQ(r.outcome, FlowOutcome::Denied) << "step " << step;
    } else {
      ASSERT_EQ(r.outcome, FlowOutcome::New) << "step " << step << " flow " << port;
      ASSERT_EQ(live.count(port), 0U) << "step " << step << ": expired flow not ended";
      live[port] = now + o.timeouts.udp_ns;
    }
    if (step % 5 == 0) {
      std::size_t want_live = 0;
      for (std::uint16_t q = 1000; q < 1096; ++q) {
        const auto m = live.find(q);
        const bool want = m != live.end() && m->second > now;
        want_live += want;
        FastDecision d;
        ASSERT_EQ(ft.peek(pkt("10.0.0.20", "203.0.113.5", UDP, q, 53), now, d), want)
            << "step " << step << " flow " << q;
        ASSERT_EQ(ft.peek(pkt("203.0.113.5", "10.0.0.20", UDP, 53, q), now, d), want);
        ++checks;
      }
      ASSERT_EQ(ft.live(now), want_live) << "step " << step;
    }
  }
  EXPECT_GT(ft.counters().evicted, 100U);
  EXPECT_GT(ft.counters().expired, 100U);
  EXPECT_GT(ft.counters().hits, 10000U);
  EXPECT_GT(checks, 1000000U);
}

// Bursts (crossing kMaxBurst, with repeated flows) under the same churn:
// the same results, flow ids and ends as one packet at a time.
TEST(DpdkFlowTable, BurstsEqualOneAtATimeUnderChurn) {
  const auto g = build_generation(hand_rules()).generation;
  struct Ends : FlowEndSink {
    std::vector<std::pair<std::uint32_t, FlowEndReason>> ends;
    void ended(const FlowEnd& e, std::uint64_t) override { ends.emplace_back(e.flow_id, e.reason); }
  };
  FlowTableOptions o;
  o.capacity = 32;
  o.count = true;
  o.timeouts.udp_ns = 40 * kSec;
  FlowTable one(o);
  FlowTable burst(o);
  Ends one_sink;
  Ends burst_sink;
  one.set_end_sink(&one_sink);
  burst.set_end_sink(&burst_sink);
  std::mt19937 rng(12);
  std::uint64_t now = 0;
  for (int round = 0; round < 3000; ++round) {
    now += rng() % (20 * kSec);
    std::vector<FlowPacket> packets(1 + rng() % (FlowTable::kMaxBurst + 13));
    for (auto& p : packets) {
      const auto port = static_cast<std::uint16_t>(1000 + rng() % 96);
      p = rng() % 4 == 0 ? pkt("203.0.113.5", "10.0.0.20", UDP, 53, port)
                         : pkt("10.0.0.20", "203.0.113.5", UDP, port, 53);
    }
    std::vector<FlowResult> got(packets.size());
    ASSERT_EQ(burst.process_burst(*g, packets, got, now), packets.size());
    for (std::size_t i = 0; i < packets.size(); ++i) {
      const FlowResult want = one.process(*g, packets[i], now);
      ASSERT_EQ(got[i].outcome, want.outcome) << "round " << round << " packet " << i;
      ASSERT_EQ(got[i].flow_id, want.flow_id) << "round " << round << " packet " << i;
      ASSERT_EQ(got[i].decision, want.decision);
    }
    ASSERT_EQ(burst_sink.ends, one_sink.ends) << "round " << round;
    if (round % 10 == 0) one.sweep(now, 7), burst.sweep(now, 7);
  }
  EXPECT_GT(one.counters().evicted, 100U);
  EXPECT_GT(one.counters().hits, 10000U);
}

TEST(DpdkFlowTable, NewGenerationRechecksLazily) {
  const RuleSet base = hand_rules();
  const auto g1 = build_generation(base, {1}).generation;
  // Generation 2: the same rules. Generation 3: web -> app flow removed.
  const auto g2 = build_generation(base, {2}).generation;
  auto pol3 = std::make_shared<CompiledPolicy>(*base.policy);
  pol3->flows.erase(pol3->flows.begin());
  const auto g3 = build_generation(RuleSet{pol3, base.endpoints}, {3}).generation;
  FlowTable ft({64, {}});
  const auto syn = pkt("10.0.0.10", "10.0.0.20", TCP, 40000, 8080, 0x02);
  const auto ack = pkt("10.0.0.20", "10.0.0.10", TCP, 8080, 40000, 0x10);
  EXPECT_EQ(ft.process(*g1, syn, 0).outcome, FlowOutcome::New);
  EXPECT_EQ(ft.process(*g1, ack, 1).outcome, FlowOutcome::Hit);
  auto r = ft.process(*g2, ack, 2);  // reply direction re-checks the initiator's
  EXPECT_EQ(r.outcome, FlowOutcome::Recheck);
  EXPECT_EQ(r.decision.rule_id, 19U);
  EXPECT_EQ(ft.process(*g2, syn, 3).outcome, FlowOutcome::Hit);
  r = ft.process(*g3, ack, 4);
  EXPECT_EQ(r.outcome, FlowOutcome::Cut);
  EXPECT_FALSE(r.pass());
  EXPECT_EQ(ft.process(*g3, syn, 5).outcome, FlowOutcome::Denied);
  EXPECT_EQ(ft.counters().cuts, 1U);
  EXPECT_EQ(ft.live(6), 0U);
}

TEST(DpdkFlowTable, EndpointChangeUnderTheSamePolicyGenerationRechecks) {
  const RuleSet base = hand_rules();
  const auto g1 = build_generation(base).generation;
  // app1 moves to the db tier; the policy (and its generation) stay.
  auto moved = std::make_shared<EndpointTable>(*base.endpoints);
  const IpAddress app1[] = {ip("10.0.0.20"), ip("fd00::20")};
  ASSERT_TRUE(moved->upsert(2, app1, 3, std::vector<SelectorId>{1}));
  const auto g2 = build_generation(RuleSet{base.policy, moved}).generation;
  ASSERT_EQ(g1->id(), g2->id());
  EXPECT_NE(g1->serial(), g2->serial());
  FlowTable ft({64, {}});
  const auto syn = pkt("10.0.0.10", "10.0.0.20", TCP, 40000, 8080, 0x02);
  EXPECT_EQ(ft.process(*g1, syn, 0).outcome, FlowOutcome::New);
  EXPECT_EQ(ft.process(*g2, syn, 1).outcome, FlowOutcome::Cut);
}

TEST(DpdkFlowTable, BurstEqualsOneAtATime) {
  const auto g = build_generation(hand_rules()).generation;
  const char* addrs[] = {"10.0.0.10", "10.0.0.11", "10.0.0.20",    "10.0.0.30",  "10.0.0.40",
                         "10.0.0.1",  "8.8.8.8",   "198.51.100.1", "203.0.113.9"};
  std::mt19937 rng(5);
  std::vector<FlowPacket> packets;
  for (int i = 0; i < 1000; ++i) {
    const std::uint16_t ports[] = {8080, 5432, 443, 53, 22, 67};
    packets.push_back(pkt(addrs[rng() % 9], addrs[rng() % 9], rng() % 2 ? TCP : UDP,
                          static_cast<std::uint16_t>(1000 + rng() % 2), ports[rng() % 6]));
  }
  FlowTable one({256, {}});
  FlowTable burst({256, {}});
  std::vector<FlowResult> got(packets.size());
  constexpr std::size_t kStep = FlowTable::kMaxBurst + 7;  // crosses kMaxBurst
  for (std::size_t i = 0; i < packets.size(); i += kStep) {
    const std::size_t n = std::min<std::size_t>(kStep, packets.size() - i);
    EXPECT_EQ(
        burst.process_burst(*g, std::span(packets.data() + i, n), std::span(got.data() + i, n), i),
        n);
  }
  for (std::size_t i = 0; i < packets.size(); ++i) {
    const FlowResult want = one.process(*g, packets[i], i - i % kStep);
    ASSERT_EQ(got[i].decision, want.decision) << i;
    ASSERT_EQ(got[i].outcome, want.outcome) << i;
  }
  EXPECT_GT(burst.counters().hits, 20U);  // 49 with this seed
}

TEST(DpdkFlowTable, FlowPacketFromParsedPacket) {
  PacketInfo p;
  p.src = ip("10.0.0.1");
  p.dst = ip("10.0.0.2");
  p.protocol = proto::kIcmp;
  p.flags = kFlagIcmp;
  p.icmp_type = 8;
  p.icmp_id = 99;
  const FlowPacket f = flow_packet(p);
  EXPECT_EQ(f.decision_port, 8);
  EXPECT_EQ(f.src_port, 99);
  EXPECT_EQ(f.dst_port, 99);
  EXPECT_EQ(to_connection(p).port, f.decision_port);
}

TEST(DpdkFlowTable, TaggedSourceIsDecidedAndRecheckedByItsTag) {
  const RuleSet base = hand_rules();
  const auto g1 = build_generation(base, {1}).generation;
  const auto g2 = build_generation(base, {2}).generation;
  // 10.0.9.9 is unknown here (a quarantined address by itself); tagged dev
  // (tier 4, group 5) it may open anything to app (rule 27).
  auto syn = pkt("10.0.9.9", "10.0.0.20", TCP, 40000, 5555, 0x02);
  const auto ack = pkt("10.0.0.20", "10.0.9.9", TCP, 5555, 40000, 0x12);
  FlowTable ft({64, {}});
  EXPECT_EQ(ft.process(*g1, syn, 0).outcome, FlowOutcome::Denied);  // by address
  syn.src_tag = 5;
  auto r = ft.process(*g1, syn, 1);
  EXPECT_EQ(r.outcome, FlowOutcome::New);
  EXPECT_EQ(r.decision.rule_id, 27U);
  EXPECT_EQ(ft.process(*g1, ack, 2).outcome, FlowOutcome::Hit);
  // A new generation re-checks the initiator by its tag, not its address.
  r = ft.process(*g2, ack, 3);
  EXPECT_EQ(r.outcome, FlowOutcome::Recheck);
  EXPECT_EQ(r.decision.rule_id, 27U);
  // A generation without that tier cuts the flow.
  auto pol = std::make_shared<CompiledPolicy>(*base.policy);
  pol->tiers.resize(4);
  pol->flows.erase(
      std::remove_if(pol->flows.begin(), pol->flows.end(),
                     [](const Rule& x) { return x.from.tiers == std::vector<TierId>{4}; }),
      pol->flows.end());
  pol->denies.erase(pol->denies.begin());  // rule 16 names tier 4
  auto eps = std::make_shared<EndpointTable>(*base.endpoints);
  eps->remove(4);
  const auto g3 = build_generation(RuleSet{pol, eps}, {3}).generation;
  ASSERT_TRUE(g3);
  ASSERT_EQ(g3->tier_count(), 4U);
  EXPECT_EQ(ft.process(*g3, ack, 4).outcome, FlowOutcome::Cut);
  // A tag naming no tier is refused, in bursts too.
  syn.src_tag = 9;
  r = ft.process(*g1, syn, 5);
  EXPECT_EQ(r.outcome, FlowOutcome::Denied);
  EXPECT_EQ(r.tag, TagCheck::UnknownTag);
  FlowResult results[2];
  const FlowPacket burst[2] = {syn, ack};
  ft.process_burst(*g1, burst, results, 6);
  EXPECT_FALSE(results[0].pass());
  EXPECT_EQ(results[0].tag, TagCheck::UnknownTag);
  EXPECT_FALSE(results[1].pass());
}

TEST(DpdkFlowTable, TagsOfKnownSourcesAreCheckedOnTheFirstPacket) {
  const auto g = build_generation(hand_rules()).generation;
  struct TagCase {
    const char* what;
    const char* src;
    std::uint16_t tag;
    TagCheck check;
    FlowOutcome outcome;
  };
  const TagCase cases[] = {
      // web1 (tier 1, role=front) -> app1 tcp/8080: flow 19 needs its selector,
      // which a known source keeps.
      {"known, its own tier: by address", "10.0.0.10", 2, TagCheck::ByAddress, FlowOutcome::New},
      {"known, another tier", "10.0.0.10", 3, TagCheck::Spoofed, FlowOutcome::Denied},
      {"this node", "10.0.0.1", 2, TagCheck::Spoofed, FlowOutcome::Denied},
      {"unknown, web tag: selector unknown", "10.0.9.9", 2, TagCheck::ByTag, FlowOutcome::Denied},
      {"untagged", "10.0.0.10", 0, TagCheck::None, FlowOutcome::New},
  };
  for (const TagCase& c : cases) {
    for (const bool in_burst : {false, true}) {
      FlowTable ft({64, {}});
      auto p = pkt(c.src, "10.0.0.20", TCP, 40000, 8080, 0x02);
      p.src_tag = c.tag;
      FlowResult r;
      if (in_burst) {
        ft.process_burst(*g, std::span(&p, 1), std::span(&r, 1), 0);
      } else {
        r = ft.process(*g, p, 0);
      }
      EXPECT_EQ(r.tag, c.check) << c.what << (in_burst ? " (burst)" : "");
      EXPECT_EQ(r.outcome, c.outcome) << c.what << (in_burst ? " (burst)" : "");
      // Later packets of an allowed flow are not checked again.
      if (r.outcome == FlowOutcome::New) {
        p.tcp_flags = 0x10;
        const FlowResult hit = ft.process(*g, p, 1);
        EXPECT_EQ(hit.outcome, FlowOutcome::Hit) << c.what;
        EXPECT_EQ(hit.tag, TagCheck::None) << c.what;
      }
    }
  }
}

}  // namespace
}  // namespace tierwall::dataplane::dpdk
