// The DPDK decision core's test oracle and generated cases: the reference
// evaluator's answer as a FastDecision, a decision's text for failure
// messages, a generated case compiled, and a generated case's addresses.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/compile.h"
#include "tests/common/random_policy.h"

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/evaluator.h"

namespace tierwall::testkit {

// What decide() (the reference evaluator) says, as the fast path reports it.
inline dataplane::dpdk::FastDecision reference(const dataplane::RuleSet& rules,
                                               const IpAddress& src, const IpAddress& dst,
                                               std::uint8_t protocol, std::uint16_t port) {
  const dataplane::Decision want = dataplane::decide(rules, {src, dst, protocol, port});
  return {want.verdict, want.kind, want.rule_id()};
}

// "allow/flow/rule 12".
inline std::string describe(const dataplane::dpdk::FastDecision& d) {
  std::ostringstream o;
  o << to_string(d.verdict) << "/" << to_string(d.kind) << "/rule " << d.rule_id;
  return o.str();
}

// The case compiled as `generation` for its two container networks; empty
// (and the test failed) when it does not load.
inline dataplane::RuleSet compile_case(const GeneratedCase& gen, std::uint64_t generation) {
  return compile_yaml(gen.policy_yaml, gen.inventory_yaml, generation,
                      {*Cidr::parse(gen.container_cidr4), *Cidr::parse(gen.container_cidr6)},
                      "gen.yaml")
      .value_or(dataplane::RuleSet{});
}

// Every address of one family the case names: endpoints, unknown addresses
// in the container networks, world addresses and the node's.
inline std::vector<std::string> case_addresses(const GeneratedCase& gen, bool v6) {
  std::vector<std::string> a = v6 ? gen.endpoint_v6 : gen.endpoint_v4;
  for (const auto& x : v6 ? gen.unknown_v6 : gen.unknown_v4) a.push_back(x);
  for (const auto& x : v6 ? gen.world_v6 : gen.world_v4) a.push_back(x);
  for (const auto& x : v6 ? gen.node_v6 : gen.node_v4) a.push_back(x);
  return a;
}

}  // namespace tierwall::testkit
