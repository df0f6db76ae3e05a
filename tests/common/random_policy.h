// Generated policies and inventories for differential tests: every
// dataplane must decide what the reference evaluator decides. Seeded and
// deterministic; the YAML goes through the real loader so generated cases
// are valid policies a user could have written.
#pragma once

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace tierwall::testkit {

struct GeneratedCase {
  std::string policy_yaml;
  std::string inventory_yaml;
  std::vector<std::string> endpoint_v4;  // first address of each endpoint
  std::vector<std::string> endpoint_v6;
  std::string container_cidr4 = "10.88.0.0/16";
  std::string container_cidr6 = "fd00:88::/64";
  std::vector<std::string> unknown_v4{"10.88.9.9", "10.88.9.10"};  // in the CIDR, no identity
  std::vector<std::string> unknown_v6{"fd00:88::9:9"};
  std::vector<std::string> world_v4{"198.51.100.7", "203.0.113.5", "192.0.2.77"};
  std::vector<std::string> world_v6{"2001:db8:100::7", "2001:db8:200::5"};
  std::vector<std::string> node_v4{"10.88.0.1"};
  std::vector<std::string> node_v6{"fd00:88::1"};
  std::vector<std::string> ports{"tcp/80", "tcp/443",  "tcp/5432",          "tcp/8080",
                                 "udp/53", "udp/5000", "icmp/echo-request", "icmpv6/echo-request"};
};

// `endpoints` container endpoints with labels app/role/env from a small
// vocabulary; addresses 10.88.0.(10+i) and fd00:88::(10+i) (i < 200).
inline GeneratedCase generate_case(std::uint32_t seed, int endpoints = 8) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto chance = [&](int percent) { return pick(100) < percent; };
  const char* apps[] = {"web", "api", "db", "cache"};
  const char* roles[] = {"front", "back"};
  const char* envs[] = {"dev", "prod"};
  GeneratedCase c;
  const int tiers = 2 + pick(3);
  std::ostringstream p;
  p << "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {name: gen}\nspec:\n";
  if (chance(20)) p << "  mode: audit\n";
  if (chance(40)) p << "  intraTier: allow\n";
  p << "  tiers:\n";
  for (int t = 0; t < tiers; ++t) {
    p << "    - {name: t" << t << ", level: " << (t + 1) * 10;
    if (chance(20)) p << ", mode: " << (chance(50) ? "audit" : "enforce");
    p << "}\n";
  }
  auto tier_name = [&]() { return "t" + std::to_string(pick(tiers)); };
  p << "  assignments:\n";
  for (int i = 0; i < 4; ++i) {
    p << "    - {match: {labels: {app: " << apps[i] << "}}, tier: " << tier_name() << "}\n";
  }
  auto selector = [&]() {
    std::string s = "{";
    bool first = true;
    auto add = [&](const std::string& kv) {
      s += (first ? "" : ", ") + kv;
      first = false;
    };
    if (chance(50)) {
      if (chance(15)) {
        add("tier: [" + tier_name() + ", quarantine]");
      } else {
        add("tier: " + tier_name());
      }
    }
    if (chance(35)) {
      add(std::string("labels: {") +
          (chance(50) ? "role: " + std::string(roles[pick(2)])
                      : "env: [" + std::string(envs[pick(2)]) + "]") +
          "}");
    }
    return s + "}";
  };
  auto peer = [&](bool from) {
    const int k = pick(10);
    if (k == 0) return std::string("{host: true}");
    if (k == 1) {
      return std::string(from ? "{world: [198.51.100.0/24, \"2001:db8:100::/48\"]}"
                              : "{world: [203.0.113.0/24, 198.51.100.0/25, \"::/0\"]}");
    }
    return selector();
  };
  auto ports = [&]() {
    const int k = pick(6);
    if (k == 0) return std::string();
    const char* opts[] = {
        "tcp/80",   "tcp/443-5432", "udp/53", "icmp/echo-request", "icmpv6/echo-request",
        "tcp/8080", "icmp"};
    std::string s = ", ports: [";
    const int n = 1 + pick(2);
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::string(opts[pick(7)]);
    return s + "]";
  };
  const int denies = pick(4);
  int rule = 0;
  if (denies > 0) p << "  denies:\n";
  for (int i = 0; i < denies; ++i) {
    p << "    - {name: r" << rule++ << ", from: " << peer(true) << ", to: " << peer(false)
      << ports();
    if (chance(35)) p << ", audit: true";
    p << "}\n";
  }
  const int flows = 2 + pick(6);
  p << "  flows:\n";
  for (int i = 0; i < flows; ++i) {
    p << "    - {name: r" << rule++ << ", from: " << peer(true) << ", to: " << peer(false)
      << ports();
    if (chance(30)) p << ", log: true";
    p << "}\n";
  }
  c.policy_yaml = p.str();

  std::ostringstream inv;
  inv << "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: n, addresses: [10.88.0.1, "
         "\"fd00:88::1\"]}\nendpoints:\n";
  for (int i = 0; i < endpoints; ++i) {
    const std::string v4 = "10.88.0." + std::to_string(10 + i);
    const std::string v6 = "fd00:88::" + std::to_string(10 + i);
    inv << "  - {name: e" << i << ", labels: {";
    // One endpoint in five has no app label: quarantine.
    if (pick(5) != 0) inv << "app: " << apps[pick(4)] << ", ";
    inv << "role: " << roles[pick(2)] << ", env: " << envs[pick(2)] << "}, addresses: [" << v4
        << ", \"" << v6 << "\"]}\n";
    c.endpoint_v4.push_back(v4);
    c.endpoint_v6.push_back(v6);
  }
  c.inventory_yaml = inv.str();
  return c;
}

}  // namespace tierwall::testkit
