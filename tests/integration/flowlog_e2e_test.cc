// The flow log end to end: the real tierwalld (in the node namespace of a
// BridgeLab, nft dataplane, --flow-log) and known traffic between
// containers, then the records it wrote:
//   - an allowed TCP connection: a start (allow, its rule, both identities)
//     and, once conntrack lets go of it, an end with packets and bytes in
//     both directions;
//   - denied connection attempts: deny records naming the rule, whose counts
//     add up to exactly the packets the kernel's rule counter saw;
//   - audited pings (a staged deny): audit records;
//   - an unknown container: quarantine, default-deny;
//   - the policy record (generation, digest, by) and agent start/stop;
// and the log verifies with the node's public key (`tierctl audit verify`),
// lists with `tierctl flows`, and renders with `tierctl report`.
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/dataplane/nft/conntrack.h"
#include "tierwall/testsupport/netns.h"
#include "tierwall/testsupport/podman.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tierwall::testsupport::BridgeLab;
using tierwall::testsupport::BridgeLabOptions;
using tierwall::testsupport::in_netns;
using tierwall::testsupport::Millis;
using tierwall::testsupport::Outcome;
using tierwall::testsupport::run_argv;
using tierwall::testsupport::TcpServer;
using tierwall::testsupport::TcpSession;

const std::string kTierwalld = TIERWALLD_BINARY;
const std::string kTierctl = TIERCTL_BINARY;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: flowlog-e2e}
spec:
  tiers:
    - {name: web, level: 100}
    - {name: db, level: 200}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: db, match: {labels: {role: db}}, tier: db}
  denies:
    - {name: no-telnet, from: {tier: web}, to: {tier: db}, ports: [tcp/23]}
    - {name: staged-no-ping, from: {tier: web}, to: {tier: db}, ports: [icmp/echo-request], audit: true}
  flows:
    - {name: web-to-db, from: {tier: web}, to: {tier: db}, ports: [tcp/5432]}
    - {name: web-to-db-ping, from: {tier: web}, to: {tier: db}, ports: [icmp/echo-request]}
)";

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node-flow, addresses: [10.88.0.1]}
endpoints:
  - {name: web-0, id: "c0", image: "reg.example/shop/web:1.4", labels: {role: web}, addresses: [10.88.0.10]}
  - {name: db-0, id: "c1", labels: {role: db}, addresses: [10.88.0.11]}
)";

std::string read_file(const fs::path& path) { return tierwall::testsupport::read_text(path); }

// Polls every 50 ms.
bool wait_until(const std::function<bool()>& pred, Millis timeout) {
  return tierwall::testsupport::wait_until(pred, timeout, Millis{50});
}

class FlowLogE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = tierwall::testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    char tmpl[] = "/tmp/tierwall-flowlog-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ / "policy.yaml") << kPolicy;
    std::ofstream(dir_ / "inventory.yaml") << kInventory;
    log_ = dir_ / "tierwalld.log";
    BridgeLabOptions opts;
    opts.br0_containers = 3;  // web-0, db-0, and one nobody knows
    opts.br1_containers = 0;
    opts.bridge_nf_call = true;
    lab_ = std::make_unique<BridgeLab>(opts);
    // Connection ends are reported when conntrack forgets the entry: make
    // closed TCP connections go quickly.
    for (const char* state : {"time_wait", "close", "close_wait", "fin_wait", "last_ack"}) {
      tierwall::testsupport::sysctl(
          lab_->node, std::string("net.netfilter.nf_conntrack_tcp_timeout_") + state, "1");
    }
  }
  void TearDown() override {
    if (pid_ > 0) lab_->node.stop(pid_);
    if (HasFailure() && fs::exists(log_)) std::cerr << "tierwalld log:\n" << read_file(log_);
    lab_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::vector<json> records() {
    std::vector<json> out;
    for (const auto& f : tierwall::testsupport::split_lines(
             tierwall::testsupport::shell("cat " + (dir_ / "flows").string() + "/flows-*.jsonl")
                 .out)) {
      out.push_back(json::parse(f));
    }
    return out;
  }

  fs::path dir_, log_;
  std::unique_ptr<BridgeLab> lab_;
  pid_t pid_ = -1;
};

TEST_F(FlowLogE2E, KnownTrafficGivesExactlyTheExpectedRecords) {
  auto& web = lab_->br0_containers[0];
  auto& db = lab_->br0_containers[1];
  auto& stray = lab_->br0_containers[2];
  ASSERT_EQ(web.v4, "10.88.0.10");
  ASSERT_EQ(db.v4, "10.88.0.11");
  TcpServer pg(db.ns, db.v4, 5432);
  TcpServer telnet(db.ns, db.v4, 23);

  // An IPFIX collector in the node namespace (the agent exports there too).
  const int collector = in_netns(lab_->node, [] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(14739);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rcvbuf = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    return ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? fd : -1;
  });
  ASSERT_GE(collector, 0);
  const int metrics_port = 19641;
  pid_ = lab_->node.spawn(
      "exec " + kTierwalld + " --ipfix 127.0.0.1:14739 --policy " +
          (dir_ / "policy.yaml").string() + " --inventory " + (dir_ / "inventory.yaml").string() +
          " --container-cidr 10.88.0.0/16 --node-name node-flow" + " --flow-log " +
          (dir_ / "flows").string() + " --flow-log-key " + (dir_ / "flowlog.key").string() +
          " --api-socket " + (dir_ / "api.sock").string() +
          " --metrics 127.0.0.1:" + std::to_string(metrics_port) + " --no-bridge-netfilter",
      log_.string());
  ASSERT_TRUE(wait_until(
      [&] { return read_file(log_).find("applied policy") != std::string::npos; }, Millis{5000}))
      << read_file(log_);

  // 1. An allowed connection with 20 one-byte exchanges, then closed.
  std::uint16_t allowed_port = 0;
  {
    TcpSession s(web.ns, db.v4, 5432, Millis{1000});
    allowed_port = s.local_port();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(s.exchange()) << "exchange " << i;
  }
  // 2. Denied attempts (each SYN and its retransmissions are decided).
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(tierwall::testsupport::tcp_probe(web.ns, db.v4, 23, Millis{300}), Outcome::kTimeout);
  }
  // 3. Audited pings: passed, and logged as audit.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(tierwall::testsupport::ping_probe(web.ns, db.v4, Millis{1000}), Outcome::kOk);
  }
  // 4. The unknown container: quarantined.
  EXPECT_EQ(tierwall::testsupport::tcp_probe(stray.ns, db.v4, 5432, Millis{300}),
            Outcome::kTimeout);

  // The kernel's own count of packets the deny rule decided.
  std::string metrics;
  ASSERT_TRUE(wait_until(
      [&] {
        auto m = in_netns(
            lab_->node, [&] { return tierwall::testsupport::http_get(metrics_port, "/metrics"); });
        metrics = m ? m->body : "";
        return !metrics.empty();
      },
      Millis{3000}));
  const auto kernel_denied = tierwall::testsupport::metric_value(
      metrics, "tierwall_rule_packets_total{rule=\"no-telnet\",kind=\"deny\"}");
  ASSERT_TRUE(kernel_denied) << metrics;
  ASSERT_GE(*kernel_denied, 3.0);

  // The connection's end: conntrack forgets it after the short timeouts
  // (a dump makes the kernel reap expired entries at once).
  std::this_thread::sleep_for(Millis{1500});
  in_netns(lab_->node, [] { return tierwall::dataplane::nft::ct_dump().size(); });
  std::this_thread::sleep_for(Millis{300});

  // Auditors may also ask the running agent (GET /v1/flows, role auditor+).
  auto live = run_argv({kTierctl, "flows", "--socket", (dir_ / "api.sock").string(), "--rule",
                        "no-telnet", "-o", "json"});
  EXPECT_EQ(live.exit_code, 0) << live.err;
  std::uint64_t live_denied = 0;
  for (const auto& l : tierwall::testsupport::split_lines(live.out)) {
    live_denied += json::parse(l)["count"].get<std::uint64_t>();
  }
  EXPECT_EQ(static_cast<double>(live_denied), *kernel_denied) << live.out;

  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  lab_->node.stop(pid_, Millis{5000});
  pid_ = -1;

  // IPFIX: version-10 messages with template and data sets arrived.
  std::size_t messages = 0, data_sets = 0, template_sets = 0;
  std::array<std::uint8_t, 65536> buf{};
  for (;;) {
    const ssize_t n = ::recv(collector, buf.data(), buf.size(), 0);
    if (n < 16) break;
    if (buf[0] != 0 || buf[1] != 10) continue;
    ++messages;
    for (std::size_t off = 16; off + 4 <= static_cast<std::size_t>(n);) {
      const unsigned id = static_cast<unsigned>(buf[off] << 8 | buf[off + 1]);
      const unsigned len = static_cast<unsigned>(buf[off + 2] << 8 | buf[off + 3]);
      if (len < 4) break;
      if (id == 2) ++template_sets;
      if (id >= 256) ++data_sets;
      off += len;
    }
  }
  ::close(collector);
  EXPECT_GT(messages, 0U);
  EXPECT_GT(template_sets, 0U);
  EXPECT_GT(data_sets, 0U);

  const auto recs = records();
  ASSERT_GE(recs.size(), 6U);
  std::uint64_t seq = 0;
  std::map<std::string, int> types;
  for (const auto& r : recs) {
    EXPECT_EQ(r["v"], 1);
    EXPECT_EQ(r["seq"].get<std::uint64_t>(), ++seq);
    EXPECT_EQ(r["node"], "node-flow");
    ++types[r["type"].get<std::string>()];
  }
  EXPECT_EQ(recs.front()["type"], "agent");
  EXPECT_EQ(recs.front()["event"], "start");
  EXPECT_GE(types["agent"], 2);  // start, stop
  EXPECT_GE(types["checkpoint"], 1);
  EXPECT_EQ(types["loss"], 0);

  const json* policy = nullptr;
  const json* start = nullptr;
  const json* end = nullptr;
  std::uint64_t denied = 0;
  int audited = 0, quarantined = 0;
  for (const auto& r : recs) {
    if (r["type"] == "policy") policy = &r;
    if (r["type"] != "flow") continue;
    const auto& src = r["src"];
    const auto& dst = r["dst"];
    if (r["verdict"] == "allow" && r["rule"].value("name", "") == "web-to-db") {
      EXPECT_EQ(src["name"], "web-0");
      EXPECT_EQ(src["tier"], "web");
      EXPECT_EQ(src["id"], "c0");
      EXPECT_EQ(src["image"], "reg.example/shop/web:1.4");
      EXPECT_EQ(src["port"], allowed_port);
      EXPECT_EQ(dst["name"], "db-0");
      EXPECT_EQ(dst["tier"], "db");
      EXPECT_EQ(dst["port"], 5432);
      EXPECT_EQ(r["proto"], "tcp");
      EXPECT_EQ(r["dataplane"], "nft");
      EXPECT_EQ(r["generation"], 1);
      if (r["event"] == "start") start = &r;
      if (r["event"] == "end") end = &r;
    }
    if (r["verdict"] == "deny" && r["rule"].value("name", "") == "no-telnet") {
      EXPECT_EQ(r["rule"]["kind"], "deny");
      EXPECT_EQ(src["name"], "web-0");
      EXPECT_EQ(dst["port"], 23);
      EXPECT_TRUE(r["packets"].is_null());
      denied += r["count"].get<std::uint64_t>();
    }
    if (r["verdict"] == "audit") {
      EXPECT_EQ(r["rule"]["name"], "staged-no-ping");
      EXPECT_EQ(r["proto"], "icmp");
      EXPECT_EQ(dst["icmpType"], 8);
      audited += r["event"] == "start" ? static_cast<int>(r["count"].get<std::uint64_t>()) : 0;
    }
    if (src.value("tier", "") == "quarantine") {
      EXPECT_EQ(r["verdict"], "deny");
      EXPECT_EQ(r["rule"]["kind"], "default-deny");
      EXPECT_EQ(src["entity"], "endpoint");
      EXPECT_FALSE(src.contains("name"));
      ++quarantined;
    }
  }
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ((*policy)["generation"], 1);
  EXPECT_EQ((*policy)["name"], "flowlog-e2e");
  EXPECT_EQ((*policy)["digest"].get<std::string>().size(), 64U);
  EXPECT_EQ((*policy)["by"], "start");
  ASSERT_NE(start, nullptr) << "no start record of the allowed connection";
  ASSERT_NE(end, nullptr) << "no end record of the allowed connection";
  EXPECT_TRUE((*start)["packets"].is_null());
  // 20 one-byte exchanges each way, plus handshake and teardown.
  EXPECT_GE((*end)["packets"]["orig"].get<std::uint64_t>(), 20U);
  EXPECT_GE((*end)["packets"]["reply"].get<std::uint64_t>(), 20U);
  EXPECT_GE((*end)["bytes"]["orig"].get<std::uint64_t>(), 20U * 41U);
  EXPECT_GE((*end)["bytes"]["reply"].get<std::uint64_t>(), 20U * 41U);
  // Every deny the kernel counted is in the log, exactly.
  EXPECT_EQ(static_cast<double>(denied), *kernel_denied);
  EXPECT_GE(audited, 1);
  EXPECT_GE(quarantined, 1);

  // The auditor's tools on the same log.
  auto verify = run_argv({kTierctl, "audit", "verify", (dir_ / "flows").string(), "--pubkey",
                          (dir_ / "flowlog.key.pub").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  auto flows = run_argv({kTierctl, "flows", "--log", (dir_ / "flows").string(), "--verdict", "deny",
                         "--rule", "no-telnet", "-o", "json"});
  EXPECT_EQ(flows.exit_code, 0) << flows.err;
  std::uint64_t listed = 0;
  for (const auto& l : tierwall::testsupport::split_lines(flows.out)) {
    listed += json::parse(l)["count"].get<std::uint64_t>();
  }
  EXPECT_EQ(listed, denied);
  auto report =
      run_argv({kTierctl, "report", "--log", (dir_ / "flows").string(), "--pubkey",
                (dir_ / "flowlog.key.pub").string(), "-o", (dir_ / "report.html").string()});
  EXPECT_EQ(report.exit_code, 0) << report.err;
  const std::string html = read_file(dir_ / "report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("no-telnet"), std::string::npos);
  // Tampering is caught: one byte of the first flow record changed.
  auto files = tierwall::testsupport::split_lines(
      tierwall::testsupport::shell("ls " + (dir_ / "flows").string() + "/flows-*.jsonl").out);
  ASSERT_FALSE(files.empty());
  std::string text = read_file(files.front());
  const auto at = text.find("\"verdict\":\"deny\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 16, "\"verdict\":\"allo\"");
  std::ofstream(files.front(), std::ios::trunc) << text;
  auto tampered = run_argv({kTierctl, "audit", "verify", (dir_ / "flows").string(), "--pubkey",
                            (dir_ / "flowlog.key.pub").string()});
  EXPECT_EQ(tampered.exit_code, 1) << tampered.out;
  EXPECT_NE((tampered.out + tampered.err).find("edited"), std::string::npos)
      << tampered.out << tampered.err;
}

// Sends `count` UDP datagrams from the calling thread's namespace to
// address:port with sendmmsg, as fast as it can. Returns how many were sent.
std::size_t udp_flood(const std::string& address, std::uint16_t port, std::size_t count) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  char payload[16] = "tierwall-flood";
  constexpr std::size_t kBatch = 64;
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  for (std::size_t i = 0; i < kBatch; ++i) {
    iov[i] = {payload, sizeof payload};
    msgs[i].msg_hdr.msg_name = &to;
    msgs[i].msg_hdr.msg_namelen = sizeof to;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  std::size_t sent = 0;
  while (sent < count) {
    const auto n = static_cast<unsigned>(std::min(kBatch, count - sent));
    const int r = ::sendmmsg(fd, msgs.data(), n, 0);
    if (r <= 0) {
      if (errno == EPERM || errno == EINTR || errno == ENOBUFS) continue;  // dropped locally
      break;
    }
    sent += static_cast<std::size_t>(r);
  }
  ::close(fd);
  return sent;
}

// An NFLOG flood through a deliberately small receive buffer: the kernel
// drops events the agent cannot read in time, and the log says so. Every
// packet the kernel's default-deny counter saw is either in a deny record's
// count or in a loss record's count — exactly.
TEST_F(FlowLogE2E, FloodThroughASmallBufferIsAccountedExactly) {
  auto& web = lab_->br0_containers[0];
  auto& db = lab_->br0_containers[1];
  std::ofstream(dir_ / "agent.yaml") << "flowLog: {receiveBuffer: 65536}\n";
  const int metrics_port = 19642;
  pid_ = lab_->node.spawn(
      "exec " + kTierwalld + " --config " + (dir_ / "agent.yaml").string() + " --policy " +
          (dir_ / "policy.yaml").string() + " --inventory " + (dir_ / "inventory.yaml").string() +
          " --container-cidr 10.88.0.0/16 --node-name node-flow" + " --flow-log " +
          (dir_ / "flows").string() + " --flow-log-key " + (dir_ / "flowlog.key").string() +
          " --api-socket " + (dir_ / "api.sock").string() +
          " --metrics 127.0.0.1:" + std::to_string(metrics_port) + " --no-bridge-netfilter",
      log_.string());
  ASSERT_TRUE(wait_until(
      [&] { return read_file(log_).find("applied policy") != std::string::npos; }, Millis{5000}))
      << read_file(log_);

  // web -> db udp/9: no flow allows it, default-deny logs every datagram.
  const std::size_t sent = in_netns(web.ns, [&] { return udp_flood(db.v4, 9, 200'000); });
  ASSERT_GT(sent, 100'000U);
  // A few slow ones after the flood: their sequence numbers size the last gap.
  for (int i = 0; i < 5; ++i) {
    in_netns(web.ns, [&] { return udp_flood(db.v4, 9, 1); });
    std::this_thread::sleep_for(Millis{100});
  }
  std::this_thread::sleep_for(Millis{1500});  // folds close, the writer catches up
  std::string metrics;
  ASSERT_TRUE(wait_until(
      [&] {
        auto m = in_netns(
            lab_->node, [&] { return tierwall::testsupport::http_get(metrics_port, "/metrics"); });
        metrics = m ? m->body : "";
        return !metrics.empty();
      },
      Millis{3000}));
  const auto kernel = tierwall::testsupport::metric_value(
      metrics, "tierwall_rule_packets_total{rule=\"default-deny\",kind=\"default-deny\"}");
  ASSERT_TRUE(kernel) << metrics;
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  lab_->node.stop(pid_, Millis{5000});
  pid_ = -1;

  std::uint64_t recorded = 0, lost = 0;
  bool lower_bound = false;
  for (const auto& r : records()) {
    if (r["type"] == "flow" && r["rule"]["kind"] == "default-deny") {
      recorded += r["count"].get<std::uint64_t>();
    }
    if (r["type"] == "loss") {
      EXPECT_EQ(r["source"], "nflog") << r.dump();
      lost += r["count"].get<std::uint64_t>();
      lower_bound = lower_bound || r.value("lowerBound", false);
    }
  }
  std::printf("[ figures  ] sent %zu, kernel counted %.0f, recorded %llu, lost %llu\n", sent,
              *kernel, static_cast<unsigned long long>(recorded),
              static_cast<unsigned long long>(lost));
  EXPECT_GT(lost, 0U) << "the small buffer should have overflowed";
  EXPECT_FALSE(lower_bound);
  EXPECT_EQ(static_cast<double>(recorded + lost), *kernel);
  auto verify = run_argv({kTierctl, "audit", "verify", (dir_ / "flows").string(), "--pubkey",
                          (dir_ / "flowlog.key.pub").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

}  // namespace
