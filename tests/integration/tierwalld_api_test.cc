// The agent's local API end to end: the real tierwalld (in a network
// namespace of the test's own, programming its own table there) serves its
// unix socket; the real tierctl is run as root and, through setpriv, as an
// unprivileged uid with different groups, so the roles come from the
// kernel's SO_PEERCRED/SO_PEERGROUPS exactly as in production.
//
//   gid 4240  the socket's group (supplementary group of every caller below)
//   gid 4242  operator role
//   gid 4243  auditor role
//   gid 4244  no role
//
// Checked: socket mode and group; status/endpoints/reload/apply/flush per
// role with exit codes 0/1/3; refusals logged with the caller; an invalid
// policy is refused with FILE:LINE:COL diagnostics and changes nothing
// (files, generation, kernel); an accepted apply is installed, enforced and
// logged with who and the digest; flush removes the table and reload
// restores it.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/podman.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tierwall::testsupport::CommandResult;
using tierwall::testsupport::Millis;
using tierwall::testsupport::NetNs;
using tierwall::testsupport::run_argv;

const std::string kTierwalld = TIERWALLD_BINARY;
const std::string kTierctl = TIERCTL_BINARY;

constexpr const char* kPolicyA = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: api-test}
spec:
  tiers:
    - {name: web, level: 100}
    - {name: db, level: 200}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: db, match: {labels: {role: db}}, tier: db}
  flows:
    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432]}
)";
// B: one more flow (one more rule, counter and verdict in the kernel).
constexpr const char* kPolicyBFlow =
    "    - {name: web-to-db-admin, from: {tier: web}, to: {tier: db}, ports: [tcp/6000]}\n";
constexpr const char* kBadPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: api-test}
spec:
  tiers:
    - {name: web, level: 100}
  flows:
    - {name: to-nowhere, from: {tier: web}, to: {tier: no-such-tier}, ports: [tcp/1]}
)";
constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-api, addresses: [10.88.0.1]}
endpoints:
  - {name: web-0, id: "c0", labels: {role: web}, addresses: [10.88.0.10]}
  - {name: db-0, id: "c1", labels: {role: db}, addresses: [10.88.0.11]}
  - {name: odd-0, id: "c2", labels: {role: odd}, addresses: [10.88.0.12]}
)";

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

std::string read_file(const fs::path& path) { return tierwall::testsupport::read_text(path); }

// Polls every 50 ms.
bool wait_until(const std::function<bool()>& pred, Millis timeout) {
  return tierwall::testsupport::wait_until(pred, timeout, Millis{50});
}

class TierwalldApi : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = tierwall::testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    char tmpl[] = "/tmp/tierwalld-api-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);  // the unprivileged callers must reach the socket
    fs::create_directories(dir_ / "policy");
    write_file(dir_ / "policy" / "policy.yaml", kPolicyA);
    write_file(dir_ / "inventory.yaml", kInventory);
    socket_ = dir_ / "run" / "api.sock";
    table_ = "twapi" + std::to_string(::getpid());
    write_file(dir_ / "agent.yaml",
               "policy: policy\ninventory: inventory.yaml\n"
               "containerCidrs: [10.88.0.0/16]\n"
               "nft: {table: " +
                   table_ +
                   "}\n"
                   "metrics: {address: \"127.0.0.1:0\"}\n"
                   "api:\n  socket: run/api.sock\n  group: \"4240\"\n"
                   "  roles:\n    operator: {groups: [\"4242\"]}\n"
                   "    auditor: {groups: [\"4243\"]}\n");
    log_ = dir_ / "tierwalld.log";
    ns_ = std::make_unique<NetNs>("api");
    pid_ = ns_->spawn("exec " + kTierwalld + " --config " + (dir_ / "agent.yaml").string() +
                          " --no-bridge-netfilter",
                      log_.string());
    ASSERT_TRUE(wait_until(
        [&] {
          auto r = tierctl({"status", "-o", "json"});
          return r.exit_code == 0 && json::parse(r.out, nullptr, false).value("ready", false);
        },
        Millis{10000}))
        << "the agent did not become ready";
  }
  void TearDown() override {
    if (HasFailure() && fs::exists(log_)) std::cerr << "tierwalld log:\n" << read_file(log_);
    if (ns_) {
      if (pid_ > 0) ns_->stop(pid_);
      ns_->run("nft delete table inet " + table_);
      ns_.reset();
    }
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // tierctl as root (no credentials given) or as uid 65534 with `gid` and
  // the supplementary groups `groups` ("" = none).
  CommandResult tierctl(std::vector<std::string> args, std::optional<int> gid = std::nullopt,
                        const std::string& groups = "4240") {
    std::vector<std::string> argv;
    if (gid) {
      argv = {"setpriv", "--reuid", "65534", "--regid", std::to_string(*gid)};
      if (groups.empty()) {
        argv.emplace_back("--clear-groups");
      } else {
        argv.insert(argv.end(), {"--groups", groups});
      }
    }
    argv.push_back(kTierctl);
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--socket", socket_.string()});
    return run_argv(argv, Millis{20000});
  }

  json status() {
    auto r = tierctl({"status", "-o", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }

  std::string kernel_table() { return ns_->run("nft list table inet " + table_).out; }

  fs::path dir_, socket_, log_;
  std::string table_;
  std::unique_ptr<NetNs> ns_;
  pid_t pid_ = -1;
};

TEST_F(TierwalldApi, SocketIsGroupOwnedAndNotWorldAccessible) {
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660U);
  EXPECT_EQ(st.st_gid, 4240U);
  // Not in the group: the kernel refuses the connection itself -> exit 3.
  auto r = tierctl({"status"}, 4242, "");
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  // No agent there at all -> exit 3.
  auto gone = run_argv({kTierctl, "status", "--socket", (dir_ / "nope.sock").string()});
  EXPECT_EQ(gone.exit_code, 3);
}

TEST_F(TierwalldApi, RolesDecideWhatEachCallerMayDo) {
  // operator (gid 4242)
  auto st = tierctl({"status"}, 4242);
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("api-test, generation 1"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("db=1"), std::string::npos) << st.out;
  auto eps = tierctl({"endpoints", "-o", "json"}, 4242);
  ASSERT_EQ(eps.exit_code, 0) << eps.err;
  const auto list = json::parse(eps.out)["endpoints"];
  ASSERT_EQ(list.size(), 3U);
  std::map<std::string, std::string> tiers;
  for (const auto& e : list) tiers[e["name"].get<std::string>()] = e["tier"].get<std::string>();
  EXPECT_EQ(tiers["web-0"], "web");
  EXPECT_EQ(tiers["db-0"], "db");
  EXPECT_EQ(tiers["odd-0"], "quarantine");
  auto text = tierctl({"endpoints", "--tier", "db"}, 4242);
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("db-0"), std::string::npos);
  EXPECT_EQ(text.out.find("web-0"), std::string::npos);
  EXPECT_EQ(tierctl({"reload"}, 4242).exit_code, 0);

  const std::string before = kernel_table();
  write_file(dir_ / "b.yaml", std::string(kPolicyA) + kPolicyBFlow);
  auto apply = tierctl({"apply", (dir_ / "b.yaml").string()}, 4242);
  EXPECT_EQ(apply.exit_code, 1);
  EXPECT_NE(apply.err.find("apply needs the admin role"), std::string::npos) << apply.err;
  auto flush = tierctl({"flush", "--yes"}, 4242);
  EXPECT_EQ(flush.exit_code, 1);

  // auditor (gid 4243): status only.
  EXPECT_EQ(tierctl({"status"}, 4243).exit_code, 0);
  EXPECT_EQ(tierctl({"endpoints"}, 4243).exit_code, 1);
  EXPECT_EQ(tierctl({"reload"}, 4243).exit_code, 1);
  // no role (gid 4244): nothing.
  auto none = tierctl({"status"}, 4244);
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no role"), std::string::npos) << none.err;

  // Nothing the refused callers asked for happened.
  EXPECT_EQ(status()["policy"]["generation"], 1);
  EXPECT_EQ(read_file(dir_ / "policy" / "policy.yaml"), kPolicyA);
  EXPECT_EQ(kernel_table(), before);
  // Each refusal is in the log with the caller.
  const std::string log = read_file(log_);
  EXPECT_NE(log.find("refused apply to uid 65534 (nobody) gid 4242"), std::string::npos) << log;
  EXPECT_NE(log.find("event=api-refused action=apply uid=65534 gid=4242"), std::string::npos);
  EXPECT_NE(log.find("action=flush uid=65534 gid=4242"), std::string::npos);
  EXPECT_NE(log.find("action=endpoints uid=65534 gid=4243 "), std::string::npos);
  EXPECT_NE(log.find("action=status uid=65534 gid=4244 "), std::string::npos);
}

TEST_F(TierwalldApi, InvalidPolicyIsRefusedWithDiagnosticsAndChangesNothing) {
  const std::string before = kernel_table();
  const auto digest = status()["policy"]["digest"];
  write_file(dir_ / "bad.yaml", kBadPolicy);
  auto r = tierctl({"apply", (dir_ / "bad.yaml").string()});
  EXPECT_EQ(r.exit_code, 1);
  // The caller's own file name and position.
  EXPECT_NE(r.err.find((dir_ / "bad.yaml").string() + ":8:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no-such-tier"), std::string::npos) << r.err;
  const auto after = status();
  EXPECT_EQ(after["policy"]["generation"], 1);
  EXPECT_EQ(after["policy"]["digest"], digest);
  EXPECT_EQ(read_file(dir_ / "policy" / "policy.yaml"), kPolicyA);
  EXPECT_EQ(kernel_table(), before);
  EXPECT_NE(read_file(log_).find("event=policy-rejected"), std::string::npos);
}

TEST_F(TierwalldApi, AdminApplyIsInstalledEnforcedAndLoggedWithWhoAndDigest) {
  const std::string before = kernel_table();
  write_file(dir_ / "b.yaml", std::string(kPolicyA) + kPolicyBFlow);
  auto r = tierctl({"apply", (dir_ / "b.yaml").string(), "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto reply = json::parse(r.out);
  EXPECT_TRUE(reply["accepted"].get<bool>());
  const std::string digest = reply["status"]["policy"]["digest"];
  EXPECT_EQ(reply["status"]["policy"]["generation"], 2);
  // Installed as the agent's policy file (it is the agent's only policy file).
  EXPECT_EQ(read_file(dir_ / "policy" / "b.yaml"), std::string(kPolicyA) + kPolicyBFlow);
  EXPECT_FALSE(fs::exists(dir_ / "policy" / "policy.yaml"));
  // Enforced: the kernel table changed (one more rule).
  const std::string after = kernel_table();
  EXPECT_NE(after, before);
  EXPECT_GT(after.size(), before.size());
  // Logged with who and the full digest.
  const std::string log = read_file(log_);
  EXPECT_NE(log.find("event=policy-applied by=\"uid 0 (root)"), std::string::npos) << log;
  EXPECT_NE(log.find("digest=" + digest), std::string::npos) << log;
  // The same again is recognised as unchanged; the file watch does not
  // re-apply what was just written.
  auto again = tierctl({"apply", (dir_ / "b.yaml").string()});
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_NE(again.out.find("unchanged"), std::string::npos) << again.out;
  std::this_thread::sleep_for(Millis{500});
  EXPECT_EQ(status()["policy"]["generation"], 2);
}

TEST_F(TierwalldApi, FlushStopsEnforcingUntilReload) {
  auto r = tierctl({"flush"});
  EXPECT_EQ(r.exit_code, 2);  // needs --yes
  EXPECT_NE(kernel_table(), "");
  r = tierctl({"flush", "--yes"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ns_->run("nft list table inet " + table_).exit_code, 1);  // gone
  auto st = status();
  EXPECT_FALSE(st["ready"].get<bool>());
  EXPECT_TRUE(st["suspended"].get<bool>());
  // Endpoint changes meanwhile do not bring the table back ...
  write_file(dir_ / "inventory.yaml", std::string(kInventory) +
                                          "  - {name: web-1, id: \"c3\", labels: {role: web}, "
                                          "addresses: [10.88.0.13]}\n");
  std::this_thread::sleep_for(Millis{600});
  EXPECT_EQ(ns_->run("nft list table inet " + table_).exit_code, 1);
  // ... a reload does, with every endpoint known meanwhile.
  r = tierctl({"reload"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ns_->run("nft list table inet " + table_).exit_code, 0);
  st = status();
  EXPECT_TRUE(st["ready"].get<bool>());
  EXPECT_EQ(st["endpoints"], 4);
  EXPECT_NE(kernel_table().find("10.88.0.13"), std::string::npos);
  EXPECT_NE(read_file(log_).find("event=flushed"), std::string::npos);
}

}  // namespace
