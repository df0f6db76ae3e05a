// The real agent (tierwalld) against real rootful Podman: containers on
// podman's bridge (podman0, 10.88.0.0/16, root network namespace) are
// assigned tiers by labels, image glob and name glob (one unmatched one is
// quarantined), the agent's /metrics shows the tier counts, real traffic
// between the containers is allowed or denied by the policy, and the counts
// follow a churn of containers.
//
// The agent runs in the root namespace on a table of the test's own
// (inet twtest<pid>), never the default one; only that table is deleted
// afterwards. Containers are named twap-<pid>-* and removed in TearDown,
// pass or fail; the br_netfilter sysctls are restored.
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/testsupport/podman.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

using tierwall::testsupport::free_loopback_port;
using tierwall::testsupport::http_get;
using tierwall::testsupport::read_text;
using tierwall::testsupport::shell;
using tierwall::testsupport::ShellResult;
using tierwall::testsupport::split_lines;
using tierwall::testsupport::tier_counts;
using tierwall::testsupport::trim;
using tierwall::testsupport::wait_until;

const std::string kTierwalld = TIERWALLD_BINARY;
const std::string kTierctl = TIERCTL_BINARY;
const std::string kScript = std::string(TIERWALL_SOURCE_DIR) + "/scripts/podman-setup.sh";
const std::string kBusybox = "reg.example/tierwall/busybox:1";
const std::array<const char*, 2> kBridgeSysctls = {"/proc/sys/net/bridge/bridge-nf-call-iptables",
                                                   "/proc/sys/net/bridge/bridge-nf-call-ip6tables"};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

class AgentPodmanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: rootful Podman and nftables";
    t0_ = Clock::now();
    ::setenv("CONTAINERS_CONF",
             (std::string(TIERWALL_SOURCE_DIR) + "/tests/podman/containers.conf").c_str(), 1);
    pid_ = std::to_string(::getpid());
    prefix_ = "twap-" + pid_ + "-";
    table_ = "twtest" + pid_;
    socket_ = "/run/tierwall-test/agent-podman-" + pid_ + ".sock";
    char tmpl[] = "/tmp/tierwall-agent-podman-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    log_ = dir_ / "tierwalld.log";

    ShellResult setup = shell(kScript);
    ASSERT_EQ(setup.rc, 0) << "scripts/podman-setup.sh failed:\n" << setup.out;
    ShellResult service = shell(kScript + " service start " + socket_);
    service_started_ = true;
    ASSERT_EQ(service.rc, 0) << "podman service did not start:\n" << service.out;
    std::printf("[ timing   ] podman setup + service: %.0f ms\n", ms_since(t0_));

    // Bridged traffic on podman0 must pass the inet hooks to be policed.
    for (const char* key : kBridgeSysctls) {
      if (!fs::exists(key)) continue;
      saved_sysctls_.emplace_back(key, trim(read_text(key)));
      std::ofstream(key) << "1\n";
    }
    if (saved_sysctls_.empty()) GTEST_SKIP() << "br_netfilter is not available";
  }

  void TearDown() override {
    if (agent_pid_ > 0) {
      ::kill(agent_pid_, SIGTERM);
      int st = 0;
      const auto deadline = Clock::now() + Millis{3000};
      while (::waitpid(agent_pid_, &st, WNOHANG) == 0) {
        if (Clock::now() >= deadline) {
          ::kill(agent_pid_, SIGKILL);
          ::waitpid(agent_pid_, &st, 0);
          break;
        }
        std::this_thread::sleep_for(Millis{20});
      }
      agent_pid_ = -1;
    }
    if (HasFailure() && fs::exists(log_)) std::cerr << "tierwalld log:\n" << read_text(log_);
    if (!table_.empty()) shell("nft delete table inet " + table_);
    if (!prefix_.empty()) {
      ShellResult names =
          shell("podman ps -a --filter name=^" + prefix_ + " --format '{{.Names}}'");
      std::string all;
      for (const auto& n : split_lines(names.out)) all += " " + n;
      if (!all.empty()) {
        ShellResult rm = shell("podman rm -f -t 0" + all);
        EXPECT_EQ(rm.rc, 0) << rm.out;
      }
    }
    if (service_started_) shell(kScript + " service stop " + socket_);
    for (const auto& [key, value] : saved_sysctls_) std::ofstream(key) << value << "\n";
    if (!dir_.empty()) fs::remove_all(dir_);
    std::printf("[ timing   ] total incl. cleanup: %.0f ms\n", ms_since(t0_));
  }

  std::string policy() const {
    return "apiVersion: tierwall.io/v1\n"
           "kind: SegmentationPolicy\n"
           "metadata: {name: agent-podman-test}\n"
           "spec:\n"
           "  mode: enforce\n"
           "  tiers:\n"
           "    - {name: web, level: 100}\n"
           "    - {name: app, level: 200}\n"
           "    - {name: db, level: 300}\n"
           "  assignments:\n"
           "    - {name: web, match: {labels: {twtest: \"" +
           pid_ +
           "\", role: web}}, tier: web}\n"
           "    - {name: app, match: {labels: {twtest: \"" +
           pid_ +
           "\"}, image: \"reg.example/shop/api:*\"}, tier: app}\n"
           "    - {name: db, match: {name: \"" +
           prefix_ +
           "db*\"}, tier: db}\n"
           "  flows:\n"
           "    - {name: web-to-app, from: {tier: web}, to: {tier: app}, ports: [tcp/8080]}\n"
           "    - {name: app-to-db, from: {tier: app}, to: {tier: db}, ports: [tcp/8080]}\n";
  }

  void start_agent() {
    const fs::path policy_file = dir_ / "policy.yaml";
    std::ofstream(policy_file) << policy();
    // The local API on a socket of the test's own; gid 4240 may open it and
    // has no role.
    ::chmod(dir_.c_str(), 0755);
    std::ofstream(dir_ / "agent.yaml") << "api: {socket: api.sock, group: \"4240\"}\n";
    metrics_port_ = free_loopback_port();
    ASSERT_GT(metrics_port_, 0);
    const std::string cmd =
        "exec " + kTierwalld + " --config " + (dir_ / "agent.yaml").string() + " --policy " +
        policy_file.string() + " --table " + table_ + " --no-bridge-netfilter --runtime-socket " +
        socket_ +
        " --container-cidr 10.88.0.0/16 --metrics 127.0.0.1:" + std::to_string(metrics_port_) +
        " >" + log_.string() + " 2>&1";
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    agent_pid_ = pid;
  }

  std::string metrics_text() {
    auto m = http_get(metrics_port_, "/metrics");
    return m ? m->body : "(none)";
  }
  std::map<std::string, long> counts() {
    auto m = http_get(metrics_port_, "/metrics");
    return m ? tier_counts(m->body) : std::map<std::string, long>{};
  }
  long count(const std::string& tier) {
    auto c = counts();
    auto it = c.find(tier);
    return it == c.end() ? -1 : it->second;
  }

  // An echo server on tcp/8080.
  void start(const std::string& suffix, const std::string& image, const std::string& labels) {
    ShellResult c = shell("podman run -d --name " + prefix_ + suffix + " " + labels + " " + image +
                          " nc -ll -p 8080 -e cat");
    ASSERT_EQ(c.rc, 0) << c.out;
  }
  std::string ip(const std::string& suffix) {
    return trim(
        shell("podman inspect --format '{{.NetworkSettings.IPAddress}}' " + prefix_ + suffix).out);
  }
  // True when `from` reaches to:8080 and gets its line echoed back.
  bool reaches(const std::string& from, const std::string& to_ip) {
    ShellResult c = shell("podman exec " + prefix_ + from + " sh -c 'echo ping-" + pid_ +
                          " | nc -w 1 " + to_ip + " 8080'");
    return c.out.find("ping-" + pid_) != std::string::npos;
  }
  std::string log() { return read_text(log_); }

  Clock::time_point t0_;
  std::string pid_, prefix_, table_, socket_;
  fs::path dir_, log_;
  bool service_started_ = false;
  std::vector<std::pair<std::string, std::string>> saved_sysctls_;
  pid_t agent_pid_ = -1;
  int metrics_port_ = 0;
};

TEST_F(AgentPodmanTest, TiersMetricsTrafficAndChurn) {
  const std::string web_labels = "--label twtest=" + pid_ + " --label role=web";
  const std::string app_labels = "--label twtest=" + pid_;
  auto t = Clock::now();
  start("web", kBusybox, web_labels);                    // by labels
  start("api", "reg.example/shop/api:3.1", app_labels);  // by image glob
  start("db1", "reg.example/pay/db:2", "");              // by name glob
  start("stray", "reg.example/ops/monitor:0.9", "");     // unmatched: quarantine
  if (HasFatalFailure()) return;
  std::printf("[ timing   ] 4 containers started: %.0f ms\n", ms_since(t));
  const std::string web = ip("web"), api = ip("api"), db = ip("db1"), stray = ip("stray");
  ASSERT_FALSE(web.empty() || api.empty() || db.empty() || stray.empty());

  // Without the agent, podman's bridge lets everything through.
  EXPECT_TRUE(wait_until([&] { return reaches("web", db); }, Millis{3000}));
  EXPECT_TRUE(reaches("stray", web));

  t = Clock::now();
  start_agent();
  ASSERT_TRUE(wait_until(
      [&] {
        auto c = counts();
        return c["web"] == 1 && c["app"] == 1 && c["db"] == 1 && c["quarantine"] >= 1;
      },
      Millis{10000}))
      << "metrics:\n"
      << metrics_text() << "\nlog:\n"
      << log();
  ASSERT_TRUE(
      wait_until([&] { return log().find("applied policy") != std::string::npos; }, Millis{5000}))
      << log();
  std::printf("[ timing   ] agent up, tiers in /metrics: %.0f ms\n", ms_since(t));

  // Allowed by the flows (retried briefly: the last upsert may still be applying).
  t = Clock::now();
  EXPECT_TRUE(wait_until([&] { return reaches("web", api); }, Millis{5000})) << log();
  EXPECT_TRUE(wait_until([&] { return reaches("api", db); }, Millis{5000})) << log();
  // Denied: no flow, wrong direction, quarantine both ways.
  EXPECT_FALSE(reaches("web", db));
  EXPECT_FALSE(reaches("api", web));
  EXPECT_FALSE(reaches("db1", api));
  EXPECT_FALSE(reaches("stray", web));
  EXPECT_FALSE(reaches("web", stray));
  std::printf("[ timing   ] traffic checks: %.0f ms\n", ms_since(t));

  // Churn: 5 more web, 5 more app, then all removed again.
  t = Clock::now();
  std::string starts;
  for (int i = 0; i < 10; ++i) {
    const bool is_web = i % 2 == 0;
    starts += "podman run -d --name " + prefix_ + "churn" + std::to_string(i) + " " +
              (is_web ? web_labels + " " + kBusybox : app_labels + " reg.example/shop/api:3.1") +
              " nc -ll -p 8080 -e cat >/dev/null & ";
  }
  ShellResult started = shell(starts + "wait");
  ASSERT_EQ(started.rc, 0) << started.out;
  EXPECT_TRUE(wait_until([&] { return count("web") == 6 && count("app") == 6; }, Millis{10000}))
      << "web=" << count("web") << " app=" << count("app") << "\n"
      << log();
  EXPECT_EQ(count("db"), 1);
  std::printf("[ timing   ] churn: 10 started, counts followed: %.0f ms\n", ms_since(t));
  // A churned web container reaches app too.
  EXPECT_TRUE(wait_until([&] { return reaches("churn0", api); }, Millis{5000})) << log();

  t = Clock::now();
  std::string rms = "podman rm -f -t 0";
  for (int i = 0; i < 10; ++i) rms += " " + prefix_ + "churn" + std::to_string(i);
  ShellResult removed = shell(rms);
  ASSERT_EQ(removed.rc, 0) << removed.out;
  EXPECT_TRUE(wait_until([&] { return count("web") == 1 && count("app") == 1; }, Millis{10000}))
      << "web=" << count("web") << " app=" << count("app") << "\n"
      << log();
  EXPECT_EQ(count("db"), 1);
  std::printf("[ timing   ] churn: 10 removed, counts followed: %.0f ms\n", ms_since(t));

  // The original policy still holds after the churn.
  EXPECT_TRUE(reaches("web", api));
  EXPECT_FALSE(reaches("web", db));
  EXPECT_NE(::kill(agent_pid_, 0), -1) << "agent died:\n" << log();
}

// Fail closed: a container that starts while the agent cannot learn of it
// (stopped with SIGSTOP, as if busy or slow) is in a container CIDR but
// not in the endpoint map, so it is quarantined from its first packet;
// once the agent runs again it moves to its tier. Also: a uid without the
// admin role is refused `tierctl apply` and nothing changes.
TEST_F(AgentPodmanTest, UnknownContainerQuarantinedUntilIdentifiedNonAdminRefused) {
  const std::string web_labels = "--label twtest=" + pid_ + " --label role=web";
  start("api", "reg.example/shop/api:3.1", "--label twtest=" + pid_);
  start("web", kBusybox, web_labels);
  if (HasFatalFailure()) return;
  const std::string api = ip("api");
  start_agent();
  ASSERT_TRUE(wait_until([&] { return count("web") == 1 && count("app") == 1; }, Millis{10000}))
      << log();
  ASSERT_TRUE(wait_until([&] { return reaches("web", api); }, Millis{5000})) << log();

  ASSERT_EQ(::kill(agent_pid_, SIGSTOP), 0);
  start("late", kBusybox, web_labels);  // a web container the agent does not know yet
  if (HasFatalFailure()) {
    ::kill(agent_pid_, SIGCONT);
    return;
  }
  // Its first packets and every retry are dropped: quarantine.
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(reaches("late", api)) << "attempt " << i;
  EXPECT_TRUE(reaches("web", api));  // the known one is unaffected
  const auto resumed = Clock::now();
  ASSERT_EQ(::kill(agent_pid_, SIGCONT), 0);
  EXPECT_TRUE(wait_until([&] { return reaches("late", api); }, Millis{5000}, Millis{20})) << log();
  std::printf("[ timing   ] agent resumed -> unknown container reaches its peer: %.0f ms\n",
              ms_since(resumed));
  EXPECT_EQ(count("web"), 2);

  // A non-admin caller (gid 4240 may open the socket; no role) is refused.
  std::ofstream(dir_ / "other.yaml") << "apiVersion: tierwall.io/v1\nkind: SegmentationPolicy\n"
                                        "metadata: {name: other}\nspec:\n  tiers:\n"
                                        "    - {name: web, level: 100}\n";
  ShellResult refused =
      shell("setpriv --reuid 65534 --regid 4240 --clear-groups " + kTierctl + " apply " +
            (dir_ / "other.yaml").string() + " --socket " + (dir_ / "api.sock").string());
  EXPECT_EQ(refused.rc, 1) << refused.out;
  EXPECT_NE(refused.out.find("apply needs the admin role"), std::string::npos) << refused.out;
  EXPECT_NE(log().find("event=api-refused action=apply uid=65534 gid=4240"), std::string::npos)
      << log();
  ShellResult status = shell(kTierctl + " status -o json --socket " + (dir_ / "api.sock").string());
  EXPECT_NE(status.out.find("\"name\": \"agent-podman-test\""), std::string::npos) << status.out;
  EXPECT_TRUE(reaches("late", api));  // the policy did not change
}

}  // namespace
