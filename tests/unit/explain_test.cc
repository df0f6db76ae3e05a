// tierctl explain: the JSON contract of spec/cli.md, side resolution, the
// port rules and the near-miss hints of the human form.
#include "tierwall/explain/explain.h"

#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace {

using tierwall::explain::Explainer;
using tierwall::explain::ExplainError;
using tierwall::explain::Explanation;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: acme}
spec:
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20}
    - {name: restricted, level: 40}
  assignments:
    - name: web
      match: {labels: {role: web}}
      tier: public
    - name: api
      match: {labels: {app: payments, role: api}}
      tier: internal
    - name: payments-db
      match: {labels: {app: payments, role: db}}
      tier: restricted
    - match: {name: "batch-*"}
      tier: internal
  denies:
    - name: no-ssh-host
      from: {}
      to: {host: true}
      ports: [tcp/22]
  flows:
    - name: api-to-db
      from: {tier: internal, labels: {app: payments}}
      to: {tier: restricted, labels: {role: db}}
      ports: [tcp/5432]
    - name: web-to-api
      from: {tier: public}
      to: {tier: internal}
      ports: [tcp/8080, tcp/8443]
    - name: dns
      from: {}
      to: {host: true}
      ports: [udp/53]
    - name: ping-world
      from: {tier: internal}
      to: {world: [198.51.100.0/24]}
      ports: [icmp/echo-request]
)";

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [192.0.2.10, "2001:db8::10"]}
endpoints:
  - {name: web-1, labels: {role: web}, addresses: [10.88.0.10, "fd00::10"]}
  - {name: api-1, labels: {app: payments, role: api}, addresses: [10.88.0.11]}
  - {name: db-1, labels: {app: payments, role: db}, addresses: [10.88.0.20, "fd00::20"]}
  - {name: batch-7, labels: {}, addresses: [10.88.0.30]}
  - {name: stray, labels: {team: x}, addresses: [10.88.0.99]}
)";

class ExplainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tierwall::policy::Diagnostics d;
    policy_ = tierwall::policy::parse_policy(kPolicy, "policies/acme/flows.yaml", d);
    inventory_ = tierwall::identity::parse_inventory(kInventory, "inv.yaml", d);
    ASSERT_FALSE(d.has_errors()) << [&] {
      std::ostringstream s;
      d.print(s);
      return s.str();
    }();
    compilation_ = std::make_unique<tierwall::compiler::Compilation>(*policy_, 1);
    explainer_ = std::make_unique<Explainer>(*compilation_, *inventory_);
  }

  nlohmann::json ask(const char* from, const char* to, std::optional<std::string_view> port) {
    auto r = explainer_->explain(from, to, port);
    if (auto* e = std::get_if<ExplainError>(&r)) {
      ADD_FAILURE() << e->message;
      return {};
    }
    return tierwall::explain::to_json(std::get<Explanation>(r));
  }
  ExplainError fail(const char* from, const char* to, std::optional<std::string_view> port) {
    auto r = explainer_->explain(from, to, port);
    if (auto* e = std::get_if<ExplainError>(&r)) return *e;
    ADD_FAILURE() << "expected an error";
    return {};
  }
  std::string human(const char* from, const char* to, std::optional<std::string_view> port) {
    auto r = explainer_->explain(from, to, port);
    std::ostringstream s;
    tierwall::explain::print_human(std::get<Explanation>(r), *compilation_->policy(), s);
    return s.str();
  }

  std::optional<tierwall::policy::Policy> policy_;
  std::optional<tierwall::identity::Inventory> inventory_;
  std::unique_ptr<tierwall::compiler::Compilation> compilation_;
  std::unique_ptr<Explainer> explainer_;
};

TEST_F(ExplainTest, SpecExampleJsonExactly) {
  const auto j = ask("api-1", "db-1", "tcp/5432");
  const auto expected = nlohmann::json::parse(R"({
    "verdict": "allow",
    "rule": {"kind": "flow", "name": "api-to-db", "file": "policies/acme/flows.yaml", "line": 27},
    "from": {"entity": "endpoint", "name": "api-1", "address": "10.88.0.11",
             "tier": "internal", "assignment": "api"},
    "to":   {"entity": "endpoint", "name": "db-1", "address": "10.88.0.20",
             "tier": "restricted", "assignment": "payments-db"}})");
  EXPECT_EQ(j, expected) << j.dump(2);
}

TEST_F(ExplainTest, DefaultDenyHasNoNameAndQuarantineNoAssignment) {
  const auto j = ask("stray", "db-1", "tcp/5432");
  EXPECT_EQ(j["verdict"], "deny");
  EXPECT_EQ(j["rule"], nlohmann::json::parse(R"({"kind":"default-deny"})"));
  EXPECT_EQ(j["from"]["tier"], "quarantine");
  EXPECT_FALSE(j["from"].contains("assignment"));
}

TEST_F(ExplainTest, UnnamedAssignmentIsNumbered) {
  const auto j = ask("batch-7", "db-1", "tcp/5432");
  EXPECT_EQ(j["from"]["assignment"], "#4");
  EXPECT_EQ(j["from"]["tier"], "internal");
}

TEST_F(ExplainTest, HostAndWorldEntities) {
  auto j = ask("web-1", "host", "tcp/22");
  EXPECT_EQ(j["verdict"], "deny");
  EXPECT_EQ(j["rule"]["name"], "no-ssh-host");
  EXPECT_EQ(j["to"]["entity"], "host");
  EXPECT_EQ(j["to"]["address"], "192.0.2.10");
  EXPECT_FALSE(j["to"].contains("tier"));
  EXPECT_FALSE(j["to"].contains("name"));

  j = ask("web-1", "192.0.2.10", "udp/53");
  EXPECT_EQ(j["verdict"], "allow");
  EXPECT_EQ(j["to"]["entity"], "host");

  j = ask("api-1", "198.51.100.7", "icmp/echo-request");
  EXPECT_EQ(j["verdict"], "allow");
  EXPECT_EQ(j["to"], nlohmann::json::parse(R"({"entity":"world","address":"198.51.100.7"})"));
  j = ask("api-1", "198.51.101.7", "icmp/echo-request");
  EXPECT_EQ(j["verdict"], "deny");
}

TEST_F(ExplainTest, AddressFamiliesArePaired) {
  const auto j = ask("web-1", "fd00::20", "tcp/5432");
  EXPECT_EQ(j["from"]["address"], "fd00::10");
  EXPECT_EQ(j["to"]["name"], "db-1");
  EXPECT_EQ(fail("api-1", "fd00::20", "tcp/5432").exit_code, 1);
}

TEST_F(ExplainTest, SelfNeedsNoPort) {
  const auto j = ask("web-1", "fd00::10", std::nullopt);
  EXPECT_EQ(j["verdict"], "allow");
  EXPECT_EQ(j["rule"], nlohmann::json::parse(R"({"kind":"self"})"));
}

TEST_F(ExplainTest, PortRequiredOnlyWhenItMatters) {
  // stray (quarantine) -> db-1: nothing can allow, whatever the port.
  EXPECT_EQ(ask("stray", "db-1", std::nullopt)["rule"]["kind"], "default-deny");
  const auto e = fail("api-1", "db-1", std::nullopt);
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_NE(e.message.find("--port"), std::string::npos);
  EXPECT_EQ(fail("api-1", "db-1", "any").exit_code, 2);
  EXPECT_EQ(fail("api-1", "db-1", "tcp/99999").exit_code, 2);
  EXPECT_EQ(fail("web-1", "fd00::20", "icmp/echo-request").exit_code, 2);
}

TEST_F(ExplainTest, UnknownNameIsInvalidInputWithHint) {
  const auto e = fail("db-2", "api-1", "tcp/80");
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_NE(e.message.find("did you mean 'db-1'"), std::string::npos) << e.message;
}

TEST_F(ExplainTest, HumanFormNamesNearestRulesAndDifferences) {
  const std::string text = human("web-1", "db-1", "tcp/5432");
  EXPECT_NE(text.find("verdict: DENY"), std::string::npos) << text;
  EXPECT_NE(text.find("nearest rules that would allow it"), std::string::npos) << text;
  EXPECT_NE(text.find("flow 'api-to-db'"), std::string::npos) << text;
  EXPECT_NE(text.find("from: tier is 'public', rule wants 'internal'"), std::string::npos) << text;
  EXPECT_NE(text.find("from: label app is missing, rule wants app=payments"), std::string::npos)
      << text;

  const std::string port_text = human("web-1", "api-1", "tcp/9090");
  EXPECT_NE(port_text.find("port: tcp/9090, rule allows tcp/8080, tcp/8443"), std::string::npos)
      << port_text;
}

TEST_F(ExplainTest, GuardrailOverrideIsExplained) {
  const std::string text = human("web-1", "host", "tcp/22");
  EXPECT_NE(text.find("deny 'no-ssh-host'"), std::string::npos) << text;
}

}  // namespace
