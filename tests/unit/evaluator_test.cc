// The reference evaluator is the oracle every dataplane is tested against, so
// it is tested here end to end: policy and inventory YAML -> loader ->
// compiler -> dataplane::decide, one table row per connection.
#include "tierwall/dataplane/evaluator.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/common/compile.h"
#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace tierwall::dataplane {
namespace {

// ---------------------------------------------------------------------------
// Scenario "main": enforce mode, intraTier allow, every rule shape.
//
// Tiers and where the inventory below lands (first matching assignment):
//   public      web-1, web-2, admin-1         (image reg.example/web/*)
//   internal    api-1, api-2 (app: payments), batch-01 (name batch-??)
//   restricted  db-1 (app: payments, role: db; also matches `payments`)
//   dev         dev-1, test-1                 (env: [dev, test])
//   quarantine  batch-100, stray-1, stray-2, suspect-1 (tier: quarantine),
//               and unknown addresses in 10.88.0.0/16 and fd00::/64
// node: 192.0.2.10, 2001:db8::10
// ---------------------------------------------------------------------------
constexpr std::string_view kMainPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata:
  name: main
spec:
  intraTier: allow
  tiers:
    - name: public
      level: 10
    - name: internal
      level: 20
    - name: restricted
      level: 30
    - name: dev
      level: 5
  assignments:
    - name: suspects
      match: {labels: {suspect: "yes"}}
      tier: quarantine
    - name: pay-db
      match: {labels: {app: payments, role: db}}
      tier: restricted
    - name: payments
      match: {labels: {app: payments}}
      tier: internal
    - name: web
      match: {image: "reg.example/web/*"}
      tier: public
    - name: batch
      match: {name: "batch-??"}
      tier: internal
    - name: nonprod
      match: {labels: {env: [dev, test]}}
      tier: dev
  denies:
    - name: no-telnet
      from: {}
      to: {}
      ports: [tcp/23]
    - name: no-ssh-to-restricted
      from: {}
      to: {tier: restricted}
      ports: [tcp/22]
    - name: dev-never-prod
      from: {labels: {env: [dev, test]}}
      to: {labels: {env: prod}}
    - name: staged-no-redis
      from: {}
      to: {}
      ports: [tcp/6379]
      audit: true
    - name: no-redis-to-db
      from: {}
      to: {tier: restricted}
      ports: [tcp/6379]
    - name: staged-no-redis-again
      from: {tier: public}
      to: {}
      ports: [tcp/6379-6380]
      audit: true
    - name: staged-intra-ssh
      from: {tier: public}
      to: {tier: public}
      ports: [tcp/22]
      audit: true
    - name: no-host-ssh
      from: {}
      to: {host: true}
      ports: [tcp/22]
  flows:
    - name: web-to-api
      from: {tier: public}
      to: {tier: internal, labels: {role: api}}
      ports: [tcp/8080-8090]
    - name: api-to-db
      from: {tier: internal, labels: {role: api}}
      to: {tier: restricted}
      ports: [tcp/5432]
    - name: internal-to-db
      from: {tier: internal}
      to: {tier: restricted}
      ports: [tcp/5432, tcp/5433]
    - name: admin-ssh
      from: {tier: internal}
      to: {tier: restricted}
      ports: [tcp/22]
    - name: web-redis
      from: {tier: public}
      to: {tier: [internal, restricted]}
      ports: [tcp/6379-6380]
    - name: dns
      from: {tier: [public, internal, restricted]}
      to: {host: true}
      ports: [udp/53, tcp/53]
    - name: host-probe
      from: {host: true}
      to: {tier: public}
      ports: [tcp/8080]
    - name: web-to-mirror
      from: {tier: public}
      to: {world: ["198.51.100.0/24", "2001:db8:beef::/48"]}
      ports: [tcp/443]
    - name: world-in
      from: {world: ["0.0.0.0/0"]}
      to: {tier: public}
      ports: [tcp/443]
    - name: dev-to-internet
      from: {tier: dev}
      to: {world: ["0.0.0.0/0"]}
      ports: [tcp/80]
    - name: ping-db
      from: {tier: internal}
      to: {tier: restricted}
      ports: [icmp/echo-request]
    - name: web-icmp
      from: {tier: public}
      to: {tier: internal}
      ports: [icmp]
    - name: ping6-web
      from: {tier: internal}
      to: {tier: public}
      ports: [icmpv6/echo-request]
    - name: batch-to-db
      from: {name: "batch-*"}
      to: {tier: restricted}
      ports: [udp/514, sctp/3868]
    - name: frontends
      from: {image: "reg.example/web/front*"}
      to: {tier: internal}
      ports: [tcp/9000]
    - name: shop-to-partner
      from: {labels: {app: shop, role: [web, api]}}
      to: {world: ["203.0.113.0/24"]}
    - name: quarantine-dhcp
      from: {tier: quarantine}
      to: {host: true}
      ports: [udp/67]
    - name: api-peers
      from: {tier: internal, labels: {role: api}}
      to: {tier: internal, labels: {role: api}}
      ports: [tcp/7000]
      log: true
)";

constexpr std::string_view kMainInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [192.0.2.10, "2001:db8::10"]}
endpoints:
  - name: web-1
    image: reg.example/web/frontend:1.0
    labels: {app: shop, role: web, env: prod}
    addresses: [10.88.0.10, "fd00::10"]
  - name: web-2
    image: reg.example/web/frontend:1.0
    labels: {app: shop, role: web, env: prod}
    addresses: [10.88.0.11]
  - name: admin-1
    image: reg.example/web/admin:2
    labels: {app: shop, role: admin, env: prod}
    addresses: [10.88.0.12]
  - name: api-1
    labels: {app: payments, role: api, env: prod}
    addresses: [10.88.0.20, "fd00::20"]
  - name: api-2
    labels: {app: payments, role: api, env: prod}
    addresses: [10.88.0.21]
  - name: db-1
    labels: {app: payments, role: db, env: prod}
    addresses: [10.88.0.30, "fd00::30"]
  - name: batch-01
    labels: {job: nightly}
    addresses: [10.88.0.40]
  - name: batch-100
    labels: {job: nightly}
    addresses: [10.88.0.41]
  - name: dev-1
    image: reg.example/shop/api:dev
    labels: {app: shop, role: api, env: dev}
    addresses: [10.88.0.50]
  - name: test-1
    labels: {app: shop, env: test}
    addresses: [10.88.0.51]
  - name: stray-1
    labels: {foo: bar}
    addresses: [10.88.0.60]
  - name: stray-2
    labels: {foo: baz}
    addresses: [10.88.0.61]
  - name: suspect-1
    labels: {app: payments, role: api, suspect: "yes"}
    addresses: [10.88.0.70]
)";

// ---------------------------------------------------------------------------
// Scenarios "audit-tier" and "audit-spec": audit semantics. Same inventory:
//   onb-1, onb-2 (team: onb) -> onboarding; leg-1 (team: legacy) -> legacy;
//   core-1, core-2 (team: core) -> core; q-1 -> quarantine.
// node: 192.0.2.20; container CIDR 10.89.0.0/16.
// ---------------------------------------------------------------------------
constexpr std::string_view kAuditTierPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: audit-tier}
spec:
  tiers:
    - {name: onboarding, level: 10, mode: audit}
    - {name: legacy, level: 15, mode: audit}
    - {name: core, level: 20}
  assignments:
    - {match: {labels: {team: onb}}, tier: onboarding}
    - {match: {labels: {team: legacy}}, tier: legacy}
    - {match: {labels: {team: core}}, tier: core}
  denies:
    - {name: onb-no-ssh, from: {tier: onboarding}, to: {tier: onboarding}, ports: [tcp/22]}
    - {name: onb-not-core-db, from: {tier: onboarding}, to: {tier: core}, ports: [tcp/5432]}
  flows:
    - {name: onb-web, from: {tier: onboarding}, to: {tier: core}, ports: [tcp/443]}
)";

// spec.mode audit; `core` explicitly enforces (a tier's own mode beats
// spec.mode); quarantine follows spec.mode.
constexpr std::string_view kAuditSpecPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: audit-spec}
spec:
  mode: audit
  tiers:
    - {name: onboarding, level: 10}
    - {name: legacy, level: 15}
    - {name: core, level: 20, mode: enforce}
  assignments:
    - {match: {labels: {team: onb}}, tier: onboarding}
    - {match: {labels: {team: legacy}}, tier: legacy}
    - {match: {labels: {team: core}}, tier: core}
  denies:
    - {name: onb-no-ssh, from: {tier: onboarding}, to: {tier: onboarding}, ports: [tcp/22]}
  flows:
    - {name: onb-web, from: {tier: onboarding}, to: {tier: core}, ports: [tcp/443]}
)";

constexpr std::string_view kAuditInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-b, addresses: [192.0.2.20]}
endpoints:
  - {name: onb-1, labels: {team: onb}, addresses: [10.89.0.1]}
  - {name: onb-2, labels: {team: onb}, addresses: [10.89.0.2]}
  - {name: leg-1, labels: {team: legacy}, addresses: [10.89.0.3]}
  - {name: core-1, labels: {team: core}, addresses: [10.89.0.4]}
  - {name: core-2, labels: {team: core}, addresses: [10.89.0.5]}
  - {name: q-1, labels: {team: none}, addresses: [10.89.0.6]}
)";

enum class Scenario { Main, AuditTier, AuditSpec };

std::vector<Cidr> cidrs(std::initializer_list<std::string_view> texts) {
  std::vector<Cidr> out;
  for (auto t : texts) out.push_back(*Cidr::parse(t));
  return out;
}

const RuleSet* scenario(Scenario s) {
  static std::map<Scenario, std::optional<RuleSet>> cache;
  auto it = cache.find(s);
  if (it == cache.end()) {
    std::optional<RuleSet> rs;
    switch (s) {
      case Scenario::Main:
        rs = testkit::compile_yaml(kMainPolicy, kMainInventory, 1,
                                   cidrs({"10.88.0.0/16", "fd00::/64"}), "main.yaml");
        break;
      case Scenario::AuditTier:
        rs = testkit::compile_yaml(kAuditTierPolicy, kAuditInventory, 1, cidrs({"10.89.0.0/16"}),
                                   "audit-tier.yaml");
        break;
      case Scenario::AuditSpec:
        rs = testkit::compile_yaml(kAuditSpecPolicy, kAuditInventory, 1, cidrs({"10.89.0.0/16"}),
                                   "audit-spec.yaml");
        break;
    }
    it = cache.emplace(s, std::move(rs)).first;
  }
  return it->second ? &*it->second : nullptr;
}

IpAddress ip(std::string_view text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress{});
}

constexpr std::uint8_t kTcp = proto::kTcp;
constexpr std::uint8_t kUdp = proto::kUdp;
constexpr std::uint8_t kSctp = proto::kSctp;
constexpr std::uint8_t kIcmp = proto::kIcmp;
constexpr std::uint8_t kIcmp6 = proto::kIcmpv6;

constexpr Verdict kAllow = Verdict::Allow;
constexpr Verdict kDeny = Verdict::Deny;
constexpr Verdict kAudit = Verdict::Audit;

constexpr RuleKind kFlow = RuleKind::Flow;
constexpr RuleKind kDenyRule = RuleKind::Deny;
constexpr RuleKind kIntra = RuleKind::IntraTier;
constexpr RuleKind kDefault = RuleKind::DefaultDeny;
constexpr RuleKind kSelf = RuleKind::Self;

constexpr Scenario M = Scenario::Main;
constexpr Scenario AT = Scenario::AuditTier;
constexpr Scenario AS = Scenario::AuditSpec;

// Main-scenario addresses.
constexpr const char* kWeb1 = "10.88.0.10";
constexpr const char* kWeb1v6 = "fd00::10";
constexpr const char* kWeb2 = "10.88.0.11";
constexpr const char* kAdmin1 = "10.88.0.12";
constexpr const char* kApi1 = "10.88.0.20";
constexpr const char* kApi1v6 = "fd00::20";
constexpr const char* kApi2 = "10.88.0.21";
constexpr const char* kDb1 = "10.88.0.30";
constexpr const char* kDb1v6 = "fd00::30";
constexpr const char* kBatch01 = "10.88.0.40";
constexpr const char* kBatch100 = "10.88.0.41";
constexpr const char* kDev1 = "10.88.0.50";
constexpr const char* kTest1 = "10.88.0.51";
constexpr const char* kStray1 = "10.88.0.60";
constexpr const char* kStray2 = "10.88.0.61";
constexpr const char* kSuspect1 = "10.88.0.70";
constexpr const char* kUnknown = "10.88.9.9";  // in a container CIDR, in no inventory
constexpr const char* kUnknown2 = "10.88.9.10";
constexpr const char* kUnknownV6 = "fd00::99";
constexpr const char* kNode = "192.0.2.10";
constexpr const char* kNodeV6 = "2001:db8::10";
constexpr const char* kMirror = "198.51.100.7";  // in 198.51.100.0/24
constexpr const char* kNotMirror = "198.51.101.7";
constexpr const char* kMirrorV6 = "2001:db8:beef::1";  // in 2001:db8:beef::/48
constexpr const char* kWorldV6 = "2001:db8:dead::1";
constexpr const char* kPartner = "203.0.113.5";  // in 203.0.113.0/24
constexpr const char* kInternet = "100.64.0.1";

// Audit-scenario addresses.
constexpr const char* kOnb1 = "10.89.0.1";
constexpr const char* kOnb2 = "10.89.0.2";
constexpr const char* kLeg1 = "10.89.0.3";
constexpr const char* kCore1 = "10.89.0.4";
constexpr const char* kCore2 = "10.89.0.5";
constexpr const char* kQ1 = "10.89.0.6";
constexpr const char* kAuditNode = "192.0.2.20";
constexpr const char* kAuditUnknown = "10.89.9.9";

struct EvalCase {
  const char* description;
  Scenario scenario;
  const char* src;
  const char* dst;
  std::uint8_t protocol;
  std::uint16_t port;
  Verdict verdict;
  RuleKind kind;
  const char* rule;  // deciding flow/deny name; "" for self, intraTier, default-deny
};

const EvalCase kCases[] = {
    // --- 2. self ---------------------------------------------------------
    {"self same address", M, kWeb1, kWeb1, kTcp, 80, kAllow, kSelf, ""},
    {"self v4 to own v6 address", M, kWeb1, kWeb1v6, kTcp, 80, kAllow, kSelf, ""},
    {"self v6 to own v4 address", M, kDb1v6, kDb1, kUdp, 53, kAllow, kSelf, ""},
    {"self beats an enforced deny", M, kWeb1, kWeb1v6, kTcp, 23, kAllow, kSelf, ""},
    {"self for a quarantined endpoint", M, kStray1, kStray1, kTcp, 23, kAllow, kSelf, ""},
    {"two unknown addresses are not self", M, kUnknown, kUnknown2, kTcp, 80, kDeny, kDefault, ""},
    // --- 3. enforced denies ----------------------------------------------
    {"enforced deny beats a matching flow", M, kApi1, kDb1, kTcp, 22, kDeny, kDenyRule,
     "no-ssh-to-restricted"},
    {"first deny wins (no-telnet before no-ssh)", M, kWeb1, kDb1, kTcp, 23, kDeny, kDenyRule,
     "no-telnet"},
    {"first deny wins (no-ssh before dev-never-prod)", M, kDev1, kDb1, kTcp, 22, kDeny, kDenyRule,
     "no-ssh-to-restricted"},
    {"label value list: env dev", M, kDev1, kWeb1, kTcp, 8080, kDeny, kDenyRule, "dev-never-prod"},
    {"label value list: env test", M, kTest1, kDb1, kTcp, 5432, kDeny, kDenyRule, "dev-never-prod"},
    {"{} selects quarantined endpoints", M, kStray1, kWeb1, kTcp, 23, kDeny, kDenyRule,
     "no-telnet"},
    {"{} selects unknown container addresses", M, kUnknown, kWeb1, kTcp, 23, kDeny, kDenyRule,
     "no-telnet"},
    {"{} selects unknown container v6 addresses", M, kUnknownV6, kWeb1v6, kTcp, 23, kDeny,
     kDenyRule, "no-telnet"},
    {"{} does not select world", M, kInternet, kWeb1, kTcp, 23, kDeny, kDefault, ""},
    {"{} does not select world v6", M, kWorldV6, kWeb1v6, kTcp, 23, kDeny, kDefault, ""},
    {"{} does not select host", M, kNode, kDb1, kTcp, 22, kDeny, kDefault, ""},
    {"deny to host", M, kWeb1, kNode, kTcp, 22, kDeny, kDenyRule, "no-host-ssh"},
    {"deny to host v6", M, kWeb1v6, kNodeV6, kTcp, 22, kDeny, kDenyRule, "no-host-ssh"},
    // --- 4. flows ----------------------------------------------------------
    {"first flow named (api-to-db before internal-to-db)", M, kApi1, kDb1, kTcp, 5432, kAllow,
     kFlow, "api-to-db"},
    {"second flow when first misses the port", M, kApi1, kDb1, kTcp, 5433, kAllow, kFlow,
     "internal-to-db"},
    {"second flow when first misses the labels", M, kBatch01, kDb1, kTcp, 5432, kAllow, kFlow,
     "internal-to-db"},
    {"flows over IPv6", M, kApi1v6, kDb1v6, kTcp, 5432, kAllow, kFlow, "api-to-db"},
    {"flow is directional", M, kDb1, kApi1, kTcp, 5432, kDeny, kDefault, ""},
    {"port range lo-1", M, kWeb1, kApi1, kTcp, 8079, kDeny, kDefault, ""},
    {"port range lo", M, kWeb1, kApi1, kTcp, 8080, kAllow, kFlow, "web-to-api"},
    {"port range inside", M, kWeb2, kApi2, kTcp, 8085, kAllow, kFlow, "web-to-api"},
    {"port range hi", M, kWeb1, kApi1, kTcp, 8090, kAllow, kFlow, "web-to-api"},
    {"port range hi+1", M, kWeb1, kApi1, kTcp, 8091, kDeny, kDefault, ""},
    {"tcp range does not match udp", M, kWeb1, kApi1, kUdp, 8080, kDeny, kDefault, ""},
    {"tcp range does not match sctp", M, kWeb1, kApi1, kSctp, 8080, kDeny, kDefault, ""},
    {"udp port", M, kBatch01, kDb1, kUdp, 514, kAllow, kFlow, "batch-to-db"},
    {"udp port not tcp", M, kBatch01, kDb1, kTcp, 514, kDeny, kDefault, ""},
    {"sctp port", M, kBatch01, kDb1, kSctp, 3868, kAllow, kFlow, "batch-to-db"},
    {"sctp port not udp", M, kBatch01, kDb1, kUdp, 3868, kDeny, kDefault, ""},
    {"name glob without tier selects quarantine too", M, kBatch100, kDb1, kSctp, 3868, kAllow,
     kFlow, "batch-to-db"},
    {"tier list member (restricted)", M, kDb1, kNode, kUdp, 53, kAllow, kFlow, "dns"},
    {"tier list, second port entry", M, kApi1, kNode, kTcp, 53, kAllow, kFlow, "dns"},
    {"tier list to host v6", M, kWeb1v6, kNodeV6, kUdp, 53, kAllow, kFlow, "dns"},
    {"tier not in list (dev)", M, kDev1, kNode, kUdp, 53, kDeny, kDefault, ""},
    {"tier not in list (quarantine)", M, kStray1, kNode, kUdp, 53, kDeny, kDefault, ""},
    {"host initiates", M, kNode, kWeb1, kTcp, 8080, kAllow, kFlow, "host-probe"},
    {"host v6 initiates", M, kNodeV6, kWeb1v6, kTcp, 8080, kAllow, kFlow, "host-probe"},
    {"host is not world (world-in 0.0.0.0/0)", M, kNode, kWeb1, kTcp, 443, kDeny, kDefault, ""},
    {"image glob matches", M, kWeb1, kBatch01, kTcp, 9000, kAllow, kFlow, "frontends"},
    {"image glob does not match", M, kAdmin1, kBatch01, kTcp, 9000, kDeny, kDefault, ""},
    {"no image does not match an image glob", M, kStray1, kBatch01, kTcp, 9000, kDeny, kDefault,
     ""},
    {"ports omitted is any (udp)", M, kWeb1, kPartner, kUdp, 9999, kAllow, kFlow,
     "shop-to-partner"},
    {"ports omitted is any (icmp)", M, kDev1, kPartner, kIcmp, 8, kAllow, kFlow, "shop-to-partner"},
    {"label list second value (role api)", M, kDev1, kPartner, kSctp, 1, kAllow, kFlow,
     "shop-to-partner"},
    {"label key missing (test-1 has no role)", M, kTest1, kPartner, kTcp, 443, kDeny, kDefault, ""},
    {"label value not in list (app payments)", M, kApi1, kPartner, kTcp, 443, kDeny, kDefault, ""},
    {"quarantine flow from stray", M, kStray1, kNode, kUdp, 67, kAllow, kFlow, "quarantine-dhcp"},
    {"quarantine flow from unknown container address", M, kUnknown, kNode, kUdp, 67, kAllow, kFlow,
     "quarantine-dhcp"},
    {"quarantine flow does not select declared tiers", M, kWeb1, kNode, kUdp, 67, kDeny, kDefault,
     ""},
    // --- ICMP --------------------------------------------------------------
    {"icmp echo-request", M, kApi1, kDb1, kIcmp, 8, kAllow, kFlow, "ping-db"},
    {"icmp echo-reply is not echo-request", M, kApi1, kDb1, kIcmp, 0, kDeny, kDefault, ""},
    {"icmp rule does not match icmpv6", M, kApi1v6, kDb1v6, kIcmp6, 128, kDeny, kDefault, ""},
    {"icmp rule does not match icmpv6 type 8", M, kApi1v6, kDb1v6, kIcmp6, 8, kDeny, kDefault, ""},
    {"bare icmp matches any type (3)", M, kWeb1, kApi1, kIcmp, 3, kAllow, kFlow, "web-icmp"},
    {"bare icmp matches type 0", M, kWeb1, kApi1, kIcmp, 0, kAllow, kFlow, "web-icmp"},
    {"bare icmp matches type 255", M, kWeb1, kApi1, kIcmp, 255, kAllow, kFlow, "web-icmp"},
    {"bare icmp does not match icmpv6", M, kWeb1v6, kApi1v6, kIcmp6, 128, kDeny, kDefault, ""},
    {"icmpv6 echo-request", M, kApi1v6, kWeb1v6, kIcmp6, 128, kAllow, kFlow, "ping6-web"},
    {"icmpv6 echo-reply", M, kApi1v6, kWeb1v6, kIcmp6, 129, kDeny, kDefault, ""},
    {"icmpv6 rule does not match icmp", M, kApi1, kWeb1, kIcmp, 128, kDeny, kDefault, ""},
    // --- world ---------------------------------------------------------------
    {"world v4 inside", M, kWeb1, kMirror, kTcp, 443, kAllow, kFlow, "web-to-mirror"},
    {"world v4 outside", M, kWeb1, kNotMirror, kTcp, 443, kDeny, kDefault, ""},
    {"world v6 inside", M, kWeb1v6, kMirrorV6, kTcp, 443, kAllow, kFlow, "web-to-mirror"},
    {"world v6 outside", M, kWeb1v6, kWorldV6, kTcp, 443, kDeny, kDefault, ""},
    {"world 0.0.0.0/0 as initiator", M, kInternet, kWeb1, kTcp, 443, kAllow, kFlow, "world-in"},
    {"0.0.0.0/0 does not match IPv6", M, kWorldV6, kWeb1v6, kTcp, 443, kDeny, kDefault, ""},
    {"endpoint inside 0.0.0.0/0 is not world (src)", M, kApi1, kWeb1, kTcp, 443, kDeny, kDefault,
     ""},
    {"world 0.0.0.0/0 as responder", M, kDev1, kInternet, kTcp, 80, kAllow, kFlow,
     "dev-to-internet"},
    {"endpoint inside 0.0.0.0/0 is not world (dst)", M, kDev1, kStray1, kTcp, 80, kDeny, kDefault,
     ""},
    {"unknown container address is not world", M, kDev1, kUnknown, kTcp, 80, kDeny, kDefault, ""},
    {"node address is not world", M, kDev1, kNode, kTcp, 80, kDeny, kDefault, ""},
    {"0.0.0.0/0 responder does not match IPv6", M, kDev1, kWorldV6, kTcp, 80, kDeny, kDefault, ""},
    // --- 5. intraTier --------------------------------------------------------
    {"intraTier allow, same declared tier", M, kWeb1, kWeb2, kTcp, 80, kAllow, kIntra, ""},
    {"intraTier allow over v6", M, kApi1v6, kApi2, kTcp, 80, kAllow, kIntra, ""},
    {"intraTier allow, dev tier", M, kDev1, kTest1, kUdp, 9, kAllow, kIntra, ""},
    {"intraTier allow, name-glob assigned", M, kBatch01, kApi1, kTcp, 80, kAllow, kIntra, ""},
    {"intraTier not for quarantine", M, kStray1, kStray2, kTcp, 80, kDeny, kDefault, ""},
    {"intraTier not for tier: quarantine assignment", M, kSuspect1, kStray1, kTcp, 80, kDeny,
     kDefault, ""},
    {"intraTier not for unknown addresses", M, kUnknown, kUnknown2, kTcp, 80, kDeny, kDefault, ""},
    {"different tiers (first-match: db-1 is restricted)", M, kApi1, kDb1, kTcp, 80, kDeny, kDefault,
     ""},
    {"flow decides before intraTier", M, kApi1, kApi2, kTcp, 7000, kAllow, kFlow, "api-peers"},
    {"intraTier when no flow matches the port", M, kApi1, kApi2, kTcp, 7001, kAllow, kIntra, ""},
    // --- first-match assignment ---------------------------------------------
    {"tier: quarantine assignment wins over payments", M, kSuspect1, kDb1, kTcp, 5432, kDeny,
     kDefault, ""},
    {"name glob ? (batch-100 quarantined)", M, kBatch100, kDb1, kTcp, 5432, kDeny, kDefault, ""},
    // --- staged denies ---------------------------------------------------------
    {"allow + staged -> audit", M, kWeb1, kApi1, kTcp, 6379, kAudit, kDenyRule, "staged-no-redis"},
    {"allow + staged -> audit, second staged when first misses", M, kWeb1, kApi1, kTcp, 6380,
     kAudit, kDenyRule, "staged-no-redis-again"},
    {"staged never turns an enforced deny into audit", M, kWeb1, kDb1, kTcp, 6379, kDeny, kDenyRule,
     "no-redis-to-db"},
    {"staged never affects default-deny", M, kStray1, kStray2, kTcp, 6379, kDeny, kDefault, ""},
    {"staged (second) never affects default-deny", M, kWeb1, kStray1, kTcp, 6380, kDeny, kDefault,
     ""},
    {"staged does not affect self", M, kWeb1, kWeb1v6, kTcp, 6379, kAllow, kSelf, ""},
    {"staged + intraTier -> audit", M, kWeb1, kWeb2, kTcp, 22, kAudit, kDenyRule,
     "staged-intra-ssh"},
    {"staged + intraTier -> audit (first staged)", M, kWeb2, kWeb1, kTcp, 6379, kAudit, kDenyRule,
     "staged-no-redis"},
    {"staged + intraTier among internal", M, kApi1, kApi2, kTcp, 6379, kAudit, kDenyRule,
     "staged-no-redis"},
    // --- audit: per-tier mode (spec.mode enforce) ------------------------------
    {"audit tier: intraTier deny -> default-deny audited", AT, kOnb1, kOnb2, kTcp, 80, kAudit,
     kDefault, ""},
    {"audit tier: enforced deny audited", AT, kOnb1, kOnb2, kTcp, 22, kAudit, kDenyRule,
     "onb-no-ssh"},
    {"audit tier: two audit tiers", AT, kOnb1, kLeg1, kTcp, 80, kAudit, kDefault, ""},
    {"audit tier: other side enforces", AT, kOnb1, kCore1, kTcp, 80, kDeny, kDefault, ""},
    {"audit tier: initiator enforces", AT, kCore1, kOnb1, kTcp, 80, kDeny, kDefault, ""},
    {"audit tier: deny with enforcing responder", AT, kOnb1, kCore1, kTcp, 5432, kDeny, kDenyRule,
     "onb-not-core-db"},
    {"audit tier: flow still allows", AT, kOnb1, kCore1, kTcp, 443, kAllow, kFlow, "onb-web"},
    {"audit tier: world does not count (dst)", AT, kOnb1, kInternet, kTcp, 80, kAudit, kDefault,
     ""},
    {"audit tier: world does not count (src)", AT, kInternet, kOnb1, kTcp, 80, kAudit, kDefault,
     ""},
    {"audit tier: host does not count", AT, kOnb1, kAuditNode, kTcp, 80, kAudit, kDefault, ""},
    {"audit tier: host does not count (src)", AT, kAuditNode, kLeg1, kTcp, 80, kAudit, kDefault,
     ""},
    {"audit tier: host to world enforced", AT, kAuditNode, kInternet, kTcp, 80, kDeny, kDefault,
     ""},
    {"audit tier: world to host enforced", AT, kInternet, kAuditNode, kTcp, 80, kDeny, kDefault,
     ""},
    {"audit tier: quarantine endpoint forces enforce", AT, kQ1, kOnb1, kTcp, 80, kDeny, kDefault,
     ""},
    {"audit tier: unknown container address forces enforce", AT, kOnb1, kAuditUnknown, kTcp, 80,
     kDeny, kDefault, ""},
    {"audit tier: intraTier deny among enforcing tier", AT, kCore1, kCore2, kTcp, 80, kDeny,
     kDefault, ""},
    // --- audit: spec.mode audit ------------------------------------------------
    {"spec audit: default-deny audited", AS, kOnb1, kOnb2, kTcp, 80, kAudit, kDefault, ""},
    {"spec audit: deny audited", AS, kOnb1, kOnb2, kTcp, 22, kAudit, kDenyRule, "onb-no-ssh"},
    {"spec audit: two default-mode tiers", AS, kLeg1, kOnb1, kTcp, 80, kAudit, kDefault, ""},
    {"spec audit: tier mode enforce enforces", AS, kOnb1, kCore1, kTcp, 80, kDeny, kDefault, ""},
    {"spec audit: enforce tier to world", AS, kCore1, kInternet, kTcp, 80, kDeny, kDefault, ""},
    {"spec audit: enforce tier intra", AS, kCore1, kCore2, kTcp, 80, kDeny, kDefault, ""},
    {"spec audit: quarantine follows spec.mode", AS, kQ1, kOnb1, kTcp, 80, kAudit, kDefault, ""},
    {"spec audit: unknown container address follows spec.mode", AS, kAuditUnknown, kLeg1, kTcp, 80,
     kAudit, kDefault, ""},
    {"spec audit: world to host audited", AS, kInternet, kAuditNode, kTcp, 80, kAudit, kDefault,
     ""},
    {"spec audit: host to world audited", AS, kAuditNode, kInternet, kUdp, 53, kAudit, kDefault,
     ""},
    {"spec audit: endpoint to world audited", AS, kOnb1, kInternet, kTcp, 443, kAudit, kDefault,
     ""},
    {"spec audit: flow still allows", AS, kOnb1, kCore1, kTcp, 443, kAllow, kFlow, "onb-web"},
    {"spec audit: self still self", AS, kOnb1, kOnb1, kTcp, 22, kAllow, kSelf, ""},
};

std::string case_name(const ::testing::TestParamInfo<EvalCase>& info) {
  std::string out = std::to_string(info.index) + "_";
  for (const char* p = info.param.description; *p != '\0'; ++p) {
    const char c = *p;
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    out += alnum ? c : '_';
  }
  return out;
}

class Evaluate : public ::testing::TestWithParam<EvalCase> {};

TEST_P(Evaluate, Table) {
  const EvalCase& c = GetParam();
  const RuleSet* rs = scenario(c.scenario);
  ASSERT_NE(rs, nullptr);
  const Decision d = decide(*rs, Connection{ip(c.src), ip(c.dst), c.protocol, c.port});
  EXPECT_EQ(to_string(d.verdict), to_string(c.verdict)) << c.description;
  EXPECT_EQ(to_string(d.kind), to_string(c.kind)) << c.description;
  const std::string_view want_rule = c.rule;
  if (want_rule.empty()) {
    EXPECT_EQ(d.rule, nullptr) << c.description << ": decided by " << d.rule->origin.name;
  } else {
    ASSERT_NE(d.rule, nullptr) << c.description;
    EXPECT_EQ(d.rule->origin.name, want_rule) << c.description;
    EXPECT_EQ(d.rule->origin.kind, c.kind == kFlow ? kFlow : kDenyRule) << c.description;
    const Rule* named = rs->policy->find_rule(want_rule);
    ASSERT_NE(named, nullptr);
    EXPECT_EQ(d.rule_id(), named->id) << c.description;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, Evaluate, ::testing::ValuesIn(kCases), case_name);

TEST(EvaluateTable, HasEnoughRows) { EXPECT_GE(std::size(kCases), 60U); }

// ---------------------------------------------------------------------------
// Decision::rule_id and rule ids
// ---------------------------------------------------------------------------

TEST(DecisionRuleId, ReservedIdsForDecisionsWithoutARule) {
  EXPECT_EQ((Decision{Verdict::Allow, RuleKind::Self, nullptr}).rule_id(), kRuleSelf);
  EXPECT_EQ((Decision{Verdict::Allow, RuleKind::IntraTier, nullptr}).rule_id(), kRuleIntraTier);
  EXPECT_EQ((Decision{Verdict::Deny, RuleKind::DefaultDeny, nullptr}).rule_id(), kRuleDefaultDeny);
  EXPECT_EQ((Decision{Verdict::Audit, RuleKind::DefaultDeny, nullptr}).rule_id(), kRuleDefaultDeny);
  EXPECT_EQ(kRuleSelf, 1U);
  EXPECT_EQ(kRuleIntraTier, 2U);
  EXPECT_EQ(kRuleDefaultDeny, 3U);
  EXPECT_EQ(kFirstPolicyRule, 16U);
}

TEST(DecisionRuleId, RuleDecisionsCarryThePolicyRuleId) {
  Rule r;
  r.id = 42;
  EXPECT_EQ((Decision{Verdict::Allow, RuleKind::Flow, &r}).rule_id(), 42U);
  EXPECT_EQ((Decision{Verdict::Audit, RuleKind::Deny, &r}).rule_id(), 42U);
}

TEST(DecisionRuleId, EndToEnd) {
  const RuleSet* rs = scenario(Scenario::Main);
  ASSERT_NE(rs, nullptr);
  auto decide_ids = [&](const char* s, const char* d, std::uint8_t p, std::uint16_t port) {
    return decide(*rs, Connection{ip(s), ip(d), p, port}).rule_id();
  };
  EXPECT_EQ(decide_ids(kWeb1, kWeb1v6, kTcp, 80), kRuleSelf);
  EXPECT_EQ(decide_ids(kWeb1, kWeb2, kTcp, 80), kRuleIntraTier);
  EXPECT_EQ(decide_ids(kStray1, kStray2, kTcp, 80), kRuleDefaultDeny);
  // Denies are numbered first, in policy order, from kFirstPolicyRule.
  EXPECT_EQ(decide_ids(kWeb1, kDb1, kTcp, 23), kFirstPolicyRule);         // no-telnet
  EXPECT_EQ(decide_ids(kApi1, kDb1, kTcp, 22), kFirstPolicyRule + 1);     // no-ssh-to-restricted
  EXPECT_EQ(decide_ids(kWeb1, kApi1, kTcp, 6379), kFirstPolicyRule + 3);  // staged-no-redis
  EXPECT_EQ(decide_ids(kWeb1, kDb1, kTcp, 6379), kFirstPolicyRule + 4);   // no-redis-to-db
  // 8 denies, then flows.
  EXPECT_EQ(decide_ids(kWeb1, kApi1, kTcp, 8080), kFirstPolicyRule + 8);  // web-to-api
  EXPECT_EQ(decide_ids(kApi1, kDb1, kTcp, 5432), kFirstPolicyRule + 9);   // api-to-db
  EXPECT_EQ(decide_ids(kApi1, kDb1, kTcp, 5433), kFirstPolicyRule + 10);  // internal-to-db
}

// ---------------------------------------------------------------------------
// Origins: every compiled rule points back at its source line.
// ---------------------------------------------------------------------------

// 1-based line of the first line of `text` that contains `needle`.
int line_of(std::string_view text, std::string_view needle) {
  const std::size_t at = text.find(needle);
  if (at == std::string_view::npos) return -1;
  int line = 1;
  for (std::size_t i = 0; i < at; ++i) line += text[i] == '\n' ? 1 : 0;
  return line;
}

TEST(RuleOrigins, EveryRuleCarriesFileAndLine) {
  const RuleSet* rs = scenario(Scenario::Main);
  ASSERT_NE(rs, nullptr);
  const CompiledPolicy& p = *rs->policy;
  ASSERT_EQ(p.denies.size(), 8U);
  ASSERT_EQ(p.flows.size(), 18U);
  for (const auto* list : {&p.denies, &p.flows}) {
    for (const Rule& r : *list) {
      SCOPED_TRACE(r.origin.name);
      EXPECT_EQ(r.origin.file, "main.yaml");
      EXPECT_EQ(r.origin.line, line_of(kMainPolicy, "- name: " + r.origin.name + "\n"));
      EXPECT_EQ(r.origin.kind, list == &p.denies ? RuleKind::Deny : RuleKind::Flow);
    }
  }
  EXPECT_EQ(p.intra_tier_origin.kind, RuleKind::IntraTier);
  EXPECT_EQ(p.intra_tier_origin.file, "main.yaml");
  EXPECT_EQ(p.intra_tier_origin.line, line_of(kMainPolicy, "intraTier: allow"));
}

TEST(RuleOrigins, FlowStyleRulesToo) {
  const RuleSet* rs = scenario(Scenario::AuditTier);
  ASSERT_NE(rs, nullptr);
  const Rule* r = rs->policy->find_rule("onb-web");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->origin.file, "audit-tier.yaml");
  EXPECT_EQ(r->origin.line, line_of(kAuditTierPolicy, "name: onb-web"));
  EXPECT_EQ(r->origin.kind, RuleKind::Flow);
}

TEST(RuleFlags, StagedAndLog) {
  const RuleSet* rs = scenario(Scenario::Main);
  ASSERT_NE(rs, nullptr);
  for (const Rule& r : rs->policy->denies) {
    EXPECT_EQ(r.staged, r.origin.name.starts_with("staged-")) << r.origin.name;
  }
  for (const Rule& r : rs->policy->flows) {
    EXPECT_FALSE(r.staged) << r.origin.name;
    EXPECT_EQ(r.log, r.origin.name == "api-peers") << r.origin.name;
  }
  for (const Rule& r : rs->policy->denies) EXPECT_FALSE(r.log) << r.origin.name;
}

// ---------------------------------------------------------------------------
// resolve(): the first evaluation step on its own.
// ---------------------------------------------------------------------------

struct ResolveCase {
  const char* address;
  PeerMatch::Entity entity;
  const char* tier;  // endpoints only
  bool known;        // endpoint in the inventory
};

TEST(Resolve, Table) {
  const RuleSet* rs = scenario(Scenario::Main);
  ASSERT_NE(rs, nullptr);
  using E = PeerMatch::Entity;
  const ResolveCase cases[] = {
      {kWeb1, E::Endpoint, "public", true},
      {kWeb1v6, E::Endpoint, "public", true},
      {kApi1, E::Endpoint, "internal", true},
      {kDb1, E::Endpoint, "restricted", true},
      {kBatch01, E::Endpoint, "internal", true},
      {kBatch100, E::Endpoint, "quarantine", true},
      {kDev1, E::Endpoint, "dev", true},
      {kTest1, E::Endpoint, "dev", true},
      {kSuspect1, E::Endpoint, "quarantine", true},
      {kStray1, E::Endpoint, "quarantine", true},
      {kUnknown, E::Endpoint, "quarantine", false},
      {kUnknownV6, E::Endpoint, "quarantine", false},
      {kNode, E::Host, "", false},
      {kNodeV6, E::Host, "", false},
      {kMirror, E::World, "", false},
      {kWorldV6, E::World, "", false},
      {"fd00:0:0:1::1", E::World, "", false},  // outside fd00::/64
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.address);
    const ResolvedPeer p = resolve(*rs->endpoints, ip(c.address));
    EXPECT_EQ(p.entity, c.entity);
    EXPECT_EQ(p.address, ip(c.address));
    if (c.entity != E::Endpoint) continue;
    EXPECT_EQ(rs->policy->tiers.at(p.tier).name, c.tier);
    EXPECT_EQ(p.endpoint != kUnknownEndpoint, c.known);
  }
}

TEST(Resolve, SameEndpointForBothAddresses) {
  const RuleSet* rs = scenario(Scenario::Main);
  ASSERT_NE(rs, nullptr);
  const ResolvedPeer a = resolve(*rs->endpoints, ip(kDb1));
  const ResolvedPeer b = resolve(*rs->endpoints, ip(kDb1v6));
  EXPECT_EQ(a.endpoint, b.endpoint);
  EXPECT_NE(a.endpoint, kUnknownEndpoint);
}

// Without container CIDRs an unknown address is world, never quarantine.
TEST(Resolve, NoContainerCidrsMeansWorld) {
  auto rs = testkit::compile_yaml(kMainPolicy, kMainInventory, 1, {}, "main.yaml");
  ASSERT_TRUE(rs.has_value());
  EXPECT_EQ(resolve(*rs->endpoints, ip(kUnknown)).entity, PeerMatch::Entity::World);
  // ...so `{}` no longer selects it, and 0.0.0.0/0 does.
  EXPECT_EQ(decide(*rs, Connection{ip(kUnknown), ip(kWeb1), kTcp, 23}).kind, RuleKind::DefaultDeny);
  const Decision d = decide(*rs, Connection{ip(kUnknown), ip(kWeb1), kTcp, 443});
  EXPECT_EQ(d.verdict, Verdict::Allow);
  ASSERT_NE(d.rule, nullptr);
  EXPECT_EQ(d.rule->origin.name, "world-in");
}

// ---------------------------------------------------------------------------
// deny_is_audited on its own (the audit rule without the rest).
// ---------------------------------------------------------------------------

TEST(DenyIsAudited, HostAndWorldOnlyFollowSpecMode) {
  CompiledPolicy p;
  p.tiers.push_back(TierInfo{"quarantine", -1, Mode::Enforce, false});
  ResolvedPeer host;
  host.entity = PeerMatch::Entity::Host;
  ResolvedPeer world;
  world.entity = PeerMatch::Entity::World;
  p.mode = Mode::Enforce;
  EXPECT_FALSE(deny_is_audited(p, host, world));
  p.mode = Mode::Audit;
  EXPECT_TRUE(deny_is_audited(p, host, world));
  EXPECT_TRUE(deny_is_audited(p, world, world));
}

TEST(DenyIsAudited, EveryEndpointMustBeInAnAuditTier) {
  CompiledPolicy p;
  p.mode = Mode::Enforce;
  p.tiers.push_back(TierInfo{"quarantine", -1, Mode::Enforce, false});
  p.tiers.push_back(TierInfo{"a", 10, Mode::Audit, true});
  p.tiers.push_back(TierInfo{"b", 20, Mode::Enforce, true});
  ResolvedPeer a;
  a.entity = PeerMatch::Entity::Endpoint;
  a.endpoint = 1;
  a.tier = 1;
  ResolvedPeer b = a;
  b.endpoint = 2;
  b.tier = 2;
  ResolvedPeer q = a;
  q.endpoint = 3;
  q.tier = kQuarantineTier;
  ResolvedPeer world;
  world.entity = PeerMatch::Entity::World;
  EXPECT_TRUE(deny_is_audited(p, a, a));
  EXPECT_TRUE(deny_is_audited(p, a, world));
  EXPECT_TRUE(deny_is_audited(p, world, a));
  EXPECT_FALSE(deny_is_audited(p, a, b));
  EXPECT_FALSE(deny_is_audited(p, b, a));
  EXPECT_FALSE(deny_is_audited(p, q, a));
  EXPECT_FALSE(deny_is_audited(p, world, world));
}

}  // namespace
}  // namespace tierwall::dataplane
