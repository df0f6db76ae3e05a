// tierwall-bench-agent: figures for the node agent (not a test).
//
// Runs the real tierwalld and measures it from the outside:
//   (a) container start -> enforced: containers started one at a time with
//       `podman run -d` against rootful Podman; "enforced" is the moment the
//       kernel announces (NFNLGRP_NFTABLES, NEWSETELEM) the container's
//       address in the set of its tier in the agent's table. Two bases: the
//       runtime's own timestamp of the `start` event (timeNano) and the
//       moment this program's own listener on the runtime's event stream
//       received it. Also the fail-closed window: from the container's
//       network being up (its veth joining podman0 with carrier, seen on
//       RTNLGRP_LINK) until enforced, and a probe that sends a UDP datagram
//       from the host to the container's address every millisecond: in the
//       window the agent's table drops it (sendto fails with EPERM), once
//       the tier is enforced a flow lets it through;
//   (b) agent memory per endpoint: tierwalld with an inventory of 10k and
//       100k endpoints (and 0, the baseline) in a network namespace of its
//       own, VmRSS / Pss / anonymous memory once it is ready;
//   (c) idle CPU of the agent holding 10k endpoints with nothing changing.
//
//   tierwall-bench-agent [agent] [--quick] [--json] [--containers N] [--idle S]
//   tierwall-bench agent --json        (the dispatcher in the same directory)
//
// Targets (from the issue): start -> enforced p99 <= 100 ms after the
// runtime reports the start; agent memory <= 2 KiB per endpoint. The program
// reports missed targets; it exits 1 when something is wrong (a container
// never enforced or enforced in the wrong tier, the agent died or never got
// ready), 77 when it cannot run here (not root, no podman, no test image).
//
// Isolation: the agent runs on a table of its own (inet twbench<pid>), the
// containers are named twbench-<pid>-*, the Podman service listens on a
// socket of its own; all of them are removed at the end, also on failure
// and on SIGINT/SIGTERM. Other tables, containers and namespaces are never
// touched, except leftovers of earlier runs of this program whose process
// is gone. Because the agent sees every container of the shared Podman, its
// policy puts containers that are not the benchmark's into a tier that may
// talk to anything, so a concurrent user of Podman is not cut off.
// See docs/performance.md, "Agent".
#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <map>
#include <memory>
#include <mutex>
#include <net/if.h>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "bench_interrupt.h"
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <nlohmann/json.hpp>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/netlink.h"
#include "tierwall/dataplane/nft/plan.h"
#include "tierwall/policy/loader.h"
#include "tierwall/runtime/docker.h"
#include "tierwall/runtime/http.h"
#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/podman.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
using WallClock = std::chrono::system_clock;
using Millis = std::chrono::milliseconds;
namespace fs = std::filesystem;
namespace nft = tierwall::dataplane::nft;
namespace policy = tierwall::policy;
namespace runtime = tierwall::runtime;
namespace ts = tierwall::testsupport;
using tierwall::IpAddress;
using tierwall_bench::check_stop;
using tierwall_bench::Interrupted;
using tierwall_bench::kExitSkip;
using tierwall_bench::on_signal;
using tierwall_bench::Unavailable;
// Text, file and agent-HTTP helpers shared with the Podman agent tests.
using ts::http_get;
using ts::read_text;
using ts::split_lines;
using ts::tier_counts;
using ts::trim;

constexpr const char* kProg = "tierwall-bench-agent";
const std::string kImage = "reg.example/tierwall/busybox:1";
const std::string kBridge = "podman0";
const std::string kPodmanCidr = "10.88.0.0/16";
// Inventory endpoints (memory runs, in a namespace of their own).
constexpr std::uint32_t kInventoryBase = 0x0a400001U;  // 10.64.0.1
const std::string kInventoryCidr = "10.64.0.0/10";
constexpr unsigned kIffLowerUp = 1U << 16;  // IFF_LOWER_UP of <linux/if.h>
constexpr std::uint16_t kProbePort = 9;     // udp/9 (discard): host -> benchmark tiers
constexpr std::uint16_t kNsMetricsPort = 19641;

// Targets from the issue.
constexpr double kTargetStartP99Ms = 100.0;
constexpr double kTargetBytesPerEndpoint = 2048.0;

constexpr std::array<const char*, 3> kTiers = {"web", "app", "db"};

// ---------------------------------------------------------------------------
// Options

struct Options {
  bool quick = false;
  bool json = false;
  std::size_t containers = 50;
  int idle_s = 20;
  int memory_runs = 3;  // per size; the median is reported
  std::vector<std::size_t> sizes{10'000, 100'000};
};

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: %s [agent] [--quick] [--json] [--containers N] [--idle S]\n"
               "  --quick          10 containers, 5 s idle, one memory run per size (~20 s)\n"
               "  --json           print one JSON object instead of the tables\n"
               "  --containers N   containers started one at a time (default 50)\n"
               "  --idle S         idle CPU window in seconds (default 20)\n"
               "Needs root and rootful Podman (scripts/podman-setup.sh). Exit 77 when it\n"
               "cannot run, 1 when something is wrong.\n",
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
  bool containers_given = false;
  bool idle_given = false;
  int i = 1;
  if (argc > 1 && std::string_view(argv[1]) == "agent") i = 2;  // `tierwall-bench agent ...`
  for (; i < argc; ++i) {
    const std::string_view a(argv[i]);
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", kProg, argv[i]);
        usage(2);
      }
      return argv[++i];
    };
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--containers") {
      o.containers = parse_number<std::size_t>(a, value());
      containers_given = true;
      if (o.containers < 1 || o.containers > 200) {
        std::fprintf(stderr, "%s: --containers must be 1..200\n", kProg);
        usage(2);
      }
    } else if (a == "--idle") {
      o.idle_s = parse_number<int>(a, value());
      idle_given = true;
      if (o.idle_s < 1 || o.idle_s > 600) {
        std::fprintf(stderr, "%s: --idle must be 1..600\n", kProg);
        usage(2);
      }
    } else if (a == "--help" || a == "-h") {
      usage(0);
    } else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", kProg, argv[i]);
      usage(2);
    }
  }
  if (o.quick) {
    if (!containers_given) o.containers = 10;
    if (!idle_given) o.idle_s = 5;
    o.memory_runs = 1;
  }
  return o;
}

// ---------------------------------------------------------------------------
// Interruption: SIGINT/SIGTERM stop at the next check; destructors clean up.

// Something is wrong (not a missed target): the run fails.
struct Broken : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Sleeps up to `d`, in small steps, throwing Interrupted on a signal.
void nap(Millis d) {
  const auto until = Clock::now() + d;
  for (;;) {
    check_stop();
    const auto now = Clock::now();
    if (now >= until) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(until - now, Millis{20}));
  }
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::int64_t wall_ns(WallClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Nearest-rank percentile; NaN for no samples.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(v.size()));
  const auto idx = static_cast<std::size_t>(std::max(1.0, rank)) - 1;
  return v[std::min(idx, v.size() - 1)];
}

double median(std::vector<double> v) { return percentile(std::move(v), 50); }

std::string load_average() { return trim(read_text("/proc/loadavg")); }

std::string ip4_text(std::uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// ---------------------------------------------------------------------------
// Metrics of the agent (fetched with ts::http_get from 127.0.0.1 of the
// calling thread's netns)

// The value of a metric line `NAME{LABELS} V` (LABELS exactly as given, or
// none), summed over every line with that prefix when `sum` is set.
double metric(const std::string& text, const std::string& prefix, bool sum = false) {
  double total = 0;
  bool found = false;
  for (const auto& line : split_lines(text)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    const double v = std::strtod(line.c_str() + sp + 1, nullptr);
    if (!sum) return v;
    total += v;
    found = true;
  }
  return found ? total : std::nan("");
}

// ---------------------------------------------------------------------------
// /proc

struct MemorySample {
  double rss_kib = 0;  // VmRSS
  double hwm_kib = 0;  // VmHWM (peak RSS)
  double pss_kib = 0;  // smaps_rollup Pss
  double anon_kib = 0;
};

double proc_field_kib(const std::string& text, const std::string& key) {
  for (const auto& line : split_lines(text)) {
    if (line.rfind(key, 0) == 0) return std::strtod(line.c_str() + key.size(), nullptr);
  }
  return std::nan("");
}

MemorySample read_memory(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  const std::string status = read_text(base + "/status");
  const std::string rollup = read_text(base + "/smaps_rollup");
  MemorySample m;
  m.rss_kib = proc_field_kib(status, "VmRSS:");
  m.hwm_kib = proc_field_kib(status, "VmHWM:");
  m.pss_kib = proc_field_kib(rollup, "Pss:");
  m.anon_kib = proc_field_kib(rollup, "Anonymous:");
  if (std::isnan(m.rss_kib)) throw Broken("cannot read " + base + "/status (did the agent die?)");
  return m;
}

// utime + stime of `pid`, in clock ticks.
std::optional<std::uint64_t> cpu_ticks(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> f;
  std::string s;
  while (in >> s) f.push_back(s);
  // After "pid (comm) ": state is field 3, utime 14, stime 15 -> here 0, 11, 12.
  if (f.size() < 13) return std::nullopt;
  return std::stoull(f[11]) + std::stoull(f[12]);
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

// ---------------------------------------------------------------------------
// Commands and cleanup guards

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

ts::CommandResult must(const std::vector<std::string>& argv, Millis timeout = Millis{30'000}) {
  auto r = ts::run_argv(argv, timeout);
  if (!r.ok()) {
    throw Broken(command_line(argv) + " failed (exit " + std::to_string(r.exit_code) +
                 (r.timed_out ? ", timed out" : "") + "): " + trim(r.err + r.out));
  }
  return r;
}

// Deletes table inet <name> (and only it), in this thread's namespace.
void drop_table(const std::string& name) {
  if (name.rfind("twbench", 0) != 0) return;  // never anybody else's
  std::string error;
  auto sock = nft::NftSocket::open(&error);
  if (!sock) {
    std::fprintf(stderr, "%s: cannot delete table inet %s: %s\n", kProg, name.c_str(),
                 error.c_str());
    return;
  }
  if (auto e = sock->flush(name)) {
    std::fprintf(stderr, "%s: cannot delete table inet %s: %s\n", kProg, name.c_str(),
                 e->message.c_str());
  }
}

std::optional<pid_t> pid_suffix(const std::string& s, std::size_t from) {
  pid_t pid = 0;
  const char* b = s.data() + from;
  const char* e = s.data() + s.size();
  auto [p, ec] = std::from_chars(b, e, pid);
  if (ec != std::errc() || p == b) return std::nullopt;
  return pid;
}

// Removes twbench<pid> tables and twbench-<pid>-* containers whose process
// is gone (a run that was killed with SIGKILL).
void cleanup_stale() {
  auto tables = ts::run_argv({"nft", "list", "tables", "inet"});
  for (const auto& line : split_lines(tables.out)) {
    const std::string prefix = "table inet twbench";
    if (line.rfind(prefix, 0) != 0) continue;
    auto pid = pid_suffix(line, prefix.size());
    if (!pid || alive(*pid)) continue;
    const std::string name = line.substr(std::string("table inet ").size());
    if (name != "twbench" + std::to_string(*pid)) continue;
    drop_table(name);
  }
  auto names =
      ts::run_argv({"podman", "ps", "-a", "--filter", "name=^twbench-", "--format", "{{.Names}}"});
  std::vector<std::string> stale;
  for (const auto& n : split_lines(names.out)) {
    auto pid = pid_suffix(n, std::string("twbench-").size());
    if (pid && !alive(*pid)) stale.push_back(n);
  }
  if (!stale.empty()) {
    std::vector<std::string> argv{"podman", "rm", "-f", "-t", "0"};
    argv.insert(argv.end(), stale.begin(), stale.end());
    ts::run_argv(argv, Millis{60'000});
  }
}

// `podman system service` on a socket of our own, stopped on destruction.
class PodmanService {
 public:
  PodmanService(std::string script, std::string socket)
      : script_(std::move(script)), socket_(std::move(socket)) {
    started_ = true;
    must({script_, "service", "start", socket_}, Millis{30'000});
  }
  ~PodmanService() {
    if (started_) ts::run_argv({script_, "service", "stop", socket_}, Millis{15'000});
  }
  PodmanService(const PodmanService&) = delete;
  PodmanService& operator=(const PodmanService&) = delete;
  [[nodiscard]] const std::string& socket() const { return socket_; }

 private:
  std::string script_, socket_;
  bool started_ = false;
};

// The benchmark's containers: removed (rm -f -t 0) on destruction.
class Containers {
 public:
  explicit Containers(std::string prefix) : prefix_(std::move(prefix)) {}
  ~Containers() { remove_all(); }
  Containers(const Containers&) = delete;
  Containers& operator=(const Containers&) = delete;

  void remove_all() {
    auto listed = ts::run_argv(
        {"podman", "ps", "-a", "--filter", "name=^" + prefix_, "--format", "{{.Names}}"});
    std::vector<std::string> argv{"podman", "rm", "-f", "-t", "0"};
    for (const auto& n : split_lines(listed.out)) {
      if (n.rfind(prefix_, 0) == 0) argv.push_back(n);
    }
    if (argv.size() == 5) return;
    auto r = ts::run_argv(argv, Millis{120'000});
    if (!r.ok())
      std::fprintf(stderr, "%s: %s: %s\n", kProg, command_line(argv).c_str(), r.err.c_str());
  }

 private:
  std::string prefix_;
};

// tierwalld in the root namespace, in its own process group; stopped (and
// its table deleted) on destruction.
class RootAgent {
 public:
  RootAgent(const std::vector<std::string>& argv, const fs::path& log, std::string table)
      : table_(std::move(table)) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) throw Broken("cannot open " + log.string());
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(out);
      throw Broken("fork: " + std::string(strerror(errno)));
    }
    if (pid == 0) {
      ::setpgid(0, 0);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::signal(SIGPIPE, SIG_DFL);
      const int in = ::open("/dev/null", O_RDONLY);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out);
    pid_ = pid;
  }
  ~RootAgent() {
    stop();
    drop_table(table_);
  }
  RootAgent(const RootAgent&) = delete;
  RootAgent& operator=(const RootAgent&) = delete;

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int st = 0;
    const auto deadline = Clock::now() + Millis{5000};
    while (::waitpid(pid_, &st, WNOHANG) == 0) {
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        break;
      }
      std::this_thread::sleep_for(Millis{10});
    }
    pid_ = -1;
  }
  [[nodiscard]] bool running() const {
    if (pid_ <= 0) return false;
    int st = 0;
    return ::waitpid(pid_, &st, WNOHANG) == 0;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string table_;
};

// ---------------------------------------------------------------------------
// Locating things

fs::path self_dir() {
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : exe.parent_path();
}

std::string find_tierwalld() {
  if (const char* env = std::getenv("TIERWALLD"); env != nullptr && *env != '\0') return env;
  const fs::path dir = self_dir();
  for (const fs::path& p :
       {dir / "tierwalld", dir / ".." / "tierwalld" / "tierwalld", fs::path(TIERWALLD_BINARY)}) {
    if (::access(p.c_str(), X_OK) == 0) return fs::weakly_canonical(p).string();
  }
  throw Unavailable("tierwalld not found next to " + dir.string() +
                    " (build the tierwalld target, or set TIERWALLD=/path/to/tierwalld)");
}

// ---------------------------------------------------------------------------
// The policy

std::string bench_policy(const std::string& pid) {
  std::string p =
      "apiVersion: tierwall.io/v1\n"
      "kind: SegmentationPolicy\n"
      "metadata: {name: twbench}\n"
      "spec:\n"
      "  mode: enforce\n"
      "  tiers:\n"
      "    - {name: web, level: 100}\n"
      "    - {name: app, level: 200}\n"
      "    - {name: db, level: 300}\n"
      "    - {name: bystander, level: 10, description: containers not started by the "
      "benchmark}\n"
      "  assignments:\n";
  for (const char* t : kTiers) {
    p += std::string("    - {name: ") + t + ", match: {labels: {twbench: \"" + pid +
         "\", role: " + t + "}}, tier: " + t + "}\n";
  }
  p += "    - {name: bystander, match: {name: \"*\"}, tier: bystander}\n"
       "  flows:\n"
       "    - {name: host-probe, from: {host: true}, to: {tier: [web, app, db]}, ports: [udp/9]}\n"
       "    - {name: web-to-app, from: {tier: web}, to: {tier: app}, ports: [tcp/8080]}\n"
       "    - {name: app-to-db, from: {tier: app}, to: {tier: db}, ports: [tcp/5432]}\n"
       "    # Everything else on the shared Podman keeps talking.\n"
       "    - {name: bystander-out, from: {tier: bystander}, to: {}}\n"
       "    - {name: bystander-in, from: {}, to: {tier: bystander}}\n"
       "    - {name: bystander-world-out, from: {tier: bystander}, to: {world: [\"0.0.0.0/0\", "
       "\"::/0\"]}}\n"
       "    - {name: bystander-world-in, from: {world: [\"0.0.0.0/0\", \"::/0\"]}, to: {tier: "
       "bystander}}\n"
       "    - {name: bystander-to-host, from: {tier: bystander}, to: {host: true}}\n"
       "    - {name: host-to-bystander, from: {host: true}, to: {tier: bystander}}\n";
  return p;
}

// What the agent compiles the policy to: tier name -> kernel set of its
// IPv4 members, and the named counter of the flow the probe uses.
struct KernelNames {
  std::map<std::string, std::string> tier_sets;
  std::string probe_counter;
};

KernelNames kernel_names(const std::string& policy_text) {
  policy::Diagnostics diags;
  auto pol = policy::parse_policy(policy_text, "twbench-policy.yaml", diags);
  if (!pol || diags.has_errors()) {
    std::ostringstream s;
    diags.print(s);
    throw Broken("the benchmark's policy is invalid:\n" + s.str());
  }
  const tierwall::compiler::Compilation comp(*pol, 1);
  KernelNames out;
  for (const char* t : kTiers) {
    auto id = comp.policy()->find_tier(t);
    if (!id) throw Broken(std::string("tier ") + t + " missing from the compiled policy");
    out.tier_sets[t] = nft::tier_set(*id, IpAddress::Family::V4);
  }
  const auto* probe = comp.policy()->find_rule("host-probe");
  if (probe == nullptr) throw Broken("flow host-probe missing from the compiled policy");
  out.probe_counter = nft::counter_name(probe->id);
  return out;
}

// ---------------------------------------------------------------------------
// Kernel watcher: NEWSETELEM of our table (nftables notifications) and
// links joining podman0 (rtnetlink), timestamped on arrival.

// The measuring threads run SCHED_FIFO, so that a loaded machine delays
// their timestamps less (best effort: ignored when not permitted).
void realtime(std::thread& t) {
  sched_param p{};
  p.sched_priority = 20;
  ::pthread_setschedparam(t.native_handle(), SCHED_FIFO, &p);
}

struct Stamp {
  Clock::time_point steady;
  WallClock::time_point wall;
};

struct LinkUp {
  std::string ifname;
  Stamp at;
};

class KernelWatcher {
 public:
  explicit KernelWatcher(std::string table) : table_(std::move(table)) {
    nf_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
    rt_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (nf_ == nullptr || rt_ == nullptr) {
      close_all();
      throw Broken("netlink socket: " + std::string(strerror(errno)));
    }
    if (mnl_socket_bind(nf_, 1U << (NFNLGRP_NFTABLES - 1), MNL_SOCKET_AUTOPID) < 0 ||
        mnl_socket_bind(rt_, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) {
      close_all();
      throw Broken("netlink bind: " + std::string(strerror(errno)));
    }
    const int want = 64 << 20;
    for (mnl_socket* s : {nf_, rt_}) {
      const int fd = mnl_socket_get_fd(s);
      if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0) {
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
      }
    }
    thread_ = std::thread([this] { loop(); });
    realtime(thread_);
  }
  ~KernelWatcher() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    close_all();
  }
  KernelWatcher(const KernelWatcher&) = delete;
  KernelWatcher& operator=(const KernelWatcher&) = delete;

  // When (set, address) was first announced as added; nullopt if not yet.
  std::optional<Stamp> element(const std::string& set, std::uint32_t address) const {
    std::lock_guard lock(mu_);
    auto it = elements_.find({set, address});
    if (it == elements_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<LinkUp> links() const {
    std::lock_guard lock(mu_);
    return links_;
  }
  [[nodiscard]] std::size_t overruns() const { return overruns_.load(); }

 private:
  void close_all() {
    if (nf_ != nullptr) mnl_socket_close(nf_);
    if (rt_ != nullptr) mnl_socket_close(rt_);
    nf_ = rt_ = nullptr;
  }

  void loop() {
    std::vector<char> buf(1 << 20);
    while (!stop_.load()) {
      std::array<pollfd, 2> fds{
          {{mnl_socket_get_fd(nf_), POLLIN, 0}, {mnl_socket_get_fd(rt_), POLLIN, 0}}};
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLIN | POLLERR)) == 0) continue;
        for (;;) {
          const ssize_t n = ::recv(fds[i].fd, buf.data(), buf.size(), MSG_DONTWAIT);
          if (n < 0 && errno == ENOBUFS) {
            overruns_.fetch_add(1);
            continue;
          }
          if (n <= 0) break;
          const Stamp at{Clock::now(), WallClock::now()};
          if (i == 0) {
            nft_messages(buf.data(), static_cast<std::size_t>(n), at);
          } else {
            link_messages(buf.data(), static_cast<std::size_t>(n), at);
          }
        }
      }
    }
  }

  void nft_messages(const char* data, std::size_t len, const Stamp& at) {
    int left = static_cast<int>(len);
    for (auto* nlh = static_cast<const nlmsghdr*>(static_cast<const void*>(data));
         mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
      if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) continue;
      if (NFNL_MSG_TYPE(nlh->nlmsg_type) != NFT_MSG_NEWSETELEM) continue;
      nftnl_set* s = nftnl_set_alloc();
      if (s == nullptr) continue;
      if (nftnl_set_elems_nlmsg_parse(nlh, s) == 0) {
        const char* table = nftnl_set_get_str(s, NFTNL_SET_TABLE);
        const char* name = nftnl_set_get_str(s, NFTNL_SET_NAME);
        if (table != nullptr && name != nullptr && table_ == table) {
          std::vector<std::uint32_t> keys;
          each_key(s, keys);
          std::lock_guard lock(mu_);
          for (auto k : keys) elements_.try_emplace({name, k}, at);
        }
      }
      nftnl_set_free(s);
    }
  }

  static void each_key(nftnl_set* s, std::vector<std::uint32_t>& out) {
    nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(s);
    if (it == nullptr) return;
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it); e != nullptr;
         e = nftnl_set_elems_iter_next(it)) {
      std::uint32_t klen = 0;
      const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
      if (key == nullptr || klen != 4) continue;
      std::uint32_t be = 0;
      std::memcpy(&be, key, 4);
      out.push_back(ntohl(be));
    }
    nftnl_set_elems_iter_destroy(it);
  }

  void link_messages(const char* data, std::size_t len, const Stamp& at) {
    int left = static_cast<int>(len);
    for (auto* nlh = static_cast<const nlmsghdr*>(static_cast<const void*>(data));
         mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
      if (nlh->nlmsg_type != RTM_NEWLINK) continue;
      const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
      if ((ifi->ifi_flags & kIffLowerUp) == 0U) continue;
      struct Attrs {
        std::uint32_t master = 0;
        std::string name;
      } attrs;
      mnl_attr_parse(
          nlh, sizeof(ifinfomsg),
          [](const nlattr* a, void* d) -> int {
            auto* x = static_cast<Attrs*>(d);
            if (mnl_attr_get_type(a) == IFLA_MASTER &&
                mnl_attr_get_payload_len(a) >= sizeof(std::uint32_t)) {
              x->master = mnl_attr_get_u32(a);
            } else if (mnl_attr_get_type(a) == IFLA_IFNAME) {
              x->name = mnl_attr_get_str(a);
            }
            return MNL_CB_OK;
          },
          &attrs);
      if (attrs.master == 0) continue;
      char master[IF_NAMESIZE] = {};
      if (::if_indextoname(attrs.master, master) == nullptr || kBridge != master) continue;
      std::lock_guard lock(mu_);
      if (seen_links_.emplace(ifi->ifi_index).second) links_.push_back(LinkUp{attrs.name, at});
    }
  }

  std::string table_;
  mnl_socket* nf_ = nullptr;
  mnl_socket* rt_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> overruns_{0};
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::uint32_t>, Stamp> elements_;
  std::vector<LinkUp> links_;
  std::set<int> seen_links_;
};

// The IPv4 elements of set inet <table> <set> as the kernel holds them now
// (a GETSETELEM dump).
std::vector<std::uint32_t> dump_set(nft::NftSocket& sock, const std::string& table,
                                    const std::string& set) {
  std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
  nftnl_set* s = nftnl_set_alloc();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(s, NFTNL_SET_NAME, set.c_str());
  nftnl_set_elems_nlmsg_build_payload(nlh, s);
  nftnl_set_free(s);
  std::vector<std::uint32_t> out;
  const int rc = sock.request(nlh, [&](const nlmsghdr* reply) {
    nftnl_set* r = nftnl_set_alloc();
    if (nftnl_set_elems_nlmsg_parse(reply, r) == 0) {
      nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(r);
      for (nftnl_set_elem* e = it ? nftnl_set_elems_iter_next(it) : nullptr; e != nullptr;
           e = nftnl_set_elems_iter_next(it)) {
        std::uint32_t klen = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
        if (key == nullptr || klen != 4) continue;
        std::uint32_t be = 0;
        std::memcpy(&be, key, 4);
        out.push_back(ntohl(be));
      }
      if (it != nullptr) nftnl_set_elems_iter_destroy(it);
    }
    nftnl_set_free(r);
  });
  if (rc != 0) throw Broken("dump of set " + set + ": " + std::strerror(rc));
  return out;
}

// ---------------------------------------------------------------------------
// Runtime event listener: `start` events of our containers, as received.

struct StartEvent {
  std::int64_t runtime_ns = 0;  // timeNano
  Stamp received;
};

class EventListener {
 public:
  EventListener(const std::string& socket, std::string prefix)
      : prefix_(std::move(prefix)),
        client_(runtime::DockerClient::Options{socket, "", Millis{2000}, Millis{10'000}},
                &cancel_) {
    auto stream = client_.events();
    if (!stream) throw Broken("runtime events on " + socket + ": " + stream.error().message);
    thread_ = std::thread([this, s = std::move(stream.value())]() mutable { loop(s); });
    realtime(thread_);
  }
  ~EventListener() {
    stop_.store(true);
    cancel_.cancel();
    if (thread_.joinable()) thread_.join();
  }
  EventListener(const EventListener&) = delete;
  EventListener& operator=(const EventListener&) = delete;

  std::optional<StartEvent> start_of(const std::string& name) const {
    std::lock_guard lock(mu_);
    auto it = starts_.find(name);
    if (it == starts_.end()) return std::nullopt;
    return it->second;
  }
  [[nodiscard]] std::string error() const {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  void loop(runtime::EventStream& stream) {
    while (!stop_.load()) {
      auto ev = stream.next(Millis{200});
      const Stamp at{Clock::now(), WallClock::now()};
      if (!ev) {
        const auto kind = ev.error().kind;
        if (kind == runtime::Error::Kind::Timeout || kind == runtime::Error::Kind::Json) continue;
        if (!stop_.load()) {
          std::lock_guard lock(mu_);
          error_ = ev.error().message;
        }
        return;
      }
      const auto& e = ev.value();
      if (e.type != "container" || e.action != "start" || e.name.rfind(prefix_, 0) != 0) continue;
      std::lock_guard lock(mu_);
      starts_.try_emplace(e.name, StartEvent{e.time_nano, at});
    }
  }

  std::string prefix_;
  runtime::Canceller cancel_;
  runtime::DockerClient client_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::string, StartEvent> starts_;
  std::string error_;
};

// ---------------------------------------------------------------------------
// Probe: one UDP datagram host -> the current container's address on
// udp/9, every millisecond. EPERM: dropped by the output hook (the agent's
// table: the address is quarantined); 0: sent (the policy allows it).

struct Shot {
  Clock::time_point at;  // after sendto returned: the verdict came before
  int err = 0;
};

class Prober {
 public:
  Prober() {
    thread_ = std::thread([this] { loop(); });
    realtime(thread_);
  }
  ~Prober() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  void aim(std::uint32_t address) {
    std::lock_guard lock(mu_);
    shots_.clear();
    target_ = address;
  }
  std::vector<Shot> cease() {
    std::lock_guard lock(mu_);
    target_ = 0;
    return std::exchange(shots_, {});
  }

 private:
  void loop() {
    int fd = -1;
    std::uint32_t fd_target = 0;
    while (!stop_.load()) {
      std::uint32_t target = 0;
      {
        std::lock_guard lock(mu_);
        target = target_;
      }
      if (target != 0) {
        if (fd < 0 || fd_target != target) {
          if (fd >= 0) ::close(fd);
          fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
          fd_target = target;
        }
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(kProbePort);
        a.sin_addr.s_addr = htonl(target);
        const char byte = 'p';
        // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
        const ssize_t n =
            ::sendto(fd, &byte, 1, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&a), sizeof a);
        const Shot shot{Clock::now(), n < 0 ? errno : 0};
        std::lock_guard lock(mu_);
        if (target_ == target) shots_.push_back(shot);
      }
      std::this_thread::sleep_for(Millis{1});
    }
    if (fd >= 0) ::close(fd);
  }

  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::uint32_t target_ = 0;
  std::vector<Shot> shots_;
};

// ---------------------------------------------------------------------------
// (a) start -> enforced

struct ContainerSample {
  std::string name;
  std::string tier;
  std::uint32_t address = 0;
  double run_ms = 0;                          // `podman run -d` wall time
  bool started = false;                       // start event seen
  bool enforced = false;                      // tier element announced
  double start_to_enforced_ms = 0;            // timeNano -> NEWSETELEM
  double received_to_enforced_ms = 0;         // our listener -> NEWSETELEM
  double received_delay_ms = 0;               // timeNano -> our listener
  std::optional<double> link_to_enforced_ms;  // veth up on podman0 -> NEWSETELEM
  std::optional<double> link_to_start_ms;     // veth up -> timeNano
  // Probe: datagrams sent after the network was up and before enforcement,
  // how many of them the firewall dropped; after enforcement, how many went
  // out.
  // A datagram that went out after the start event reached our listener but
  // before the notification was stamped may have followed the commit (the
  // watcher wakes after it); one that went out before the event reached us
  // leaked through the fail-closed window: the agent could not have known
  // the container yet.
  std::size_t window_sent = 0, window_dropped = 0, window_at_commit = 0, window_leaked = 0;
  std::size_t after_sent = 0, after_passed = 0;
};

struct LatencyResults {
  std::vector<ContainerSample> samples;
  std::size_t in_tier_at_end = 0;  // kernel dump: address in its tier's set
  std::size_t wrong_tier = 0;      // address in another benchmark tier's set
  std::map<std::string, long> metrics_tiers;
  std::optional<double> agent_reported_p50, agent_reported_p99;  // from its log
  double default_deny_packets = 0;   // kernel counter of default-deny, delta
  double probe_flow_packets = 0;     // kernel counter of flow host-probe, delta
  std::size_t enforced_by_poll = 0;  // seen first by a set dump, not a notification
  std::size_t overruns = 0;
  std::string load;
  double agent_ready_ms = 0;
  std::size_t links_seen = 0;
};

// The agent's own "enforced X ms after the event arrived" figures.
std::vector<double> agent_reported(const std::string& log, const std::string& prefix) {
  std::vector<double> out;
  for (const auto& line : split_lines(log)) {
    // An upsert from the start event or from a rescan (runtime_source.h).
    if (line.find("runtime start: " + prefix) == std::string::npos &&
        line.find("runtime rescan: " + prefix) == std::string::npos) {
      continue;
    }
    const auto at = line.find(" enforced ");
    if (at == std::string::npos) continue;
    out.push_back(std::strtod(line.c_str() + at + 10, nullptr));
  }
  return out;
}

bool wait_for(const std::function<bool()>& pred, Millis timeout, Millis step = Millis{20}) {
  const auto deadline = Clock::now() + timeout;
  while (!pred()) {
    check_stop();
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

LatencyResults run_latency(const Options& opt, const std::string& tierwalld,
                           const std::string& script, const fs::path& dir) {
  LatencyResults res;
  const std::string pid = std::to_string(::getpid());
  const std::string table = "twbench" + pid;
  const std::string prefix = "twbench-" + pid + "-";
  const std::string policy_text = bench_policy(pid);
  const auto names = kernel_names(policy_text);
  const auto& sets = names.tier_sets;
  const fs::path policy_file = dir / "policy.yaml";
  std::ofstream(policy_file) << policy_text;
  const fs::path log = dir / "tierwalld-runtime.log";

  ::mkdir("/run/tierwall-bench", 0755);
  PodmanService service(script, "/run/tierwall-bench/podman-" + pid + ".sock");
  Containers containers(prefix);
  KernelWatcher watcher(table);
  EventListener events(service.socket(), prefix);
  Prober prober;

  const auto port = static_cast<std::uint16_t>(ts::free_loopback_port());
  if (port == 0) throw Broken("no free port for the agent's metrics");
  const auto t_agent = Clock::now();
  RootAgent agent(
      {tierwalld, "--policy", policy_file.string(), "--table", table, "--no-bridge-netfilter",
       "--runtime-socket", service.socket(), "--container-cidr", kPodmanCidr, "--metrics",
       "127.0.0.1:" + std::to_string(port), "--api-socket",
       "/run/tierwall-bench/api-" + pid + ".sock"},
      log, table);
  const bool ready = wait_for(
      [&] {
        if (!agent.running()) throw Broken("tierwalld exited at start:\n" + read_text(log));
        auto r = http_get(port, "/readyz");
        if (!r || r->status != 200) return false;
        auto m = http_get(port, "/metrics");
        return m && metric(m->body, "tierwall_identity_source_connected{source=\"runtime\"}") == 1;
      },
      Millis{20'000}, Millis{10});
  if (!ready)
    throw Broken("tierwalld not ready with the runtime connected after 20 s:\n" + read_text(log));
  res.agent_ready_ms = ms_between(t_agent, Clock::now());

  std::string error;
  auto sock = nft::NftSocket::open(&error);
  if (!sock) throw Broken("netlink: " + error);
  const auto counters_before = sock->read_counters(table);

  // Addresses 10.88.X.10+i, X from the pid: far above podman's sequential
  // allocation (10.88.0.2, ...).
  const std::uint32_t base =
      0x0a580000U | ((200U + static_cast<std::uint32_t>(::getpid()) % 50U) << 8) | 10U;
  res.load = load_average();
  for (std::size_t i = 0; i < opt.containers; ++i) {
    check_stop();
    ContainerSample s;
    s.name = prefix + std::to_string(i);
    s.tier = kTiers[i % kTiers.size()];
    s.address = base + static_cast<std::uint32_t>(i);
    const auto& set = sets.at(s.tier);
    const std::size_t links_before = watcher.links().size();
    prober.aim(s.address);
    const auto t0 = Clock::now();
    must({"podman", "run", "-d", "--name", s.name, "--ip", ip4_text(s.address), "--label",
          "twbench=" + pid, "--label", "role=" + s.tier, kImage, "sleep", "3600"});
    s.run_ms = ms_between(t0, Clock::now());
    std::optional<StartEvent> start;
    std::optional<Stamp> enforced;  // the notification's arrival
    std::optional<Stamp> polled;    // first dump of the set that held it
    wait_for(
        [&] {
          if (!start) start = events.start_of(s.name);
          if (!enforced) enforced = watcher.element(set, s.address);
          if (!enforced && !polled) {
            // Lost notifications (ENOBUFS under someone else's big commit)
            // must not turn into a late stamp: ask the kernel, too.
            const auto v = dump_set(*sock, table, set);
            if (std::find(v.begin(), v.end(), s.address) != v.end()) {
              polled = Stamp{Clock::now(), WallClock::now()};
            }
          }
          return start && (enforced || polled);
        },
        Millis{5000}, Millis{1});
    if (!enforced) enforced = watcher.element(set, s.address);
    if (polled && (!enforced || polled->steady < enforced->steady)) {
      enforced = polled;
      ++res.enforced_by_poll;
    }
    nap(Millis{20});  // the probe shows the state after enforcement, too
    const auto shots = prober.cease();
    s.started = start.has_value();
    s.enforced = enforced.has_value();
    if (start && enforced) {
      s.start_to_enforced_ms =
          static_cast<double>(wall_ns(enforced->wall) - start->runtime_ns) / 1e6;
      s.received_to_enforced_ms = ms_between(start->received.steady, enforced->steady);
      s.received_delay_ms =
          static_cast<double>(wall_ns(start->received.wall) - start->runtime_ns) / 1e6;
    }
    // The container's veth: the first link joining podman0 (with carrier)
    // since this `podman run` began.
    const auto links = watcher.links();
    std::optional<Stamp> link;
    for (std::size_t k = links_before; k < links.size(); ++k) {
      if (links[k].at.steady >= t0) {
        link = links[k].at;
        break;
      }
    }
    if (link && enforced) {
      s.link_to_enforced_ms = ms_between(link->steady, enforced->steady);
      if (start) {
        s.link_to_start_ms = static_cast<double>(start->runtime_ns - wall_ns(link->wall)) / 1e6;
      }
    }
    if (enforced) {
      const auto window_start = link ? link->steady : (start ? start->received.steady : t0);
      for (const auto& shot : shots) {
        if (shot.at < window_start) continue;
        if (shot.at < enforced->steady) {
          ++s.window_sent;
          if (shot.err == EPERM) {
            ++s.window_dropped;
          } else if (shot.err == 0 && start && shot.at >= start->received.steady) {
            ++s.window_at_commit;
          } else {
            ++s.window_leaked;
          }
        } else {
          ++s.after_sent;
          if (shot.err == 0) ++s.after_passed;
        }
      }
    }
    res.samples.push_back(std::move(s));
  }
  res.links_seen = watcher.links().size();

  // From the outside, after the fact: every address in its tier's set, and
  // in no other benchmark tier's set.
  std::map<std::string, std::vector<std::uint32_t>> held;
  for (const auto& [tier, set] : sets) {
    auto v = dump_set(*sock, table, set);
    std::sort(v.begin(), v.end());
    held[tier] = std::move(v);
  }
  for (const auto& s : res.samples) {
    for (const auto& [tier, v] : held) {
      const bool in = std::binary_search(v.begin(), v.end(), s.address);
      if (tier == s.tier && in) ++res.in_tier_at_end;
      if (tier != s.tier && in) ++res.wrong_tier;
    }
  }
  if (auto m = http_get(port, "/metrics")) res.metrics_tiers = tier_counts(m->body);
  const auto counters_after = sock->read_counters(table);
  auto packets = [](const nft::CounterValues& c, const std::string& name) {
    auto it = c.find(name);
    return it == c.end() ? 0.0 : static_cast<double>(it->second.first);
  };
  const std::string deny = nft::counter_name(tierwall::dataplane::kRuleDefaultDeny);
  res.default_deny_packets = packets(counters_after, deny) - packets(counters_before, deny);
  res.probe_flow_packets =
      packets(counters_after, names.probe_counter) - packets(counters_before, names.probe_counter);
  res.overruns = watcher.overruns();
  if (!agent.running()) throw Broken("tierwalld died during the run:\n" + read_text(log));
  agent.stop();
  const auto reported = agent_reported(read_text(log), prefix);
  if (!reported.empty()) {
    res.agent_reported_p50 = percentile(reported, 50);
    res.agent_reported_p99 = percentile(reported, 99);
  }
  if (!events.error().empty()) {
    std::fprintf(stderr, "%s: runtime event stream ended: %s\n", kProg, events.error().c_str());
  }
  return res;  // containers, agent, table, service: removed by destructors
}

// ---------------------------------------------------------------------------
// (b), (c) memory and idle CPU, in a namespace of their own

struct MemoryRun {
  std::size_t endpoints = 0;
  MemorySample mem;
  double ready_ms = 0;  // agent start -> /readyz 200 with every endpoint
};

struct MemoryResults {
  std::map<std::size_t, std::vector<MemoryRun>> runs;  // by size, 0 = baseline
  std::map<std::size_t, double> idle_cpu_percent;      // by size: first run of each
  double idle_window_s = 0;
  std::string load;
};

// An inventory of `n` endpoints in 10.64.0.0/10, block style as an
// orchestrator adapter would write it; labels give them the three tiers.
void write_inventory(const fs::path& path, std::size_t n, const std::string& pid) {
  std::ofstream f(path);
  f << "apiVersion: tierwall.io/v1\nkind: Inventory\n"
    << "node: {name: twbench-node, addresses: [192.0.2.10]}\n";
  if (n == 0) {
    f << "endpoints: []\n";
    return;
  }
  f << "endpoints:\n";
  char id[32];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(id, sizeof id, "%012llx", 0xbe0000000000ULL + static_cast<unsigned long long>(i));
    f << "  - name: ep-" << i << "\n"
      << "    id: \"" << id << "\"\n"
      << "    image: reg.example/bench/svc-" << i % 40 << ":" << i % 4 << "\n"
      << "    labels:\n"
      << "      twbench: \"" << pid << "\"\n"
      << "      role: " << kTiers[i % kTiers.size()] << "\n"
      << "      app: app-" << i % 40 << "\n"
      << "    addresses: [" << ip4_text(kInventoryBase + static_cast<std::uint32_t>(i)) << "]\n";
  }
}

MemoryRun memory_run(const std::string& tierwalld, const fs::path& dir, std::size_t n,
                     const fs::path& policy_file, const fs::path& inventory, bool measure_idle,
                     int idle_s, MemoryResults& res) {
  const std::string table = "twbench" + std::to_string(::getpid());
  ts::NetNs ns("agent");
  const fs::path log = dir / ("tierwalld-" + std::to_string(n) + ".log");
  const std::string cmd = "exec " + quoted(tierwalld) + " --policy " + quoted(policy_file) +
                          " --inventory " + quoted(inventory) + " --table " + table +
                          " --no-bridge-netfilter --container-cidr " + kInventoryCidr +
                          " --metrics 127.0.0.1:" + std::to_string(kNsMetricsPort) +
                          " --api-socket " + quoted((dir / "api.sock").string());
  const auto t0 = Clock::now();
  const pid_t pid = ns.spawn(cmd, log.string());
  struct Stopper {
    ts::NetNs& ns;
    pid_t pid;
    ~Stopper() { ns.stop(pid, Millis{5000}); }
  } stopper{ns, pid};

  MemoryRun run;
  run.endpoints = n;
  const bool ready = wait_for(
      [&] {
        if (!alive(pid)) throw Broken("tierwalld exited:\n" + read_text(log));
        if (read_text(log).find(" rejected ") != std::string::npos) {
          throw Broken("tierwalld rejected its input:\n" + read_text(log));
        }
        return ts::in_netns(ns, [&] {
          auto r = http_get(kNsMetricsPort, "/readyz");
          if (!r || r->status != 200) return false;
          auto m = http_get(kNsMetricsPort, "/metrics");
          return m && metric(m->body, "tierwall_endpoints{", true) == static_cast<double>(n);
        });
      },
      Millis{60'000}, Millis{50});
  if (!ready)
    throw Broken("tierwalld with " + std::to_string(n) + " endpoints not ready after 60 s:\n" +
                 read_text(log));
  run.ready_ms = ms_between(t0, Clock::now());
  const std::string comm = trim(read_text("/proc/" + std::to_string(pid) + "/comm"));
  if (comm != "tierwalld")
    throw Broken("pid " + std::to_string(pid) + " is '" + comm + "', not tierwalld");
  nap(Millis{500});  // let it settle
  run.mem = read_memory(pid);

  if (measure_idle) {
    const auto c0 = cpu_ticks(pid);
    const auto w0 = Clock::now();
    nap(Millis{1000L * idle_s});
    const auto c1 = cpu_ticks(pid);
    const double wall_s = std::chrono::duration<double>(Clock::now() - w0).count();
    if (!c0 || !c1) throw Broken("cannot read /proc/" + std::to_string(pid) + "/stat");
    const double cpu_s =
        static_cast<double>(*c1 - *c0) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    res.idle_cpu_percent[n] = 100.0 * cpu_s / wall_s;
    res.idle_window_s = wall_s;
  }
  return run;
}

MemoryResults run_memory(const Options& opt, const std::string& tierwalld, const fs::path& dir) {
  MemoryResults res;
  res.load = load_average();
  const std::string pid = std::to_string(::getpid());
  const fs::path policy_file = dir / "policy.yaml";
  std::ofstream(policy_file) << bench_policy(pid);
  std::vector<std::size_t> sizes{0};
  sizes.insert(sizes.end(), opt.sizes.begin(), opt.sizes.end());
  for (int rep = 0; rep < opt.memory_runs; ++rep) {
    for (std::size_t n : sizes) {
      check_stop();
      const fs::path inv = dir / ("inventory-" + std::to_string(n) + ".yaml");
      if (!fs::exists(inv)) write_inventory(inv, n, pid);
      const bool idle = rep == 0 && n > 0;
      res.runs[n].push_back(memory_run(tierwalld, dir, n, policy_file, inv, idle, opt.idle_s, res));
    }
  }
  return res;
}

// ---------------------------------------------------------------------------
// Reporting

struct Results {
  Options options;
  LatencyResults lat;
  MemoryResults mem;
  double total_s = 0;
};

std::vector<double> collect(const std::vector<ContainerSample>& v,
                            const std::function<std::optional<double>(const ContainerSample&)>& f) {
  std::vector<double> out;
  for (const auto& s : v) {
    if (auto x = f(s)) out.push_back(*x);
  }
  return out;
}

struct Summary {
  std::size_t containers = 0, started = 0, enforced = 0, with_link = 0;
  std::vector<double> start_to_enf, recv_to_enf, recv_delay, window, link_to_start, run_ms;
  std::size_t window_sent = 0, window_dropped = 0, window_at_commit = 0, window_leaked = 0;
  std::size_t after_sent = 0, after_passed = 0;
};

Summary summarize(const LatencyResults& lat) {
  Summary s;
  s.containers = lat.samples.size();
  for (const auto& c : lat.samples) {
    s.started += c.started ? 1U : 0U;
    s.enforced += c.enforced ? 1U : 0U;
    s.with_link += c.link_to_enforced_ms ? 1U : 0U;
    s.window_sent += c.window_sent;
    s.window_dropped += c.window_dropped;
    s.window_at_commit += c.window_at_commit;
    s.window_leaked += c.window_leaked;
    s.after_sent += c.after_sent;
    s.after_passed += c.after_passed;
  }
  auto both = [](const ContainerSample& c) { return c.started && c.enforced; };
  s.start_to_enf = collect(lat.samples, [&](const ContainerSample& c) -> std::optional<double> {
    return both(c) ? std::optional(c.start_to_enforced_ms) : std::nullopt;
  });
  s.recv_to_enf = collect(lat.samples, [&](const ContainerSample& c) -> std::optional<double> {
    return both(c) ? std::optional(c.received_to_enforced_ms) : std::nullopt;
  });
  s.recv_delay = collect(lat.samples, [&](const ContainerSample& c) -> std::optional<double> {
    return both(c) ? std::optional(c.received_delay_ms) : std::nullopt;
  });
  // The window: from the veth joining podman0; from the start event where
  // the link was not seen.
  s.window = collect(lat.samples, [&](const ContainerSample& c) -> std::optional<double> {
    if (!both(c)) return std::nullopt;
    return c.link_to_enforced_ms ? *c.link_to_enforced_ms : c.start_to_enforced_ms;
  });
  s.link_to_start =
      collect(lat.samples, [](const ContainerSample& c) { return c.link_to_start_ms; });
  s.run_ms = collect(lat.samples, [](const ContainerSample& c) { return std::optional(c.run_ms); });
  return s;
}

double per_endpoint(const MemoryResults& m, std::size_t n, double MemorySample::*field) {
  auto base = m.runs.find(0);
  auto it = m.runs.find(n);
  if (base == m.runs.end() || it == m.runs.end() || n == 0) return std::nan("");
  std::vector<double> b, x;
  for (const auto& r : base->second) b.push_back(r.mem.*field);
  for (const auto& r : it->second) x.push_back(r.mem.*field);
  return (median(x) - median(b)) * 1024.0 / static_cast<double>(n);
}

double median_of(const MemoryResults& m, std::size_t n, double MemorySample::*field) {
  auto it = m.runs.find(n);
  if (it == m.runs.end()) return std::nan("");
  std::vector<double> x;
  for (const auto& r : it->second) x.push_back(r.mem.*field);
  return median(x);
}

double ready_ms(const MemoryResults& m, std::size_t n) {
  auto it = m.runs.find(n);
  if (it == m.runs.end()) return std::nan("");
  std::vector<double> x;
  for (const auto& r : it->second) x.push_back(r.ready_ms);
  return median(x);
}

nlohmann::json num(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

double round3(double v) { return std::isnan(v) ? v : std::round(v * 1000.0) / 1000.0; }

nlohmann::json to_json(const Results& r) {
  const Summary s = summarize(r.lat);
  nlohmann::json j;
  j["containers"] = s.containers;
  j["containers_started"] = s.started;
  j["containers_enforced"] = s.enforced;
  j["containers_in_tier_at_end"] = r.lat.in_tier_at_end;
  j["containers_in_wrong_tier"] = r.lat.wrong_tier;
  j["start_to_enforced_p50_ms"] = num(round3(percentile(s.start_to_enf, 50)));
  j["start_to_enforced_p99_ms"] = num(round3(percentile(s.start_to_enf, 99)));
  j["start_to_enforced_max_ms"] = num(round3(percentile(s.start_to_enf, 100)));
  j["received_to_enforced_p50_ms"] = num(round3(percentile(s.recv_to_enf, 50)));
  j["received_to_enforced_p99_ms"] = num(round3(percentile(s.recv_to_enf, 99)));
  j["start_to_received_p50_ms"] = num(round3(percentile(s.recv_delay, 50)));
  j["start_to_received_p99_ms"] = num(round3(percentile(s.recv_delay, 99)));
  j["agent_reported_p50_ms"] = num(r.lat.agent_reported_p50.value_or(std::nan("")));
  j["agent_reported_p99_ms"] = num(r.lat.agent_reported_p99.value_or(std::nan("")));
  j["fail_closed_window_p50_ms"] = num(round3(percentile(s.window, 50)));
  j["fail_closed_window_p99_ms"] = num(round3(percentile(s.window, 99)));
  j["fail_closed_window_from_link"] = s.with_link;
  j["network_up_to_start_event_p50_ms"] = num(round3(percentile(s.link_to_start, 50)));
  j["probe_window_sent"] = s.window_sent;
  j["probe_window_dropped"] = s.window_dropped;
  j["probe_window_at_commit"] = s.window_at_commit;
  j["probe_window_leaked"] = s.window_leaked;
  j["probe_after_sent"] = s.after_sent;
  j["probe_after_passed"] = s.after_passed;
  j["default_deny_packets"] = r.lat.default_deny_packets;
  j["probe_flow_packets"] = r.lat.probe_flow_packets;
  j["podman_run_p50_ms"] = num(round3(percentile(s.run_ms, 50)));
  j["agent_ready_ms"] = round3(r.lat.agent_ready_ms);
  j["notification_overruns"] = r.lat.overruns;
  j["enforced_seen_by_poll"] = r.lat.enforced_by_poll;
  j["target_start_to_enforced_p99_ms"] = kTargetStartP99Ms;
  for (std::size_t n : r.options.sizes) {
    const std::string k = n % 1000 == 0 ? std::to_string(n / 1000) + "k" : std::to_string(n);
    j["bytes_per_endpoint_" + k] = num(std::round(per_endpoint(r.mem, n, &MemorySample::rss_kib)));
    j["pss_bytes_per_endpoint_" + k] =
        num(std::round(per_endpoint(r.mem, n, &MemorySample::pss_kib)));
    j["anon_bytes_per_endpoint_" + k] =
        num(std::round(per_endpoint(r.mem, n, &MemorySample::anon_kib)));
    j["rss_kib_" + k] = num(median_of(r.mem, n, &MemorySample::rss_kib));
    j["peak_rss_kib_" + k] = num(median_of(r.mem, n, &MemorySample::hwm_kib));
    j["agent_ready_ms_" + k] = num(round3(ready_ms(r.mem, n)));
  }
  j["rss_kib_baseline"] = num(median_of(r.mem, 0, &MemorySample::rss_kib));
  j["memory_runs_per_size"] = r.options.memory_runs;
  j["target_bytes_per_endpoint"] = kTargetBytesPerEndpoint;
  auto idle = [&](std::size_t n) {
    auto it = r.mem.idle_cpu_percent.find(n);
    return it == r.mem.idle_cpu_percent.end() ? std::nan("") : it->second;
  };
  j["idle_cpu_percent"] = num(round3(idle(10'000)));  // the figure: 10k endpoints
  for (std::size_t n : r.options.sizes) {
    const std::string k = n % 1000 == 0 ? std::to_string(n / 1000) + "k" : std::to_string(n);
    j["idle_cpu_percent_" + k] = num(round3(idle(n)));
  }
  j["idle_window_s"] = round3(r.mem.idle_window_s);
  j["load_average"] = r.lat.load;
  j["quick"] = r.options.quick;
  j["total_s"] = round3(r.total_s);
  return j;
}

const char* verdict(double v, double target) {
  if (std::isnan(v)) return "n/a";
  return v <= target ? "met" : "MISSED";
}

void print_report(const Results& r) {
  const Summary s = summarize(r.lat);
  std::printf("tierwall-bench agent%s — load average at start: %s\n\n",
              r.options.quick ? " --quick" : "", r.lat.load.c_str());
  std::printf(
      "(a) container start -> enforced (%zu containers, one at a time; %zu started, "
      "%zu enforced, %zu in their tier's kernel set at the end, %zu in a wrong one)\n",
      s.containers, s.started, s.enforced, r.lat.in_tier_at_end, r.lat.wrong_tier);
  std::printf("  %-58s %9s %9s %9s\n", "", "p50 ms", "p99 ms", "max ms");
  auto row = [](const char* what, const std::vector<double>& v) {
    std::printf("  %-58s %9.2f %9.2f %9.2f\n", what, percentile(v, 50), percentile(v, 99),
                percentile(v, 100));
  };
  row("runtime start event (timeNano) -> tier element in kernel", s.start_to_enf);
  row("event received by a listener -> tier element in kernel", s.recv_to_enf);
  row("runtime start event (timeNano) -> received by a listener", s.recv_delay);
  row("fail-closed window: veth up on podman0 -> enforced", s.window);
  row("veth up on podman0 -> runtime start event (timeNano)", s.link_to_start);
  row("`podman run -d` (for scale)", s.run_ms);
  if (r.lat.agent_reported_p50) {
    std::printf("  %-58s %9.2f %9.2f\n", "agent's own log: event arrived -> enforced",
                *r.lat.agent_reported_p50, r.lat.agent_reported_p99.value_or(std::nan("")));
  }
  const double p99 = percentile(s.start_to_enf, 99);
  std::printf("  target: start -> enforced p99 <= %.0f ms: %s\n", kTargetStartP99Ms,
              verdict(p99, kTargetStartP99Ms));
  std::printf(
      "  fail closed: probe datagrams host -> container (udp/9) sent in the window: %zu, "
      "dropped: %zu, passed: %zu (of which after the event reached us, racing the commit: %zu); "
      "sent after enforcement: %zu, passed: %zu\n",
      s.window_sent, s.window_dropped, s.window_leaked + s.window_at_commit, s.window_at_commit,
      s.after_sent, s.after_passed);
  std::printf(
      "  counters of the agent's table over the run: default-deny %.0f packets, flow "
      "host-probe %.0f packets (probe datagrams this table accepted; another table on the "
      "node may still drop them)\n",
      r.lat.default_deny_packets, r.lat.probe_flow_packets);
  std::printf(
      "  window measured from the veth for %zu of %zu containers (else from the event); "
      "enforcement seen first by a set dump for %zu, notifications lost %zu times\n",
      s.with_link, s.containers, r.lat.enforced_by_poll, r.lat.overruns);
  std::printf("  tiers in the agent's /metrics: ");
  for (const auto& [t, n] : r.lat.metrics_tiers) std::printf("%s=%ld ", t.c_str(), n);
  std::printf("\n  agent start -> ready with the runtime connected: %.0f ms\n\n",
              r.lat.agent_ready_ms);

  std::printf("(b) agent memory (tierwalld with an inventory, own netns; median of %d run(s))\n",
              r.options.memory_runs);
  std::printf("  %-10s %10s %10s %10s %10s %9s %9s %9s %9s\n", "endpoints", "VmRSS KiB", "peak KiB",
              "Pss KiB", "anon KiB", "B/ep RSS", "B/ep Pss", "B/ep anon", "ready ms");
  std::vector<std::size_t> sizes{0};
  sizes.insert(sizes.end(), r.options.sizes.begin(), r.options.sizes.end());
  for (std::size_t n : sizes) {
    std::printf(
        "  %-10zu %10.0f %10.0f %10.0f %10.0f %9.0f %9.0f %9.0f %9.0f\n", n,
        median_of(r.mem, n, &MemorySample::rss_kib), median_of(r.mem, n, &MemorySample::hwm_kib),
        median_of(r.mem, n, &MemorySample::pss_kib), median_of(r.mem, n, &MemorySample::anon_kib),
        per_endpoint(r.mem, n, &MemorySample::rss_kib),
        per_endpoint(r.mem, n, &MemorySample::pss_kib),
        per_endpoint(r.mem, n, &MemorySample::anon_kib), ready_ms(r.mem, n));
  }
  for (std::size_t n : r.options.sizes) {
    const double b = per_endpoint(r.mem, n, &MemorySample::rss_kib);
    std::printf("  target <= %.0f B/endpoint (VmRSS) at %zu: %s\n", kTargetBytesPerEndpoint, n,
                verdict(b, kTargetBytesPerEndpoint));
  }
  for (const auto& [n, pct] : r.mem.idle_cpu_percent) {
    std::printf("\n(c) idle CPU, %zu endpoints, no changes, %.1f s: %.3f %% of one core", n,
                r.mem.idle_window_s, pct);
  }
  std::printf("\n");
  std::printf("\ntotal %.1f s\n", r.total_s);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "%s: cannot run here: needs root (rootful Podman, nftables)\n", kProg);
    return kExitSkip;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  const auto start = Clock::now();
  ::setenv("CONTAINERS_CONF",
           (std::string(TIERWALL_SOURCE_DIR) + "/tests/podman/containers.conf").c_str(), 1);
  const std::string script = std::string(TIERWALL_SOURCE_DIR) + "/scripts/podman-setup.sh";

  Results r;
  r.options = opt;
  try {
    if (auto why = ts::netns_unavailable_reason()) throw Unavailable(*why);
    const std::string tierwalld = find_tierwalld();
    if (!ts::run_argv({"podman", "--version"}).ok()) {
      throw Unavailable("podman is not installed (scripts/podman-setup.sh install)");
    }
    if (!ts::run_argv({"podman", "image", "exists", kImage}).ok() &&
        !ts::run_argv({script, "images"}, Millis{120'000}).ok()) {
      throw Unavailable("image " + kImage + " missing and scripts/podman-setup.sh images failed");
    }
    cleanup_stale();
    ts::TempDir dir{"twbench-agent"};
    r.lat = run_latency(opt, tierwalld, script, dir.path());
    r.mem = run_memory(opt, tierwalld, dir.path());
  } catch (const Interrupted&) {
    std::fprintf(stderr, "%s: interrupted; containers, table and service removed\n", kProg);
    return 130;
  } catch (const Unavailable& e) {
    std::fprintf(stderr, "%s: cannot run here: %s\n", kProg, e.what());
    return kExitSkip;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProg, e.what());
    return 1;
  }
  r.total_s = ms_between(start, Clock::now()) / 1000.0;

  if (opt.json) {
    std::cout << to_json(r).dump() << "\n";
  } else {
    print_report(r);
  }
  const Summary s = summarize(r.lat);
  if (s.enforced != s.containers || r.lat.in_tier_at_end != s.containers || r.lat.wrong_tier != 0) {
    std::fprintf(stderr,
                 "%s: %zu of %zu containers enforced, %zu in their tier's set at the end, %zu in "
                 "a wrong tier\n",
                 kProg, s.enforced, s.containers, r.lat.in_tier_at_end, r.lat.wrong_tier);
    return 1;
  }
  return 0;
}
