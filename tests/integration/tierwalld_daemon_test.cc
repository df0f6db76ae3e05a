// The long-running `tierwalld` as an operator runs it, inside the node
// namespace of a BridgeLab: it follows its inventory and policy files,
// rejects an invalid policy without touching the rules, reloads on SIGHUP,
// keeps the rules enforced while it is down (kill -9) and adopts them on
// restart without cutting an established connection, and leaves them in
// place on SIGTERM.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tierwall/testsupport/netns.h"

namespace {

namespace fs = std::filesystem;
using tierwall::testsupport::BridgeLab;
using tierwall::testsupport::BridgeLabOptions;
using tierwall::testsupport::Millis;
using tierwall::testsupport::Outcome;
using tierwall::testsupport::TcpServer;
using tierwall::testsupport::TcpSession;

const std::string kTierwalld = TIERWALLD_BINARY;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: daemon-test}
spec:
  mode: enforce
  tiers:
    - {name: web, level: 100}
    - {name: db, level: 200}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: db, match: {labels: {role: db}}, tier: db}
  flows:
    - {name: world-to-web, from: {world: ["0.0.0.0/0"]}, to: {tier: web}, ports: [tcp/8080]}
    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432]}
)";
constexpr const char* kExtraFlow =
    "    - {name: web-to-db-admin, from: {tier: web}, to: {tier: db}, ports: [tcp/6000]}\n";
constexpr const char* kBadPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: daemon-test}
spec:
  flows:
    - {name: to-nowhere, from: {tier: web}, to: {tier: no-such-tier}, ports: [tcp/1]}
)";

std::string inventory(bool with_db) {
  std::string s =
      "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: node-t, addresses: "
      "[10.88.0.1]}\nendpoints:\n"
      "  - {name: web-0, id: \"c0\", labels: {role: web}, addresses: [10.88.0.10]}\n";
  if (with_db) s += "  - {name: db-0, id: \"c1\", labels: {role: db}, addresses: [10.88.0.11]}\n";
  return s;
}

// As editors do: write a temporary file, then rename it over the target.
void replace_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream f(tmp);
    f << text;
  }
  fs::rename(tmp, path);
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool wait_until(const std::function<bool()>& pred, Millis timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis{50});
  }
  return true;
}

// Running and not a zombie.
bool alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

class TierwalldDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = tierwall::testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    char tmpl[] = "/tmp/tierwalld-daemon-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "policy");
    replace_file(dir_ / "policy" / "policy.yaml", kPolicy);
    replace_file(dir_ / "inventory.yaml", inventory(false));
    log_ = dir_ / "tierwalld.log";
    BridgeLabOptions opts;
    opts.br0_containers = 2;
    opts.br1_containers = 0;
    opts.bridge_nf_call = true;
    lab_ = std::make_unique<BridgeLab>(opts);
  }
  void TearDown() override {
    if (HasFailure() && fs::exists(log_)) std::cerr << "tierwalld log:\n" << read_file(log_);
    lab_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  pid_t start_daemon() {
    return lab_->node.spawn("exec " + kTierwalld + " --policy " + (dir_ / "policy").string() +
                                " --inventory " + (dir_ / "inventory.yaml").string() +
                                " --container-cidr 10.88.0.0/16",
                            log_.string());
  }
  // Stateless: counters move with every probe.
  std::string table() { return lab_->node.run("nft -s list table inet tierwall").out; }
  bool table_exists() { return lab_->node.run("nft list table inet tierwall").ok(); }
  Outcome probe(const tierwall::testsupport::NetNs& from, const std::string& to,
                std::uint16_t port) {
    return tierwall::testsupport::tcp_probe(from, to, port, Millis{500});
  }
  std::string log() { return read_file(log_); }

  fs::path dir_;
  fs::path log_;
  std::unique_ptr<BridgeLab> lab_;
};

TEST_F(TierwalldDaemon, FollowsFilesSurvivesRestartAndStopsLeavingRules) {
  auto& c0 = lab_->br0_containers[0];
  auto& c1 = lab_->br0_containers[1];
  TcpServer web_ok(c0.ns, c0.v4, 8080);
  TcpServer web_denied(c0.ns, c0.v4, 9090);
  TcpServer db(c1.ns, c1.v4, 5432);
  TcpServer db_admin(c1.ns, c1.v4, 6000);

  pid_t pid = start_daemon();
  ASSERT_TRUE(wait_until([&] { return table_exists(); }, Millis{5000})) << log();
  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{3000}));

  // Allowed and denied; the db container is not in the inventory yet: quarantined.
  EXPECT_EQ(probe(lab_->world, c0.v4, 8080), Outcome::kOk);
  EXPECT_EQ(probe(lab_->world, c0.v4, 9090), Outcome::kTimeout);
  EXPECT_EQ(probe(c0.ns, c1.v4, 5432), Outcome::kTimeout);

  // The inventory gains the db container: web -> db:5432 passes within ~2 s.
  replace_file(dir_ / "inventory.yaml", inventory(true));
  EXPECT_TRUE(wait_until([&] { return probe(c0.ns, c1.v4, 5432) == Outcome::kOk; }, Millis{2500}))
      << log();
  EXPECT_EQ(probe(c0.ns, c1.v4, 6000), Outcome::kTimeout);

  // An invalid policy file: rejected with its diagnostics, rules unchanged.
  const std::string before_bad = table();
  ASSERT_NE(before_bad.find("chain fwd4"), std::string::npos) << before_bad;
  replace_file(dir_ / "policy" / "50-bad.yaml", kBadPolicy);
  ASSERT_TRUE(
      wait_until([&] { return log().find("policy rejected") != std::string::npos; }, Millis{3000}))
      << log();
  EXPECT_NE(log().find("50-bad.yaml:"), std::string::npos) << log();
  EXPECT_TRUE(alive(pid));
  EXPECT_EQ(table(), before_bad);
  EXPECT_EQ(probe(c0.ns, c1.v4, 5432), Outcome::kOk);
  fs::remove(dir_ / "policy" / "50-bad.yaml");

  // A valid change and SIGHUP: the new flow is enforced.
  replace_file(dir_ / "policy" / "policy.yaml", std::string(kPolicy) + kExtraFlow);
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  EXPECT_TRUE(wait_until([&] { return probe(c0.ns, c1.v4, 6000) == Outcome::kOk; }, Millis{2500}))
      << log();
  EXPECT_NE(log().find("SIGHUP"), std::string::npos);
  EXPECT_TRUE(alive(pid));

  // kill -9: the rules stay enforced, the established connection lives on.
  TcpSession session(c0.ns, c1.v4, 5432, Millis{1000});
  ASSERT_TRUE(session.exchange());
  const std::string before_kill = table();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  lab_->node.stop(pid);
  EXPECT_EQ(table(), before_kill);
  EXPECT_TRUE(session.exchange());
  EXPECT_EQ(probe(lab_->world, c0.v4, 9090), Outcome::kTimeout);

  // Restart: the table is adopted (nothing flushed), the session still works.
  const auto applies_before = count_of(log(), "applied policy");
  pid = start_daemon();
  ASSERT_TRUE(
      wait_until([&] { return count_of(log(), "applied policy") > applies_before; }, Millis{5000}))
      << log();
  EXPECT_NE(log().find("exists: keeping it enforced"), std::string::npos) << log();
  EXPECT_TRUE(session.exchange());
  EXPECT_EQ(probe(c0.ns, c1.v4, 6000), Outcome::kOk);
  EXPECT_EQ(probe(lab_->world, c0.v4, 9090), Outcome::kTimeout);

  // SIGTERM: a clean stop that leaves the table in place.
  const std::string before_term = table();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_TRUE(wait_until([&] { return !alive(pid); }, Millis{3000})) << log();
  lab_->node.stop(pid);
  EXPECT_NE(log().find("stopped"), std::string::npos);
  EXPECT_EQ(table(), before_term);
  EXPECT_TRUE(session.exchange());
}

// A restart with an identity source that has not reported: the ruleset a
// previous run left is not replaced until the source reports or 10 s pass.
TEST_F(TierwalldDaemon, RestartKeepsTheTableUntilSourcesReport) {
  auto& c0 = lab_->br0_containers[0];
  auto& c1 = lab_->br0_containers[1];
  TcpServer db(c1.ns, c1.v4, 5432);
  replace_file(dir_ / "inventory.yaml", inventory(true));
  const std::string args = " --policy " + (dir_ / "policy").string() + " --inventory " +
                           (dir_ / "inventory.yaml").string() + " --container-cidr 10.88.0.0/16";
  ASSERT_TRUE(lab_->node.run(kTierwalld + args + " --once").ok());
  const std::string left = table();
  ASSERT_NE(left.find("chain fwd4"), std::string::npos) << left;
  ASSERT_EQ(probe(c0.ns, c1.v4, 5432), Outcome::kOk);

  // The runtime socket does not exist: the runtime source never reports.
  const pid_t pid = lab_->node.spawn(
      "exec " + kTierwalld + args + " --runtime-socket " + (dir_ / "none.sock").string(),
      log_.string());
  ASSERT_TRUE(wait_until([&] { return log().find("keeping it enforced") != std::string::npos; },
                         Millis{3000}))
      << log();
  std::this_thread::sleep_for(Millis{1500});
  EXPECT_EQ(log().find("applied policy"), std::string::npos) << log();
  EXPECT_EQ(table(), left);
  EXPECT_EQ(probe(c0.ns, c1.v4, 5432), Outcome::kOk);

  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{12000}))
      << log();
  EXPECT_NE(log().find("not ready after 10000 ms"), std::string::npos) << log();
  EXPECT_EQ(probe(c0.ns, c1.v4, 5432), Outcome::kOk);
  EXPECT_TRUE(alive(pid));
  lab_->node.stop(pid);
  EXPECT_TRUE(table_exists());
}

// Drift repair: whoever else changes tierwall's table (flush, delete, an
// inserted accept) sees it restored within 1 s, logged and counted; other
// tables are left alone.
TEST_F(TierwalldDaemon, RepairsDriftOfItsTable) {
  auto& c0 = lab_->br0_containers[0];
  TcpServer web_denied(c0.ns, c0.v4, 9090);
  const pid_t pid = start_daemon();
  ASSERT_TRUE(wait_until([&] { return table_exists(); }, Millis{5000})) << log();
  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{3000}));
  ASSERT_EQ(probe(lab_->world, c0.v4, 9090), Outcome::kTimeout);
  const std::string want = table();
  ASSERT_NE(want.find("chain fwd4"), std::string::npos) << want;

  for (const std::string cmd : {"nft flush table inet tierwall", "nft delete table inet tierwall",
                                "nft insert rule inet tierwall forward accept"}) {
    SCOPED_TRACE(cmd);
    const auto repairs_before = count_of(log(), "drift:");
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(lab_->node.run(cmd).ok());
    const bool restored = wait_until([&] { return table() == want; }, Millis{1500});
    const auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t0);
    std::cerr << "[ drift ] " << cmd << ": restored after " << took.count() << " ms\n";
    ASSERT_TRUE(restored) << table() << log();
    EXPECT_LE(took.count(), 1000);
    EXPECT_TRUE(wait_until([&] { return count_of(log(), "drift:") > repairs_before; }, Millis{500}))
        << log();
    EXPECT_EQ(probe(lab_->world, c0.v4, 9090), Outcome::kTimeout);
  }
  const std::string text = log();
  {
    std::istringstream lines(text);
    for (std::string l; std::getline(lines, l);) {
      if (l.find("drift:") != std::string::npos) std::cerr << "[ drift ] " << l << "\n";
    }
  }
  EXPECT_NE(text.find("restored policy generation"), std::string::npos) << text;
  EXPECT_NE(text.find("3 drift repairs"), std::string::npos) << text;

  // Another table: nothing happens, and it is left in place.
  const auto drifts = count_of(log(), "drift:");
  ASSERT_TRUE(lab_->node.run("nft add table inet other").ok());
  std::this_thread::sleep_for(Millis{700});
  EXPECT_EQ(count_of(log(), "drift:"), drifts) << log();
  EXPECT_TRUE(lab_->node.run("nft list table inet other").ok());
  EXPECT_EQ(table(), want);
  EXPECT_TRUE(alive(pid));
  lab_->node.stop(pid);
}

// Metrics and health endpoints on --metrics, fetched inside the node
// namespace: /healthz, /readyz once the policy is applied, and /metrics with
// the policy generation, endpoints per tier and per-rule counters.
TEST_F(TierwalldDaemon, ServesMetricsAndHealth) {
  auto& c0 = lab_->br0_containers[0];
  TcpServer web_ok(c0.ns, c0.v4, 8080);
  const std::string port = "19641";
  const fs::path fetch = dir_ / "fetch.sh";
  replace_file(fetch, "exec 3<>/dev/tcp/127.0.0.1/" + port +
                          " || exit 7\n"
                          "printf 'GET %s HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' \"$1\" >&3\n"
                          "timeout 3 cat <&3\n");
  auto get = [&](const std::string& path) {
    return lab_->node.run("bash " + fetch.string() + " " + path).out;
  };

  const pid_t pid =
      lab_->node.spawn("exec " + kTierwalld + " --policy " + (dir_ / "policy").string() +
                           " --inventory " + (dir_ / "inventory.yaml").string() +
                           " --container-cidr 10.88.0.0/16 --metrics 127.0.0.1:" + port,
                       log_.string());
  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{5000}))
      << log();
  EXPECT_NE(log().find("metrics on http://127.0.0.1:" + port), std::string::npos) << log();
  EXPECT_EQ(probe(lab_->world, c0.v4, 8080), Outcome::kOk);

  const std::string health = get("/healthz");
  EXPECT_EQ(health.rfind("HTTP/1.0 200", 0), 0U) << health << log();
  EXPECT_NE(health.find("\r\n\r\nok"), std::string::npos) << health;
  std::string ready;
  EXPECT_TRUE(wait_until(
      [&] {
        ready = get("/readyz");
        return ready.rfind("HTTP/1.0 200", 0) == 0;
      },
      Millis{2000}))
      << ready << log();

  const std::string metrics = get("/metrics");
  EXPECT_EQ(metrics.rfind("HTTP/1.0 200", 0), 0U) << metrics;
  EXPECT_NE(metrics.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ntierwall_policy_generation 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ntierwall_endpoints{tier=\"web\"} 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ntierwall_policy_info{name=\"daemon-test\",digest=\""),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\ntierwall_apply_duration_seconds_count "), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("\ntierwall_apply_duration_seconds_count 0\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\ntierwall_identity_source_connected{source=\"inventory\"} 1\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\ntierwall_rule_packets_total{rule=\"world-to-web\",kind=\"flow\"} "),
            std::string::npos)
      << metrics;

  const std::string missing = get("/nope");
  EXPECT_EQ(missing.rfind("HTTP/1.0 404", 0), 0U) << missing;
  EXPECT_TRUE(alive(pid));
  lab_->node.stop(pid);
}

// nft.overlay in the agent's config file reaches the ruleset: the overlay
// device set, the trusted peer and the untrusted-VXLAN counter appear in
// tierwall's table (what they do is nft_overlay_test's subject).
TEST_F(TierwalldDaemon, ConfigOverlayProgramsTheTierOnTheWire) {
  replace_file(dir_ / "agent.yaml",
               "policy: policy\n"
               "inventory: inventory.yaml\n"
               "containerCidrs: [10.88.0.0/16]\n"
               "api: {socket: \"\"}\n"
               "metrics: {address: 127.0.0.1:19642}\n"
               "nft:\n"
               "  overlay:\n"
               "    devices: [tw-vx0]\n"
               "    peers: [192.0.2.11]\n");
  const pid_t pid = lab_->node.spawn(
      "exec " + kTierwalld + " --config " + (dir_ / "agent.yaml").string(), log_.string());
  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{5000}))
      << log();
  const std::string t = table();
  EXPECT_NE(t.find("tw-vx0"), std::string::npos) << t;
  EXPECT_NE(t.find("192.0.2.11"), std::string::npos) << t;
  EXPECT_NE(t.find("ovl_untrusted"), std::string::npos) << t;
  lab_->node.stop(pid);
}

}  // namespace
