// The built-in identity source: `kind: Inventory` documents.
#include "tierwall/identity/inventory.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tierwall/policy/loader.h"

namespace tierwall::identity {
namespace {

using policy::Diagnostics;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// "LINE:COL" (1-based) of the `nth` (1-based) occurrence of `needle`.
std::string pos(std::string_view text, std::string_view needle, int nth = 1) {
  std::size_t at = std::string_view::npos;
  std::size_t from = 0;
  for (int i = 0; i < nth; ++i) {
    at = text.find(needle, from);
    if (at == std::string_view::npos) return "<'" + std::string(needle) + "' not in text>";
    from = at + 1;
  }
  int line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(at - line_start + 1);
}

std::vector<std::string> error_lines(const Diagnostics& d) {
  std::vector<std::string> out;
  for (const auto& item : d.sorted()) out.push_back(item.to_string());
  return out;
}

IpAddress ip(std::string_view s) { return IpAddress::parse(s).value(); }

constexpr std::string_view kHeader = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-a, addresses: [192.0.2.10, "2001:db8::10"]}
)";

std::string inventory(std::string_view endpoints) {
  return std::string(kHeader) + "endpoints:\n" + std::string(endpoints);
}

TEST(Inventory, ValidParse) {
  const std::string text = inventory(R"(  - name: web-1
    id: 3f2a9c
    image: reg.example/shop/web:1.4
    labels: {role: web, app: shop, env: prod}
    addresses: [10.88.0.10, "fd00::10"]
  - name: db-1
    addresses: ["10.88.0.20"]
)");
  Diagnostics diags;
  const auto inv = parse_inventory(text, "inv.yaml", diags);
  ASSERT_TRUE(inv.has_value()) << ::testing::PrintToString(error_lines(diags));
  EXPECT_FALSE(diags.has_errors());
  EXPECT_EQ(inv->node.name, "node-a");
  EXPECT_EQ(inv->node.addresses, (std::vector<IpAddress>{ip("192.0.2.10"), ip("2001:db8::10")}));
  ASSERT_EQ(inv->endpoints.size(), 2U);
  const Endpoint& web = inv->endpoints[0];
  EXPECT_EQ(web.name, "web-1");
  EXPECT_EQ(web.id, "3f2a9c");
  EXPECT_EQ(web.image, "reg.example/shop/web:1.4");
  // Labels are sorted by key.
  EXPECT_EQ(web.labels.items(), (std::vector<std::pair<std::string, std::string>>{
                                    {"app", "shop"}, {"env", "prod"}, {"role", "web"}}));
  ASSERT_NE(web.labels.get("role"), nullptr);
  EXPECT_EQ(*web.labels.get("role"), "web");
  EXPECT_EQ(web.labels.get("tier"), nullptr);
  EXPECT_EQ(web.addresses, (std::vector<IpAddress>{ip("10.88.0.10"), ip("fd00::10")}));
  EXPECT_EQ(web.loc.to_string(), "inv.yaml:" + pos(text, "name: web-1"));
  const Endpoint& db = inv->endpoints[1];
  EXPECT_TRUE(db.labels.empty());
  EXPECT_TRUE(db.image.empty());
  EXPECT_EQ(inv->find("db-1"), &inv->endpoints[1]);
  EXPECT_EQ(inv->find(ip("fd00::10")), &inv->endpoints[0]);
  EXPECT_EQ(inv->find(ip("10.88.0.99")), nullptr);
  EXPECT_EQ(inv->find("nobody"), nullptr);
}

TEST(Inventory, NumericAndBooleanLabelValuesBecomeStrings) {
  const std::string text = inventory(R"(  - name: a
    labels: {replicas: 3, version: 1.10, canary: true, zero: 007, quoted: "42"}
    addresses: [10.0.0.1]
)");
  Diagnostics diags;
  const auto inv = parse_inventory(text, "inv.yaml", diags);
  ASSERT_TRUE(inv.has_value()) << ::testing::PrintToString(error_lines(diags));
  const Labels& l = inv->endpoints.at(0).labels;
  ASSERT_NE(l.get("replicas"), nullptr);
  EXPECT_EQ(*l.get("replicas"), "3");
  ASSERT_NE(l.get("version"), nullptr);
  EXPECT_EQ(*l.get("version"), "1.10");  // as written, not 1.1
  ASSERT_NE(l.get("canary"), nullptr);
  EXPECT_EQ(*l.get("canary"), "true");
  ASSERT_NE(l.get("zero"), nullptr);
  EXPECT_EQ(*l.get("zero"), "007");
  ASSERT_NE(l.get("quoted"), nullptr);
  EXPECT_EQ(*l.get("quoted"), "42");
}

TEST(Inventory, EmptyEndpointListAndNullEndpoints) {
  for (std::string_view tail : {"endpoints: []\n", "endpoints:\n", ""}) {
    SCOPED_TRACE(tail);
    Diagnostics diags;
    const auto inv = parse_inventory(std::string(kHeader) + std::string(tail), "inv.yaml", diags);
    ASSERT_TRUE(inv.has_value()) << ::testing::PrintToString(error_lines(diags));
    EXPECT_TRUE(inv->endpoints.empty());
  }
}

TEST(Inventory, MultipleDocumentsConcatenateEndpoints) {
  const std::string text = inventory("  - {name: a, addresses: [10.0.0.1]}\n") +
                           "---\napiVersion: tierwall.io/v1\nkind: Inventory\nendpoints:\n"
                           "  - {name: b, addresses: [10.0.0.2]}\n";
  Diagnostics diags;
  const auto inv = parse_inventory(text, "inv.yaml", diags);
  ASSERT_TRUE(inv.has_value()) << ::testing::PrintToString(error_lines(diags));
  ASSERT_EQ(inv->endpoints.size(), 2U);
  EXPECT_EQ(inv->endpoints[1].name, "b");
}

TEST(Inventory, ParserSelection) {
  EXPECT_EQ(policy::parser_for(inventory("")), policy::yaml::Parser::LibYaml);
  EXPECT_EQ(policy::parser_for("apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"),
            policy::yaml::Parser::YamlCpp);
}

// ---------------------------------------------------------------------------
// Errors, each at its position.
// ---------------------------------------------------------------------------

struct InvErrorCase {
  std::string description;
  std::string text;
  std::string needle;
  int nth = 1;
  std::string message;
};

std::ostream& operator<<(std::ostream& out, const InvErrorCase& c) { return out << c.description; }

std::vector<InvErrorCase> inventory_error_cases() {
  std::vector<InvErrorCase> v;
  auto add = [&](std::string d, std::string t, std::string needle, int nth, std::string m) {
    v.push_back(InvErrorCase{std::move(d), std::move(t), std::move(needle), nth, std::move(m)});
  };
  {
    const std::string t = inventory(
        "  - {name: web-1, addresses: [10.0.0.1]}\n  - {name: web-1, addresses: [10.0.0.2]}\n");
    add("duplicate endpoint name", t, "web-1", 2,
        "duplicate endpoint name 'web-1' (first at inv.yaml:" + pos(t, "{name: web-1") + ")");
  }
  {
    const std::string t = inventory(
        "  - {name: a, addresses: [10.0.0.1, \"fd00::1\"]}\n"
        "  - {name: b, addresses: [10.0.0.2, \"fd00:0::1\"]}\n");
    add("duplicate address across endpoints (same address, other spelling)", t, "\"fd00:0::1\"", 1,
        "address fd00::1 already belongs to another endpoint (inv.yaml:" + pos(t, "\"fd00::1\"") +
            ")");
  }
  add("invalid address", inventory("  - {name: a, addresses: [10.0.0.256]}\n"), "10.0.0.256", 1,
      "invalid IP address '10.0.0.256'");
  add("address with prefix", inventory("  - {name: a, addresses: [10.0.0.1/32]}\n"), "10.0.0.1/32",
      1, "invalid IP address '10.0.0.1/32'");
  add("invalid node address",
      "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: n, addresses: [node-a]}\n",
      "node-a", 1, "invalid IP address 'node-a'");
  add("endpoint without addresses key", inventory("  - {name: a, labels: {x: y}}\n"), "{name: a", 1,
      "endpoint 'a' is missing required key 'addresses'");
  add("endpoint with empty address list", inventory("  - {name: a, addresses: []}\n"), "[]", 1,
      "an endpoint needs at least one address");
  add("endpoint without name", inventory("  - {addresses: [10.0.0.1]}\n"), "{addresses", 1,
      "an endpoint is missing required key 'name'");
  add("invalid endpoint name", inventory("  - {name: \"web 1\", addresses: [10.0.0.1]}\n"),
      "\"web 1\"", 1, "endpoint name 'web 1' is not valid (letters, digits, '-', '_' and '.')");
  {
    const std::string t = inventory("  - {name: a, addresses: [10.0.0.1, 192.0.2.10]}\n");
    add("node address reused by an endpoint", t, "192.0.2.10", 2,
        "address 192.0.2.10 is the node's own address (inv.yaml:" + pos(t, "192.0.2.10") + ")");
  }
  {
    const std::string t = inventory("  - {name: a, addresses: [\"2001:db8:0::10\"]}\n");
    add("node v6 address reused by an endpoint", t, "\"2001:db8:0::10\"", 1,
        "address 2001:db8::10 is the node's own address (inv.yaml:" + pos(t, "\"2001:db8::10\"") +
            ")");
  }
  add("unknown key in an endpoint, did-you-mean",
      inventory("  - {name: a, lables: {x: y}, addresses: [10.0.0.1]}\n"), "lables", 1,
      "unknown key 'lables' in an endpoint (did you mean 'labels'?)");
  add("unknown key in node",
      "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: n, adresses: [192.0.2.1]}\n",
      "adresses", 1, "unknown key 'adresses' in node (did you mean 'addresses'?)");
  add("unknown top-level key", std::string(kHeader) + "endpionts: []\n", "endpionts", 1,
      "unknown key 'endpionts' in an inventory document (did you mean 'endpoints'?)");
  add("labels not a map", inventory("  - {name: a, labels: [x], addresses: [10.0.0.1]}\n"), "[x]",
      1, "labels must be a map, not a list");
  add("label value a list",
      inventory("  - {name: a, labels: {x: [1, 2]}, addresses: [10.0.0.1]}\n"), "[1, 2]", 1,
      "label 'x' must be a string, not a list");
  add("addresses not a list", inventory("  - {name: a, addresses: 10.0.0.1}\n"), "10.0.0.1", 1,
      "addresses must be a list, not a scalar");
  add("endpoints not a list", std::string(kHeader) + "endpoints: {a: b}\n", "{a: b}", 1,
      "endpoints must be a list, not a map");
  add("missing node", "apiVersion: tierwall.io/v1\nkind: Inventory\nendpoints: []\n", "apiVersion",
      1, "the inventory has no 'node' (name and addresses)");
  add("wrong apiVersion", "apiVersion: tierwall.io/v0\nkind: Inventory\nnode: {name: n}\n",
      "tierwall.io/v0", 1, "unsupported apiVersion 'tierwall.io/v0' (expected 'tierwall.io/v1')");
  add("policy document is not an inventory",
      std::string(kHeader) +
          "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
          "metadata: {name: p}\nspec: {}\n",
      "apiVersion", 2, "a SegmentationPolicy document is not an inventory (pass it with --policy)");
  return v;
}

class InventoryError : public ::testing::TestWithParam<InvErrorCase> {};

TEST_P(InventoryError, ReportedAtTheRightPlace) {
  const InvErrorCase& c = GetParam();
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(c.text, "inv.yaml", diags).has_value());
  EXPECT_THAT(error_lines(diags),
              ElementsAre("inv.yaml:" + pos(c.text, c.needle, c.nth) + ": error: " + c.message))
      << c.text;
}

std::string inv_case_name(const ::testing::TestParamInfo<InvErrorCase>& info) {
  std::string out;
  for (char ch : info.param.description) {
    const bool alnum =
        (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    out += alnum ? ch : '_';
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Table, InventoryError, ::testing::ValuesIn(inventory_error_cases()),
                         inv_case_name);

TEST(InventoryErrors, AllReportedAtOnce) {
  const std::string text = inventory(R"(  - {name: a, addresses: [10.0.0.1]}
  - {name: a, addresses: [10.0.0.2]}
  - {name: b, addresses: [10.0.0.1]}
  - {name: c, addresses: [bogus]}
  - {name: d, addresses: [192.0.2.10]}
  - {name: e, colour: red, addresses: [10.0.0.5]}
)");
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(text, "inv.yaml", diags).has_value());
  EXPECT_EQ(diags.error_count(), 5U) << ::testing::PrintToString(error_lines(diags));
}

TEST(InventoryErrors, SyntaxErrorHasAPosition) {
  const std::string text = inventory("  - {name: a, addresses: [10.0.0.1]\n");
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(text, "inv.yaml", diags).has_value());
  ASSERT_TRUE(diags.has_errors());
  const auto lines = error_lines(diags);
  EXPECT_THAT(lines, Contains(HasSubstr("error: YAML syntax")));
  for (const auto& d : diags.items()) {
    if (d.message.starts_with("YAML syntax")) {
      EXPECT_GE(d.loc.line, 5);
    }
  }
}

// The node's addresses belong to the host entity whichever document (or key
// order) declares the node first.
TEST(InventoryErrors, NodeAddressReusedEvenWhenTheNodeComesLater) {
  const std::string text =
      "apiVersion: tierwall.io/v1\nkind: Inventory\nendpoints:\n"
      "  - {name: a, addresses: [192.0.2.10]}\n"
      "---\napiVersion: tierwall.io/v1\nkind: Inventory\n"
      "node: {name: node-a, addresses: [192.0.2.10]}\n";
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(text, "inv.yaml", diags).has_value())
      << "an endpoint owns the node's address 192.0.2.10";
  EXPECT_EQ(diags.error_count(), 1U) << ::testing::PrintToString(error_lines(diags));
}

// A diagnostic that points at another place must point at the right one:
// here the node's second address, not its first (invalid) entry.
TEST(InventoryErrors, NodeAddressReferencePointsAtTheRightItem) {
  const std::string text =
      "apiVersion: tierwall.io/v1\nkind: Inventory\n"
      "node: {name: n, addresses: [bogus, 192.0.2.1]}\n"
      "endpoints:\n  - {name: a, addresses: [192.0.2.1]}\n";
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(text, "inv.yaml", diags).has_value());
  EXPECT_THAT(error_lines(diags),
              ElementsAre("inv.yaml:" + pos(text, "bogus") + ": error: invalid IP address 'bogus'",
                          "inv.yaml:" + pos(text, "192.0.2.1", 2) +
                              ": error: address 192.0.2.1 is the node's own address (inv.yaml:" +
                              pos(text, "192.0.2.1") + ")"));
}

TEST(InventoryErrors, TwoNodesAreAnError) {
  const std::string text = std::string(kHeader) +
                           "---\napiVersion: tierwall.io/v1\nkind: Inventory\n"
                           "node: {name: node-b, addresses: [192.0.2.11]}\n";
  Diagnostics diags;
  EXPECT_FALSE(parse_inventory(text, "inv.yaml", diags).has_value());
  EXPECT_THAT(error_lines(diags), ElementsAre("inv.yaml:" + pos(text, "{name: node-b") +
                                              ": error: node is already given at inv.yaml:" +
                                              pos(text, "{name: node-a")));
}

}  // namespace
}  // namespace tierwall::identity
