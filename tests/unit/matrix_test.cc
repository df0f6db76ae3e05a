// The tier matrix: specific cells of a small policy, the inventory filter and
// the four renderings.
#include "tierwall/explain/matrix.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace tierwall::explain {
namespace {

using dataplane::RuleKind;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: shop}
spec:
  intraTier: allow
  tiers:
    - {name: public, level: 10}
    - {name: internal, level: 20, mode: audit}
    - {name: restricted, level: 40}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: public}
    - {name: api, match: {labels: {role: api}}, tier: internal}
    - {name: db, match: {labels: {role: db}}, tier: restricted}
  denies:
    - {name: no-ssh, from: {}, to: {tier: restricted}, ports: [tcp/22]}
    - {name: stage-web-db, from: {tier: public}, to: {tier: restricted}, audit: true}
  flows:
    - {name: web-api, from: {tier: public}, to: {tier: internal}, ports: [tcp/8080]}
    - name: api-db
      from: {tier: internal, labels: {app: pay}}
      to: {tier: restricted, labels: {role: db, env: prod}}
      ports: [tcp/5432]
    - {name: lb, from: {world: [0.0.0.0/0, '::/0']}, to: {tier: public}, ports: [tcp/443]}
    - {name: partner, from: {world: [203.0.113.0/24]}, to: {tier: internal}, ports: [tcp/443]}
    - {name: metrics, from: {host: true}, to: {}, ports: [tcp/9100]}
    - {name: ghost, from: {tier: internal, labels: {app: ghost}}, to: {tier: public}, ports: [tcp/1]}
    - {name: blocked, from: {tier: public}, to: {tier: restricted}, ports: [tcp/22]}
)";

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [192.0.2.10]}
endpoints:
  - {name: web-1, labels: {role: web}, addresses: [10.88.0.10]}
  - {name: web-2, labels: {role: web}, addresses: [10.88.0.11]}
  - {name: api-1, labels: {role: api, app: pay}, addresses: [10.88.0.20]}
  - {name: db-1, labels: {role: db, env: prod}, addresses: [10.88.0.30]}
  - {name: stray, labels: {owner: alice}, addresses: [10.88.0.90]}
)";

policy::Policy load_policy() {
  policy::Diagnostics diags;
  auto p = policy::parse_policy(kPolicy, "test.yaml", diags);
  std::ostringstream out;
  diags.print(out);
  EXPECT_TRUE(p.has_value()) << out.str();
  return p.value_or(policy::Policy{});
}

identity::Inventory load_inventory(const char* text) {
  policy::Diagnostics diags;
  auto inv = identity::parse_inventory(text, "inv.yaml", diags);
  std::ostringstream out;
  diags.print(out);
  EXPECT_TRUE(inv.has_value()) << out.str();
  return inv.value_or(identity::Inventory{});
}

class MatrixTest : public ::testing::Test {
 protected:
  MatrixTest() : compilation_(load_policy(), 1) {}

  [[nodiscard]] Matrix build(const identity::Inventory* inv = nullptr) const {
    return build_matrix(compilation_, inv);
  }

  static const MatrixCell& cell(const Matrix& m, const std::string& from, const std::string& to) {
    auto index = [&](const std::string& peer) {
      auto it = std::find(m.peers.begin(), m.peers.end(), peer);
      EXPECT_NE(it, m.peers.end()) << peer;
      return static_cast<std::size_t>(it - m.peers.begin());
    };
    return m.at(index(from), index(to));
  }

  static std::vector<std::string> names(const std::vector<MatrixEntry>& entries) {
    std::vector<std::string> out;
    for (const auto& e : entries) out.push_back(e.rule);
    return out;
  }

  compiler::Compilation compilation_;
};

using Names = std::vector<std::string>;

TEST_F(MatrixTest, PeersAndShape) {
  const Matrix m = build();
  EXPECT_EQ(m.peers, (Names{"restricted", "internal", "public", "quarantine", "host", "world"}));
  EXPECT_EQ(m.cells.size(), 36U);
  EXPECT_TRUE(m.endpoint_counts.empty());
  EXPECT_EQ(m.policy_name, "shop");
  EXPECT_EQ(m.digest, compilation_.policy()->digest);
  EXPECT_EQ(m.at(0, 1).from, "restricted");
  EXPECT_EQ(m.at(0, 1).to, "internal");
}

TEST_F(MatrixTest, UnconditionalFlow) {
  const Matrix m = build();
  const MatrixCell& c = cell(m, "public", "internal");
  ASSERT_EQ(names(c.allow), (Names{"web-api"}));
  EXPECT_EQ(c.allow[0].kind, RuleKind::Flow);
  ASSERT_EQ(c.allow[0].ports.size(), 1U);
  EXPECT_EQ(c.allow[0].ports[0].to_string(), "tcp/8080");
  EXPECT_EQ(c.allow[0].condition, "");
  EXPECT_EQ(c.allow[0].file, "test.yaml");
  EXPECT_EQ(c.allow[0].line, 18);
  EXPECT_TRUE(c.deny.empty());
  EXPECT_FALSE(c.audited);
}

TEST_F(MatrixTest, ConditionalFlowAndGuardrail) {
  const Matrix m = build();
  const MatrixCell& c = cell(m, "internal", "restricted");
  ASSERT_EQ(names(c.allow), (Names{"api-db"}));
  EXPECT_EQ(c.allow[0].condition, "from labels{app=pay}; to labels{env=prod,role=db}");
  EXPECT_EQ(names(c.deny), (Names{"no-ssh"}));
  EXPECT_FALSE(c.deny[0].staged);
  EXPECT_EQ(c.deny[0].kind, RuleKind::Deny);
  EXPECT_FALSE(c.audited);  // restricted enforces
}

TEST_F(MatrixTest, StagedDenyAndBlockedFlow) {
  const Matrix m = build();
  const MatrixCell& c = cell(m, "public", "restricted");
  EXPECT_EQ(names(c.deny), (Names{"no-ssh", "stage-web-db"}));
  EXPECT_TRUE(c.deny[1].staged);
  // `blocked` (tcp/22) is fully covered by the enforced no-ssh: it never allows.
  EXPECT_TRUE(c.allow.empty());
}

TEST_F(MatrixTest, IntraTierOnDeclaredDiagonalOnly) {
  const Matrix m = build();
  for (const char* tier : {"public", "internal", "restricted"}) {
    const MatrixCell& c = cell(m, tier, tier);
    ASSERT_FALSE(c.allow.empty()) << tier;
    EXPECT_EQ(c.allow.back().rule, "intraTier");
    EXPECT_EQ(c.allow.back().kind, RuleKind::IntraTier);
    EXPECT_TRUE(c.allow.back().ports[0].any);
  }
  EXPECT_TRUE(cell(m, "quarantine", "quarantine").allow.empty());
  EXPECT_TRUE(cell(m, "public", "internal").allow.back().rule != "intraTier");
}

TEST_F(MatrixTest, WorldAndHost) {
  const Matrix m = build();
  const MatrixCell& lb = cell(m, "world", "public");
  ASSERT_EQ(names(lb.allow), (Names{"lb"}));
  EXPECT_EQ(lb.allow[0].condition, "");  // 0.0.0.0/0 plus ::/0 is all of world
  const MatrixCell& partner = cell(m, "world", "internal");
  ASSERT_EQ(names(partner.allow), (Names{"partner"}));
  EXPECT_EQ(partner.allow[0].condition, "from world[203.0.113.0/24]");
  for (const char* to : {"restricted", "internal", "public", "quarantine"}) {
    EXPECT_EQ(names(cell(m, "host", to).allow), (Names{"metrics"})) << to;
  }
  EXPECT_TRUE(cell(m, "host", "host").empty());
  EXPECT_TRUE(cell(m, "world", "world").empty());
  EXPECT_TRUE(cell(m, "world", "restricted").allow.empty());
  // `{}` reaches quarantine too, so no-ssh guards quarantine -> restricted.
  EXPECT_EQ(names(cell(m, "quarantine", "restricted").deny), (Names{"no-ssh"}));
}

TEST_F(MatrixTest, AuditedFollowsTierModes) {
  const Matrix m = build();
  EXPECT_TRUE(cell(m, "internal", "internal").audited);
  EXPECT_TRUE(cell(m, "host", "internal").audited);  // host does not count
  EXPECT_TRUE(cell(m, "internal", "world").audited);
  EXPECT_FALSE(cell(m, "internal", "public").audited);  // one enforcing endpoint is enough
  EXPECT_FALSE(cell(m, "quarantine", "internal").audited);
  EXPECT_FALSE(cell(m, "host", "world").audited);  // policy mode
}

TEST_F(MatrixTest, InventoryDropsSelectorsWithoutEndpoints) {
  const Matrix plain = build();
  EXPECT_EQ(names(cell(plain, "internal", "public").allow), (Names{"ghost"}));

  const identity::Inventory inv = load_inventory(kInventory);
  const Matrix m = build(&inv);
  EXPECT_EQ(m.endpoint_counts, (std::vector<int>{1, 1, 2, 1, -1, -1}));
  EXPECT_TRUE(cell(m, "internal", "public").allow.empty());  // no app=ghost endpoint
  EXPECT_EQ(names(cell(m, "internal", "restricted").allow), (Names{"api-db"}));
  EXPECT_EQ(names(cell(m, "public", "internal").allow), (Names{"web-api"}));
}

TEST_F(MatrixTest, InventoryChecksEachSide) {
  // api-1 lacks app=pay: api-db has no initiator left in `internal`.
  const std::string text =
      std::string(kInventory).replace(std::string(kInventory).find("app: pay"), 8, "app: shop");
  const identity::Inventory inv = load_inventory(text.c_str());
  const Matrix m = build(&inv);
  EXPECT_TRUE(cell(m, "internal", "restricted").allow.empty());
  EXPECT_EQ(names(cell(m, "internal", "restricted").deny), (Names{"no-ssh"}));
}

TEST_F(MatrixTest, Table) {
  std::ostringstream out;
  render_table(build(), out);
  const std::string s = out.str();
  EXPECT_NE(s.find("policy shop"), std::string::npos) << s;
  EXPECT_NE(s.find("from \\ to"), std::string::npos) << s;
  EXPECT_NE(s.find("tcp/5432*!"), std::string::npos) << s;  // internal -> restricted
  EXPECT_NE(s.find("tcp/8080 "), std::string::npos) << s;   // public -> internal
  EXPECT_NE(s.find("internal -> restricted"), std::string::npos) << s;
  EXPECT_NE(s.find("api-db (flow, test.yaml:19)"), std::string::npos) << s;
  EXPECT_NE(s.find("when from labels{app=pay}"), std::string::npos) << s;
  EXPECT_NE(s.find("[staged]"), std::string::npos) << s;

  // Rows line up: every grid line has the same length.
  std::istringstream lines(s);
  std::string line;
  std::vector<std::size_t> widths;
  while (std::getline(lines, line)) {
    if (line.rfind("from \\ to", 0) == 0 || line.rfind("restricted ", 0) == 0 ||
        line.rfind("world ", 0) == 0) {
      widths.push_back(line.size());
    }
  }
  ASSERT_EQ(widths.size(), 3U) << s;
  EXPECT_EQ(widths[0], widths[1]);
  EXPECT_EQ(widths[1], widths[2]);
}

TEST_F(MatrixTest, TableWithCounts) {
  const identity::Inventory inv = load_inventory(kInventory);
  std::ostringstream out;
  render_table(build(&inv), out);
  EXPECT_NE(out.str().find("public(2)"), std::string::npos) << out.str();
}

TEST_F(MatrixTest, Json) {
  const nlohmann::json j = nlohmann::json::parse(to_json(build()).dump());
  EXPECT_EQ(j["policy"], "shop");
  EXPECT_EQ(j["digest"], compilation_.policy()->digest);
  EXPECT_EQ(j["peers"].size(), 6U);
  EXPECT_FALSE(j.contains("endpoint_counts"));
  const nlohmann::json* found = nullptr;
  for (const auto& c : j["cells"]) {
    EXPECT_TRUE(!c["allow"].empty() || !c["deny"].empty() || c["audited"].get<bool>()) << c;
    if (c["from"] == "internal" && c["to"] == "restricted") found = &c;
  }
  ASSERT_NE(found, nullptr);
  const auto& c = *found;
  ASSERT_EQ(c["allow"].size(), 1U);
  EXPECT_EQ(c["allow"][0]["rule"], "api-db");
  EXPECT_EQ(c["allow"][0]["kind"], "flow");
  EXPECT_EQ(c["allow"][0]["ports"], nlohmann::json::array({"tcp/5432"}));
  EXPECT_EQ(c["allow"][0]["condition"], "from labels{app=pay}; to labels{env=prod,role=db}");
  EXPECT_EQ(c["deny"][0]["rule"], "no-ssh");
  EXPECT_EQ(c["deny"][0]["staged"], false);
  EXPECT_EQ(c["audited"], false);
  // host -> host is empty and enforced: left out.
  for (const auto& cell : j["cells"]) EXPECT_FALSE(cell["from"] == "host" && cell["to"] == "host");
}

TEST_F(MatrixTest, JsonWithCounts) {
  const identity::Inventory inv = load_inventory(kInventory);
  const nlohmann::json j = to_json(build(&inv));
  EXPECT_EQ(j["endpoint_counts"], nlohmann::json::array({1, 1, 2, 1, -1, -1}));
}

TEST_F(MatrixTest, Csv) {
  std::ostringstream out;
  render_csv(build(), out);
  const std::string s = out.str();
  EXPECT_EQ(s.rfind("from,to,verdict,rule,kind,ports,condition\r\n", 0), 0U) << s;
  EXPECT_NE(s.find("public,internal,allow,web-api,flow,tcp/8080,\r\n"), std::string::npos) << s;
  // The condition holds a comma: quoted.
  EXPECT_NE(s.find("internal,restricted,allow,api-db,flow,tcp/5432,\"from labels{app=pay}; to "
                   "labels{env=prod,role=db}\"\r\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("public,restricted,audit,stage-web-db,deny,any,\r\n"), std::string::npos) << s;
  EXPECT_NE(s.find("public,restricted,deny,no-ssh,deny,tcp/22,\r\n"), std::string::npos) << s;
  // A deny where every endpoint sits in an audit tier is audited.
  EXPECT_EQ(s.find("internal,internal,deny,"), std::string::npos) << s;
  EXPECT_NE(s.find("internal,internal,allow,intraTier,intraTier,any,\r\n"), std::string::npos) << s;
}

TEST_F(MatrixTest, Html) {
  std::ostringstream out;
  render_html(build(), out);
  const std::string s = out.str();
  EXPECT_EQ(s.rfind("<!DOCTYPE html>", 0), 0U);
  EXPECT_NE(s.find("<title>tierwall matrix: shop ("), std::string::npos) << s;
  EXPECT_NE(s.find(compilation_.policy()->digest), std::string::npos);
  EXPECT_NE(s.find("<style>"), std::string::npos);
  EXPECT_EQ(s.find("<script"), std::string::npos);
  EXPECT_EQ(s.find("http"), std::string::npos);                   // nothing from the network
  EXPECT_NE(s.find("class=\"allowed\""), std::string::npos);      // public -> internal
  EXPECT_NE(s.find("class=\"conditional\""), std::string::npos);  // internal -> restricted
  EXPECT_NE(s.find("class=\"guarded\""), std::string::npos);      // quarantine -> restricted
  EXPECT_NE(s.find("class=\"nothing\""), std::string::npos);      // restricted -> public
  EXPECT_NE(s.find("web-api"), std::string::npos);
  EXPECT_NE(s.find("when from labels{app=pay}"), std::string::npos);
  EXPECT_NE(s.rfind("</html>"), std::string::npos);
}

}  // namespace
}  // namespace tierwall::explain
