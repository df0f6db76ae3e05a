// Policy loading: every error class is reported as FILE:LINE:COL: error: ...
// at the right place, all problems in one run, and sources are merged in the
// documented order.
#include "tierwall/policy/loader.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tierwall/testsupport/temp_dir.h"

namespace tierwall::policy {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr std::string_view kFile = "t.yaml";

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

constexpr std::string_view kHead = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata:
  name: p
spec:
)";

constexpr std::string_view kTiers = R"(  tiers:
    - {name: public, level: 10}
    - {name: confidential, level: 20}
)";

std::string with_tiers(std::string_view body) {
  return std::string(kHead) + std::string(kTiers) + std::string(body);
}
std::string head(std::string_view body) { return std::string(kHead) + std::string(body); }

// ---------------------------------------------------------------------------
// One error per fixture, at an exact position.
// ---------------------------------------------------------------------------

struct ErrorCase {
  std::string description;
  std::string text;
  std::string needle;  // where the error must point (first character)
  int nth = 1;         // which occurrence of needle
  std::string message;
};

std::ostream& operator<<(std::ostream& out, const ErrorCase& c) { return out << c.description; }

std::vector<ErrorCase> error_cases() {
  std::vector<ErrorCase> v;
  auto add = [&](std::string description, std::string text, std::string needle, int nth,
                 std::string message) {
    v.push_back(ErrorCase{std::move(description), std::move(text), std::move(needle), nth,
                          std::move(message)});
  };

  // --- unknown keys, with did-you-mean ---------------------------------------
  add("unknown key in spec", with_tiers("  flws: []\n"), "flws", 1,
      "unknown key 'flws' in spec (did you mean 'flows'?)");
  add("unknown key in spec, no hint", with_tiers("  zebra: 1\n"), "zebra", 1,
      "unknown key 'zebra' in spec");
  add("unknown key in a tier", head("  tiers:\n    - {name: public, level: 10, descripton: x}\n"),
      "descripton", 1, "unknown key 'descripton' in a tier (did you mean 'description'?)");
  add("unknown key in a flow",
      with_tiers("  flows:\n    - name: f\n      from: {}\n      to: {}\n      lgo: true\n"), "lgo",
      1, "unknown key 'lgo' in a flow (did you mean 'log'?)");
  add("log is not a deny key",
      with_tiers("  denies:\n    - name: d\n      from: {}\n      to: {}\n      log: true\n"),
      "log:", 1, "unknown key 'log' in a deny rule");
  add("unknown key in a deny",
      with_tiers("  denies:\n    - name: d\n      from: {}\n      to: {}\n      adit: true\n"),
      "adit", 1, "unknown key 'adit' in a deny rule (did you mean 'audit'?)");
  add("unknown key in a selector",
      with_tiers("  flows:\n    - name: f\n      from: {lables: {a: b}}\n      to: {}\n"), "lables",
      1, "unknown key 'lables' in from (did you mean 'labels'?)");
  add("unknown key in match",
      with_tiers("  assignments:\n    - match: {imgae: x}\n      tier: public\n"), "imgae", 1,
      "unknown key 'imgae' in match (did you mean 'image'?)");
  add("unknown key in an assignment",
      with_tiers("  assignments:\n    - match: {name: x}\n      tier: public\n      tire: x\n"),
      "tire", 1, "unknown key 'tire' in an assignment (did you mean 'tier'?)");
  add("unknown key in metadata",
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata:\n  name: p\n  nmae: q\n"
      "spec:\n" +
          std::string(kTiers),
      "nmae", 1, "unknown key 'nmae' in metadata (did you mean 'name'?)");
  add("unknown top-level key",
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {name: p}\nspce: {}\n"
      "spec:\n" +
          std::string(kTiers),
      "spce", 1, "unknown key 'spce' in a policy document (did you mean 'spec'?)");
  add("duplicate key", head("  tiers:\n    - {name: public, level: 10, level: 11}\n"), "level", 2,
      "duplicate key 'level' in a tier");

  // --- wrong types ------------------------------------------------------------
  add("level not an integer", head("  tiers:\n    - {name: public, level: ten}\n"), "ten", 1,
      "tier level must be an integer, not 'ten'");
  add("quoted level is a string", head("  tiers:\n    - {name: public, level: \"10\"}\n"), "\"10\"",
      1, "tier level must be an integer, not '10'");
  add("flows not a list", with_tiers("  flows: {a: b}\n"), "{a: b}", 1,
      "spec.flows must be a list, not a map");
  add("spec not a map (second document)",
      with_tiers("") +
          "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
          "metadata: {name: p}\nspec: [1]\n",
      "[1]", 1, "spec must be a map, not a list");
  add("log not a boolean",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, log: \"yes\"}\n"), "\"yes\"", 1,
      "log must be true or false, not 'yes'");
  add("audit not a boolean", with_tiers("  denies:\n    - {name: d, from: {}, to: {}, audit: 1}\n"),
      "1}", 1, "audit must be true or false, not '1'");
  add("ports not a list",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: tcp/80}\n"), "tcp/80", 1,
      "ports must be a list, not a scalar");
  add("labels not a map", with_tiers("  flows:\n    - {name: f, from: {labels: [a]}, to: {}}\n"),
      "[a]", 1, "from.labels must be a map, not a list");
  add("label value a map",
      with_tiers("  flows:\n    - {name: f, from: {labels: {a: {b: c}}}, to: {}}\n"), "{b: c}", 1,
      "label 'a' must be a string or a list of strings, not a map");
  add("from not a map", with_tiers("  flows:\n    - {name: f, from: [], to: {}}\n"), "[]", 1,
      "from must be a map, not a list");
  add("assignment tier a list",
      with_tiers("  assignments:\n    - {match: {name: x}, tier: [public]}\n"), "[public]", 1,
      "assignment tier must be a string, not a list");
  add("spec.mode invalid", with_tiers("  mode: strict\n"), "strict", 1,
      "spec.mode must be 'enforce' or 'audit', not 'strict'");
  add("spec.intraTier invalid", with_tiers("  intraTier: alow\n"), "alow", 1,
      "spec.intraTier must be 'allow' or 'deny', not 'alow' (did you mean 'allow'?)");
  add("tier mode invalid", head("  tiers:\n    - {name: public, level: 10, mode: audti}\n"),
      "audti", 1, "tier mode must be 'enforce' or 'audit', not 'audti' (did you mean 'audit'?)");

  // --- duplicate names ---------------------------------------------------------
  {
    std::string t = head(
        "  tiers:\n    - name: public\n      level: 10\n    - name: public\n      level: 30\n");
    add("duplicate tier", t, "public", 2,
        "duplicate tier 'public' (first declared at t.yaml:" + pos(t, "name: public") + ")");
  }
  {
    std::string t = head("  tiers:\n    - {name: public, level: 10}\n    - {name: b, level: 10}\n");
    add("duplicate level", t, "10", 2,
        "tier level 10 is already used by tier 'public' at t.yaml:" + pos(t, "{name: public") +
            " (levels must be unique)");
  }
  {
    std::string t = with_tiers(
        "  assignments:\n    - {name: a, match: {name: x}, tier: public}\n"
        "    - {name: a, match: {name: y}, tier: public}\n");
    add("duplicate assignment name", t, "a, match: {name: y}", 1,
        "duplicate assignment name 'a' (first used at t.yaml:" + pos(t, "{name: a") + ")");
  }
  {
    std::string t = with_tiers(
        "  denies:\n    - {name: r, from: {}, to: {}}\n  flows:\n    - {name: r, from: {}, to: "
        "{}}\n");
    add("duplicate rule name across denies and flows", t, "r, from", 2,
        "duplicate rule name 'r' (first used at t.yaml:" + pos(t, "{name: r") +
            "; names are unique across denies and flows)");
  }
  {
    std::string t = with_tiers(
        "  flows:\n    - {name: r, from: {}, to: {}}\n    - {name: r, from: {}, to: {}}\n");
    add("duplicate flow name", t, "r, from", 2,
        "duplicate rule name 'r' (first used at t.yaml:" + pos(t, "{name: r") +
            "; names are unique across denies and flows)");
  }
  {
    std::string t = with_tiers(
        "  denies:\n    - {name: r, from: {}, to: {}}\n    - {name: r, from: {}, to: {}}\n");
    add("duplicate deny name", t, "r, from", 2,
        "duplicate rule name 'r' (first used at t.yaml:" + pos(t, "{name: r") +
            "; names are unique across denies and flows)");
  }

  // --- tier references ------------------------------------------------------------
  add("unknown tier in assignment, did-you-mean",
      with_tiers("  assignments:\n    - match: {name: x}\n      tier: confidental\n"),
      "confidental", 1, "unknown tier 'confidental' (did you mean 'confidential'?)");
  add("unknown tier in flow list",
      with_tiers("  flows:\n    - {name: f, from: {tier: [public, pubic]}, to: {}}\n"), "pubic", 1,
      "unknown tier 'pubic' (did you mean 'public'?)");
  add("unknown tier in deny responder",
      with_tiers("  denies:\n    - {name: d, from: {}, to: {tier: secret}}\n"), "secret", 1,
      "unknown tier 'secret'");
  add("unknown tier suggests quarantine",
      with_tiers("  flows:\n    - {name: f, from: {tier: quarantin}, to: {}}\n"), "quarantin", 1,
      "unknown tier 'quarantin' (did you mean 'quarantine'?)");
  add("host is an entity, not a tier",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {tier: host}}\n"), "host", 1,
      "'host' is an entity, not a tier (write {host: true})");
  add("world is an entity, not a tier",
      with_tiers("  assignments:\n    - {match: {name: x}, tier: world}\n"), "world", 1,
      "'world' is an entity, not a tier (write {world: [CIDR, ...]})");
  add("tier listed twice",
      with_tiers("  flows:\n    - {name: f, from: {tier: [public, public]}, to: {}}\n"), "public]",
      1, "tier 'public' listed twice");

  // --- CIDRs ------------------------------------------------------------------------
  add("CIDR host bits",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {world: [\"10.0.0.1/8\"]}}\n"),
      "\"10.0.0.1/8\"", 1,
      "invalid CIDR '10.0.0.1/8': host bits set in 10.0.0.1/8 (did you mean 10.0.0.0/8?)");
  add("CIDR v6 host bits",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {world: [\"2001:db8::1/32\"]}}\n"),
      "\"2001", 1,
      "invalid CIDR '2001:db8::1/32': host bits set in 2001:db8::1/32 (did you mean "
      "2001:db8::/32?)");
  add("CIDR prefix out of range",
      with_tiers("  flows:\n    - {name: f, from: {world: [10.0.0.0/33]}, to: {}}\n"),
      "10.0.0.0/33", 1, "invalid CIDR '10.0.0.0/33': prefix length 33 out of range for IPv4");
  add("CIDR v6 prefix out of range",
      with_tiers("  flows:\n    - {name: f, from: {world: [\"::/129\"]}, to: {}}\n"), "\"::/129", 1,
      "invalid CIDR '::/129': prefix length 129 out of range for IPv6");
  add("CIDR bad prefix",
      with_tiers("  flows:\n    - {name: f, from: {world: [10.0.0.0/x]}, to: {}}\n"), "10.0.0.0/x",
      1, "invalid CIDR '10.0.0.0/x': invalid prefix length 'x' in CIDR '10.0.0.0/x'");
  add("CIDR bad address",
      with_tiers("  flows:\n    - {name: f, from: {world: [10.0.0.256/32]}, to: {}}\n"),
      "10.0.0.256", 1,
      "invalid CIDR '10.0.0.256/32': invalid IP address '10.0.0.256' in CIDR '10.0.0.256/32'");

  // --- ports --------------------------------------------------------------------------
  add("port above range",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [tcp/65536]}\n"), "tcp/65536",
      1, "invalid port 'tcp/65536': port 65536 out of range 1-65535");
  add("port zero", with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [udp/0]}\n"),
      "udp/0", 1, "invalid port 'udp/0': port 0 out of range 1-65535");
  add("bad protocol",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [tcp/80, tpc/80]}\n"),
      "tpc/80", 1, "invalid port 'tpc/80': unknown protocol 'tpc' (did you mean 'tcp'?)");
  add("reversed range",
      with_tiers("  denies:\n    - {name: d, from: {}, to: {}, ports: [tcp/90-80]}\n"), "tcp/90-80",
      1, "invalid port 'tcp/90-80': port range 90-80 is reversed (did you mean 80-90?)");
  add("bad icmp type",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [icmp/echo-requets]}\n"),
      "icmp/", 1,
      "invalid port 'icmp/echo-requets': unknown icmp type 'echo-requets' (did you mean "
      "'echo-request'?)");
  add("icmp type out of range",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [icmpv6/256]}\n"),
      "icmpv6/256", 1, "invalid port 'icmpv6/256': icmpv6 type 256 out of range 0-255");
  add("tcp without port", with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: [tcp]}\n"),
      "tcp]", 1,
      "invalid port 'tcp': 'tcp' needs a port or range (e.g. 'tcp/443' or 'tcp/1024-65535')");
  add("empty ports list", with_tiers("  flows:\n    - {name: f, from: {}, to: {}, ports: []}\n"),
      "[]", 1, "ports must not be empty (omit it, or write [any], to allow any port)");

  // --- selectors -------------------------------------------------------------------------
  add("empty match", with_tiers("  assignments:\n    - match: {}\n      tier: public\n"), "{}", 1,
      "match must not be empty (an assignment needs labels, image or name to match)");
  add("tier inside match",
      with_tiers(
          "  assignments:\n    - match: {tier: public, labels: {a: b}}\n      tier: public\n"),
      "tier: public,", 1,
      "'tier' is not allowed in an assignment's match (the assignment decides the tier)");
  add("empty labels", with_tiers("  assignments:\n    - match: {labels: {}}\n      tier: public\n"),
      "{}}", 1, "match.labels must not be empty (omit it to match any)");
  add("empty label value list",
      with_tiers("  flows:\n    - {name: f, from: {labels: {a: []}}, to: {}}\n"), "[]", 1,
      "label 'a' must not be an empty list");
  add("invalid label key",
      with_tiers("  flows:\n    - {name: f, from: {labels: {\"a b\": x}}, to: {}}\n"), "\"a b\"", 1,
      "invalid label key 'a b'");
  add("image glob with a class",
      with_tiers("  assignments:\n    - match: {image: \"reg/[x]\"}\n      tier: public\n"),
      "\"reg/[x]\"", 1,
      "invalid image glob 'reg/[x]': character classes are not supported; escape '[' as '\\['");
  add("name glob with trailing backslash",
      with_tiers("  flows:\n    - {name: f, from: {name: \"x\\\\\"}, to: {}}\n"), "\"x", 1,
      "invalid name glob 'x\\': trailing '\\' in glob 'x\\' (escape a backslash as '\\\\')");

  // --- tiers ------------------------------------------------------------------------------
  add("level above range", head("  tiers:\n    - {name: public, level: 1001}\n"), "1001", 1,
      "tier level 1001 out of range 0..1000");
  add("level below range", head("  tiers:\n    - {name: public, level: -1}\n"), "-1", 1,
      "tier level -1 out of range 0..1000");
  add("level missing", head("  tiers:\n    - {name: public}\n"), "{name", 1,
      "tier 'public' is missing required key 'level'");
  add("reserved tier quarantine",
      head("  tiers:\n    - {name: public, level: 1}\n    - {name: quarantine, level: 2}\n"),
      "quarantine", 1, "tier name 'quarantine' is reserved and cannot be declared");
  add("reserved tier host",
      head("  tiers:\n    - {name: public, level: 1}\n    - {name: host, level: 2}\n"), "host", 1,
      "tier name 'host' is reserved and cannot be declared");
  add("reserved tier world",
      head("  tiers:\n    - {name: public, level: 1}\n    - {name: world, level: 2}\n"), "world", 1,
      "tier name 'world' is reserved and cannot be declared");
  add("invalid tier name",
      head("  tiers:\n    - {name: public, level: 1}\n    - {name: Secret, level: 2}\n"), "Secret",
      1,
      "tier name 'Secret' is not valid (a lower-case letter, then lower-case letters, digits or "
      "'-')");
  add("no tiers", head("  flows: []\n"), "flows", 1,
      "spec.tiers: at least one tier must be declared");

  // --- entities ----------------------------------------------------------------------------
  add("host: false", with_tiers("  flows:\n    - {name: f, from: {host: false}, to: {}}\n"),
      "false", 1, "from.host: only 'host: true' is meaningful");
  add("host not a boolean", with_tiers("  flows:\n    - {name: f, from: {}, to: {host: yes}}\n"),
      "yes", 1, "to.host must be true or false, not 'yes'");
  add("host combined with labels",
      with_tiers("  flows:\n    - {name: f, from: {}, to: {host: true, labels: {a: b}}}\n"),
      "{host", 1,
      "to: 'host' must be the only key (an entity cannot be combined with a selector or another "
      "entity)");
  add("world combined with tier",
      with_tiers("  flows:\n    - {name: f, from: {tier: public, world: [\"::/0\"]}, to: {}}\n"),
      "{tier: public, world", 1,
      "from: 'world' must be the only key (an entity cannot be combined with a selector or "
      "another entity)");
  add("host combined with world",
      with_tiers("  flows:\n    - {name: f, from: {host: true, world: [\"::/0\"]}, to: {}}\n"),
      "{host", 1,
      "from: 'host' must be the only key (an entity cannot be combined with a selector or another "
      "entity)");
  add("empty world list", with_tiers("  flows:\n    - {name: f, from: {world: []}, to: {}}\n"),
      "[]", 1, "from.world must list at least one CIDR (0.0.0.0/0 and ::/0 for everything)");
  add("world not a list",
      with_tiers("  flows:\n    - {name: f, from: {world: 10.0.0.0/8}, to: {}}\n"), "10.0.0.0/8", 1,
      "from.world must be a list, not a scalar");

  // --- required keys ------------------------------------------------------------------------
  add("flow without from", with_tiers("  flows:\n    - name: f\n      to: {}\n"), "name: f", 1,
      "rule 'f' is missing required key 'from'");
  add("flow without name", with_tiers("  flows:\n    - from: {}\n      to: {}\n"), "from: {}", 1,
      "a flow is missing required key 'name'");
  add("assignment without tier", with_tiers("  assignments:\n    - match: {name: x}\n"), "match", 1,
      "an assignment is missing required key 'tier'");
  add("metadata without name",
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {labels: {}}\nspec:\n" +
          std::string(kTiers),
      "{labels", 1, "metadata is missing required key 'name'");
  add("invalid metadata.name",
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {name: Acme_Prod}\nspec:\n" +
          std::string(kTiers),
      "Acme_Prod", 1,
      "metadata.name 'Acme_Prod' is not a valid name (lower-case letters, digits and '-', "
      "starting and ending with a letter or digit)");
  add("missing spec",
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {name: p}\n"
      "---\n" +
          head(std::string(kTiers)),
      "apiVersion", 1, "the document is missing required key 'spec'");

  // --- documents ------------------------------------------------------------------------------
  add("missing apiVersion",
      "kind: SegmentationPolicy\nmetadata: {name: p}\nspec:\n" + std::string(kTiers), "kind", 1,
      "the document is missing required key 'apiVersion'");
  add("wrong apiVersion",
      "apiVersion: tierwall.io/v2\nkind: SegmentationPolicy\nmetadata: {name: p}\nspec:\n" +
          std::string(kTiers),
      "tierwall.io/v2", 1, "unsupported apiVersion 'tierwall.io/v2' (expected 'tierwall.io/v1')");
  add("missing kind (second document)",
      with_tiers("") + "---\napiVersion: tierwall.io/v1\nmetadata: {name: p}\nspec: {}\n",
      "apiVersion", 2, "the document is missing required key 'kind'");
  add("misspelt kind (second document)",
      with_tiers("") +
          "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolcy\nmetadata: {name: p}\n"
          "spec: {}\n",
      "SegmentationPolcy", 1,
      "unknown kind 'SegmentationPolcy' (expected SegmentationPolicy or Inventory) (did you mean "
      "'SegmentationPolicy'?)");
  {
    std::string t = with_tiers("  mode: audit\n") +
                    "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
                    "metadata: {name: p}\nspec:\n  mode: audit\n";
    add("mode set twice across documents (equal values)", t, "mode", 2,
        "spec.mode is already set at t.yaml:" + pos(t, "mode") +
            " (a setting may appear in one document only)");
  }
  {
    std::string t = with_tiers("  intraTier: deny\n") +
                    "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
                    "metadata: {name: p}\nspec:\n  intraTier: allow\n";
    add("intraTier set twice across documents", t, "intraTier", 2,
        "spec.intraTier is already set at t.yaml:" + pos(t, "intraTier") +
            " (a setting may appear in one document only)");
  }
  {
    std::string t = with_tiers("") +
                    "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
                    "metadata: {name: other}\nspec: {}\n";
    add("metadata.name mismatch across documents", t, "other", 1,
        "metadata.name 'other' differs from 'p' set at t.yaml:" + pos(t, "p\n") +
            " (one policy per cluster)");
  }
  return v;
}

class LoaderError : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(LoaderError, ReportedAtTheRightPlace) {
  const ErrorCase& c = GetParam();
  Diagnostics diags;
  const auto policy = parse_policy(c.text, std::string(kFile), diags);
  EXPECT_FALSE(policy.has_value());
  const std::string expected =
      std::string(kFile) + ":" + pos(c.text, c.needle, c.nth) + ": error: " + c.message;
  EXPECT_THAT(error_lines(diags), ElementsAre(expected)) << c.text;
}

std::string error_case_name(const ::testing::TestParamInfo<ErrorCase>& info) {
  std::string out;
  for (char ch : info.param.description) {
    const bool alnum =
        (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    out += alnum ? ch : '_';
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Table, LoaderError, ::testing::ValuesIn(error_cases()), error_case_name);

// ---------------------------------------------------------------------------
// Syntax errors and all-at-once reporting.
// ---------------------------------------------------------------------------

TEST(LoaderSyntax, YamlSyntaxErrorHasLineAndColumn) {
  // Bad indentation on line 8: `level` is neither a key of the item map
  // nor a new item.
  const std::string text = head("  tiers:\n    - name: a\n     level: 1\n");
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  ASSERT_TRUE(diags.has_errors());
  const auto lines = error_lines(diags);
  EXPECT_THAT(lines, Contains(HasSubstr("t.yaml:" + pos(text, "level") + ": error: YAML syntax:")))
      << ::testing::PrintToString(lines);
}

TEST(LoaderSyntax, UnclosedFlowMapPointsAtItsLine) {
  const std::string text = with_tiers("  flows:\n    - {name: f, from: {}, to: {}\n");
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  bool found = false;
  for (const auto& d : diags.items()) {
    if (d.message.starts_with("YAML syntax:")) {
      found = true;
      // The problem is detected at the end of the input at the latest.
      EXPECT_GE(d.loc.line, 9);
      EXPECT_GT(d.loc.column, 0);
      EXPECT_EQ(d.loc.file_name(), "t.yaml");
    }
  }
  EXPECT_TRUE(found) << ::testing::PrintToString(error_lines(diags));
}

TEST(LoaderSyntax, SyntaxErrorInSecondDocumentKeepsTheFirst) {
  const std::string text = with_tiers("") + "---\nkind: [\n";
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  EXPECT_EQ(diags.error_count(), 1U) << ::testing::PrintToString(error_lines(diags));
  ASSERT_FALSE(diags.items().empty());
  EXPECT_THAT(diags.items().front().message, HasSubstr("YAML syntax"));
  EXPECT_GE(diags.items().front().loc.line, 11);
}

TEST(LoaderAllAtOnce, FiveDifferentErrorsFiveDiagnostics) {
  const std::string text = head(R"(  flws: []
  tiers:
    - {name: public, level: 10}
    - {name: public, level: 20}
  assignments:
    - {match: {}, tier: public}
  flows:
    - {name: f, from: {tier: pubic}, to: {world: ["10.0.0.1/8"]}}
)");
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  EXPECT_EQ(diags.error_count(), 5U);
  EXPECT_EQ(diags.warning_count(), 0U);
  const auto lines = error_lines(diags);
  ASSERT_EQ(lines.size(), 5U) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines[0], "t.yaml:" + pos(text, "flws") +
                          ": error: unknown key 'flws' in spec (did you mean 'flows'?)");
  EXPECT_EQ(lines[1], "t.yaml:" + pos(text, "public", 2) +
                          ": error: duplicate tier 'public' (first declared at t.yaml:" +
                          pos(text, "{name: public") + ")");
  EXPECT_EQ(lines[2], "t.yaml:" + pos(text, "{}") +
                          ": error: match must not be empty (an assignment needs labels, image "
                          "or name to match)");
  EXPECT_EQ(lines[3], "t.yaml:" + pos(text, "pubic") +
                          ": error: unknown tier 'pubic' (did you mean 'public'?)");
  EXPECT_EQ(lines[4], "t.yaml:" + pos(text, "\"10.0.0.1/8\"") +
                          ": error: invalid CIDR '10.0.0.1/8': host bits set in 10.0.0.1/8 (did "
                          "you mean 10.0.0.0/8?)");
}

TEST(LoaderAllAtOnce, ErrorsInEveryDocumentAreReported) {
  const std::string text = head("  tiers:\n    - {name: a, level: x}\n") +
                           "---\napiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
                           "metadata: {name: p}\nspec:\n  tiers:\n    - {name: b, level: y}\n";
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  EXPECT_THAT(
      error_lines(diags),
      ElementsAre("t.yaml:" + pos(text, "x}") + ": error: tier level must be an integer, not 'x'",
                  "t.yaml:" + pos(text, "y}") + ": error: tier level must be an integer, not 'y'"));
}

// ---------------------------------------------------------------------------
// Valid policies: defaults and merge.
// ---------------------------------------------------------------------------

TEST(LoaderValid, MinimalPolicyDefaults) {
  const std::string text = with_tiers("  flows:\n    - {name: f, from: {}, to: {}}\n");
  Diagnostics diags;
  const auto p = parse_policy(text, "t.yaml", diags);
  ASSERT_TRUE(p.has_value()) << ::testing::PrintToString(error_lines(diags));
  EXPECT_FALSE(diags.has_errors());
  EXPECT_EQ(p->name, "p");
  EXPECT_EQ(p->mode, Mode::Enforce);
  EXPECT_FALSE(p->intra_tier_allow);
  ASSERT_EQ(p->tiers.size(), 2U);
  EXPECT_EQ(p->tiers[0].name, "public");
  EXPECT_FALSE(p->tiers[0].mode.has_value());
  ASSERT_EQ(p->flows.size(), 1U);
  EXPECT_FALSE(p->flows[0].ports_given);
  ASSERT_EQ(p->flows[0].ports.size(), 1U);
  EXPECT_TRUE(p->flows[0].ports[0].any);
  EXPECT_TRUE(p->flows[0].from.selector.empty());
  EXPECT_EQ(p->files, std::vector<std::string>{"t.yaml"});
  EXPECT_EQ(p->digest.size(), 64U);
  EXPECT_EQ(p->flows[0].loc.to_string(), "t.yaml:" + pos(text, "{name: f"));
}

TEST(LoaderValid, SelectorsAreNormalised) {
  const std::string text = with_tiers(R"(  flows:
    - name: f
      from: {tier: [confidential, public], labels: {role: [web, api, web], app: shop}}
      to: {host: true}
      ports: [tcp/80, icmp/echo-request]
      log: true
    - name: g
      from: {world: ["0.0.0.0/0", "::/0"]}
      to: {image: "reg/*", name: "web-?"}
  denies:
    - {name: d, from: {}, to: {}, audit: true}
)");
  Diagnostics diags;
  const auto p = parse_policy(text, "t.yaml", diags);
  ASSERT_TRUE(p.has_value()) << ::testing::PrintToString(error_lines(diags));
  const Rule& f = p->flows[0];
  EXPECT_EQ(f.from.kind, Peer::Kind::Endpoints);
  EXPECT_EQ(f.from.selector.tiers, (std::vector<std::string>{"confidential", "public"}));
  ASSERT_EQ(f.from.selector.labels.size(), 2U);
  EXPECT_EQ(f.from.selector.labels[0].key, "app");  // sorted by key
  EXPECT_EQ(f.from.selector.labels[1].values, (std::vector<std::string>{"api", "web"}));
  EXPECT_EQ(f.to.kind, Peer::Kind::Host);
  EXPECT_TRUE(f.ports_given);
  EXPECT_EQ(f.ports.size(), 2U);
  EXPECT_TRUE(f.log);
  const Rule& g = p->flows[1];
  EXPECT_EQ(g.from.kind, Peer::Kind::World);
  ASSERT_EQ(g.from.world.size(), 2U);
  EXPECT_EQ(g.from.world[1].to_string(), "::/0");
  ASSERT_TRUE(g.to.selector.image.has_value());
  EXPECT_TRUE(g.to.selector.image->matches("reg/x:1"));
  ASSERT_TRUE(g.to.selector.name.has_value());
  EXPECT_TRUE(g.to.selector.name->matches("web-1"));
  ASSERT_EQ(p->denies.size(), 1U);
  EXPECT_TRUE(p->denies[0].audit);
}

TEST(LoaderValid, MultiDocumentFileMergesInDocumentOrder) {
  const std::string text = head(R"(  mode: audit
  tiers:
    - {name: a, level: 1}
  flows:
    - {name: f1, from: {}, to: {}}
---
apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: p}
spec:
  intraTier: allow
  tiers:
    - {name: b, level: 2, mode: enforce}
  assignments:
    - {match: {name: x}, tier: a}
  denies:
    - {name: d1, from: {}, to: {}}
  flows:
    - {name: f2, from: {tier: b}, to: {}}
---
# An empty document is allowed.
)");
  Diagnostics diags;
  const auto p = parse_policy(text, "t.yaml", diags);
  ASSERT_TRUE(p.has_value()) << ::testing::PrintToString(error_lines(diags));
  EXPECT_EQ(p->mode, Mode::Audit);
  EXPECT_TRUE(p->intra_tier_allow);
  ASSERT_EQ(p->tiers.size(), 2U);
  EXPECT_EQ(p->tiers[0].name, "a");
  EXPECT_EQ(p->tiers[1].name, "b");
  EXPECT_EQ(p->tiers[1].mode, Mode::Enforce);
  ASSERT_EQ(p->flows.size(), 2U);
  EXPECT_EQ(p->flows[0].name, "f1");
  EXPECT_EQ(p->flows[1].name, "f2");
  EXPECT_EQ(p->flows[1].loc.line, std::stoi(pos(text, "{name: f2")));
  ASSERT_EQ(p->denies.size(), 1U);
  ASSERT_EQ(p->assignments.size(), 1U);
  EXPECT_EQ(p->assignments[0].tier, "a");
}

TEST(LoaderValid, TierReferencesMayComeFromLaterDocuments) {
  const std::string text = head(R"(  flows:
    - {name: f, from: {tier: later}, to: {}}
---
apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: p}
spec:
  tiers:
    - {name: later, level: 1}
)");
  Diagnostics diags;
  EXPECT_TRUE(parse_policy(text, "t.yaml", diags).has_value())
      << ::testing::PrintToString(error_lines(diags));
}

// The reserved tier `quarantine` may be referenced (assigned to, selected).
TEST(LoaderValid, QuarantineIsAReferenceableTier) {
  const std::string text = with_tiers(R"(  assignments:
    - {match: {labels: {suspect: "yes"}}, tier: quarantine}
  flows:
    - {name: f, from: {tier: quarantine}, to: {host: true}}
)");
  Diagnostics diags;
  EXPECT_TRUE(parse_policy(text, "t.yaml", diags).has_value())
      << ::testing::PrintToString(error_lines(diags));
}

TEST(LoaderValid, DigestDependsOnContent) {
  Diagnostics diags;
  const auto a = parse_policy(with_tiers(""), "t.yaml", diags);
  const auto b = parse_policy(with_tiers("  mode: audit\n"), "t.yaml", diags);
  const auto c = parse_policy(with_tiers(""), "t.yaml", diags);
  ASSERT_TRUE(a && b && c) << ::testing::PrintToString(error_lines(diags));
  EXPECT_NE(a->digest, b->digest);
  EXPECT_EQ(a->digest, c->digest);
}

// ---------------------------------------------------------------------------
// Inventory documents are not policies.
// ---------------------------------------------------------------------------

constexpr std::string_view kInventoryDoc = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: n, addresses: [192.0.2.1]}
endpoints: []
)";

TEST(LoaderKinds, InventoryAloneIsNotAPolicy) {
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(kInventoryDoc, "inv.yaml", diags).has_value());
  EXPECT_TRUE(diags.has_errors());
}

// The contract: a policy is made of SegmentationPolicy documents; any other
// kind among them is an error, whether the text comes from a file or memory.
TEST(LoaderKinds, InventoryDocumentInsidePolicyTextIsAnError) {
  const std::string text = with_tiers("") + "---\n" + std::string(kInventoryDoc);
  Diagnostics diags;
  EXPECT_FALSE(parse_policy(text, "t.yaml", diags).has_value());
  EXPECT_THAT(error_lines(diags),
              ElementsAre("t.yaml:" + pos(text, "apiVersion", 2) +
                          ": error: an Inventory document is not part of a policy (pass it with "
                          "--inventory)"));
}

// ---------------------------------------------------------------------------
// Files and directories.
// ---------------------------------------------------------------------------

using tierwall::testsupport::TempDir;

std::string doc(std::string_view spec_body) {
  return "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata: {name: p}\nspec:\n" +
         std::string(spec_body);
}

TEST(LoaderFiles, DirectoryIsReadInByteOrderOfNames) {
  TempDir dir;
  // Byte order: "B-..." < "a-..." < "b-..." (upper case sorts first), and
  // ".yml" counts; other extensions, hidden files and subdirectories do not.
  dir.write("b-flows.yml", doc("  flows:\n    - {name: f3, from: {}, to: {}}\n"));
  dir.write("a-flows.yaml", doc("  flows:\n    - {name: f2, from: {}, to: {}}\n"));
  dir.write("B-tiers.yaml",
            doc("  tiers:\n    - {name: first, level: 1}\n  flows:\n    - {name: f1, from: {}, "
                "to: {}}\n"));
  dir.write("notes.txt", "this is not yaml: [");
  dir.write(".hidden.yaml", "this is not yaml: [");
  fs::create_directories(dir.path() / "sub.yaml");
  Diagnostics diags;
  const auto p = load_policy({dir.path().string()}, diags);
  ASSERT_TRUE(p.has_value()) << ::testing::PrintToString(error_lines(diags));
  EXPECT_EQ(p->files, (std::vector<std::string>{dir.file("B-tiers.yaml"), dir.file("a-flows.yaml"),
                                                dir.file("b-flows.yml")}));
  ASSERT_EQ(p->flows.size(), 3U);
  EXPECT_EQ(p->flows[0].name, "f1");
  EXPECT_EQ(p->flows[1].name, "f2");
  EXPECT_EQ(p->flows[2].name, "f3");
  EXPECT_EQ(p->flows[1].loc.file_name(), dir.file("a-flows.yaml"));
  EXPECT_EQ(p->flows[1].loc.line, 6);
}

TEST(LoaderFiles, ScalarTwiceAcrossFilesPointsAtTheLaterFile) {
  TempDir dir;
  dir.write("10.yaml", doc("  mode: audit\n  tiers:\n    - {name: a, level: 1}\n"));
  dir.write("20.yaml", doc("  mode: audit\n"));
  Diagnostics diags;
  EXPECT_FALSE(load_policy({dir.path().string()}, diags).has_value());
  EXPECT_THAT(
      error_lines(diags),
      ElementsAre(dir.file("20.yaml") + ":5:3: error: spec.mode is already set at " +
                  dir.file("10.yaml") + ":5:3 (a setting may appear in one document only)"));
}

TEST(LoaderFiles, ErrorsFromEveryFileAreReported) {
  TempDir dir;
  const std::string one = doc("  tiers:\n    - {name: a, level: 1}\n  flws: []\n");
  const std::string two =
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
      "metadata: {name: q}\nspec:\n  flows:\n    - {name: f, from: {tier: b}, to: {}}\n";
  dir.write("1.yaml", one);
  dir.write("2.yaml", two);
  dir.write("3.yaml", "key: [unclosed\n");
  Diagnostics diags;
  EXPECT_FALSE(load_policy({dir.path().string()}, diags).has_value());
  const auto lines = error_lines(diags);
  EXPECT_THAT(lines, Contains(dir.file("1.yaml") + ":" + pos(one, "flws") +
                              ": error: unknown key 'flws' in spec (did you mean 'flows'?)"));
  EXPECT_THAT(lines,
              Contains(dir.file("2.yaml") + ":" + pos(two, "q}") +
                       ": error: metadata.name 'q' differs from 'p' set at " + dir.file("1.yaml") +
                       ":" + pos(one, "p}") + " (one policy per cluster)"));
  EXPECT_THAT(lines, Contains(dir.file("2.yaml") + ":" + pos(two, "b}") +
                              ": error: unknown tier 'b' (did you mean 'a'?)"));
  EXPECT_THAT(lines, Contains(HasSubstr(dir.file("3.yaml") + ":2:1: error: YAML syntax: ")));
  EXPECT_EQ(diags.error_count(), 4U) << ::testing::PrintToString(lines);
}

TEST(LoaderFiles, SeveralPathsInTheGivenOrder) {
  TempDir dir;
  dir.write("z.yaml", doc("  tiers:\n    - {name: z, level: 1}\n"));
  dir.write("a.yaml", doc("  tiers:\n    - {name: a, level: 2}\n"));
  Diagnostics diags;
  const auto p = load_policy({dir.file("z.yaml"), dir.file("a.yaml")}, diags);
  ASSERT_TRUE(p.has_value()) << ::testing::PrintToString(error_lines(diags));
  ASSERT_EQ(p->tiers.size(), 2U);
  EXPECT_EQ(p->tiers[0].name, "z");
  EXPECT_EQ(p->tiers[1].name, "a");
}

TEST(LoaderFiles, InventoryFileAmongPolicyFilesIsAnError) {
  TempDir dir;
  dir.write("policy.yaml", doc("  tiers:\n    - {name: a, level: 1}\n"));
  dir.write("zz-inventory.yaml", kInventoryDoc);
  Diagnostics diags;
  EXPECT_FALSE(load_policy({dir.path().string()}, diags).has_value());
  EXPECT_THAT(error_lines(diags),
              ElementsAre(dir.file("zz-inventory.yaml") +
                          ":1:1: error: an Inventory document is not part of a policy (pass it "
                          "with --inventory)"));
}

TEST(LoaderFiles, MissingPathAndEmptyDirectory) {
  TempDir dir;
  fs::create_directories(dir.path() / "empty");
  Diagnostics diags;
  EXPECT_FALSE(load_policy({dir.file("nope.yaml"), dir.file("empty")}, diags).has_value());
  const auto lines = error_lines(diags);
  EXPECT_THAT(lines, Contains(dir.file("nope.yaml") + ": error: no such file or directory"));
  EXPECT_THAT(lines,
              Contains(dir.file("empty") + ": error: directory holds no *.yaml or *.yml file"));
}

// Checked-in fixtures under tests/data/bad: each file names the errors it must
// produce in its header comment ("# expect: LINE:COL: MESSAGE"; FILE stands
// for the fixture's own path).
TEST(LoaderFixtures, BadFixturesReportExactlyTheirExpectedErrors) {
  const fs::path dir = fs::path(TIERWALL_SOURCE_DIR) / "tests" / "data" / "bad";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_FALSE(files.empty());
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    std::ifstream in(f);
    std::vector<std::string> expected;
    for (std::string line; std::getline(in, line);) {
      constexpr std::string_view kExpect = "# expect: ";
      if (line.starts_with(kExpect)) {
        const std::string rest = line.substr(kExpect.size());
        const std::size_t colon2 = rest.find(':', rest.find(':') + 1);
        std::string message = rest.substr(colon2 + 1);
        for (std::size_t at = message.find("FILE:"); at != std::string::npos;
             at = message.find("FILE:", at + 1)) {
          message.replace(at, 4, f.string());
        }
        expected.push_back(f.string() + ":" + rest.substr(0, colon2) + ": error:" + message);
      }
    }
    ASSERT_FALSE(expected.empty()) << "fixture has no '# expect:' lines";
    Diagnostics diags;
    EXPECT_FALSE(load_policy({f.string()}, diags).has_value());
    EXPECT_EQ(error_lines(diags), expected);
  }
}

}  // namespace
}  // namespace tierwall::policy
