// Kernel flow-event capture (flow_events.h, nflog.h, ct_events.h) on real
// traffic: a BridgeLab node runs NftBackend with br_netfilter on, and the
// NFLOG and conntrack event sources read what the kernel reports.
//
//   Decisions:  denied TCP/UDP/ICMP probes are Start(deny) events naming the
//               rule, the generation, addresses and ports; an audited
//               connection is Start(audit) from NFLOG and from conntrack.
//   Accounting: an allowed TCP transfer is Start(allow, flow id) and, after
//               close, End with packets and bytes per direction (IPv4, IPv6).
//   Loss:       a UDP flood through a 64 KiB receive buffer read slowly:
//               events + Loss counts == the rules' kernel counters, exactly.
//   (Rates are measured by `tierwall-bench flowlog`, tools/bench.)
//
// Everything runs in the test's own namespaces (the lab deletes them, and
// the table with the node namespace, also when an assertion fails).
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/dataplane/nft/conntrack.h"
#include "tierwall/dataplane/nft/ct_events.h"
#include "tierwall/dataplane/nft/flow_events.h"
#include "tierwall/dataplane/nft/nflog.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall {
namespace {

using dataplane::RuleId;
using dataplane::Verdict;
using dataplane::nft::ConntrackEventSource;
using dataplane::nft::FlowEventKind;
using dataplane::nft::LossReason;
using dataplane::nft::NflogSource;
using dataplane::nft::RawFlowEvent;
using testsupport::BridgeLab;
using testsupport::in_netns;
using testsupport::Millis;
using testsupport::NetNs;
using testsupport::Outcome;

constexpr std::uint16_t kGroup = 91;
constexpr std::uint64_t kGeneration = 42;
constexpr std::uint16_t kFloodPort = 9999;

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: events}
spec:
  tiers:
    - {name: web, level: 10}
    - {name: api, level: 20, mode: audit}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: api, match: {labels: {role: api}}, tier: api}
  denies:
    - name: no-telnet
      from: {}
      to: {}
      ports: [tcp/23]
    - name: no-discard
      from: {}
      to: {}
      ports: [udp/9999]
    - name: no-ping
      from: {tier: web}
      to: {tier: web}
      ports: [icmp/echo-request, icmpv6/echo-request]
  flows:
    - name: web-http
      from: {tier: web}
      to: {tier: web}
      ports: [tcp/80]
    - name: web-https
      from: {tier: web}
      to: {tier: web}
      ports: [tcp/443]
      log: true
)";

IpAddress ip(const std::string& text) { return *IpAddress::parse(text); }

// The lab, the policy applied through NftBackend, and both event sources,
// opened in the node namespace before any traffic.
class Capture {
 public:
  explicit Capture(NflogSource::Config nflog_config = {}) {
    testsupport::BridgeLabOptions options;
    options.br0_containers = 4;
    options.br1_containers = 0;
    options.bridge_nf_call = true;
    lab_ = std::make_unique<BridgeLab>(options);
    // Short TCP end states, so DESTROY follows a close within seconds.
    for (const char* state : {"time_wait", "close", "fin_wait", "close_wait", "last_ack"}) {
      testsupport::sysctl(lab_->node,
                          std::string("net.netfilter.nf_conntrack_tcp_timeout_") + state, "1");
    }
    std::string inventory =
        "apiVersion: tierwall.io/v1\nkind: Inventory\nnode: {name: n, addresses: [" + lab_->br0_v4 +
        ", \"" + lab_->br0_v6 + "\"]}\nendpoints:\n";
    const char* roles[] = {"web", "web", "api", "api"};
    for (std::size_t i = 0; i < 4; ++i) {
      const auto& c = lab_->br0_containers[i];
      inventory += "  - {name: e" + std::to_string(i) + ", labels: {role: " + roles[i] +
                   "}, addresses: [" + c.v4 + ", \"" + c.v6 + "\"]}\n";
    }
    policy::Diagnostics d;
    auto pol = policy::parse_policy(kPolicy, "events.yaml", d);
    auto inv = identity::parse_inventory(inventory, "inv.yaml", d);
    if (!pol || !inv) throw std::runtime_error("policy/inventory rejected");
    rules_ = compiler::compile(*pol, *inv, kGeneration,
                               {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("fd00:88::/64")});

    dataplane::nft::NftBackend::Config config;
    config.plan.log_group = kGroup;
    config.local_addresses = {ip(lab_->br0_v4), ip(lab_->br0_v6)};
    nflog_config.group = kGroup;
    std::string error;
    in_netns(lab_->node, [&] {
      if (!dataplane::nft::enable_conntrack_accounting(true, &error)) return 0;
      auto opened = dataplane::nft::NftBackend::open(config);
      if (auto* b = std::get_if<std::unique_ptr<dataplane::nft::NftBackend>>(&opened)) {
        backend_ = std::move(*b);
      } else {
        error = std::get<std::string>(opened);
        return 0;
      }
      nflog_ = NflogSource::open(nflog_config, &error);
      ConntrackEventSource::Config ct_config;
      auto policy = rules_.policy;
      ct_config.classify = [policy](RuleId r) {
        return dataplane::nft::verdict_for_rule(*policy, r);
      };
      ct_ = ConntrackEventSource::open(std::move(ct_config), &error);
      return 0;
    });
    if (!backend_ || !nflog_ || !ct_) throw std::runtime_error("capture setup: " + error);
    if (in_netns(lab_->node, [&] { return backend_->apply(rules_); }).has_value())
      throw std::runtime_error("apply failed");
  }

  ~Capture() {
    // Sockets and the table go before the namespaces (the lab).
    nflog_.reset();
    ct_.reset();
    if (backend_) {
      in_netns(lab_->node, [&] {
        backend_->flush();
        backend_.reset();
        return 0;
      });
    }
  }

  RuleId rule(const char* name) const { return rules_.policy->find_rule(name)->id; }
  BridgeLab& lab() { return *lab_; }
  NflogSource& nflog() { return *nflog_; }
  dataplane::nft::NftBackend& backend() { return *backend_; }

  // Drains both sources into events() until `done()` holds or `wait` ends.
  template <typename Done>
  bool collect(Millis wait, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    const auto sink = [&](const RawFlowEvent& e) { events_.push_back(e); };
    for (;;) {
      nflog_->drain(sink);
      ct_->drain(sink);
      if (done()) return true;
      const auto left =
          std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p[2] = {{nflog_->fd(), POLLIN, 0}, {ct_->fd(), POLLIN, 0}};
      poll(p, 2, static_cast<int>(std::min<long>(left.count(), 100)));
    }
  }

  std::vector<RawFlowEvent>& events() { return events_; }

  // Conntrack reaps expired entries when they are dumped, which sends their
  // DESTROY at once rather than at the next garbage collection.
  void reap_expired() {
    in_netns(lab_->node, [] {
      dataplane::nft::ct_dump();
      return 0;
    });
  }

 private:
  std::unique_ptr<BridgeLab> lab_;
  dataplane::RuleSet rules_;
  std::unique_ptr<dataplane::nft::NftBackend> backend_;
  std::optional<NflogSource> nflog_;
  std::optional<ConntrackEventSource> ct_;
  std::vector<RawFlowEvent> events_;
};

const RawFlowEvent* find(const std::vector<RawFlowEvent>& events, FlowEventKind kind,
                         const IpAddress& src, const IpAddress& dst, std::uint8_t proto,
                         std::uint16_t dport) {
  for (const auto& e : events) {
    if (e.kind == kind && e.src == src && e.dst == dst && e.proto == proto &&
        (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 || e.dport == dport)) {
      return &e;
    }
  }
  return nullptr;
}

// Connects from `ns` to address:port, sends `bytes`, reads the echo back,
// closes. Returns the local port (0 on failure).
std::uint16_t tcp_transfer(const NetNs& ns, const std::string& address, std::uint16_t port,
                           std::size_t bytes) {
  return in_netns(ns, [&]() -> std::uint16_t {
    const bool v6 = address.find(':') != std::string::npos;
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      inet_pton(AF_INET6, address.c_str(), &a->sin6_addr);
      len = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      inet_pton(AF_INET, address.c_str(), &a->sin_addr);
      len = sizeof *a;
    }
    const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    timeval tv{3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::uint16_t local = 0;
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) {
      sockaddr_storage me{};
      socklen_t me_len = sizeof me;
      getsockname(fd, reinterpret_cast<sockaddr*>(&me), &me_len);
      const std::uint16_t p = v6 ? reinterpret_cast<sockaddr_in6*>(&me)->sin6_port
                                 : reinterpret_cast<sockaddr_in*>(&me)->sin_port;
      std::vector<char> out(bytes, 'x');
      std::vector<char> in(bytes);
      std::size_t sent = 0;
      std::size_t got = 0;
      while (sent < bytes) {
        const ssize_t n = send(fd, out.data() + sent, bytes - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
        // Read as we go so neither side's buffers fill.
        while (got < sent) {
          const ssize_t r = recv(fd, in.data() + got, bytes - got, 0);
          if (r <= 0) break;
          got += static_cast<std::size_t>(r);
        }
      }
      if (sent == bytes && got == bytes) local = ntohs(p);
      shutdown(fd, SHUT_WR);
      char c = 0;
      while (recv(fd, &c, 1, 0) > 0) {
      }
    }
    close(fd);
    return local;
  });
}

// Sends `count` UDP datagrams (18 bytes each) from `ns` to address:port with
// sendmmsg, in batches of 64. Runs on a thread inside `ns` only.
std::uint64_t udp_flood(const NetNs& ns, const std::string& address, std::uint16_t port,
                        std::uint64_t count, const std::atomic<bool>* stop = nullptr) {
  return in_netns(ns, [&]() -> std::uint64_t {
    const bool v6 = address.find(':') != std::string::npos;
    const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      inet_pton(AF_INET6, address.c_str(), &a->sin6_addr);
      len = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      inet_pton(AF_INET, address.c_str(), &a->sin_addr);
      len = sizeof *a;
    }
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      close(fd);
      return 0;
    }
    constexpr unsigned kBatch = 64;
    char payload[18] = "tierwall-flood-xx";
    iovec iov[kBatch];
    mmsghdr msgs[kBatch];
    std::memset(msgs, 0, sizeof msgs);
    for (unsigned i = 0; i < kBatch; ++i) {
      iov[i] = {payload, sizeof payload};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    std::uint64_t sent = 0;
    while (sent < count && (stop == nullptr || !stop->load(std::memory_order_relaxed))) {
      const auto n = static_cast<unsigned>(std::min<std::uint64_t>(kBatch, count - sent));
      const int r = sendmmsg(fd, msgs, n, 0);
      if (r > 0) {
        sent += static_cast<std::uint64_t>(r);
      } else if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
        break;
      }
    }
    close(fd);
    return sent;
  });
}

// ---------------------------------------------------------------------------

TEST(NftFlowEvents, DecodesPrefixes) {
  auto t = dataplane::nft::decode_prefix(std::string_view("tw:d:17:42\0", 11));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->verdict, Verdict::Deny);
  EXPECT_EQ(t->rule, 17U);
  EXPECT_EQ(t->generation, 42U);
  EXPECT_EQ(dataplane::nft::decode_prefix("tw:a:3:1")->verdict, Verdict::Audit);
  EXPECT_EQ(dataplane::nft::decode_prefix("tw:l:2:18446744073709551615")->verdict, Verdict::Allow);
  for (const char* bad : {"", "tw:", "tw:x:1:1", "tw:d::1", "tw:d:1:", "tw:d:1:2x",
                          "tw:d:99999999999:1", "xx:d:1:1", "tw:d:1:18446744073709551616"}) {
    EXPECT_FALSE(dataplane::nft::decode_prefix(bad).has_value()) << bad;
  }
}

TEST(NftFlowEvents, DeniedAndAuditedDecisionsAreStartEvents) {
  if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  Capture cap;
  auto& lab = cap.lab();
  auto& c0 = lab.br0_containers[0];
  auto& c1 = lab.br0_containers[1];
  auto& c2 = lab.br0_containers[2];
  auto& c3 = lab.br0_containers[3];
  // One reader per group and namespace: a second bind is refused, cleanly.
  std::string busy;
  EXPECT_FALSE(in_netns(lab.node, [&] {
    return NflogSource::open(NflogSource::Config{.group = kGroup}, &busy).has_value();
  }));
  EXPECT_NE(busy.find("bind group"), std::string::npos) << busy;
  testsupport::TcpServer s23(c1.ns, "::", 23);
  testsupport::TcpServer a80(c3.ns, "::", 80);

  for (bool v6 : {false, true}) {
    const std::string to = v6 ? c1.v6 : c1.v4;
    EXPECT_EQ(testsupport::tcp_probe(c0.ns, to, 23, Millis(300)), Outcome::kTimeout);
    EXPECT_EQ(testsupport::udp_probe(c0.ns, to, kFloodPort, Millis(300)), Outcome::kTimeout);
    EXPECT_EQ(testsupport::ping_probe(c0.ns, to, Millis(300)), Outcome::kTimeout);
  }
  // api -> api: both in the audit tier, so default-deny is audited: passes.
  EXPECT_EQ(testsupport::tcp_probe(c2.ns, c3.v4, 80, Millis(1500)), Outcome::kOk);

  const auto& ev = cap.events();
  const auto audited = [&] {
    int n = 0;
    for (const auto& e : ev) {
      if (e.kind == FlowEventKind::Start && e.verdict == Verdict::Audit && e.src == ip(c2.v4) &&
          e.dst == ip(c3.v4))
        ++n;
    }
    return n;
  };
  cap.collect(Millis(3000), [&] {
    for (bool v6 : {false, true}) {
      const IpAddress s = ip(v6 ? c0.v6 : c0.v4);
      const IpAddress d = ip(v6 ? c1.v6 : c1.v4);
      if (!find(ev, FlowEventKind::Start, s, d, IPPROTO_TCP, 23) ||
          !find(ev, FlowEventKind::Start, s, d, IPPROTO_UDP, kFloodPort) ||
          !find(ev, FlowEventKind::Start, s, d,
                static_cast<std::uint8_t>(v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP}), 0))
        return false;
    }
    return audited() >= 2;  // NFLOG and conntrack
  });

  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const IpAddress s = ip(v6 ? c0.v6 : c0.v4);
    const IpAddress d = ip(v6 ? c1.v6 : c1.v4);
    const RawFlowEvent* tcp = find(ev, FlowEventKind::Start, s, d, IPPROTO_TCP, 23);
    ASSERT_NE(tcp, nullptr);
    EXPECT_EQ(tcp->verdict, Verdict::Deny);
    EXPECT_EQ(tcp->rule, cap.rule("no-telnet"));
    EXPECT_EQ(tcp->generation, kGeneration);
    EXPECT_NE(tcp->sport, 0);
    const RawFlowEvent* udp = find(ev, FlowEventKind::Start, s, d, IPPROTO_UDP, kFloodPort);
    ASSERT_NE(udp, nullptr);
    EXPECT_EQ(udp->verdict, Verdict::Deny);
    EXPECT_EQ(udp->rule, cap.rule("no-discard"));
    EXPECT_EQ(udp->generation, kGeneration);
    EXPECT_NE(udp->sport, 0);
    const std::uint8_t icmp =
        static_cast<std::uint8_t>(v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP});
    const RawFlowEvent* ping = find(ev, FlowEventKind::Start, s, d, icmp, 0);
    ASSERT_NE(ping, nullptr);
    EXPECT_EQ(ping->verdict, Verdict::Deny);
    EXPECT_EQ(ping->rule, cap.rule("no-ping"));
    EXPECT_EQ(ping->generation, kGeneration);
    EXPECT_EQ(ping->icmp_type, v6 ? 128 : 8);
    EXPECT_EQ(ping->icmp_code, 0);
  }
  // The audited connection: NFLOG says audit with the generation; conntrack
  // NEW carries default-deny in the mark, which the classifier calls audit.
  bool from_nflog = false;
  bool from_ct = false;
  for (const auto& e : ev) {
    if (e.kind != FlowEventKind::Start || e.src != ip(c2.v4) || e.dst != ip(c3.v4)) continue;
    EXPECT_EQ(e.verdict, Verdict::Audit);
    EXPECT_EQ(e.rule, dataplane::kRuleDefaultDeny);
    EXPECT_EQ(e.dport, 80);
    if (e.generation == kGeneration) from_nflog = true;
    if (e.conntrack_id != 0) from_ct = true;
  }
  EXPECT_TRUE(from_nflog);
  EXPECT_TRUE(from_ct);
  std::size_t kernel_time = 0;
  for (const auto& e : ev) {
    EXPECT_NE(e.kind, FlowEventKind::Loss);
    if (e.kernel_time) ++kernel_time;
    // Kernel or receive time, both wall clock: within the last minute.
    EXPECT_LT(std::chrono::abs(dataplane::nft::WallClock::now() - e.time), std::chrono::minutes(1));
  }
  std::printf("  %zu of %zu events carried a kernel timestamp\n", kernel_time, ev.size());
  EXPECT_EQ(cap.nflog().stats().malformed, 0U);
}

TEST(NftFlowEvents, AllowedConnectionStartsAndEndsWithCounters) {
  if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  Capture cap;
  auto& lab = cap.lab();
  auto& c0 = lab.br0_containers[0];
  auto& c1 = lab.br0_containers[1];
  testsupport::TcpServer s80(c1.ns, "::", 80);
  constexpr std::size_t kPayload = 100'000;

  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const IpAddress s = ip(v6 ? c0.v6 : c0.v4);
    const IpAddress d = ip(v6 ? c1.v6 : c1.v4);
    const std::uint16_t sport = tcp_transfer(c0.ns, v6 ? c1.v6 : c1.v4, 80, kPayload);
    ASSERT_NE(sport, 0) << "transfer failed";
    const auto match = [&](FlowEventKind kind) -> const RawFlowEvent* {
      for (const auto& e : cap.events()) {
        if (e.kind == kind && e.src == s && e.dst == d && e.sport == sport && e.dport == 80)
          return &e;
      }
      return nullptr;
    };
    const bool ended = cap.collect(Millis(20'000), [&] {
      if (match(FlowEventKind::End) != nullptr) return true;
      cap.reap_expired();
      return false;
    });
    ASSERT_TRUE(ended) << "no DESTROY event";
    const RawFlowEvent* start = match(FlowEventKind::Start);
    ASSERT_NE(start, nullptr);
    EXPECT_EQ(start->verdict, Verdict::Allow);
    EXPECT_EQ(start->rule, cap.rule("web-http"));
    EXPECT_EQ(start->proto, IPPROTO_TCP);
    EXPECT_NE(start->conntrack_id, 0U);
    const RawFlowEvent* end = match(FlowEventKind::End);
    ASSERT_NE(end, nullptr);
    EXPECT_EQ(end->verdict, Verdict::Allow);
    EXPECT_EQ(end->rule, cap.rule("web-http"));
    EXPECT_EQ(end->conntrack_id, start->conntrack_id);
    EXPECT_TRUE(end->counters);
    EXPECT_TRUE(end->kernel_time);
    ASSERT_TRUE(end->started.has_value());
    EXPECT_LE(*end->started, end->time);
    // Payload plus TCP/IP headers; packets: at least handshake + FIN and
    // one segment per 64 KiB, at most one per 500 bytes.
    EXPECT_GE(end->bytes_orig, kPayload);
    EXPECT_GE(end->bytes_reply, kPayload);
    EXPECT_LE(end->bytes_orig, kPayload * 2);
    EXPECT_LE(end->bytes_reply, kPayload * 2);
    EXPECT_GE(end->packets_orig, 4U);
    EXPECT_GE(end->packets_reply, 4U);
    EXPECT_LE(end->packets_orig, kPayload / 500);
    EXPECT_LE(end->packets_reply, kPayload / 500);
    std::printf("  %s: orig %llu packets %llu bytes, reply %llu packets %llu bytes\n",
                v6 ? "IPv6" : "IPv4", static_cast<unsigned long long>(end->packets_orig),
                static_cast<unsigned long long>(end->bytes_orig),
                static_cast<unsigned long long>(end->packets_reply),
                static_cast<unsigned long long>(end->bytes_reply));
  }
}

// Sum of the kernel counters of every rule that logs to NFLOG (denies,
// default-deny and the `log: true` flow): each packet they count is one
// NFLOG message.
std::uint64_t logged_packets(Capture& cap) {
  const auto counters = in_netns(cap.lab().node, [&] { return cap.backend().rule_counters(); });
  std::uint64_t sum = 0;
  for (RuleId r : {cap.rule("no-telnet"), cap.rule("no-discard"), cap.rule("no-ping"),
                   cap.rule("web-https"), dataplane::kRuleDefaultDeny}) {
    auto it = counters.find(r);
    if (it != counters.end()) sum += it->second.first;
  }
  return sum;
}

TEST(NftFlowEvents, FloodThroughASmallBufferIsFullyAccounted) {
  if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  NflogSource::Config small;
  small.receive_buffer = 64 * 1024;
  small.max_datagrams_per_drain = 1;
  Capture cap(small);
  auto& lab = cap.lab();
  auto& c0 = lab.br0_containers[0];
  auto& c1 = lab.br0_containers[1];
  auto& nflog = cap.nflog();

  std::uint64_t events = 0;
  std::uint64_t lost = 0;
  std::uint64_t loss_events = 0;
  bool lower_bound = false;
  const auto sink = [&](const RawFlowEvent& e) {
    if (e.kind == FlowEventKind::Start) ++events;
    if (e.kind == FlowEventKind::Loss) {
      ++loss_events;
      lost += e.loss_count;
      lower_bound = lower_bound || e.lower_bound;
    }
  };
  constexpr std::uint64_t kFlood = 200'000;
  std::atomic<bool> done{false};
  std::uint64_t sent = 0;
  std::thread generator([&] {
    sent = udp_flood(c0.ns, c1.v4, kFloodPort, kFlood);
    done = true;
  });
  // Read slowly: one datagram per millisecond.
  while (!done) {
    nflog.drain(sink);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  generator.join();
  EXPECT_EQ(sent, kFlood);
  // Empty the socket, then send single denied datagrams until one arrives:
  // its sequence number sizes the last gap.
  const auto drain_all = [&] {
    for (int idle = 0; idle < 5;) {
      idle = nflog.drain(sink) == 0 ? idle + 1 : 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  drain_all();
  for (int i = 0; i < 20; ++i) {
    const std::uint64_t before = events;
    udp_flood(c0.ns, c1.v4, kFloodPort, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    drain_all();
    if (events > before) break;
  }
  nflog.finish(sink);
  const std::uint64_t counted = logged_packets(cap);
  const auto& st = nflog.stats();
  std::printf(
      "  flood: counter %llu, events %llu, lost %llu in %llu Loss events, ENOBUFS %llu, "
      "datagrams %llu, rcvbuf %d\n",
      static_cast<unsigned long long>(counted), static_cast<unsigned long long>(events),
      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(loss_events),
      static_cast<unsigned long long>(st.enobufs), static_cast<unsigned long long>(st.datagrams),
      nflog.receive_buffer());
  EXPECT_GT(st.enobufs, 0U) << "the buffer never overflowed: the test proves nothing";
  EXPECT_GT(lost, 0U);
  EXPECT_FALSE(lower_bound);
  EXPECT_GE(counted, kFlood);
  EXPECT_EQ(events + lost, counted) << "unaccounted NFLOG messages";
  EXPECT_EQ(st.malformed, 0U);
  EXPECT_EQ(st.foreign, 0U);
  EXPECT_EQ(st.reordered, 0U);
}

}  // namespace
}  // namespace tierwall
