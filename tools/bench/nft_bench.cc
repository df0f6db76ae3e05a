// tierwall-bench-nft: figures for the nftables dataplane (not a test).
//
// Everything runs in network namespaces this program creates and deletes;
// the root namespace's ruleset and links are never touched. It measures,
// against the real kernel:
//   (a) endpoint add -> committed: NftBackend::update_endpoints with one new
//       endpoint, until the kernel's ACK, at 100 / 1k / 10k / 100k endpoints;
//   (b) a full apply of the largest table under a 1,000-flow policy;
//   (c) the kernel's rule, chain and set counts at every size (flat);
//   (d) a naive baseline in the same run: one nft rule per allowed endpoint
//       pair and port, as iptables-era firewalls do, its full apply and its
//       update latency for one endpoint add;
//   (e) forwarding throughput (iperf3) through a node namespace with the
//       tierwall ruleset loaded vs. no ruleset.
//
//   tierwall-bench-nft [nft] [--max-endpoints N] [--quick] [--json] [--seed S]
//   tierwall-bench nft --json          (the dispatcher in the same directory)
//
// Targets (from the issue): endpoint add p99 <= 1 ms at 100k endpoints, full
// apply of 100k endpoints and 1,000 policy rules <= 1 s, kernel object
// counts flat, naive/tierwall update latency >= 100x, throughput ratio
// >= 0.95. The program reports missed targets; it exits non-zero only when
// something is wrong (a rejected apply, counts that differ from the plan,
// object counts that grow with endpoints, a flow the policy allows that the
// ruleset did not count), or 77 when it cannot run here (not root).
// See docs/performance.md, "nftables dataplane".
#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

#include "bench_interrupt.h"
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/evaluator.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/dataplane/nft/netlink.h"
#include "tierwall/dataplane/nft/plan.h"
#include "tierwall/identity/endpoint.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace compiler = tierwall::compiler;
namespace dp = tierwall::dataplane;
using tierwall_bench::check_stop;
using tierwall_bench::Interrupted;
using tierwall_bench::kExitSkip;
using tierwall_bench::on_signal;
namespace identity = tierwall::identity;
namespace nft = tierwall::dataplane::nft;
namespace policy = tierwall::policy;
namespace ts = tierwall::testsupport;
using tierwall::Cidr;
using tierwall::IpAddress;

constexpr const char* kProg = "tierwall-bench-nft";

constexpr int kTiers = 10;
constexpr int kFlows = 50;  // the policy of (a), (c), (d), (e)
constexpr int kDenies = 10;
constexpr int kBigFlows = 1000;  // the policy of (b)
constexpr std::uint16_t kIperfPort = 5201;

// Naive baseline: at most this many pair rules are installed; beyond it the
// table is capped and its update latency is a lower bound (see report).
constexpr std::size_t kNaiveRuleCap = 200'000;

// Targets from the issue.
constexpr double kTargetAddP99Ms = 1.0;
constexpr double kTargetFullApplyMs = 1000.0;
constexpr double kTargetNaiveRatio = 100.0;
constexpr double kTargetThroughputRatio = 0.95;

// A small label vocabulary: app decides the tier (one app per tier), role
// and env refine selectors. Endpoints share labels as replicas do.
constexpr std::array<std::string_view, kTiers> kApps{"shop",  "pay",  "ledger", "search", "auth",
                                                     "media", "mail", "ads",    "chat",   "logs"};
constexpr std::array<std::string_view, 8> kRoles{"web",    "api",   "db",    "cache",
                                                 "worker", "queue", "batch", "proxy"};
constexpr std::array<std::uint16_t, 6> kPorts{80, 443, 5432, 6379, 8080, 9092};

// Generated endpoints live in 10.100.0.0/14 (10.100.0.1 + i); the
// throughput lab's containers are 10.88.0.10 and 10.89.0.10. All inside the
// container network 10.64.0.0/10.
constexpr std::uint32_t kEndpointBase = 0x0a640001U;
const char* const kContainerCidr4 = "10.64.0.0/10";
const char* const kContainerCidr6 = "fd00::/64";

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::size_t max_endpoints = 100'000;
  bool quick = false;
  bool json = false;
  std::uint64_t seed = 42;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: %s [nft] [--max-endpoints N] [--quick] [--json] [--seed S]\n"
               "  --max-endpoints N  largest table (default 100000); sizes are 100, 1k, 10k,\n"
               "                     100k up to N, and N\n"
               "  --quick            small sizes and short runs (smoke test, ~20 s)\n"
               "  --json             print one JSON object instead of the tables\n"
               "  --seed S           generator seed (default 42)\n"
               "Needs root: it creates network namespaces. Exit 77 when it cannot run.\n",
               kProg);
  std::exit(code);
}

template <typename T>
T parse_number(std::string_view flag, const char* text) {
  T v{};
  const std::string_view s(text);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    std::fprintf(stderr, "%s: %.*s needs a number, not '%s'\n", kProg,
                 static_cast<int>(flag.size()), flag.data(), text);
    usage(2);
  }
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool max_given = false;
  int i = 1;
  if (argc > 1 && std::string_view(argv[1]) == "nft") i = 2;  // `tierwall-bench nft ...`
  for (; i < argc; ++i) {
    const std::string_view a(argv[i]);
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", kProg, argv[i]);
        usage(2);
      }
      return argv[++i];
    };
    if (a == "--max-endpoints") {
      o.max_endpoints = parse_number<std::size_t>(a, value());
      max_given = true;
      if (o.max_endpoints < 10 || o.max_endpoints > 1'000'000) {
        std::fprintf(stderr, "%s: --max-endpoints must be 10..1000000\n", kProg);
        usage(2);
      }
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--seed") {
      o.seed = parse_number<std::uint64_t>(a, value());
    } else if (a == "--help" || a == "-h") {
      usage(0);
    } else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", kProg, argv[i]);
      usage(2);
    }
  }
  if (o.quick && !max_given) o.max_endpoints = 1000;
  return o;
}

// Per-phase run lengths.
struct RunPlan {
  std::vector<std::size_t> sizes;        // (a), (c)
  std::vector<std::size_t> naive_sizes;  // (d)
  std::size_t adds = 200;                // endpoint adds per size
  std::size_t naive_adds = 20;           // per size
  std::size_t big_apply_runs = 3;        // (b)
  std::size_t throughput_endpoints = 10'000;
  int iperf_seconds = 5;
  int iperf_runs = 3;
};

RunPlan plan_for(const Options& o) {
  RunPlan p;
  for (std::size_t n :
       {std::size_t{100}, std::size_t{1'000}, std::size_t{10'000}, std::size_t{100'000}})
    if (n <= o.max_endpoints) p.sizes.push_back(n);
  if (p.sizes.empty() || p.sizes.back() != o.max_endpoints) p.sizes.push_back(o.max_endpoints);
  for (std::size_t n : p.sizes)
    if (n <= 10'000) p.naive_sizes.push_back(n);
  p.throughput_endpoints = std::min<std::size_t>(10'000, o.max_endpoints);
  if (o.quick) {
    p.adds = 50;
    p.naive_adds = 5;
    p.big_apply_runs = 1;
    p.iperf_seconds = 1;
    p.iperf_runs = 1;
  }
  return p;
}

// ---------------------------------------------------------------------------
// Interruption: SIGINT/SIGTERM stop at the next check, so that every
// namespace is deleted by its destructor on the way out.

// A broken invariant (not a missed target): the run fails.
struct Broken : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Generation

std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string tier_name(std::size_t i) { return "tier-0" + std::to_string(i); }

std::string padded(std::size_t v, std::size_t width) {
  std::string s = std::to_string(v);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

// 10 tiers (one per app), intraTier deny, 10 guardrail denies and `flows`
// flows "tier A -> tier B with role R on tcp/P", every fifth narrowed to
// env prod on the initiator side; plus the flow the throughput run uses.
std::string generate_policy(std::uint64_t seed, int flows) {
  std::mt19937_64 rng(seed);
  auto below = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  std::string y;
  y +=
      "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\nmetadata:\n  name: bench-nft\nspec:\n";
  y += "  mode: enforce\n  intraTier: deny\n  tiers:\n";
  for (std::size_t t = 0; t < kTiers; ++t)
    y += "    - name: " + tier_name(t) + "\n      level: " + std::to_string((t + 1) * 10) + "\n";
  y += "  assignments:\n";
  for (std::size_t t = 0; t < kTiers; ++t) {
    y += "    - match: {labels: {app: " + std::string(kApps[t]) +
         "}}\n      tier: " + tier_name(t) + "\n";
  }
  y += "  denies:\n";
  y += "    - name: dev-never-prod\n      from: {labels: {env: dev}}\n      to: {labels: {env: "
       "prod}}\n";
  for (std::size_t i = 1; i < kDenies; ++i) {
    y += "    - name: guard-" + padded(i, 2) + "\n      from: {tier: " + tier_name(i) +
         "}\n      to: {tier: " + tier_name((i + 3) % kTiers) +
         ", labels: {role: db}}\n      ports: [tcp/22]\n";
  }
  y += "  flows:\n";
  y +=
      "    - name: iperf\n      from: {labels: {role: loadgen}}\n      to: {labels: {role: sink}}\n"
      "      ports: [tcp/" +
      std::to_string(kIperfPort) + "]\n";
  for (int i = 0; i < flows; ++i) {
    const std::size_t a = below(kTiers);
    const std::size_t b = below(kTiers);
    const auto role = kRoles[below(kRoles.size())];
    const auto port = kPorts[below(kPorts.size())];
    y += "    - name: flow-" + padded(static_cast<std::size_t>(i), 4) + "\n";
    y += "      from: {tier: " + tier_name(a) + (i % 5 == 4 ? ", labels: {env: prod}" : "") + "}\n";
    y += "      to: {tier: " + tier_name(b) + ", labels: {role: " + std::string(role) + "}}\n";
    y += "      ports: [tcp/" + std::to_string(port) + "]\n";
  }
  return y;
}

// Endpoint i, the same whatever the table size: app/role/env from a hash of
// (seed, i); 90 % prod, 10 % dev; one IPv4 address 10.100.0.1 + i.
identity::Endpoint make_endpoint(std::uint64_t seed, std::size_t i) {
  const std::uint64_t h = mix(seed ^ mix(i));
  identity::Endpoint e;
  const auto app = kApps[h % kApps.size()];
  const auto role = kRoles[(h >> 8) % kRoles.size()];
  const bool dev = (h >> 16) % 10 == 0;
  e.name = std::string(app) + "-" + std::string(role) + "-" + std::to_string(i);
  e.id = padded(i, 12);
  e.image = "reg.example/" + std::string(app) + "/" + std::string(role) + ":1.0";
  e.labels = identity::Labels(
      {{"app", std::string(app)}, {"role", std::string(role)}, {"env", dev ? "dev" : "prod"}});
  e.addresses = {IpAddress::v4(kEndpointBase + static_cast<std::uint32_t>(i))};
  return e;
}

identity::Inventory inventory_of(const std::vector<identity::Endpoint>& master, std::size_t n) {
  identity::Inventory inv;
  inv.node.name = "bench-node";
  inv.node.addresses = {*IpAddress::parse("192.0.2.10")};
  inv.endpoints.assign(master.begin(), master.begin() + static_cast<std::ptrdiff_t>(n));
  return inv;
}

std::vector<Cidr> container_cidrs() {
  return {*Cidr::parse(kContainerCidr4), *Cidr::parse(kContainerCidr6)};
}

std::unique_ptr<compiler::Compilation> compile_policy(const std::string& yaml,
                                                      std::uint64_t generation) {
  policy::Diagnostics diags;
  std::optional<policy::Policy> p = policy::parse_policy(yaml, "bench-nft.yaml", diags);
  if (!p || diags.has_errors()) {
    std::ostringstream out;
    diags.print(out);
    throw Broken("the generated policy is invalid:\n" + out.str());
  }
  return std::make_unique<compiler::Compilation>(*p, generation);
}

// ---------------------------------------------------------------------------
// Measurement helpers

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Stats {
  std::size_t n = 0;
  double p50 = 0;
  double p99 = 0;
  double max = 0;
  double mean = 0;
};

Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {  // nearest rank
    const auto r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size(), std::max<std::size_t>(r, 1)) - 1];
  };
  s.n = v.size();
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  s.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

void progress(const std::string& line) { std::fprintf(stderr, "[%s] %s\n", kProg, line.c_str()); }

// `v` with `digits` decimals, for progress lines.
std::string fixed(double v, int digits) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%.*f", digits, v);
  return buf.data();
}

// `cut_connections`: NftBackend's default (true) deletes the conntrack
// entries a change denies, after the kernel committed it.
std::unique_ptr<nft::NftBackend> open_backend(bool cut_connections = true) {
  nft::NftBackend::Config config;
  config.cut_connections = cut_connections;
  auto opened = nft::NftBackend::open(config);
  if (auto* why = std::get_if<std::string>(&opened)) throw Broken(*why);
  return std::move(std::get<std::unique_ptr<nft::NftBackend>>(opened));
}

void must(const std::optional<dp::DataplaneError>& e, const std::string& what) {
  if (e) throw Broken(what + ": " + e->message);
}

// ---------------------------------------------------------------------------
// (a)-(c): tierwall

struct SizeResult {
  std::size_t endpoints = 0;
  double populate_ms = 0;         // NftBackend::apply, the whole call
  double populate_kernel_ms = 0;  // the batch's sendmsg (kernel validates + commits)
  std::size_t batch_bytes = 0;
  nft::KernelCounts counts;
  Stats add;         // update_endpoints of one new endpoint, cut_connections off: until the ACK
  Stats add_batch;   // of which: encode + send + ACK of the element batch
  Stats add_cut;     // update_endpoints as the agent configures it (cut_connections on):
                     // returns after the ACK and a conntrack dump
  Stats add_direct;  // the same add through NftSocket alone: elements, generation id,
                     // batch, ACK (no backend bookkeeping)
  double add_elements = 0;  // set elements per add (mean)
};

struct BigApply {
  std::size_t endpoints = 0;
  std::size_t policy_rules = 0;
  std::vector<double> runs_ms;
  double ms = 0;         // median of runs
  double kernel_ms = 0;  // sendmsg of the last run
  double plan_ms = 0;    // build_plan alone (part of ms)
  std::size_t batch_bytes = 0;
  std::size_t batch_messages = 0;
  nft::KernelCounts counts;
};

struct TierwallResults {
  std::vector<SizeResult> sizes;
  BigApply big;
  std::size_t policy_rules = 0;
};

void check_counts(nft::NftBackend& backend, const dp::RuleSet& rs, nft::KernelCounts& out,
                  const std::string& what) {
  const auto counts = backend.kernel_counts();
  if (!counts) throw Broken(what + ": cannot read kernel counts");
  const nft::KernelCounts want = nft::expected_counts(nft::build_plan(rs));
  if (!(*counts == want))
    throw Broken(what + ": kernel holds " + std::to_string(counts->rules) + " rules, " +
                 std::to_string(counts->sets) + " sets, " + std::to_string(counts->elements) +
                 " elements; the plan has " + std::to_string(want.rules) + ", " +
                 std::to_string(want.sets) + ", " + std::to_string(want.elements));
  out = *counts;
}

dp::EndpointChange change_for(const compiler::Compilation& comp, const identity::Endpoint& e,
                              dp::EndpointId id) {
  const compiler::EndpointBinding b = comp.bind(e);
  return dp::EndpointChange{id, false, e.addresses, b.tier, b.selectors};
}

TierwallResults run_tierwall(const RunPlan& plan, const std::vector<identity::Endpoint>& master,
                             const compiler::Compilation& comp, const compiler::Compilation& big) {
  TierwallResults r;
  r.policy_rules = comp.policy()->rule_count();
  auto backend = open_backend();     // as the agent runs it
  auto nocut = open_backend(false);  // stops at the commit
  for (std::size_t n : plan.sizes) {
    check_stop();
    SizeResult s;
    s.endpoints = n;
    const identity::Inventory inv = inventory_of(master, n);
    const dp::RuleSet rs{comp.policy(), comp.bind_all(inv, container_cidrs())};
    auto t0 = Clock::now();
    must(backend->apply(rs), "apply of " + std::to_string(n) + " endpoints");
    s.populate_ms = ms_since(t0);
    s.populate_kernel_ms = backend->socket().last_batch().send_ms;
    s.batch_bytes = backend->socket().last_batch().bytes;
    check_counts(*backend, rs, s.counts, "after the apply of " + std::to_string(n) + " endpoints");

    // Endpoints n.. are added: the first `adds` by the agent's backend, the
    // next by the one without connection cutting (after it re-applied the
    // same table), the last through the socket alone.
    auto add_through = [&](nft::NftBackend& b, std::size_t first, std::vector<double>& whole,
                           std::vector<double>* batch) {
      for (std::size_t k = 0; k < plan.adds; ++k) {
        check_stop();
        const auto id = static_cast<dp::EndpointId>(first + k);
        const dp::EndpointChange change = change_for(comp, master[first + k], id);
        const auto start = Clock::now();
        must(b.update_endpoints(std::span(&change, 1)), "endpoint add");
        whole.push_back(ms_since(start));
        if (batch != nullptr) batch->push_back(b.socket().last_batch().total_ms);
      }
    };
    std::vector<double> with_cut;
    add_through(*backend, n, with_cut, nullptr);
    s.add_cut = stats_of(with_cut);
    must(nocut->apply(rs), "apply of " + std::to_string(n) + " endpoints");
    std::vector<double> whole;
    std::vector<double> batch;
    add_through(*nocut, n + plan.adds, whole, &batch);
    s.add = stats_of(whole);
    s.add_batch = stats_of(batch);

    std::vector<double> direct;
    for (std::size_t k = 0; k < plan.adds; ++k) {
      check_stop();
      const auto id = static_cast<dp::EndpointId>(n + 2 * plan.adds + k);
      const dp::EndpointChange change = change_for(comp, master[id], id);
      t0 = Clock::now();
      dp::EndpointTable one;
      one.upsert(id, change.addresses, change.tier, change.selectors);
      const std::vector<nft::Element> elements = nft::endpoint_elements(*comp.policy(), one, id);
      nft::NftSocket& sock = nocut->socket();
      const auto genid = sock.get_generation();
      if (!genid) throw Broken("cannot read the generation id");
      if (auto e = sock.apply_elements(nocut->table(), elements, {}, *genid))
        throw Broken("direct add: " + e->message);
      direct.push_back(ms_since(t0));
    }
    s.add_direct = stats_of(direct);
    // The adds must have landed, as set elements only.
    nft::KernelCounts after;
    if (auto c = backend->kernel_counts()) after = *c;
    if (after.rules != s.counts.rules || after.sets != s.counts.sets ||
        after.elements <= s.counts.elements)
      throw Broken("endpoint adds at " + std::to_string(n) +
                   " changed rules/sets or added no elements");
    s.add_elements = static_cast<double>(after.elements - s.counts.elements) /
                     static_cast<double>(std::max<std::size_t>(2 * plan.adds, 1));
    progress("tierwall " + std::to_string(n) + " endpoints: apply " + fixed(s.populate_ms, 1) +
             " ms, add p50 " + fixed(s.add.p50, 3) + " ms, p99 " + fixed(s.add.p99, 3) + " ms");
    r.sizes.push_back(s);
  }

  // (b) the largest table under the 1,000-flow policy.
  const std::size_t n = plan.sizes.back();
  const identity::Inventory inv = inventory_of(master, n);
  const dp::RuleSet rs{big.policy(), big.bind_all(inv, container_cidrs())};
  r.big.endpoints = n;
  r.big.policy_rules = big.policy()->rule_count();
  for (std::size_t i = 0; i < plan.big_apply_runs; ++i) {
    check_stop();
    const auto t0 = Clock::now();
    must(backend->apply(rs), "apply of the 1,000-flow policy");
    r.big.runs_ms.push_back(ms_since(t0));
    r.big.kernel_ms = backend->socket().last_batch().send_ms;
    r.big.batch_bytes = backend->socket().last_batch().bytes;
    r.big.batch_messages = backend->socket().last_batch().messages;
  }
  r.big.ms = median(r.big.runs_ms);
  {
    const auto t0 = Clock::now();
    const nft::Plan p = nft::build_plan(rs);
    r.big.plan_ms = ms_since(t0);
  }
  check_counts(*backend, rs, r.big.counts, "after the 1,000-flow apply");
  progress("tierwall 1,000-flow policy at " + std::to_string(n) + " endpoints: apply " +
           fixed(r.big.ms, 1) + " ms");
  must(backend->flush(), "flush");
  return r;
}

// ---------------------------------------------------------------------------
// (d): the naive baseline — one rule per allowed (source, destination, port)
//
//   table inet naive { chain forward { type filter hook forward priority -10;
//     ip saddr A ip daddr B tcp dport P accept   # once per allowed pair+port
//   } }
//
// Plan's Match kinds have no single-address comparison (tierwall never needs
// one), so these rules are encoded here with libnftnl, exactly as `nft` would
// encode them, and sent with NftSocket::send_batch — the same transport,
// one batch, every message acknowledged.

constexpr const char* kNaiveTable = "naive";
constexpr const char* kNaiveChain = "forward";

struct PairRule {
  std::uint32_t src = 0;  // host order
  std::uint32_t dst = 0;
  std::uint16_t port = 0;
};

class NaiveBatch {
 public:
  NaiveBatch(std::uint32_t first_seq, std::size_t expected_rules) : seq_(first_seq) {
    buf_.reserve(expected_rules * 320 + 64 * 1024);
    out_.begin_seq = seq_++;
    put(nftnl_batch_begin(reserve(), out_.begin_seq));
  }

  void replace_table() {
    for (int type : {NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWTABLE}) {
      std::unique_ptr<nftnl_table, decltype(&nftnl_table_free)> t(nftnl_table_alloc(),
                                                                  nftnl_table_free);
      nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, kNaiveTable);
      nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
      nlmsghdr* nlh = header(type, type == NFT_MSG_DELTABLE ? 0 : NLM_F_CREATE,
                             {nft::BatchObject::Kind::Table, kNaiveTable, {}, 0, 0});
      nftnl_table_nlmsg_build_payload(nlh, t.get());
      put(nlh);
    }
    std::unique_ptr<nftnl_chain, decltype(&nftnl_chain_free)> c(nftnl_chain_alloc(),
                                                                nftnl_chain_free);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kNaiveTable);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, kNaiveChain);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_FORWARD);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, -10);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    nlmsghdr* nlh = header(NFT_MSG_NEWCHAIN, NLM_F_CREATE,
                           {nft::BatchObject::Kind::Chain, kNaiveChain, {}, 0, 0});
    nftnl_chain_nlmsg_build_payload(nlh, c.get());
    put(nlh);
  }

  // `ip saddr S ip daddr D tcp dport P accept`, appended to the chain.
  void rule(const PairRule& p) {
    std::unique_ptr<nftnl_rule, decltype(&nftnl_rule_free)> r(nftnl_rule_alloc(), nftnl_rule_free);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kNaiveTable);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, kNaiveChain);
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    meta(r.get(), NFT_META_NFPROTO);
    cmp_u8(r.get(), NFPROTO_IPV4);
    payload(r.get(), NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
    const std::uint32_t s = htonl(p.src);
    cmp(r.get(), &s, 4);
    payload(r.get(), NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
    const std::uint32_t d = htonl(p.dst);
    cmp(r.get(), &d, 4);
    meta(r.get(), NFT_META_L4PROTO);
    cmp_u8(r.get(), IPPROTO_TCP);
    payload(r.get(), NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    const std::uint16_t port = htons(p.port);
    cmp(r.get(), &port, 2);
    nftnl_expr* v = add(r.get(), "immediate");
    nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
    nlmsghdr* nlh = header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
                           {nft::BatchObject::Kind::Rule, kNaiveChain, kNaiveChain, ++rules_, 0});
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    put(nlh);
  }

  nft::EncodedBatch finish() {
    out_.end_seq = seq_++;
    put(nftnl_batch_end(reserve(), out_.end_seq));
    buf_.resize(used_);
    out_.bytes = std::move(buf_);
    return std::move(out_);
  }

 private:
  static nftnl_expr* add(nftnl_rule* r, const char* name) {
    nftnl_expr* e = nftnl_expr_alloc(name);
    if (e == nullptr) throw std::bad_alloc();
    nftnl_rule_add_expr(r, e);
    return e;
  }
  static void meta(nftnl_rule* r, std::uint32_t key) {
    nftnl_expr* e = add(r, "meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  }
  static void cmp(nftnl_rule* r, const void* data, std::uint32_t len) {
    nftnl_expr* e = add(r, "cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  }
  static void cmp_u8(nftnl_rule* r, std::uint8_t v) { cmp(r, &v, 1); }
  static void payload(nftnl_rule* r, std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
    nftnl_expr* e = add(r, "payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  }

  static constexpr std::size_t kMaxMessage = 4096;
  char* reserve() {
    if (buf_.size() < used_ + kMaxMessage)
      buf_.resize(std::max(buf_.size() * 2, used_ + kMaxMessage));
    std::memset(buf_.data() + used_, 0, kMaxMessage);
    return reinterpret_cast<char*>(buf_.data() + used_);
  }
  nlmsghdr* header(int type, int flags, nft::BatchObject object) {
    const std::uint32_t seq = seq_++;
    out_.objects.emplace(seq, std::move(object));
    return nftnl_nlmsg_build_hdr(reserve(), static_cast<std::uint16_t>(type), NFPROTO_INET,
                                 static_cast<std::uint16_t>(flags | NLM_F_ACK), seq);
  }
  void put(const nlmsghdr* nlh) {
    used_ += NLMSG_ALIGN(nlh->nlmsg_len);
    out_.largest_message = std::max<std::size_t>(out_.largest_message, nlh->nlmsg_len);
  }

  std::vector<std::uint8_t> buf_;
  std::size_t used_ = 0;
  std::uint32_t seq_;
  std::size_t rules_ = 0;
  nft::EncodedBatch out_;
};

// Endpoints grouped by (tier, selector memberships): members of one group
// get the same decision, so the pair table is computed per group pair.
class PairOracle {
 public:
  PairOracle(const dp::CompiledPolicy& policy, std::vector<std::uint16_t> ports)
      : policy_(policy), ports_(std::move(ports)) {}

  // Returns the group of an endpoint (created on first sight).
  std::size_t group_of(dp::TierId tier, const std::vector<dp::SelectorId>& selectors) {
    const auto key = std::make_pair(tier, selectors);
    if (auto it = index_.find(key); it != index_.end()) return it->second;
    const std::size_t g = groups_.size();
    groups_.push_back(Group{tier, selectors, {}});
    index_.emplace(key, g);
    // Decisions against every group, both directions (and itself).
    allowed_.resize(groups_.size());
    for (auto& row : allowed_) row.resize(groups_.size());
    for (std::size_t o = 0; o < groups_.size(); ++o) {
      allowed_[g][o] = decide_ports(g, o);
      allowed_[o][g] = decide_ports(o, g);
    }
    return g;
  }

  void add_member(std::size_t group, std::uint32_t address) {
    groups_[group].members.push_back(address);
  }

  // Rules all current members need, in group order; at most `cap`. `total`
  // receives the uncapped count.
  std::vector<PairRule> all_rules(std::size_t cap, std::size_t& total) const {
    std::vector<PairRule> out;
    total = 0;
    for (std::size_t a = 0; a < groups_.size(); ++a) {
      for (std::size_t b = 0; b < groups_.size(); ++b) {
        const auto& ports = allowed_[a][b];
        if (ports.empty()) continue;
        const std::size_t na = groups_[a].members.size();
        const std::size_t nb = groups_[b].members.size();
        total += (a == b ? na * (nb - std::min<std::size_t>(nb, 1)) : na * nb) * ports.size();
        for (std::uint32_t s : groups_[a].members) {
          for (std::uint32_t d : groups_[b].members) {
            if (s == d) continue;
            for (std::uint16_t p : ports) {
              if (out.size() >= cap) break;
              out.push_back(PairRule{s, d, p});
            }
          }
          if (out.size() >= cap) break;
        }
      }
    }
    return out;
  }

  // The rules one new endpoint (not yet a member of `group`) brings.
  std::vector<PairRule> rules_for_new(std::size_t group, std::uint32_t address) const {
    std::vector<PairRule> out;
    for (std::size_t o = 0; o < groups_.size(); ++o) {
      for (std::uint16_t p : allowed_[group][o])
        for (std::uint32_t d : groups_[o].members) out.push_back(PairRule{address, d, p});
      for (std::uint16_t p : allowed_[o][group])
        for (std::uint32_t s : groups_[o].members) out.push_back(PairRule{s, address, p});
    }
    return out;
  }

  [[nodiscard]] std::size_t groups() const { return groups_.size(); }

 private:
  struct Group {
    dp::TierId tier;
    std::vector<dp::SelectorId> selectors;
    std::vector<std::uint32_t> members;  // IPv4, host order
  };

  std::vector<std::uint16_t> decide_ports(std::size_t a, std::size_t b) const {
    dp::ResolvedPeer src;
    src.entity = dp::PeerMatch::Entity::Endpoint;
    src.endpoint = 0xfffffff0U;  // two distinct endpoints: never `self`
    src.tier = groups_[a].tier;
    src.selectors = groups_[a].selectors;
    dp::ResolvedPeer dst = src;
    dst.endpoint = 0xfffffff1U;
    dst.tier = groups_[b].tier;
    dst.selectors = groups_[b].selectors;
    std::vector<std::uint16_t> out;
    for (std::uint16_t p : ports_) {
      if (dp::decide(policy_, src, dst, tierwall::proto::kTcp, p).verdict != dp::Verdict::Deny)
        out.push_back(p);
    }
    return out;
  }

  const dp::CompiledPolicy& policy_;
  std::vector<std::uint16_t> ports_;
  std::vector<Group> groups_;
  std::map<std::pair<dp::TierId, std::vector<dp::SelectorId>>, std::size_t> index_;
  std::vector<std::vector<std::vector<std::uint16_t>>> allowed_;  // [src group][dst group]
};

struct NaiveResult {
  std::size_t endpoints = 0;
  std::size_t pairs_total = 0;    // rules the naive ruleset needs
  std::size_t rules_applied = 0;  // rules installed (capped)
  bool capped = false;
  double apply_ms = 0;
  double apply_kernel_ms = 0;
  std::size_t apply_bytes = 0;
  std::size_t kernel_rules = 0;  // as dumped back
  Stats add;                     // one endpoint add: its pair rules appended
  Stats add_kernel;              // of which the batch's sendmsg (kernel)
  double add_rules = 0;          // rules per add (mean)
};

// The single-port tcp entries the flows use (every flow of the generated
// policy has exactly one tcp port).
std::vector<std::uint16_t> flow_ports(const dp::CompiledPolicy& p) {
  std::vector<std::uint16_t> out;
  for (const auto& r : p.flows)
    for (const auto& pm : r.ports)
      if (!pm.any && pm.protocol == tierwall::proto::kTcp && pm.lo == pm.hi) out.push_back(pm.lo);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<NaiveResult> run_naive(const RunPlan& plan,
                                   const std::vector<identity::Endpoint>& master,
                                   const compiler::Compilation& comp) {
  std::vector<NaiveResult> out;
  std::string error;
  auto sock = nft::NftSocket::open(&error);
  if (!sock) throw Broken("naive: " + error);
  for (std::size_t n : plan.naive_sizes) {
    check_stop();
    NaiveResult r;
    r.endpoints = n;
    PairOracle oracle(*comp.policy(), flow_ports(*comp.policy()));
    for (std::size_t i = 0; i < n; ++i) {
      const compiler::EndpointBinding b = comp.bind(master[i]);
      oracle.add_member(oracle.group_of(b.tier, b.selectors),
                        kEndpointBase + static_cast<std::uint32_t>(i));
    }
    const std::vector<PairRule> rules = oracle.all_rules(kNaiveRuleCap, r.pairs_total);
    r.rules_applied = rules.size();
    r.capped = rules.size() < r.pairs_total;
    progress("naive " + std::to_string(n) + " endpoints: " + std::to_string(r.pairs_total) +
             " pair rules" +
             (r.capped ? " (installing the first " + std::to_string(rules.size()) + ")" : ""));

    auto t0 = Clock::now();
    {
      NaiveBatch batch(sock->next_seq(0), rules.size());
      batch.replace_table();
      for (const PairRule& p : rules) batch.rule(p);
      if (auto e = sock->send_batch(batch.finish())) throw Broken("naive apply: " + e->message);
    }
    r.apply_ms = ms_since(t0);
    r.apply_kernel_ms = sock->last_batch().send_ms;
    r.apply_bytes = sock->last_batch().bytes;
    const auto counts = sock->kernel_counts(kNaiveTable);
    if (!counts || counts->rules != rules.size())
      throw Broken("naive: the kernel does not hold the rules sent");
    r.kernel_rules = counts->rules;

    std::vector<double> samples;
    std::vector<double> kernel;
    double rules_added = 0;
    for (std::size_t k = 0; k < plan.naive_adds; ++k) {
      check_stop();
      const identity::Endpoint& e = master[n + k];
      const compiler::EndpointBinding b = comp.bind(e);
      const std::size_t g = oracle.group_of(b.tier, b.selectors);  // decisions cached, untimed
      const auto address = kEndpointBase + static_cast<std::uint32_t>(n + k);
      t0 = Clock::now();
      const std::vector<PairRule> add = oracle.rules_for_new(g, address);
      NaiveBatch batch(sock->next_seq(0), add.size());
      for (const PairRule& p : add) batch.rule(p);
      if (!add.empty())
        if (auto err = sock->send_batch(batch.finish())) throw Broken("naive add: " + err->message);
      samples.push_back(ms_since(t0));
      kernel.push_back(add.empty() ? 0.0 : sock->last_batch().send_ms);
      rules_added += static_cast<double>(add.size());
      oracle.add_member(g, address);
    }
    r.add = stats_of(samples);
    r.add_kernel = stats_of(kernel);
    r.add_rules = rules_added / static_cast<double>(std::max<std::size_t>(plan.naive_adds, 1));
    progress("naive " + std::to_string(n) + " endpoints: apply " + fixed(r.apply_ms, 1) +
             " ms, add p50 " + fixed(r.add.p50, 3) + " ms (" + fixed(r.add_rules, 0) +
             " rules each)");
    out.push_back(r);
  }
  if (auto e = sock->flush(kNaiveTable)) throw Broken("naive flush: " + e->message);
  return out;
}

// ---------------------------------------------------------------------------
// (e): forwarding throughput, client ns -> node (routed, forward hook) ->
// server ns, with the tierwall ruleset (10k endpoints + the two) vs. none.

struct ThroughputResult {
  bool ran = false;
  std::string skipped;  // why not, when !ran
  std::size_t endpoints = 0;
  std::vector<double> none_gbps;
  std::vector<double> ct_gbps;  // a table with only `ct state established,related accept`
  std::vector<double> tierwall_gbps;
  double none_median = 0;
  double ct_median = 0;
  double tierwall_median = 0;
  double ratio = 0;                // tierwall / none
  double ct_ratio = 0;             // tierwall / conntrack only
  std::uint64_t flow_packets = 0;  // counted by the iperf flow's rule
};

std::optional<std::string> iperf3_missing() {
  const ts::CommandResult r = ts::run_argv({"iperf3", "--version"});
  if (r.ok()) return std::nullopt;
  return "iperf3 is not installed (Debian: apt-get install iperf3); skipping the throughput "
         "figures";
}

double iperf_gbps(const ts::NetNs& client, const std::string& server, int seconds) {
  const std::string cmd = "iperf3 -c " + server + " -p " + std::to_string(kIperfPort) + " -t " +
                          std::to_string(seconds) + " -J";
  std::string last;
  for (int attempt = 0; attempt < 5; ++attempt) {  // the server may still be starting
    check_stop();
    const ts::CommandResult r = client.run(cmd, ts::Millis{(seconds + 20) * 1000});
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (r.ok() && !j.is_discarded() && j.contains("end") && j["end"].contains("sum_received"))
      return j["end"]["sum_received"]["bits_per_second"].get<double>() / 1e9;
    last = !j.is_discarded() && j.contains("error") ? j["error"].get<std::string>()
                                                    : r.err + r.out.substr(0, 300);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  throw Broken("iperf3 failed: " + last);
}

ThroughputResult run_throughput(const RunPlan& plan, const std::vector<identity::Endpoint>& master,
                                const compiler::Compilation& comp) {
  ThroughputResult r;
  if (auto why = iperf3_missing()) {
    r.skipped = *why;
    return r;
  }
  ts::BridgeLabOptions lab_options;
  lab_options.br0_containers = 1;
  lab_options.br1_containers = 1;
  ts::BridgeLab lab(lab_options);
  auto& client = lab.br0_containers.front();
  auto& server = lab.br1_containers.front();

  identity::Inventory inv = inventory_of(master, plan.throughput_endpoints);
  auto lab_endpoint = [](std::string name, std::string app, std::string role,
                         const std::string& ip) {
    identity::Endpoint e;
    e.name = std::move(name);
    e.id = e.name;
    e.image = "reg.example/bench/iperf3:1";
    e.labels =
        identity::Labels({{"app", std::move(app)}, {"role", std::move(role)}, {"env", "prod"}});
    e.addresses = {*IpAddress::parse(ip)};
    return e;
  };
  inv.endpoints.push_back(lab_endpoint("loadgen", "shop", "loadgen", client.v4));
  inv.endpoints.push_back(lab_endpoint("sink", "pay", "sink", server.v4));
  r.endpoints = inv.endpoints.size();
  const dp::RuleSet rs{comp.policy(), comp.bind_all(inv, container_cidrs())};
  const dp::Rule* flow = comp.policy()->find_rule("iperf");
  if (flow == nullptr) throw Broken("the generated policy lacks the iperf flow");
  {  // The policy must allow exactly this flow.
    const dp::Connection c{*IpAddress::parse(client.v4), *IpAddress::parse(server.v4),
                           tierwall::proto::kTcp, kIperfPort};
    const dp::Decision d = dp::decide(rs, c);
    if (d.verdict != dp::Verdict::Allow || d.rule != flow)
      throw Broken("the policy does not allow the iperf flow");
  }

  // Conntrack alone costs something: this table only enables it (the
  // first rule of tierwall's forward chain), to tell its cost from ours.
  nft::Plan ct_only;
  ct_only.table = "ctonly";
  ct_only.chains = {nft::ChainDef{"forward", nft::Hook::Forward, -10}};
  nft::Match est;
  est.kind = nft::Match::Kind::CtStateEstRel;
  ct_only.rules = {
      nft::RuleDef{"forward", {est}, {nft::Action{nft::Action::Kind::Accept, {}, 0}}, 0}};

  auto backend = ts::in_netns(lab.node, [] { return open_backend(); });
  server.ns.spawn("exec iperf3 -s -B " + server.v4 + " -p " + std::to_string(kIperfPort));
  // Alternate the configurations so that drift hits all alike.
  for (int i = 0; i < plan.iperf_runs; ++i) {
    ts::in_netns(lab.node, [&] { must(backend->flush(), "flush"); });
    r.none_gbps.push_back(iperf_gbps(client.ns, server.v4, plan.iperf_seconds));
    ts::in_netns(lab.node, [&] {
      if (auto e = backend->socket().apply_plan(ct_only, std::nullopt))
        throw Broken("ct-only table: " + e->message);
    });
    r.ct_gbps.push_back(iperf_gbps(client.ns, server.v4, plan.iperf_seconds));
    ts::in_netns(lab.node, [&] {
      if (auto e = backend->socket().flush(ct_only.table))
        throw Broken("ct-only flush: " + e->message);
      must(backend->apply(rs), "apply in the node");
    });
    r.tierwall_gbps.push_back(iperf_gbps(client.ns, server.v4, plan.iperf_seconds));
    const auto counters = ts::in_netns(lab.node, [&] { return backend->rule_counters(); });
    if (auto it = counters.find(flow->id); it != counters.end()) r.flow_packets += it->second.first;
    progress("throughput run " + std::to_string(i + 1) + ": none " + fixed(r.none_gbps.back(), 2) +
             " Gbit/s, conntrack only " + fixed(r.ct_gbps.back(), 2) + " Gbit/s, tierwall " +
             fixed(r.tierwall_gbps.back(), 2) + " Gbit/s");
  }
  // Every tierwall run's connections were accepted by the iperf flow's rule
  // (its counter sees the first packet of each connection).
  if (r.flow_packets == 0)
    throw Broken("the iperf flow's counter stayed at 0: the ruleset did not decide the flow");
  ts::in_netns(lab.node, [&] { must(backend->flush(), "flush"); });
  backend.reset();
  r.none_median = median(r.none_gbps);
  r.ct_median = median(r.ct_gbps);
  r.tierwall_median = median(r.tierwall_gbps);
  r.ratio = r.none_median > 0 ? r.tierwall_median / r.none_median : 0;
  r.ct_ratio = r.ct_median > 0 ? r.tierwall_median / r.ct_median : 0;
  r.ran = true;
  return r;
}

// ---------------------------------------------------------------------------
// Report

struct Results {
  Options options;
  RunPlan plan;
  TierwallResults tw;
  std::vector<NaiveResult> naive;
  ThroughputResult tput;
  bool flat = true;
  double total_s = 0;

  // The naive/tierwall ratio of p50 update latency at the largest size the
  // naive baseline ran; capped when that table had to be capped.
  [[nodiscard]] const NaiveResult* ratio_naive() const {
    return naive.empty() ? nullptr : &naive.back();
  }
  [[nodiscard]] const SizeResult* size(std::size_t n) const {
    for (const auto& s : tw.sizes)
      if (s.endpoints == n) return &s;
    return nullptr;
  }
  [[nodiscard]] double naive_ratio() const {
    const NaiveResult* nr = ratio_naive();
    const SizeResult* s = nr != nullptr ? size(nr->endpoints) : nullptr;
    if (s == nullptr || s->add.p50 <= 0) return 0;
    return nr->add.p50 / s->add.p50;
  }
  // The same against tierwall's commit alone (NftSocket path): kernel work
  // against kernel work.
  [[nodiscard]] double naive_ratio_direct() const {
    const NaiveResult* nr = ratio_naive();
    const SizeResult* s = nr != nullptr ? size(nr->endpoints) : nullptr;
    if (s == nullptr || s->add_direct.p50 <= 0) return 0;
    return nr->add.p50 / s->add_direct.p50;
  }
};

const char* verdict(bool ok) { return ok ? "ok" : "MISSED"; }

void print_table(const Results& r) {
  const auto& tw = r.tw;
  const SizeResult& last = tw.sizes.back();
  std::printf(
      "%s: policy of %d tiers, %zu policy rules (%d flows + iperf flow, %d denies); "
      "1 IPv4 address per endpoint; %zu adds per size\n\n",
      kProg, kTiers, tw.policy_rules, kFlows, kDenies, r.plan.adds);
  std::printf("(a) tierwall: one endpoint add -> committed in the kernel (ms)\n");
  std::printf("%10s %9s %9s %9s %10s %10s %10s %10s\n", "endpoints", "add p50", "add p99",
              "add max", "batch p99", "agent p50", "agent p99", "direct p99");
  for (const auto& s : tw.sizes) {
    std::printf("%10zu %9.3f %9.3f %9.3f %10.3f %10.3f %10.3f %10.3f\n", s.endpoints, s.add.p50,
                s.add.p99, s.add.max, s.add_batch.p99, s.add_cut.p50, s.add_cut.p99,
                s.add_direct.p99);
  }
  std::printf(
      "  add    NftBackend::update_endpoints (cut_connections off), until the ACK\n"
      "  batch  of which the element batch: encode, send, ACK\n"
      "  agent  update_endpoints as the agent runs it (cut_connections on): the call also\n"
      "         dumps conntrack after the commit\n"
      "  direct the same add through NftSocket alone: elements, generation id, batch, ACK\n"
      "  %.1f set elements per endpoint add\n",
      last.add_elements);
  std::printf("  %-52s %9.3f ms %9.3f ms %8s\n",
              ("endpoint add p99 at " + std::to_string(last.endpoints)).c_str(), last.add.p99,
              kTargetAddP99Ms, verdict(last.add.p99 <= kTargetAddP99Ms));

  std::printf("\n(c) kernel objects after a full apply (NftBackend::apply, default config)\n");
  std::printf("%10s %10s %10s %7s %7s %5s %9s\n", "endpoints", "apply ms", "kernel ms", "rules",
              "chains", "sets", "elements");
  for (const auto& s : tw.sizes) {
    std::printf("%10zu %10.1f %10.1f %7zu %7zu %5zu %9zu\n", s.endpoints, s.populate_ms,
                s.populate_kernel_ms, s.counts.rules, s.counts.chains, s.counts.sets,
                s.counts.elements);
  }
  std::printf("  kernel object counts %s from %zu to %zu endpoints\n", r.flat ? "flat" : "NOT FLAT",
              tw.sizes.front().endpoints, last.endpoints);

  std::printf(
      "\n(b) full apply, %zu endpoints, %zu policy rules (%zu nft rules, %zu sets, %zu elements)\n",
      tw.big.endpoints, tw.big.policy_rules, tw.big.counts.rules, tw.big.counts.sets,
      tw.big.counts.elements);
  std::string runs;
  for (double v : tw.big.runs_ms)
    runs += (runs.empty() ? "" : ", ") + std::to_string(static_cast<int>(v));
  std::printf("  %-52s %9.1f ms %9.0f ms %8s\n", "NftBackend::apply (median)", tw.big.ms,
              kTargetFullApplyMs, verdict(tw.big.ms <= kTargetFullApplyMs));
  std::printf("  runs: %s ms; build_plan %.1f ms; batch %.1f MiB in %zu messages, kernel %.1f ms\n",
              runs.c_str(), tw.big.plan_ms,
              static_cast<double>(tw.big.batch_bytes) / (1024.0 * 1024.0), tw.big.batch_messages,
              tw.big.kernel_ms);

  std::printf(
      "\n(d) naive baseline: one rule per allowed (src, dst, port); add = append one new "
      "endpoint's\n"
      "    pair rules in one batch until the ACK (ms), kern = of which the kernel (sendmsg)\n");
  std::printf("%10s %12s %10s %10s %10s %9s %9s %9s %12s\n", "endpoints", "pair rules", "installed",
              "apply ms", "add rules", "add p50", "add p99", "kern p50", "vs tierwall");
  for (const auto& n : r.naive) {
    const SizeResult* s = r.size(n.endpoints);
    const double ratio = s != nullptr && s->add.p50 > 0 ? n.add.p50 / s->add.p50 : 0;
    std::printf("%10zu %12zu %10zu %10.1f %10.0f %9.3f %9.3f %9.3f %11.0fx%s\n", n.endpoints,
                n.pairs_total, n.rules_applied, n.apply_ms, n.add_rules, n.add.p50, n.add.p99,
                n.add_kernel.p50, ratio, n.capped ? "  (capped: lower bound)" : "");
  }
  if (const NaiveResult* nr = r.ratio_naive()) {
    std::printf("  %-52s %9.0fx %9.0fx %8s\n",
                ("naive/tierwall add latency (p50) at " + std::to_string(nr->endpoints) +
                 (nr->capped ? ", lower bound" : ""))
                    .c_str(),
                r.naive_ratio(), kTargetNaiveRatio, verdict(r.naive_ratio() >= kTargetNaiveRatio));
    std::printf("  %-52s %9.0fx\n", "  the same against tierwall's commit alone (direct)",
                r.naive_ratio_direct());
  }

  std::printf(
      "\n(e) forwarding throughput, client ns -> node (forward hook) -> server ns, iperf3 TCP\n");
  if (!r.tput.ran) {
    std::printf("  skipped: %s\n", r.tput.skipped.c_str());
  } else {
    auto list = [](const std::vector<double>& v) {
      std::string s;
      char buf[32];
      for (double x : v) {
        std::snprintf(buf, sizeof buf, "%s%.2f", s.empty() ? "" : ", ", x);
        s += buf;
      }
      return s;
    };
    std::printf("  %-30s %6.2f Gbit/s (runs %s)\n", "no ruleset", r.tput.none_median,
                list(r.tput.none_gbps).c_str());
    std::printf("  %-30s %6.2f Gbit/s (runs %s)\n", "conntrack only", r.tput.ct_median,
                list(r.tput.ct_gbps).c_str());
    std::printf("  %-30s %6.2f Gbit/s (runs %s)\n",
                ("tierwall, " + std::to_string(r.tput.endpoints) + " endpoints").c_str(),
                r.tput.tierwall_median, list(r.tput.tierwall_gbps).c_str());
    std::printf("  %-52s %9.3f    %9.2f    %8s\n", "ratio tierwall / no ruleset (medians)",
                r.tput.ratio, kTargetThroughputRatio,
                verdict(r.tput.ratio >= kTargetThroughputRatio));
    std::printf("  %-52s %9.3f\n", "ratio tierwall / conntrack only (medians)", r.tput.ct_ratio);
  }
  std::printf("\ntotal run time %.0f s\n", r.total_s);
}

nlohmann::json stats_json(const Stats& s) {
  return {{"n", s.n}, {"p50_ms", s.p50}, {"p99_ms", s.p99}, {"max_ms", s.max}, {"mean_ms", s.mean}};
}

nlohmann::json counts_json(const nft::KernelCounts& c) {
  return {{"tables", c.tables},
          {"chains", c.chains},
          {"rules", c.rules},
          {"sets", c.sets},
          {"elements", c.elements}};
}

nlohmann::json to_json(const Results& r) {
  const auto& tw = r.tw;
  const SizeResult& last = tw.sizes.back();
  const SizeResult& first = tw.sizes.front();
  nlohmann::json sizes = nlohmann::json::array();
  for (const auto& s : tw.sizes) {
    sizes.push_back({{"endpoints", s.endpoints},
                     {"apply_ms", s.populate_ms},
                     {"apply_kernel_ms", s.populate_kernel_ms},
                     {"apply_batch_bytes", s.batch_bytes},
                     {"add", stats_json(s.add)},
                     {"add_batch", stats_json(s.add_batch)},
                     {"add_direct", stats_json(s.add_direct)},
                     {"add_agent", stats_json(s.add_cut)},
                     {"add_elements_mean", s.add_elements},
                     {"kernel", counts_json(s.counts)}});
  }
  nlohmann::json naive = nlohmann::json::array();
  for (const auto& n : r.naive) {
    naive.push_back({{"endpoints", n.endpoints},
                     {"pair_rules", n.pairs_total},
                     {"rules_installed", n.rules_applied},
                     {"capped", n.capped},
                     {"apply_ms", n.apply_ms},
                     {"apply_kernel_ms", n.apply_kernel_ms},
                     {"apply_batch_bytes", n.apply_bytes},
                     {"add_rules_mean", n.add_rules},
                     {"add", stats_json(n.add)},
                     {"add_kernel", stats_json(n.add_kernel)}});
  }
  const NaiveResult* nr = r.ratio_naive();
  nlohmann::json j{
      {"endpoints", last.endpoints},
      {"endpoint_add_p50_ms", last.add.p50},
      {"endpoint_add_p99_ms", last.add.p99},
      {"endpoint_add_batch_p99_ms", last.add_batch.p99},
      {"endpoint_add_direct_p99_ms", last.add_direct.p99},
      {"endpoint_add_agent_p99_ms", last.add_cut.p99},
      {"full_apply_ms", tw.big.ms},
      {"full_apply_runs_ms", tw.big.runs_ms},
      {"full_apply_kernel_ms", tw.big.kernel_ms},
      {"full_apply_endpoints", tw.big.endpoints},
      {"full_apply_policy_rules", tw.big.policy_rules},
      {"full_apply_kernel", counts_json(tw.big.counts)},
      {"kernel_rules_at_100",
       first.endpoints == 100 ? nlohmann::json(first.counts.rules) : nlohmann::json()},
      {"kernel_rules_at_max", last.counts.rules},
      {"kernel_counts_flat", r.flat},
      {"naive_update_ratio", nr != nullptr ? nlohmann::json(r.naive_ratio()) : nlohmann::json()},
      {"naive_update_ratio_vs_direct",
       nr != nullptr ? nlohmann::json(r.naive_ratio_direct()) : nlohmann::json()},
      {"naive_update_ratio_endpoints",
       nr != nullptr ? nlohmann::json(nr->endpoints) : nlohmann::json()},
      {"naive_update_ratio_lower_bound", nr != nullptr && nr->capped},
      {"forward_throughput_ratio", r.tput.ran ? nlohmann::json(r.tput.ratio) : nlohmann::json()},
      {"forward_gbps_none", r.tput.ran ? nlohmann::json(r.tput.none_median) : nlohmann::json()},
      {"forward_gbps_tierwall",
       r.tput.ran ? nlohmann::json(r.tput.tierwall_median) : nlohmann::json()},
      {"forward_gbps_conntrack_only",
       r.tput.ran ? nlohmann::json(r.tput.ct_median) : nlohmann::json()},
      {"forward_throughput_ratio_vs_conntrack",
       r.tput.ran ? nlohmann::json(r.tput.ct_ratio) : nlohmann::json()},
      {"forward_runs_gbps", r.tput.ran ? nlohmann::json{{"none", r.tput.none_gbps},
                                                        {"conntrack_only", r.tput.ct_gbps},
                                                        {"tierwall", r.tput.tierwall_gbps}}
                                       : nlohmann::json()},
      {"forward_endpoints", r.tput.endpoints},
      {"forward_skipped", r.tput.ran ? nlohmann::json() : nlohmann::json(r.tput.skipped)},
      {"policy_rules", tw.policy_rules},
      {"sizes", sizes},
      {"naive", naive},
      {"quick", r.options.quick},
      {"seed", r.options.seed},
      {"total_s", r.total_s},
  };
  return j;
}

bool counts_flat(const TierwallResults& tw) {
  for (const auto& s : tw.sizes) {
    const auto& f = tw.sizes.front().counts;
    if (s.counts.rules != f.rules || s.counts.chains != f.chains || s.counts.sets != f.sets ||
        s.counts.tables != f.tables)
      return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  if (auto why = ts::netns_unavailable_reason()) {
    std::fprintf(stderr, "%s: cannot run here: %s\n", kProg, why->c_str());
    return kExitSkip;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const auto start = Clock::now();

  Results r;
  r.options = opt;
  r.plan = plan_for(opt);
  try {
    const auto comp = compile_policy(generate_policy(opt.seed, kFlows), 1);
    const auto big = compile_policy(generate_policy(opt.seed + 1, kBigFlows), 2);
    // Endpoints 0..max-1 populate the tables; the next ones are added.
    std::vector<identity::Endpoint> master;
    const std::size_t extra = std::max(3 * r.plan.adds, r.plan.naive_adds);
    master.reserve(r.plan.sizes.back() + extra);
    for (std::size_t i = 0; i < r.plan.sizes.back() + extra; ++i)
      master.push_back(make_endpoint(opt.seed, i));

    {
      ts::NetNs ns("bench");
      r.tw = ts::in_netns(ns, [&] { return run_tierwall(r.plan, master, *comp, *big); });
    }
    r.flat = counts_flat(r.tw);
    {
      ts::NetNs ns("naive");
      r.naive = ts::in_netns(ns, [&] { return run_naive(r.plan, master, *comp); });
    }
    r.tput = run_throughput(r.plan, master, *comp);
    if (!r.tput.ran) std::fprintf(stderr, "%s: %s\n", kProg, r.tput.skipped.c_str());
  } catch (const Interrupted&) {
    std::fprintf(stderr, "%s: interrupted; namespaces removed\n", kProg);
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProg, e.what());
    return 1;
  }
  r.total_s = ms_since(start) / 1000.0;

  if (opt.json) {
    std::cout << to_json(r).dump() << "\n";
  } else {
    print_table(r);
  }
  if (!r.flat) {
    std::fprintf(stderr, "%s: kernel rule/chain/set counts grew with the number of endpoints\n",
                 kProg);
    return 1;
  }
  return 0;
}
