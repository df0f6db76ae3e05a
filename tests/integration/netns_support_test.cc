// tw_testsupport against the real kernel: namespaces come and go cleanly,
// the topology helpers build what they say, and the probes report both
// reachability and loss correctly and within their timeouts.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <ostream>
#include <signal.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A probe that should succeed returns in about a millisecond; the generous
// bound only matters when something is broken.
constexpr Millis kProbe{2000};
// For probes that must fail: short, and the tests check they return on time.
constexpr Millis kShort{300};
constexpr Millis kSlack{400};

Millis elapsed_since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

bool namespace_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/var/run/netns/" + name).c_str(), &st) == 0;
}

std::vector<std::string> our_namespaces() {
  std::vector<std::string> ours;
  const std::string prefix = NetNs::process_prefix();
  for (const std::string& name : NetNs::list_test_namespaces()) {
    if (name.rfind(prefix, 0) == 0) ours.push_back(name);
  }
  return ours;
}

ino_t netns_inode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Gone, or a zombie waiting for init to reap it.
bool process_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const std::size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

bool eventually(const std::function<bool()>& condition, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis{10});
  }
  return true;
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = netns_unavailable_reason()) GTEST_SKIP() << *why;
  }
};

// ---------------------------------------------------------------------------
// NetNs

TEST_F(NetnsTest, CreatesUniqueShortNamesWithLoopbackUpAndDeletesThem) {
  std::string first_name;
  std::string second_name;
  {
    NetNs first("a");
    NetNs second("b");
    first_name = first.name();
    second_name = second.name();
    EXPECT_NE(first_name, second_name);
    for (const std::string& name : {first_name, second_name}) {
      EXPECT_EQ(name.rfind(NetNs::process_prefix(), 0), 0u) << name;
      EXPECT_LE(name.size(), 13u) << name;
      EXPECT_TRUE(namespace_exists(name)) << name;
    }
    EXPECT_THAT(first.check("ip -o link show lo").out, HasSubstr(",UP"));
    EXPECT_EQ(first.describe(), "a(" + first_name + ")");
    EXPECT_TRUE(ping(first, "127.0.0.1", kProbe));
    EXPECT_TRUE(ping(first, "::1", kProbe));
    TcpServer server(first, "127.0.0.1");
    EXPECT_TRUE(tcp_connect(first, "127.0.0.1", server.port(), kProbe));
    // The other namespace has its own loopback: nothing listens there.
    EXPECT_EQ(tcp_probe(second, "127.0.0.1", server.port(), kProbe), Outcome::kRefused);
  }
  EXPECT_FALSE(namespace_exists(first_name));
  EXPECT_FALSE(namespace_exists(second_name));
}

TEST_F(NetnsTest, RunCapturesOutputAndExitCode) {
  NetNs ns;
  const CommandResult result = ns.run("echo out; echo err >&2; exit 3");
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_FALSE(result.ok());
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.out, "out\n");
  EXPECT_EQ(result.err, "err\n");
  EXPECT_TRUE(ns.run("true").ok());
}

TEST_F(NetnsTest, RunKillsACommandThatOutlivesItsTimeout) {
  NetNs ns;
  const auto start = Clock::now();
  const CommandResult result = ns.run("sleep 30", Millis{200});
  EXPECT_TRUE(result.timed_out);
  EXPECT_FALSE(result.ok());
  EXPECT_LT(elapsed_since(start), Millis{200} + kSlack);
}

TEST_F(NetnsTest, CheckAndTopologyErrorsNameTheCommandAndItsStderr) {
  NetNs ns("errs");
  try {
    ns.check("echo boom >&2; exit 7");
    ADD_FAILURE() << "check() did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("exit 7"));
    EXPECT_THAT(e.what(), HasSubstr("echo boom"));
    EXPECT_THAT(e.what(), HasSubstr("stderr: boom"));
  }
  try {
    addr(ns, "nosuch0", "10.0.0.1/24");
    ADD_FAILURE() << "addr() on a missing device did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("addr add 10.0.0.1/24 dev nosuch0"));
    EXPECT_THAT(e.what(), HasSubstr("errs("));
    EXPECT_THAT(e.what(), HasSubstr("Cannot find device"));
  }
  EXPECT_THROW(TcpServer(ns, "10.1.2.3", 0), std::runtime_error);  // not a local address
}

TEST_F(NetnsTest, EnterMovesOnlyTheCallingThreadAndComesBack) {
  NetNs ns;
  const ino_t home = netns_inode("/proc/thread-self/ns/net");
  const ino_t target = netns_inode("/var/run/netns/" + ns.name());
  ASSERT_NE(home, 0u);
  ASSERT_NE(home, target);
  std::promise<void> entered;
  std::future<ino_t> other_thread = std::async(std::launch::async, [&] {
    entered.get_future().wait();
    return netns_inode("/proc/thread-self/ns/net");
  });
  {
    NetNs::Guard guard = ns.enter();
    EXPECT_EQ(netns_inode("/proc/thread-self/ns/net"), target);
    entered.set_value();
    EXPECT_EQ(other_thread.get(), home) << "a thread started before enter() moved too";
    // A thread started inside inherits the namespace (clone copies it).
    ino_t child = 0;
    std::thread([&] { child = netns_inode("/proc/thread-self/ns/net"); }).join();
    EXPECT_EQ(child, target);
  }
  EXPECT_EQ(netns_inode("/proc/thread-self/ns/net"), home);
  EXPECT_EQ(in_netns(ns, [] { return netns_inode("/proc/thread-self/ns/net"); }), target);
  EXPECT_EQ(netns_inode("/proc/thread-self/ns/net"), home);
}

TEST_F(NetnsTest, DestructorStopsSpawnedAndStrayProcesses) {
  pid_t spawned = 0;
  pid_t stray = 0;
  {
    NetNs ns;
    spawned = ns.spawn("sleep 600");
    const CommandResult started = ns.check("sleep 600 >/dev/null 2>&1 & echo $!");
    stray = static_cast<pid_t>(std::stoi(started.out));
    ASSERT_GT(stray, 0);
    ASSERT_FALSE(process_gone(stray));
  }
  EXPECT_EQ(::kill(spawned, 0), -1) << "spawned process was not reaped";
  EXPECT_TRUE(eventually([&] { return process_gone(stray); }, Millis{2000}))
      << "stray process " << stray << " survived its namespace";
}

TEST_F(NetnsTest, StopEndsASpawnedProcessEarly) {
  NetNs ns;
  const pid_t pid = ns.spawn("sleep 600");
  ns.stop(pid);
  EXPECT_EQ(::kill(pid, 0), -1);
}

TEST_F(NetnsTest, CleanupStaleDeletesOnlyNamespacesOfDeadProcesses) {
  NetNs live;
  // A pid that certainly belonged to a process that is gone now.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  ::waitpid(dead, nullptr, 0);
  std::string b36;
  for (auto v = static_cast<unsigned long>(dead); v != 0 || b36.empty(); v /= 36) {
    b36.insert(b36.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36]);
  }
  const std::string stale = "tw-" + b36 + "-0";
  check_argv({"ip", "netns", "add", stale});
  if (::kill(dead, 0) == 0) {
    run_argv({"ip", "netns", "del", stale});
    GTEST_SKIP() << "pid " << dead << " was reused at once";
  }
  const std::vector<std::string> deleted = NetNs::cleanup_stale();
  EXPECT_THAT(deleted, ::testing::Contains(stale));
  EXPECT_THAT(deleted, ::testing::Not(::testing::Contains(live.name())));
  EXPECT_FALSE(namespace_exists(stale));
  EXPECT_TRUE(namespace_exists(live.name()));
}

// ---------------------------------------------------------------------------
// Topology

TEST_F(NetnsTest, SysctlWritesOnlyInsideItsNamespace) {
  std::ifstream root_file("/proc/sys/net/ipv4/ip_forward");
  std::string root_before;
  root_file >> root_before;
  NetNs a;
  NetNs b;
  // A new namespace's IPv4 settings start from the root namespace's (the
  // legacy devconf_inherit_init_net behaviour; Podman's netavark turns root
  // forwarding on), IPv6 ones from the defaults: compare with b's own start.
  const std::string b_v4_before = read_sysctl(b, "net.ipv4.ip_forward");
  const std::string flipped = b_v4_before == "1" ? "0" : "1";
  sysctl(a, "net.ipv4.ip_forward", flipped);
  sysctl(a, "net.ipv6.conf.all.forwarding", "1");
  EXPECT_EQ(read_sysctl(a, "net.ipv4.ip_forward"), flipped);
  EXPECT_EQ(read_sysctl(a, "net/ipv6/conf/all/forwarding"), "1");
  EXPECT_EQ(read_sysctl(b, "net.ipv4.ip_forward"), b_v4_before);
  EXPECT_EQ(read_sysctl(b, "net.ipv6.conf.all.forwarding"), "0");
  EXPECT_EQ(read_sysctl(a, "net.ipv4.ping_group_range"), "0\t2147483647");
  std::ifstream root_after_file("/proc/sys/net/ipv4/ip_forward");
  std::string root_after;
  root_after_file >> root_after;
  EXPECT_EQ(root_after, root_before);
  EXPECT_THROW(sysctl(a, "net.ipv4.no_such_key", "1"), std::runtime_error);
}

TEST_F(NetnsTest, VethBetweenTwoNamespacesCarriesV4AndV6) {
  NetNs a("a");
  NetNs b("b");
  veth(a, "va", b, "vb");
  addr(a, "va", "192.0.2.1/24");
  addr(a, "va", "2001:db8:1::1/64");
  addr(b, "vb", "192.0.2.2/24");
  addr(b, "vb", "2001:db8:1::2/64");
  wait_link_running(a, "va");
  wait_link_running(b, "vb");
  EXPECT_TRUE(ping(a, "192.0.2.2", kProbe));
  EXPECT_TRUE(ping(b, "2001:db8:1::1", kProbe));
  UdpEchoServer udp(b, "::");
  EXPECT_TRUE(udp_echo(a, "2001:db8:1::2", udp.port(), kProbe));
  EXPECT_TRUE(udp_echo(a, "192.0.2.2", udp.port(), kProbe, "192.0.2.1"));
  EXPECT_EQ(udp_probe(a, "192.0.2.2", udp.port(), kProbe, "203.0.113.9"), Outcome::kError)
      << "binding a source address the namespace does not have";
  // Link-local with a scope works too (DAD is off, so it is usable at once).
  const std::string ll = b.check("ip -6 -o addr show dev vb scope link").out;
  const std::size_t start = ll.find("fe80::");
  ASSERT_NE(start, std::string::npos) << ll;
  const std::string b_ll = ll.substr(start, ll.find('/', start) - start);
  EXPECT_TRUE(ping(a, b_ll + "%va", kProbe)) << b_ll;
}

// ---------------------------------------------------------------------------
// BridgeLab reachability: every path, TCP + UDP + ICMP, IPv4 + IPv6.

struct Endpoint {
  const NetNs* ns;
  std::string v4;
  std::string v6;
};

struct PathCase {
  std::string name;
  std::function<Endpoint(const BridgeLab&)> from;
  std::function<Endpoint(const BridgeLab&)> to;
};

// Keeps ctest's discovered names readable ("... # GetParam() = SameBridge").
void PrintTo(const PathCase& path, std::ostream* os) { *os << path.name; }

Endpoint container(const BridgeLab::Container& c) { return {&c.ns, c.v4, c.v6}; }

std::vector<PathCase> path_cases() {
  const auto c0 = [](const BridgeLab& lab) { return container(lab.br0_containers[0]); };
  const auto c1 = [](const BridgeLab& lab) { return container(lab.br0_containers[1]); };
  const auto d0 = [](const BridgeLab& lab) { return container(lab.br1_containers[0]); };
  const auto node_br0 = [](const BridgeLab& lab) {
    return Endpoint{&lab.node, lab.br0_v4, lab.br0_v6};
  };
  const auto node_br1 = [](const BridgeLab& lab) {
    return Endpoint{&lab.node, lab.br1_v4, lab.br1_v6};
  };
  const auto world = [](const BridgeLab& lab) {
    return Endpoint{&lab.world, lab.world_v4, lab.world_v6};
  };
  return {
      {"SameBridge", c0, c1},
      {"AcrossBridges", c1, d0},
      {"AcrossBridgesBack", d0, c0},
      {"ContainerToNode", c0, node_br0},
      {"ContainerToNodeOtherBridge", c1, node_br1},
      {"NodeToContainer", node_br1, d0},
      {"ContainerToWorld", c1, world},
      {"WorldToContainer", world, c0},
  };
}

class BridgeLabPathTest : public ::testing::TestWithParam<PathCase> {
 protected:
  void SetUp() override {
    if (const auto why = netns_unavailable_reason()) GTEST_SKIP() << *why;
    lab_.emplace(BridgeLabOptions{.br0_containers = 2, .br1_containers = 1});
  }
  void TearDown() override { lab_.reset(); }
  std::optional<BridgeLab> lab_;
};

TEST_P(BridgeLabPathTest, TcpUdpAndPingPassBothFamilies) {
  const BridgeLab& lab = *lab_;
  const Endpoint from = GetParam().from(lab);
  const Endpoint to = GetParam().to(lab);
  for (const auto& [src, dst] : {std::pair{from.v4, to.v4}, std::pair{from.v6, to.v6}}) {
    SCOPED_TRACE(src + " -> " + dst);
    TcpServer tcp(*to.ns, dst);
    UdpEchoServer udp(*to.ns, dst);
    EXPECT_EQ(tcp_probe(*from.ns, dst, tcp.port(), kProbe), Outcome::kOk);
    EXPECT_EQ(udp_probe(*from.ns, dst, udp.port(), kProbe), Outcome::kOk);
    EXPECT_EQ(ping_probe(*from.ns, dst, kProbe), Outcome::kOk);
    // No NAT anywhere: the server sees the sender's own address.
    EXPECT_THAT(tcp.peers(), ::testing::ElementsAre(src));
    EXPECT_EQ(udp.received(), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, BridgeLabPathTest, ::testing::ValuesIn(path_cases()),
                         [](const ::testing::TestParamInfo<PathCase>& param_info) {
                           return param_info.param.name;
                         });

// ---------------------------------------------------------------------------
// BridgeLab: losses, refusals, sessions, options, cleanup.

class BridgeLabTest : public NetnsTest {
 protected:
  void SetUp() override {
    NetnsTest::SetUp();
    if (IsSkipped()) return;
    lab_.emplace();
  }
  void TearDown() override { lab_.reset(); }
  std::optional<BridgeLab> lab_;
};

TEST_F(BridgeLabTest, LayoutMatchesTheDocumentedAddresses) {
  const BridgeLab& lab = *lab_;
  ASSERT_EQ(lab.br0_containers.size(), 2u);
  ASSERT_EQ(lab.br1_containers.size(), 1u);
  EXPECT_EQ(lab.br0_containers[1].v4, "10.88.0.11");
  EXPECT_EQ(lab.br0_containers[1].v6, "fd00:88::11");
  EXPECT_EQ(lab.br1_containers[0].v4, "10.89.0.10");
  EXPECT_EQ(lab.br1_containers[0].node_port, "br1p0");
  EXPECT_EQ(lab.namespaces().size(), 5u);
  EXPECT_EQ(read_sysctl(lab.node, "net.ipv4.ip_forward"), "1");
  EXPECT_EQ(read_sysctl(lab.node, "net.ipv6.conf.all.forwarding"), "1");
  EXPECT_EQ(read_sysctl(lab.br0_containers[0].ns, "net.ipv6.conf.all.forwarding"), "0");
  EXPECT_THAT(lab.node.check("ip -o link show br0p1").out, HasSubstr("master br0"));
  EXPECT_THAT(lab.br0_containers[0].ns.check("ip -6 route show default").out,
              HasSubstr("via fd00:88::1"));
}

TEST_F(BridgeLabTest, SilentDropsTimeOutOnTime) {
  const NetNs& c0 = lab_->br0_containers[0].ns;
  // On-link addresses nobody answers for: neighbour resolution never
  // completes, which looks exactly like a firewall dropping the packet.
  for (const std::string dst : {"10.88.0.99", "fd00:88::99"}) {
    SCOPED_TRACE(dst);
    auto start = Clock::now();
    EXPECT_FALSE(ping(c0, dst, kShort));
    EXPECT_GE(elapsed_since(start), kShort - Millis{20});
    EXPECT_LT(elapsed_since(start), kShort + kSlack);
    start = Clock::now();
    EXPECT_EQ(tcp_probe(c0, dst, 80, kShort), Outcome::kTimeout);
    EXPECT_LT(elapsed_since(start), kShort + kSlack);
    start = Clock::now();
    EXPECT_EQ(udp_probe(c0, dst, 53, kShort), Outcome::kTimeout);
    EXPECT_LT(elapsed_since(start), kShort + kSlack);
  }
}

TEST_F(BridgeLabTest, RefusalsAndUnreachablesAreReportedAtOnce) {
  const BridgeLab& lab = *lab_;
  const NetNs& c0 = lab.br0_containers[0].ns;
  for (const std::string& dst : {lab.br1_containers[0].v4, lab.br1_containers[0].v6}) {
    SCOPED_TRACE(dst);
    const auto start = Clock::now();
    EXPECT_EQ(tcp_probe(c0, dst, 9, kProbe), Outcome::kRefused);  // RST
    EXPECT_EQ(udp_probe(c0, dst, 9, kProbe), Outcome::kRefused);  // port unreachable
    EXPECT_LT(elapsed_since(start), Millis{500});
  }
  // No route at the node: it answers with ICMP (net) unreachable.
  for (const std::string dst : {"10.77.0.1", "fd00:77::1"}) {
    SCOPED_TRACE(dst);
    const auto start = Clock::now();
    EXPECT_EQ(ping_probe(c0, dst, kProbe), Outcome::kUnreachable);
    EXPECT_EQ(tcp_probe(c0, dst, 80, kProbe), Outcome::kUnreachable);
    EXPECT_EQ(udp_probe(c0, dst, 53, kProbe), Outcome::kUnreachable);
    EXPECT_LT(elapsed_since(start), Millis{500});
  }
  // No route locally.
  EXPECT_EQ(tcp_probe(lab.world, "10.77.0.1", 80, kProbe), Outcome::kUnreachable);
  EXPECT_EQ(ping_probe(lab.world, "fd00:77::1", kProbe), Outcome::kUnreachable);
  EXPECT_EQ(ping_probe(lab.world, "not-an-address", kProbe), Outcome::kError);
}

TEST_F(BridgeLabTest, UdpServerOnWildcardRepliesFromTheAddressedIp) {
  const BridgeLab& lab = *lab_;
  // The node has several addresses; replies must come from the one the
  // client addressed, or its connected socket would ignore them.
  UdpEchoServer v4(lab.node, "0.0.0.0");
  UdpEchoServer v6(lab.node, "::");
  const NetNs& c0 = lab.br0_containers[0].ns;
  for (const std::string& dst : {lab.br0_v4, lab.br1_v4, lab.uplink_v4}) {
    EXPECT_TRUE(udp_echo(c0, dst, v4.port(), kProbe)) << dst;
  }
  for (const std::string& dst : {lab.br0_v6, lab.br1_v6, lab.uplink_v6}) {
    EXPECT_TRUE(udp_echo(c0, dst, v6.port(), kProbe)) << dst;
  }
}

TEST_F(BridgeLabTest, TcpSessionSeesDropsAndRecoversAndSeesTheServerGo) {
  const BridgeLab& lab = *lab_;
  const auto& d0 = lab.br1_containers[0];
  TcpServer server(d0.ns, d0.v4);
  TcpSession session(lab.br0_containers[0].ns, d0.v4, server.port(), kProbe);
  EXPECT_NE(session.local_port(), 0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(session.exchange(kProbe)) << i;

  // A forward-drop policy at the node cuts the established flow ...
  lab.node.check(
      "nft 'add table inet twtest'; "
      "nft 'add chain inet twtest fw { type filter hook forward priority 0; policy drop; }'");
  EXPECT_EQ(session.exchange_probe(kShort), Outcome::kTimeout);
  // ... and once it is gone the same connection carries data again (TCP
  // retransmits what was lost, which takes one backed-off RTO).
  lab.node.check("nft 'delete table inet twtest'");
  EXPECT_TRUE(session.exchange(Millis{3000}));
  EXPECT_EQ(server.accepted(), 1u);

  server.stop();
  EXPECT_EQ(session.exchange_probe(kProbe), Outcome::kRefused);
  EXPECT_THROW(TcpSession(lab.br0_containers[0].ns, d0.v4, server.port(), kProbe),
               std::runtime_error);
}

TEST_F(NetnsTest, BridgeLabOptionsShapeTheLab) {
  BridgeLab lab(BridgeLabOptions{.br0_containers = 1, .br1_containers = 0, .bridge_nf_call = true});
  EXPECT_EQ(lab.br0_containers.size(), 1u);
  EXPECT_TRUE(lab.br1_containers.empty());
  EXPECT_EQ(read_sysctl(lab.node, "net.bridge.bridge-nf-call-iptables"), "1");
  EXPECT_EQ(read_sysctl(lab.node, "net.bridge.bridge-nf-call-ip6tables"), "1");
  EXPECT_TRUE(ping(lab.br0_containers[0].ns, lab.world_v6, kProbe));
}

TEST_F(NetnsTest, BridgeLabLeavesNothingBehind) {
  std::vector<std::string> names;
  {
    BridgeLab lab;
    for (const NetNs* ns : lab.namespaces()) names.push_back(ns->name());
    for (const std::string& name : names) EXPECT_TRUE(namespace_exists(name)) << name;
    EXPECT_EQ(our_namespaces().size(), names.size());
  }
  for (const std::string& name : names) EXPECT_FALSE(namespace_exists(name)) << name;
  EXPECT_THAT(our_namespaces(), ::testing::IsEmpty());
  const CommandResult listed = run_argv({"ip", "netns", "list"});
  for (const std::string& name : names) EXPECT_THAT(listed.out, ::testing::Not(HasSubstr(name)));
}

TEST_F(NetnsTest, BridgeLabCleansUpWhenConstructionFails) {
  // 200 containers on one bridge would work; 201 is refused up front, after
  // node and world already exist: they must go away with the exception.
  EXPECT_THROW(BridgeLab(BridgeLabOptions{.br0_containers = 201}), std::invalid_argument);
  EXPECT_THAT(our_namespaces(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace tierwall::testsupport
