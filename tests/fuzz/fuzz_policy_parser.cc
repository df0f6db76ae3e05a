// libFuzzer harness for everything that reads untrusted YAML: the policy
// loader (yaml-cpp front end, validation, compilation, the reference
// evaluator) and the inventory loader (libyaml front end).
//
// Input format: the whole input is YAML text; bit 0 of its first byte picks
// the reader, so a fuzzer mutating that byte switches between the two:
//   even -> policy::parse_policy, then (when valid) compile and evaluate;
//   odd  -> identity::parse_inventory.
// The selector byte stays part of the text, which is why the seed corpus
// starts policy seeds with "\n" (0x0a, even) and inventory seeds with a
// "#" comment line (0x23, odd): both are YAML that changes nothing.
//
// Beyond "no crash, no leak, no UB", the harness checks a few invariants
// (a violation traps, so libFuzzer saves the input):
//   - an accepted policy/inventory comes with no error diagnostics;
//   - a rejected one comes with at least one error diagnostic;
//   - Compilation::bind (label-indexed) lands an endpoint on the same
//     assignment as identity::resolve_tier (linear scan);
//   - decide() names a rule exactly for flow/deny decisions, and a
//     connection from an endpoint to itself is allowed by `self`.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/dataplane/ruleset.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/identity/resolver.h"
#include "tierwall/policy/diagnostics.h"
#include "tierwall/policy/loader.h"

namespace {

using tierwall::IpAddress;
namespace compiler = tierwall::compiler;
namespace dataplane = tierwall::dataplane;
namespace identity = tierwall::identity;
namespace policy = tierwall::policy;
namespace proto = tierwall::proto;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

IpAddress addr(std::string_view text) {
  auto a = IpAddress::parse(text);
  check(a.has_value());
  return *a;
}

// Formats every diagnostic the way the CLI does; the result is discarded,
// but the formatting code runs on every message the fuzzer provokes.
void format_all(const policy::Diagnostics& diags) {
  std::size_t total = 0;
  for (const auto& d : diags.items()) total += d.to_string().size();
  std::ostringstream out;
  diags.print(out);
  check(total == 0 || !out.str().empty());
}

// A synthetic endpoint that the first label/image requirements of `sel`
// select, so that binding exercises the label index, not only misses.
identity::Endpoint endpoint_for(const policy::EndpointSelector& sel, std::string name,
                                std::string_view address) {
  identity::Endpoint ep;
  ep.name = std::move(name);
  ep.image = "reg.example/fuzz/app:1";
  if (sel.image && sel.image->is_literal()) ep.image = sel.image->literal();
  std::vector<std::pair<std::string, std::string>> kv;
  for (const auto& req : sel.labels) {
    if (!req.values.empty()) kv.emplace_back(req.key, req.values.front());
  }
  ep.labels = identity::Labels(std::move(kv));
  ep.addresses.push_back(addr(address));
  return ep;
}

void check_decision(const dataplane::Decision& d) {
  const bool names_rule =
      d.kind == dataplane::RuleKind::Flow || d.kind == dataplane::RuleKind::Deny;
  check(names_rule == (d.rule != nullptr));
  (void)d.rule_id();
  (void)dataplane::to_string(d.verdict);
  (void)dataplane::to_string(d.kind);
}

void fuzz_policy(std::string_view text, policy::Diagnostics& diags) {
  auto parsed = policy::parse_policy(text, "fuzz.yaml", diags);
  if (!parsed) {
    check(diags.has_errors());
    return;
  }
  check(!diags.has_errors());

  compiler::Compilation c(*parsed, 1);
  const auto& cp = *c.policy();
  check(cp.rule_count() == parsed->denies.size() + parsed->flows.size());
  check(cp.tiers.size() == parsed->tiers.size() + 1);

  // Endpoints built from the first assignment's and the first flow's
  // selectors, plus one that nothing selects.
  std::vector<identity::Endpoint> endpoints;
  policy::EndpointSelector none;
  const auto& a0 = parsed->assignments.empty() ? none : parsed->assignments.front().match;
  const auto& f0 = parsed->flows.empty() ? none : parsed->flows.front().from.selector;
  endpoints.push_back(endpoint_for(a0, "ep-a", "10.1.0.1"));
  endpoints.push_back(endpoint_for(f0, "ep-b", "fd00::2"));
  endpoints.push_back(endpoint_for(none, "ep-c", "10.1.0.3"));

  // The RuleSet of the task: the compiled policy over an empty table (every
  // address is `world`) ...
  auto empty = std::make_shared<dataplane::EndpointTable>();
  // ... and the same policy over a table holding the synthetic endpoints,
  // a node address and a container CIDR (unknown addresses there are
  // quarantined endpoints).
  auto table = std::make_shared<dataplane::EndpointTable>();
  table->set_node_addresses({addr("192.0.2.10")});
  table->set_container_cidrs({*tierwall::Cidr::parse("10.1.0.0/16")});
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    const auto b = c.bind(endpoints[i]);
    const auto r = identity::resolve_tier(*parsed, endpoints[i]);
    check(b.assignment == r.assignment);
    check(cp.tiers.at(b.tier).name == r.tier);
    check(table->upsert(static_cast<dataplane::EndpointId>(i), endpoints[i].addresses, b.tier,
                        b.selectors));
  }

  struct Probe {
    const char* src;
    const char* dst;
    std::uint8_t protocol;
    std::uint16_t port;
  };
  static constexpr std::array<Probe, 8> kProbes{{
      {"10.1.0.1", "fd00::2", proto::kTcp, 443},
      {"fd00::2", "10.1.0.1", proto::kUdp, 53},
      {"10.1.0.1", "10.1.0.3", proto::kTcp, 5432},
      {"10.1.0.3", "10.1.0.1", proto::kSctp, 2905},
      {"10.1.0.1", "10.1.0.1", proto::kTcp, 80},
      {"192.0.2.10", "10.1.0.99", proto::kIcmp, 8},
      {"203.0.113.7", "10.1.0.3", proto::kTcp, 22},
      {"2001:db8::1", "fd00::2", proto::kIcmpv6, 128},
  }};
  for (const auto& table_ptr : {empty, table}) {
    const dataplane::RuleSet rules{c.policy(), table_ptr};
    for (const auto& p : kProbes) {
      const dataplane::Connection conn{addr(p.src), addr(p.dst), p.protocol, p.port};
      const auto d = dataplane::decide(rules, conn);
      check_decision(d);
      if (table_ptr == table && conn.src == conn.dst) {
        check(d.kind == dataplane::RuleKind::Self && d.verdict == dataplane::Verdict::Allow);
      }
    }
  }
}

void fuzz_inventory(std::string_view text, policy::Diagnostics& diags) {
  auto inv = identity::parse_inventory(text, "fuzz.yaml", diags);
  if (!inv) {
    check(diags.has_errors());
    return;
  }
  check(!diags.has_errors());
  for (const auto& ep : inv->endpoints) {
    check(!ep.addresses.empty());
    check(inv->find(ep.name) == &ep);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  policy::Diagnostics diags;
  if ((data[0] & 1U) == 0) {
    fuzz_policy(text, diags);
  } else {
    fuzz_inventory(text, diags);
  }
  format_all(diags);
  return 0;
}
