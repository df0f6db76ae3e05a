// tierwall-bench-policy: figures for the policy core (not a test).
//
// Generates a large, realistic policy and inventory into a temporary
// directory, then times each control-plane phase the agent runs on start-up
// or on a policy change: read+parse+validate the policy, parse+validate the
// inventory, compile, bind every endpoint; the compiled state per endpoint;
// and `tierctl explain` latency. As a baseline it also times the same
// inventory read through yaml-cpp's node API (YAML::LoadFile) and through
// yaml-cpp's event API, to show why inventories are read with libyaml.
//
//   tierwall-bench-policy [--endpoints N] [--seed S] [--json] [--keep]
//
// Targets (from the issue): parse+validate+compile <= 1 s in total,
// <= 200 bytes of compiled state per endpoint, explain <= 1 ms per query.
// See docs/performance.md.
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <malloc.h>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <stdlib.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/explain/explain.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/policy/yaml.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
namespace compiler = tierwall::compiler;
namespace explain = tierwall::explain;
namespace identity = tierwall::identity;
namespace policy = tierwall::policy;

constexpr int kTiers = 50;
constexpr int kFlows = 1000;
constexpr int kDenies = 100;
constexpr int kLabelAssignments = 48;
constexpr int kImageAssignments = 8;
constexpr int kEnvAssignments = 4;
constexpr int kExplainQueries = 10000;

// Targets from the issue.
constexpr double kTargetTotalMs = 1000.0;
constexpr double kTargetBytesPerEndpoint = 200.0;
constexpr double kTargetExplainUs = 1000.0;

// A small vocabulary, so that many endpoints share labels and images as
// they do in a real cluster (replicas of a few hundred deployments).
constexpr std::array<std::string_view, 40> kApps{
    "shop",     "payments", "billing",  "catalog", "search",   "cart",    "checkout", "orders",
    "shipping", "invoices", "accounts", "auth",    "profile",  "reviews", "ads",      "reco",
    "mail",     "sms",      "push",     "ledger",  "fraud",    "risk",    "kyc",      "reports",
    "metrics",  "logs",     "traces",   "alerts",  "gateway",  "cdn",     "media",    "upload",
    "thumbs",   "chat",     "presence", "support", "partners", "pricing", "stock",    "returns"};
constexpr std::array<std::string_view, 8> kRoles{"web",    "api",   "db",    "cache",
                                                 "worker", "queue", "batch", "proxy"};
constexpr std::array<std::string_view, 3> kEnvs{"prod", "staging", "dev"};
constexpr std::array<std::string_view, 8> kTeams{"core",   "pay",   "data", "edge",
                                                 "growth", "infra", "ops",  "trust"};
constexpr std::array<std::uint16_t, 14> kPorts{80,    443,   5432, 6379, 8080, 9092,  3306,
                                               27017, 11211, 9200, 8443, 5672, 15672, 2379};

struct Options {
  std::size_t endpoints = 100000;
  std::uint64_t seed = 42;
  bool json = false;
  bool keep = false;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: tierwall-bench-policy [--endpoints N] [--seed S] [--json] [--keep]\n"
               "  --endpoints N  inventory size (default 100000)\n"
               "  --seed S       generator seed (default 42)\n"
               "  --json         print one JSON object instead of the table\n"
               "  --keep         keep the generated policy and inventory\n");
  std::exit(code);
}

template <typename T>
T parse_number(std::string_view flag, const char* text) {
  T v{};
  const std::string_view s(text);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    std::fprintf(stderr, "tierwall-bench-policy: %.*s needs a number, not '%s'\n",
                 static_cast<int>(flag.size()), flag.data(), text);
    usage(2);
  }
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tierwall-bench-policy: %s needs a value\n", argv[i]);
        usage(2);
      }
      return argv[++i];
    };
    if (a == "--endpoints") {
      o.endpoints = parse_number<std::size_t>(a, value());
      if (o.endpoints == 0 || o.endpoints > 16'000'000) {
        std::fprintf(stderr, "tierwall-bench-policy: --endpoints must be 1..16000000\n");
        usage(2);
      }
    } else if (a == "--seed") {
      o.seed = parse_number<std::uint64_t>(a, value());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--help" || a == "-h") {
      usage(0);
    } else {
      std::fprintf(stderr, "tierwall-bench-policy: unknown argument '%s'\n", argv[i]);
      usage(2);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------
// Generation

class Gen {
 public:
  explicit Gen(std::uint64_t seed) : rng_(seed) {}
  std::size_t below(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename C>
  auto pick(const C& c) -> decltype(c[0]) {
    return c[below(c.size())];
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
};

std::string tier_name(std::size_t i) {
  std::string s = "tier-";
  if (i < 10) s += '0';
  return s + std::to_string(i);
}

std::string padded(std::size_t v, std::size_t width) {
  std::string s = std::to_string(v);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

std::string ports_for(Gen& g) {
  const std::size_t n = 1 + g.below(3);
  std::string out = "[";
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0) out += ", ";
    const std::size_t kind = g.below(10);
    if (kind < 6) {
      out += "tcp/" + std::to_string(g.pick(kPorts));
    } else if (kind < 7) {
      out += "udp/53";
    } else if (kind < 8) {
      const std::size_t lo = 8000 + 100 * g.below(20);
      out += "tcp/" + std::to_string(lo) + "-" + std::to_string(lo + 99);
    } else if (kind < 9) {
      out += "udp/" + std::to_string(10000 + g.below(20000));
    } else {
      out += "icmp/echo-request";
    }
  }
  return out + "]";
}

std::string labels_sel(std::string_view key, std::string_view value) {
  return "labels: {" + std::string(key) + ": " + std::string(value) + "}";
}

// 50 tiers, ~60 assignments, 100 guardrail denies and 1,000 flows.
std::string generate_policy(Gen& g) {
  std::string y;
  y.reserve(256 * 1024);
  y += "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata:\n  name: bench\nspec:\n";
  y += "  mode: enforce\n  intraTier: deny\n  tiers:\n";
  for (std::size_t t = 0; t < kTiers; ++t) {
    y += "    - name: " + tier_name(t) + "\n      level: " + std::to_string((t + 1) * 10) + "\n";
    if (t % 10 == 9) y += "      mode: audit\n";
  }

  y += "  assignments:\n";
  for (std::size_t i = 0; i < kLabelAssignments; ++i) {
    const auto app = kApps[i % kApps.size()];
    // Distinct (app, role) pairs: the role shifts once the apps wrap around.
    const auto role = kRoles[(i + i / kApps.size()) % kRoles.size()];
    y += "    - name: asg-" + std::string(app) + "-" + std::string(role) + "\n";
    y +=
        "      match: {labels: {app: " + std::string(app) + ", role: " + std::string(role) + "}}\n";
    y += "      tier: " + tier_name(i % kTiers) + "\n";
  }
  for (std::size_t i = 0; i < kImageAssignments; ++i) {
    y += "    - match: {image: \"reg.example/" + std::string(kTeams[i]) + "/*\"}\n";
    y += "      tier: " + tier_name((7 * i + 3) % kTiers) + "\n";
  }
  for (std::size_t i = 0; i < kEnvAssignments; ++i) {
    y += "    - match: {labels: {env: [staging, dev], role: " + std::string(kRoles[i]) + "}}\n";
    y += "      tier: " + tier_name(i) + "\n";
  }

  y += "  denies:\n";
  for (std::size_t i = 0; i < kDenies; ++i) {
    y += "    - name: guard-" + padded(i, 3) + "\n";
    switch (i % 4) {
      case 0:
        y += "      from: {labels: {env: dev}}\n      to: {labels: {env: prod, app: " +
             std::string(g.pick(kApps)) + "}}\n";
        break;
      case 1:
        y += "      from: {tier: " + tier_name(g.below(kTiers)) +
             "}\n      to: {world: [0.0.0.0/0, \"::/0\"]}\n      ports: [tcp/25]\n";
        break;
      case 2:
        y += "      from: {" + labels_sel("app", g.pick(kApps)) +
             "}\n      to: {tier: " + tier_name(g.below(kTiers)) +
             ", labels: {role: db}}\n      ports: [tcp/22]\n";
        break;
      default:
        y += "      from: {world: [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]}\n      to: {}\n";
        break;
    }
    if (i % 10 == 5) y += "      audit: true\n";
  }

  y += "  flows:\n";
  for (std::size_t i = 0; i < kFlows; ++i) {
    const std::string a = tier_name(g.below(kTiers));
    const std::size_t b_index = g.below(kTiers);
    const std::string b = tier_name(b_index);
    const std::string b2 = tier_name((b_index + 1 + g.below(kTiers - 1)) % kTiers);
    y += "    - name: flow-" + padded(i, 4) + "\n";
    switch (i % 10) {
      case 0:
      case 1:
      case 2:
      case 3:
        y += "      from: {tier: " + a + "}\n      to: {tier: " + b + "}\n";
        break;
      case 4:
      case 5:
      case 6:
        y += "      from: {tier: " + a + ", " + labels_sel("app", g.pick(kApps)) +
             "}\n      to: {tier: [" + b + ", " + b2 + "], " + labels_sel("role", g.pick(kRoles)) +
             "}\n";
        break;
      case 7:
        y += "      from: {labels: {app: " + std::string(g.pick(kApps)) +
             ", env: prod}}\n      to: {labels: {app: " + std::string(g.pick(kApps)) +
             ", role: [db, cache]}, image: \"reg.example/*\"}\n";
        break;
      case 8:
        y += "      from: {world: [\"203.0.113.0/24\", \"0.0.0.0/0\"]}\n      to: {tier: " + b +
             ", " + labels_sel("role", "web") + "}\n";
        break;
      default:
        y += "      from: {host: true}\n      to: {tier: " + b + "}\n";
        break;
    }
    if (i % 25 != 24) y += "      ports: " + ports_for(g) + "\n";
    if (i % 50 == 0) y += "      log: true\n";
  }
  return y;
}

std::string ipv4(std::size_t i) {
  const std::uint32_t v = 0x0a000000U + static_cast<std::uint32_t>(i) + 1U;  // 10.0.0.1 + i
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 0xff) + "." +
         std::to_string((v >> 8) & 0xff) + "." + std::to_string(v & 0xff);
}

std::string to_hex(std::size_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), kHex[v & 15U]);
    v >>= 4;
  } while (v != 0);
  return s;
}

struct GeneratedInventory {
  std::string text;
  std::vector<std::string> names;
};

// As an orchestrator adapter would write it: block style, one endpoint per
// record; one IPv4 address each in 10.0.0.0/8, every fifth also IPv6.
GeneratedInventory generate_inventory(Gen& g, std::size_t count) {
  GeneratedInventory out;
  std::string& y = out.text;
  y.reserve(count * 200);
  out.names.reserve(count);
  y += "apiVersion: tierwall.io/v1\nkind: Inventory\n";
  y += "node: {name: node-a, addresses: [192.0.2.10, \"2001:db8::10\"]}\nendpoints:\n";
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t app_index = g.below(kApps.size());
    const auto app = kApps[app_index];
    const auto role = kRoles[g.below(kRoles.size())];
    const double r = std::uniform_real_distribution<double>(0.0, 1.0)(g.rng());
    const auto env = r < 0.7 ? kEnvs[0] : (r < 0.9 ? kEnvs[1] : kEnvs[2]);
    std::string name = std::string(app) + "-" + std::string(role) + "-" + to_hex(i);
    y += "  - name: " + name + "\n";
    y += "    id: " + padded(i * 2654435761U % 1000000007U, 12) + "\n";
    y += "    image: reg.example/" + std::string(kTeams[app_index % kTeams.size()]) + "/" +
         std::string(app) + "-" + std::string(role) + ":1." + std::to_string(g.below(4)) + "\n";
    y += "    labels:\n      app: " + std::string(app) + "\n      role: " + std::string(role) +
         "\n      env: " + std::string(env) + "\n";
    y += "    addresses:\n      - " + ipv4(i) + "\n";
    if (i % 5 == 0) {
      y += "      - \"fd00:10::" + to_hex((i + 1) >> 16) + ":" + to_hex((i + 1) & 0xffffU) + "\"\n";
    }
    out.names.push_back(std::move(name));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Measurement

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Resident set size in bytes, from /proc/self/status (0 when unavailable).
std::size_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::size_t kb = 0;
      const auto digits = line.find_first_of("0123456789");
      if (digits == std::string::npos) return 0;
      std::from_chars(line.data() + digits, line.data() + line.size(), kb);
      return kb * 1024;
    }
  }
  return 0;
}

// Hands freed heap back to the kernel so that RSS growth measures what the
// next phase keeps, not what earlier phases left in malloc's free lists.
std::size_t settled_rss() {
  malloc_trim(0);
  return rss_bytes();
}

bool write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  return static_cast<bool>(out);
}

void fail_on_errors(const policy::Diagnostics& diags, const char* what) {
  if (!diags.has_errors()) return;
  std::cerr << "tierwall-bench-policy: the generated " << what << " is invalid ("
            << diags.error_count() << " errors):\n";
  const auto items = diags.sorted();
  for (std::size_t i = 0; i < items.size() && i < 10; ++i) {
    std::cerr << items[i].to_string() << "\n";
  }
  std::exit(1);
}

struct Results {
  std::size_t endpoints = 0;
  std::size_t addresses = 0;
  std::size_t profiles = 0;
  std::size_t policy_bytes = 0;
  std::size_t inventory_bytes = 0;
  double policy_parse_ms = 0;
  double inventory_parse_ms = 0;
  double compile_ms = 0;
  double bind_ms = 0;
  double total_ms = 0;
  double bytes_per_endpoint = 0;
  double rss_bytes_per_endpoint = 0;
  double explainer_ms = 0;
  double explain_mean_us = 0;
  double explain_p99_us = 0;
  double explain_max_us = 0;
  std::size_t explain_errors = 0;
  double yamlcpp_node_ms = 0;
  double yamlcpp_events_ms = 0;
  double libyaml_events_ms = 0;
};

const char* verdict(bool ok) { return ok ? "ok" : "MISSED"; }

void print_table(const Results& r) {
  std::printf(
      "tierwall-bench-policy: %zu endpoints (%zu addresses, %zu membership profiles), "
      "%d tiers, %d flows, %d denies\n",
      r.endpoints, r.addresses, r.profiles, kTiers, kFlows, kDenies);
  std::printf("inputs: policy %.1f KiB, inventory %.1f MiB\n\n",
              static_cast<double>(r.policy_bytes) / 1024.0,
              static_cast<double>(r.inventory_bytes) / (1024.0 * 1024.0));
  std::printf("%-44s %12s %12s %8s\n", "phase", "measured", "target", "");
  std::printf("%-44s %9.1f ms\n", "policy: read + parse + validate", r.policy_parse_ms);
  std::printf("%-44s %9.1f ms\n", "inventory: read + parse + validate", r.inventory_parse_ms);
  std::printf("%-44s %9.1f ms\n", "compile", r.compile_ms);
  std::printf("%-44s %9.1f ms\n", "bind all endpoints", r.bind_ms);
  std::printf("%-44s %9.1f ms %9.0f ms %8s\n", "total (parse + validate + compile + bind)",
              r.total_ms, kTargetTotalMs, verdict(r.total_ms <= kTargetTotalMs));
  std::printf("%-44s %9.1f B  %9.0f B  %8s\n", "compiled state per endpoint (table)",
              r.bytes_per_endpoint, kTargetBytesPerEndpoint,
              verdict(r.bytes_per_endpoint <= kTargetBytesPerEndpoint));
  std::printf("%-44s %9.1f B\n", "  cross-check: RSS growth of bind / endpoint",
              r.rss_bytes_per_endpoint);
  std::printf("%-44s %9.1f ms\n", "explain: Explainer construction", r.explainer_ms);
  std::printf("%-44s %9.1f us %9.0f us %8s\n", "explain: mean per query", r.explain_mean_us,
              kTargetExplainUs, verdict(r.explain_mean_us <= kTargetExplainUs));
  std::printf("%-44s %9.1f us %9.0f us %8s\n", "explain: p99 per query", r.explain_p99_us,
              kTargetExplainUs, verdict(r.explain_p99_us <= kTargetExplainUs));
  std::printf("%-44s %9.1f us\n", "explain: max", r.explain_max_us);
  if (r.explain_errors > 0) {
    std::printf("  (%zu of %d explain queries returned an error)\n", r.explain_errors,
                kExplainQueries);
  }
  std::printf("\nbaseline: the same inventory file parsed into a tree, no validation\n");
  std::printf("%-44s %9.1f ms\n", "  yaml-cpp node API (YAML::LoadFile)", r.yamlcpp_node_ms);
  std::printf("%-44s %9.1f ms\n", "  yaml-cpp events -> yaml::Node", r.yamlcpp_events_ms);
  std::printf("%-44s %9.1f ms\n", "  libyaml events -> yaml::Node (what we use)",
              r.libyaml_events_ms);
}

nlohmann::json to_json(const Results& r) {
  return nlohmann::json{{"endpoints", r.endpoints},
                        {"flows", kFlows},
                        {"denies", kDenies},
                        {"tiers", kTiers},
                        {"policy_parse_ms", r.policy_parse_ms},
                        {"inventory_parse_ms", r.inventory_parse_ms},
                        {"compile_ms", r.compile_ms},
                        {"bind_ms", r.bind_ms},
                        {"total_ms", r.total_ms},
                        {"bytes_per_endpoint", r.bytes_per_endpoint},
                        {"rss_bytes_per_endpoint", r.rss_bytes_per_endpoint},
                        {"explainer_ms", r.explainer_ms},
                        {"explain_mean_us", r.explain_mean_us},
                        {"explain_p99_us", r.explain_p99_us},
                        {"explain_errors", r.explain_errors},
                        {"yamlcpp_node_ms", r.yamlcpp_node_ms},
                        {"yamlcpp_events_ms", r.yamlcpp_events_ms},
                        {"libyaml_events_ms", r.libyaml_events_ms}};
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  Gen gen(opt.seed);
  Results r;

  // The generated inputs, removed at the end unless --keep.
  std::unique_ptr<tierwall::testsupport::TempDir> made;
  try {
    made = std::make_unique<tierwall::testsupport::TempDir>("tierwall-bench");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tierwall-bench-policy: %s\n", e.what());
    return 1;
  }
  if (opt.keep) made->keep("tierwall-bench-policy");
  const tierwall::testsupport::TempDir& dir = *made;
  const fs::path policy_path = dir.path() / "policy.yaml";
  const fs::path inventory_path = dir.path() / "inventory.yaml";
  std::vector<std::string> names;
  {
    const std::string p = generate_policy(gen);
    GeneratedInventory inv = generate_inventory(gen, opt.endpoints);
    r.policy_bytes = p.size();
    r.inventory_bytes = inv.text.size();
    names = std::move(inv.names);
    if (!write_file(policy_path, p) || !write_file(inventory_path, inv.text)) {
      std::cerr << "tierwall-bench-policy: cannot write to " << dir.path().string() << "\n";
      return 1;
    }
  }

  // Phase 1: policy.
  policy::Diagnostics policy_diags;
  auto t0 = Clock::now();
  std::optional<policy::Policy> pol = policy::load_policy({policy_path.string()}, policy_diags);
  r.policy_parse_ms = ms_since(t0);
  fail_on_errors(policy_diags, "policy");

  // Phase 2: inventory.
  policy::Diagnostics inventory_diags;
  t0 = Clock::now();
  std::optional<identity::Inventory> inv =
      identity::load_inventory(inventory_path.string(), inventory_diags);
  r.inventory_parse_ms = ms_since(t0);
  fail_on_errors(inventory_diags, "inventory");

  // Phase 3: compile.
  t0 = Clock::now();
  auto compilation = std::make_unique<compiler::Compilation>(*pol, 1);
  r.compile_ms = ms_since(t0);

  // Phase 4: bind every endpoint.
  const std::size_t rss_before = settled_rss();
  t0 = Clock::now();
  std::shared_ptr<tierwall::dataplane::EndpointTable> table = compilation->bind_all(*inv);
  r.bind_ms = ms_since(t0);
  const std::size_t rss_after = settled_rss();

  r.total_ms = r.policy_parse_ms + r.inventory_parse_ms + r.compile_ms + r.bind_ms;
  r.endpoints = table->endpoint_count();
  r.addresses = table->address_count();
  r.profiles = table->profile_count();
  r.bytes_per_endpoint =
      static_cast<double>(table->memory_bytes()) / static_cast<double>(r.endpoints);
  r.rss_bytes_per_endpoint =
      static_cast<double>(rss_after > rss_before ? rss_after - rss_before : 0) /
      static_cast<double>(r.endpoints);
  table.reset();

  // Explain: construction, then random endpoint pairs on tcp ports.
  t0 = Clock::now();
  explain::Explainer explainer(*compilation, *inv);
  r.explainer_ms = ms_since(t0);
  std::vector<double> samples;
  samples.reserve(kExplainQueries);
  std::size_t allowed = 0;
  for (int q = 0; q < kExplainQueries; ++q) {
    const std::string& from = names[gen.below(names.size())];
    const std::string& to = names[gen.below(names.size())];
    const std::string port = "tcp/" + std::to_string(gen.pick(kPorts));
    t0 = Clock::now();
    auto result = explainer.explain(from, to, port);
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (const auto* e = std::get_if<explain::Explanation>(&result)) {
      allowed += e->decision.verdict == tierwall::dataplane::Verdict::Allow ? 1U : 0U;
    } else {
      ++r.explain_errors;
    }
  }
  std::sort(samples.begin(), samples.end());
  r.explain_mean_us =
      std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  r.explain_p99_us = samples[samples.size() * 99 / 100];
  r.explain_max_us = samples.back();

  // Baseline: the inventory file through yaml-cpp (node API and events) and
  // libyaml, tree only.
  {
    t0 = Clock::now();
    YAML::Node root = YAML::LoadFile(inventory_path.string());
    r.yamlcpp_node_ms = ms_since(t0);
    if (root["endpoints"].size() != opt.endpoints) {
      std::cerr << "tierwall-bench-policy: yaml-cpp read a different inventory\n";
      return 1;
    }
  }
  {
    // Each includes reading the file, as YAML::LoadFile does.
    auto file = std::make_shared<const std::string>(inventory_path.string());
    policy::Diagnostics d;
    auto tree = [&](policy::yaml::Parser parser) {
      const auto start = Clock::now();
      std::string text;
      policy::read_file(inventory_path.string(), text, d);
      const auto docs = policy::yaml::parse(text, file, parser, d);
      const double ms = ms_since(start);
      if (docs.size() != 1) d.error(policy::SourceLoc{file, 0, 0}, "expected one document");
      return ms;
    };
    r.yamlcpp_events_ms = tree(policy::yaml::Parser::YamlCpp);
    r.libyaml_events_ms = tree(policy::yaml::Parser::LibYaml);
    fail_on_errors(d, "inventory (baseline)");
  }

  if (opt.json) {
    std::cout << to_json(r).dump() << "\n";
  } else {
    print_table(r);
    std::printf("\n(%zu of %d explain queries allowed)\n", allowed, kExplainQueries);
  }
  return 0;
}
