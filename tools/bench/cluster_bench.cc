// tierwall-bench-cluster: cluster-mode figures of the real tierwalld, N
// nodes (network namespaces, each with its own agent and containers) on a
// three-member etcd in a hub namespace (tw_testsupport's ClusterLab):
//
//   - policy publish -> enforced on every node: `tierctl apply --store`
//     started -> the slowest node's `policy-applied` log line for that
//     digest (the agent logs it once the kernel committed the new
//     generation), over K publishes, p50/p99 (target p99 <= 200 ms);
//   - endpoint start on one node -> known on every other: a new container
//     in node-0's inventory file -> its address in the slowest other node's
//     ep4 set (polled with `nft list set` in each namespace, so the figure
//     includes up to one poll, about 5-15 ms), p50/p99;
//   - etcd keys and bytes per endpoint: the endpoints prefix read back
//     (key + value bytes / endpoints), plus the database growth per
//     endpoint written (compacted and defragmented before and after);
//   - agent memory: RSS per node, and RSS growth per remote endpoint when
//     R synthetic endpoints of a further node are written to etcd.
//
// Usage:
//   tierwall-bench-cluster [cluster] [--json] [--quick] [--nodes N] [--publishes K]
//                          [--starts S] [--remote R]
//   tierwall-bench cluster --json        (the dispatcher in the same directory)
// Needs root, network namespaces, etcd and etcdctl; exits 77 ("cannot run
// here") otherwise. Everything it makes (namespaces, agents, etcd, nft
// tables inside its namespaces, its directory) is removed on exit, also on
// failure or Ctrl-C. It never fails on a missed target.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bench_interrupt.h"
#include <nlohmann/json.hpp>

#include "tierwall/testsupport/cluster_lab.h"
#include "tierwall/testsupport/etcd_cluster.h"
#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/podman.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
namespace ts = tierwall::testsupport;
using nlohmann::json;
using tierwall_bench::check_stop;
using tierwall_bench::Interrupted;
using tierwall_bench::kExitSkip;
using tierwall_bench::on_signal;
using tierwall_bench::Unavailable;
using Clock = std::chrono::steady_clock;
using ts::Millis;

constexpr const char* kProg = "tierwall-bench-cluster";
constexpr double kTargetP99Ms = 200.0;
const std::string kEndpointsPrefix = "/tierwall/default/endpoints/";

struct Options {
  bool json = false;
  bool quick = false;
  int nodes = 3;
  int publishes = 50;
  int starts = 20;
  int remote = 500;
};

[[noreturn]] void usage(int rc) {
  std::fprintf(rc == 0 ? stdout : stderr,
               "usage: %s [cluster] [--json] [--quick] [--nodes N] [--publishes K] [--starts S] "
               "[--remote R]\n"
               "  --nodes N       nodes, each its own namespace and tierwalld (default 3, 1..40)\n"
               "  --publishes K   policy publishes timed (default 50; --quick 10)\n"
               "  --starts S      endpoint starts timed on node-0 (default 20; --quick 5)\n"
               "  --remote R      synthetic remote endpoints for the memory figure (default "
               "500; --quick 100)\n"
               "  --quick         the small counts above (about 30 s)\n"
               "  --json          one JSON object instead of the report\n",
               kProg);
  std::exit(rc);
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool publishes = false, starts = false, remote = false;
  int i = 1;
  if (argc > 1 && std::string_view(argv[1]) == "cluster") i = 2;
  for (; i < argc; ++i) {
    const std::string_view a(argv[i]);
    auto number = [&](int lo, int hi) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", kProg, argv[i]);
        usage(2);
      }
      const int v = std::atoi(argv[++i]);
      if (v < lo || v > hi) {
        std::fprintf(stderr, "%s: %s must be %d..%d\n", kProg, argv[i - 1], lo, hi);
        usage(2);
      }
      return v;
    };
    if (a == "--json") {
      o.json = true;
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--nodes") {
      o.nodes = number(2, 40);
    } else if (a == "--publishes") {
      o.publishes = number(2, 10000);
      publishes = true;
    } else if (a == "--starts") {
      o.starts = number(1, 150);
      starts = true;
    } else if (a == "--remote") {
      o.remote = number(10, 40000);
      remote = true;
    } else if (a == "-h" || a == "--help") {
      usage(0);
    } else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", kProg, argv[i]);
      usage(2);
    }
  }
  if (o.quick) {
    if (!publishes) o.publishes = 10;
    if (!starts) o.starts = 5;
    if (!remote) o.remote = 100;
  }
  return o;
}

// Polls `pred` every `step` until it holds or `timeout` passed.
bool wait_for(const std::function<bool()>& pred, Millis timeout, Millis step = Millis{5}) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    check_stop();
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

std::string binary(const char* env, const char* built, const char* name) {
  if (const char* e = std::getenv(env); e != nullptr && *e != '\0') return e;
  if (fs::exists(built)) return built;
  throw Unavailable(std::string(name) + " not found (build it, or set " + env + ")");
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string policy_text(int round) {
  return tierwall::testsupport::cluster_policy_text(
      "cluster-bench", "    - {name: round, from: {tier: web}, to: {tier: api}, ports: [tcp/" +
                           std::to_string(10000 + round) + "]}\n");
}

// VmRSS of `pid` in bytes (0 when unreadable).
long rss_bytes(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6) * 1024;
  }
  return 0;
}

std::size_t base64_decoded_size(const std::string& s) {
  std::size_t pad = 0;
  if (!s.empty() && s.back() == '=') ++pad;
  if (s.size() > 1 && s[s.size() - 2] == '=') ++pad;
  return s.size() / 4 * 3 - pad;
}

struct PrefixUsage {
  long keys = 0;
  long bytes = 0;  // key + value
};

PrefixUsage read_prefix(const ts::EtcdCluster& etcd, const std::string& prefix) {
  const auto r = etcd.etcdctl({"get", "--prefix", prefix, "-w", "json"});
  if (!r.ok()) throw std::runtime_error("etcdctl get failed: " + r.err);
  const json j = json::parse(r.out);
  PrefixUsage u;
  for (const auto& kv : j.value("kvs", json::array())) {
    ++u.keys;
    u.bytes += static_cast<long>(base64_decoded_size(kv.value("key", "")) +
                                 base64_decoded_size(kv.value("value", "")));
  }
  return u;
}

// The largest member's database size after compacting to the current
// revision and defragmenting every member.
long compacted_db_size(const ts::EtcdCluster& etcd) {
  auto st = etcd.etcdctl({"endpoint", "status", "-w", "json"});
  if (!st.ok()) throw std::runtime_error("etcdctl endpoint status failed: " + st.err);
  long revision = 0;
  for (const auto& m : json::parse(st.out)) {
    revision = std::max(revision, m["Status"]["header"].value("revision", 0L));
  }
  (void)etcd.etcdctl({"compact", std::to_string(revision), "--physical"});
  (void)etcd.etcdctl({"defrag"});
  st = etcd.etcdctl({"endpoint", "status", "-w", "json"});
  if (!st.ok()) throw std::runtime_error("etcdctl endpoint status failed: " + st.err);
  long size = 0;
  for (const auto& m : json::parse(st.out)) size = std::max(size, m["Status"].value("dbSize", 0L));
  return size;
}

struct Results {
  Options options;
  std::vector<double> publish_ms;    // per publish, slowest node
  std::vector<double> per_node_ms;   // per publish and node
  std::vector<double> apply_cli_ms;  // tierctl apply --store itself
  std::vector<double> start_ms;      // per endpoint start, slowest other node
  long endpoints = 0;
  PrefixUsage usage;
  double db_bytes_per_endpoint = 0;
  std::vector<long> rss_before;  // per node, before the synthetic endpoints
  std::vector<long> rss_after;
  double rss_bytes_per_remote_endpoint = 0;
  double remote_learned_ms = 0;  // all R synthetic endpoints in every node's status
  double total_s = 0;
};

void run(const Options& opt, const fs::path& dir, Results& r) {
  const std::string tierwalld = binary("TIERWALLD", TIERWALLD_BINARY, "tierwalld");
  const std::string tierctl = binary("TIERCTL", TIERCTL_BINARY, "tierctl");
  ts::ClusterLab lab({dir, tierwalld, tierctl, opt.nodes, 3});
  lab.build();
  for (auto& n : lab.nodes) {
    lab.add_container(*n, "web-" + std::to_string(n->index), "web", false);
    lab.add_container(*n, "db-" + std::to_string(n->index), "db", false);
  }
  lab.start_etcd();
  for (auto& n : lab.nodes) lab.start_agent(*n);

  // Every node applies the first publish and knows every container.
  const json first = lab.publish(policy_text(0));
  if (first.contains("error")) throw std::runtime_error("publish failed: " + first.dump());
  const std::string d0 = first.value("digest", "");
  for (auto& n : lab.nodes) {
    if (!wait_for([&] { return ts::ClusterLab::applied_at(*n, d0).has_value(); }, Millis{30'000},
                  Millis{50}) ||
        !wait_for([&] { return lab.knows_everything(*n); }, Millis{20'000}, Millis{50})) {
      throw std::runtime_error(n->name + " did not converge on the first publish");
    }
  }

  // 1. publish -> enforced on every node.
  for (int k = 1; k <= opt.publishes; ++k) {
    const auto wall0 = std::chrono::system_clock::now();
    const auto t0 = Clock::now();
    const json p = lab.publish(policy_text(k));
    r.apply_cli_ms.push_back(ms_since(t0));
    if (p.contains("error")) throw std::runtime_error("publish failed: " + p.dump());
    const std::string d = p.value("digest", "");
    double slowest = 0;
    for (auto& n : lab.nodes) {
      std::optional<std::chrono::system_clock::time_point> at;
      if (!wait_for([&] { return (at = ts::ClusterLab::applied_at(*n, d)).has_value(); },
                    Millis{15'000}, Millis{5})) {
        throw std::runtime_error(n->name + " did not apply publish " + std::to_string(k));
      }
      const double ms = std::chrono::duration<double, std::milli>(*at - wall0).count();
      r.per_node_ms.push_back(ms);
      slowest = std::max(slowest, ms);
    }
    r.publish_ms.push_back(slowest);
  }

  // 2. endpoint start on node-0 -> in every other node's ep4 set.
  ts::ClusterNode& origin = *lab.nodes[0];
  for (int s = 0; s < opt.starts; ++s) {
    check_stop();
    auto& c = lab.add_container(origin, "api-0-" + std::to_string(s), "api", false);
    const auto t0 = Clock::now();
    lab.write_inventory(origin);
    std::vector<bool> seen(lab.nodes.size(), false);
    seen[0] = true;
    const bool all = wait_for(
        [&] {
          bool done = true;
          for (std::size_t i = 1; i < lab.nodes.size(); ++i) {
            if (seen[i]) continue;
            const std::string set = lab.nodes[i]->ns.run("nft list set inet tierwall ep4").out;
            seen[i] = set.find(c.v4 + " ") != std::string::npos ||
                      set.find(c.v4 + ",") != std::string::npos;
            done = done && seen[i];
          }
          return done;
        },
        Millis{15'000}, Millis{2});
    if (!all) throw std::runtime_error(c.name + " did not reach every node");
    r.start_ms.push_back(ms_since(t0));
  }

  // 3. etcd keys and bytes per endpoint (the real agents' endpoints).
  r.endpoints = 0;
  for (const auto& n : lab.nodes) r.endpoints += static_cast<long>(n->containers.size());
  if (!wait_for([&] { return read_prefix(*lab.etcd, kEndpointsPrefix).keys == r.endpoints; },
                Millis{10'000}, Millis{100})) {
    throw std::runtime_error("etcd does not hold one key per endpoint");
  }
  r.usage = read_prefix(*lab.etcd, kEndpointsPrefix);

  // 4. R synthetic endpoints of a node with no agent ("node-x"): database
  // growth per endpoint, the nodes' RSS growth per remote endpoint.
  for (const auto& n : lab.nodes) r.rss_before.push_back(rss_bytes(n->agent));
  const long db0 = compacted_db_size(*lab.etcd);
  const auto t_remote = Clock::now();
  for (int e = 0; e < opt.remote; ++e) {
    check_stop();
    const std::string name = "syn-" + std::to_string(e);
    const std::string addr =
        "10.88." + std::to_string(100 + e / 250) + "." + std::to_string(e % 250 + 1);
    const std::string value = R"({"id":")" + name + R"(","name":")" + name +
                              R"(","labels":{"role":"api"},"addresses":[")" + addr + R"("]})";
    const auto put = lab.etcd->etcdctl({"put", kEndpointsPrefix + "node-x/" + name, value});
    if (!put.ok()) throw std::runtime_error("etcdctl put failed: " + put.err);
  }
  for (auto& n : lab.nodes) {
    const long own = static_cast<long>(n->containers.size());
    if (!wait_for(
            [&] {
              const json st = lab.status(*n);  // {} while the agent does not answer
              return st.contains("cluster") && st["cluster"].is_object() &&
                     st["cluster"].value("remoteEndpoints", 0L) == r.endpoints - own + opt.remote;
            },
            Millis{60'000}, Millis{50})) {
      throw std::runtime_error(n->name + " did not take in the synthetic endpoints");
    }
  }
  r.remote_learned_ms = ms_since(t_remote);
  std::this_thread::sleep_for(Millis{500});  // let allocations settle
  for (const auto& n : lab.nodes) r.rss_after.push_back(rss_bytes(n->agent));
  const long db1 = compacted_db_size(*lab.etcd);
  r.db_bytes_per_endpoint =
      static_cast<double>(db1 - db0) / static_cast<double>(std::max(opt.remote, 1));
  double growth = 0;
  for (std::size_t i = 0; i < r.rss_after.size(); ++i) {
    growth += static_cast<double>(r.rss_after[i] - r.rss_before[i]);
  }
  r.rss_bytes_per_remote_endpoint =
      growth / static_cast<double>(r.rss_after.size()) / static_cast<double>(opt.remote);
}

double average(const std::vector<long>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (long x : v) s += static_cast<double>(x);
  return s / static_cast<double>(v.size());
}

json to_json(const Results& r) {
  const double per_ep =
      r.endpoints > 0 ? static_cast<double>(r.usage.bytes) / static_cast<double>(r.endpoints) : 0;
  return json{
      {"nodes", r.options.nodes},
      {"etcd_members", 3},
      {"publishes", r.publish_ms.size()},
      {"publish_to_enforced_p50_ms", percentile(r.publish_ms, 0.5)},
      {"publish_to_enforced_p99_ms", percentile(r.publish_ms, 0.99)},
      {"publish_to_enforced_max_ms", percentile(r.publish_ms, 1.0)},
      {"publish_to_enforced_per_node_p50_ms", percentile(r.per_node_ms, 0.5)},
      {"publish_to_enforced_target_p99_ms", kTargetP99Ms},
      {"publish_to_enforced_target_met", percentile(r.publish_ms, 0.99) <= kTargetP99Ms},
      {"tierctl_apply_p50_ms", percentile(r.apply_cli_ms, 0.5)},
      {"endpoint_starts", r.start_ms.size()},
      {"endpoint_start_to_known_p50_ms", percentile(r.start_ms, 0.5)},
      {"endpoint_start_to_known_p99_ms", percentile(r.start_ms, 0.99)},
      {"endpoints", r.endpoints},
      {"etcd_keys_per_endpoint",
       r.endpoints > 0 ? static_cast<double>(r.usage.keys) / static_cast<double>(r.endpoints) : 0},
      {"etcd_bytes_per_endpoint", per_ep},
      {"etcd_db_bytes_per_endpoint", r.db_bytes_per_endpoint},
      {"synthetic_remote_endpoints", r.options.remote},
      {"remote_endpoints_learned_ms", r.remote_learned_ms},
      {"agent_rss_bytes", average(r.rss_before)},
      {"agent_rss_bytes_per_remote_endpoint", r.rss_bytes_per_remote_endpoint},
      {"total_s", r.total_s},
  };
}

void print_report(const Results& r) {
  const json j = to_json(r);
  std::printf(
      "tierwall-bench cluster%s: %d nodes (own namespace and tierwalld each), etcd 3 "
      "members\n\n",
      r.options.quick ? " --quick" : "", r.options.nodes);
  std::printf("policy publish -> enforced on every node (%zu publishes, slowest node)\n",
              r.publish_ms.size());
  std::printf("  p50 %.1f ms  p99 %.1f ms  max %.1f ms   target p99 <= %.0f ms: %s\n",
              j["publish_to_enforced_p50_ms"].get<double>(),
              j["publish_to_enforced_p99_ms"].get<double>(),
              j["publish_to_enforced_max_ms"].get<double>(), kTargetP99Ms,
              j["publish_to_enforced_target_met"].get<bool>() ? "met" : "MISSED");
  std::printf("  per node p50 %.1f ms; tierctl apply --store itself p50 %.1f ms\n",
              j["publish_to_enforced_per_node_p50_ms"].get<double>(),
              j["tierctl_apply_p50_ms"].get<double>());
  std::printf("endpoint start on node-0 -> in every other node's ep4 set (%zu starts)\n",
              r.start_ms.size());
  std::printf("  p50 %.1f ms  p99 %.1f ms\n", j["endpoint_start_to_known_p50_ms"].get<double>(),
              j["endpoint_start_to_known_p99_ms"].get<double>());
  std::printf(
      "etcd: %ld endpoints, %ld keys, %ld key+value bytes: %.2f keys and %.0f bytes per "
      "endpoint; %.0f database bytes per endpoint written (compacted, defragmented)\n",
      r.endpoints, r.usage.keys, r.usage.bytes, j["etcd_keys_per_endpoint"].get<double>(),
      j["etcd_bytes_per_endpoint"].get<double>(), r.db_bytes_per_endpoint);
  std::printf(
      "agent RSS %.1f MiB per node; %.0f bytes per remote endpoint (%d synthetic, every "
      "node had them in %.0f ms)\n",
      average(r.rss_before) / 1048576.0, r.rss_bytes_per_remote_endpoint, r.options.remote,
      r.remote_learned_ms);
  std::printf("total %.1f s\n", r.total_s);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "%s: cannot run here: needs root (network namespaces, nftables)\n", kProg);
    return kExitSkip;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  const auto start = Clock::now();
  Results r;
  r.options = opt;
  try {
    if (auto why = ts::netns_unavailable_reason()) throw Unavailable(*why);
    if (auto why = ts::EtcdCluster::unavailable_reason()) throw Unavailable(*why);
    const ts::TempDir dir("tw-bench-cluster");
    run(opt, dir.path(), r);
  } catch (const Interrupted&) {
    std::fprintf(stderr, "%s: interrupted; namespaces, agents and etcd removed\n", kProg);
    return 130;
  } catch (const Unavailable& e) {
    std::fprintf(stderr, "%s: cannot run here: %s\n", kProg, e.what());
    return kExitSkip;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProg, e.what());
    return 1;
  }
  r.total_s = ms_since(start) / 1000.0;
  if (opt.json) {
    std::cout << to_json(r).dump() << "\n";
  } else {
    print_report(r);
  }
  return 0;
}
