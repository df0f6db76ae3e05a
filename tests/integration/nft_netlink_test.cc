// The nftables netlink layer against the real kernel: every Match and Action
// kind lands as nft would write it, replacement is atomic, the generation id
// guards against concurrent writers, kernel errors name the Plan object,
// big sets fit, counters and conntrack are readable. Each kernel test runs
// in a fresh network namespace that it creates and deletes; the root
// namespace's ruleset is never touched.
#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <optional>
#include <sched.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tierwall/dataplane/nft/conntrack.h"
#include "tierwall/dataplane/nft/netlink.h"

namespace tierwall::dataplane::nft {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Fam = IpAddress::Family;
using Clock = std::chrono::steady_clock;

constexpr const char* kTable = "twtest";

// ---------------------------------------------------------------------------
// Plan building blocks

IpAddress ip(const char* text) { return *IpAddress::parse(text); }
Cidr cidr(const char* text) { return *Cidr::parse(text); }

Match nfproto(Fam f) { return Match{Match::Kind::NfProto, f, Dir::Src, {}, 0, 0, 0}; }
Match l4proto(std::uint8_t p) {
  return Match{Match::Kind::L4Proto, Fam::V4, Dir::Src, {}, p, 0, 0};
}
Match in_set(Fam f, Dir d, std::string set) {
  return Match{Match::Kind::InSet, f, d, std::move(set), 0, 0, 0};
}
Match not_in_set(Fam f, Dir d, std::string set) {
  return Match{Match::Kind::NotInSet, f, d, std::move(set), 0, 0, 0};
}
Match dport(std::uint16_t lo, std::uint16_t hi) {
  return Match{Match::Kind::DportRange, Fam::V4, Dir::Dst, {}, 0, lo, hi};
}
Match icmp_type(Fam f, std::uint8_t proto, std::uint16_t lo, std::uint16_t hi) {
  return Match{Match::Kind::IcmpTypeRange, f, Dir::Src, {}, proto, lo, hi};
}
Match ct_est() { return Match{Match::Kind::CtStateEstRel, Fam::V4, Dir::Src, {}, 0, 0, 0}; }
Match icmpv6_nd() { return Match{Match::Kind::IcmpV6Nd, Fam::V6, Dir::Src, {}, 0, 0, 0}; }

Action counter(std::string name) { return Action{Action::Kind::Counter, std::move(name), 0}; }
Action log_to(std::string prefix, std::uint32_t group) {
  return Action{Action::Kind::Log, std::move(prefix), group};
}
Action ct_mark(std::uint32_t rule) { return Action{Action::Kind::CtMark, {}, rule}; }
Action accept() { return Action{Action::Kind::Accept, {}, 0}; }
Action drop() { return Action{Action::Kind::Drop, {}, 0}; }
Action jump(std::string chain) { return Action{Action::Kind::Jump, std::move(chain), 0}; }
Action go_to(std::string chain) { return Action{Action::Kind::Goto, std::move(chain), 0}; }

SetDef plain_set(std::string name, Fam f, std::vector<IpAddress> addrs) {
  SetDef s;
  s.name = std::move(name);
  s.family = f;
  s.addresses = std::move(addrs);
  return s;
}

SetDef interval_set(std::string name, Fam f, std::vector<Cidr> prefixes) {
  SetDef s;
  s.name = std::move(name);
  s.family = f;
  s.interval = true;
  s.prefixes = std::move(prefixes);
  return s;
}

RuleDef rule(std::string chain, std::vector<Match> m, std::vector<Action> a, RuleId origin = 0) {
  return RuleDef{std::move(chain), std::move(m), std::move(a), origin};
}

// Every Match and Action kind, base and regular chains, plain and interval
// sets of both families.
Plan full_plan() {
  Plan p;
  p.table = kTable;
  p.sets = {
      plain_set("ep4", Fam::V4, {ip("10.0.0.1"), ip("10.0.0.2")}),
      plain_set("ep6", Fam::V6, {ip("fd00::1")}),
      // 10.1.0.0/16 is adjacent to 10.0.0.0/16: the kernel gets 10.0.0.0/15.
      interval_set("cidr4", Fam::V4,
                   {cidr("10.0.0.0/16"), cidr("192.168.1.0/24"), cidr("10.1.0.0/16")}),
      interval_set("cidr6", Fam::V6, {cidr("fd00::/64")}),
      interval_set("wtop4", Fam::V4, {cidr("255.255.255.0/24")}),  // open-ended range
  };
  p.counters = {"c16", "c17"};
  p.chains = {{"forward", Hook::Forward, -10},
              {"input", Hook::Input, -10},
              {"fwd4", {}, 0},
              {"fwd6", {}, 0}};
  p.rules = {
      rule("forward", {ct_est()}, {accept()}),
      rule("forward", {nfproto(Fam::V6), l4proto(58), icmpv6_nd()}, {accept()}),
      rule("forward", {nfproto(Fam::V4)}, {jump("fwd4")}),
      rule("forward", {nfproto(Fam::V6)}, {go_to("fwd6")}),
      rule("fwd4",
           {nfproto(Fam::V4), in_set(Fam::V4, Dir::Src, "ep4"),
            not_in_set(Fam::V4, Dir::Dst, "cidr4"), l4proto(6), dport(80, 80)},
           {counter("c16"), log_to("tw:a:16:7", 100), ct_mark(16), accept()}, 16),
      rule("fwd4",
           {nfproto(Fam::V4), in_set(Fam::V4, Dir::Src, "ep4"), l4proto(17), dport(1000, 2000)},
           {counter("c17"), accept()}, 17),
      rule("fwd4", {nfproto(Fam::V4), l4proto(1), icmp_type(Fam::V4, 1, 8, 8)}, {drop()}, 18),
      // No NfProto first: the encoder adds nft's implicit dependency.
      rule("fwd4", {in_set(Fam::V4, Dir::Dst, "wtop4")}, {drop()}, 19),
      rule("fwd6",
           {nfproto(Fam::V6), in_set(Fam::V6, Dir::Src, "ep6"), in_set(Fam::V6, Dir::Dst, "cidr6")},
           {accept()}, 20),
      rule("fwd6", {icmp_type(Fam::V6, 58, 128, 129)}, {accept()}, 21),
      rule("fwd6", {}, {counter("c17"), drop()}, 3),
      rule("input", {ct_est()}, {accept()}),
  };
  return p;
}

// A small plan whose every object name differs from full_plan()'s.
Plan other_plan() {
  Plan p;
  p.table = kTable;
  p.sets = {plain_set("newset", Fam::V4, {ip("192.0.2.7")})};
  p.counters = {"c99"};
  p.chains = {{"output", Hook::Output, -10}};
  p.rules = {rule("output", {in_set(Fam::V4, Dir::Dst, "newset")}, {counter("c99"), drop()}, 99)};
  return p;
}

// ---------------------------------------------------------------------------
// Pure encoding (no kernel)

TEST(NftEncodeTest, IntervalKeysFollowNft) {
  const std::vector<Cidr> v4 = {cidr("10.0.0.0/8"), cidr("192.168.1.0/24")};
  const auto keys = interval_keys(v4, Fam::V4);
  ASSERT_EQ(keys.size(), 5U);  // leading 0 end, then [start, end) pairs
  EXPECT_EQ(keys[0].key, (std::vector<std::uint8_t>{0, 0, 0, 0}));
  EXPECT_TRUE(keys[0].end);
  EXPECT_EQ(keys[1].key, (std::vector<std::uint8_t>{10, 0, 0, 0}));
  EXPECT_FALSE(keys[1].end);
  EXPECT_EQ(keys[2].key, (std::vector<std::uint8_t>{11, 0, 0, 0}));
  EXPECT_TRUE(keys[2].end);
  EXPECT_EQ(keys[4].key, (std::vector<std::uint8_t>{192, 168, 2, 0}));

  // Starting at 0: no leading end. Ending at the top: no end, start is open.
  const std::vector<Cidr> edges = {cidr("0.0.0.0/1"), cidr("255.255.255.0/24")};
  const auto e = interval_keys(edges, Fam::V4);
  ASSERT_EQ(e.size(), 3U);
  EXPECT_EQ(e[0].key, (std::vector<std::uint8_t>{0, 0, 0, 0}));
  EXPECT_FALSE(e[0].end);
  EXPECT_EQ(e[1].key, (std::vector<std::uint8_t>{128, 0, 0, 0}));
  EXPECT_TRUE(e[1].end);
  EXPECT_TRUE(e[2].open);

  // Overlapping and adjacent prefixes merge; the other family is ignored.
  const std::vector<Cidr> merge = {cidr("10.0.0.0/16"), cidr("10.0.5.0/24"), cidr("10.1.0.0/16"),
                                   cidr("fd00::/8")};
  EXPECT_EQ(interval_keys(merge, Fam::V4).size(), 3U);
  EXPECT_EQ(interval_keys(merge, Fam::V6).size(), 3U);
}

TEST(NftEncodeTest, SplitsElementsAndMapsEverySequenceNumber) {
  Plan p = full_plan();
  std::vector<IpAddress> many;
  for (std::uint32_t i = 0; i < 20000; ++i) many.push_back(IpAddress::v4(0x0a000000U + i));
  p.sets.push_back(plain_set("big4", Fam::V4, many));
  ASSERT_FALSE(validate_plan(p).has_value());

  const EncodedBatch b = encode_plan(p, 1000, 42U);
  EXPECT_LE(b.largest_message, 64U * 1024U);
  EXPECT_EQ(b.begin_seq, 1000U);
  EXPECT_EQ(b.end_seq, 1000U + b.objects.size() + 1);
  std::size_t rules = 0;
  std::size_t chunks = 0;
  for (const auto& [seq, obj] : b.objects) {
    if (obj.kind == BatchObject::Kind::Rule) ++rules;
    if (obj.kind == BatchObject::Kind::Elements && obj.name == "big4") ++chunks;
  }
  EXPECT_EQ(rules, p.rules.size());
  EXPECT_GE(chunks, 20000U * 16U / kMaxElementBytesPerMessage);
  // The rule with origin 16 is the first rule of fwd4.
  bool found = false;
  for (const auto& [seq, obj] : b.objects)
    if (obj.rule == 16) found = obj.describe() == "rule fwd4#1";
  EXPECT_TRUE(found);

  const KernelCounts c = expected_counts(p);
  EXPECT_EQ(c.sets, 6U);
  // ep4 2 + ep6 1 + cidr4 (0 end, 10.0/15, end, 192.168.1/24, end) 5 +
  // cidr6 (0 end, start, end) 3 + wtop4 (0 end, open start) 2 + big4.
  EXPECT_EQ(c.elements, 2U + 1U + 5U + 3U + 2U + 20000U);
}

TEST(NftEncodeTest, ValidationNamesTheObject) {
  Plan p = full_plan();
  p.sets[0].addresses.push_back(ip("fd00::9"));
  auto e = validate_plan(p);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->object, "set ep4");

  p = full_plan();
  p.rules[4].actions[1].name = std::string(200, 'x');  // log prefix too long
  e = validate_plan(p);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->rule, 16U);
  EXPECT_EQ(e->object, "rule fwd4#1");

  p = full_plan();
  p.chains.push_back(p.chains[0]);
  EXPECT_TRUE(validate_plan(p).has_value());
}

// ---------------------------------------------------------------------------
// Kernel tests

std::string shell(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return "popen failed";
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Runs each test in its own network namespace: created in SetUp, the test
// thread joins it (setns), and TearDown returns the thread and deletes the
// namespace whatever happened in between.
class NftNetlinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0)
      GTEST_SKIP() << "needs root: creates network namespaces and nftables tables";
    static std::atomic<int> serial{0};
    ns_ = "twnl-" + std::to_string(::getpid()) + "-" + std::to_string(serial++);
    const std::string out = shell("ip netns add " + ns_);
    ASSERT_EQ(out, "") << "ip netns add failed: " << out;
    created_ = true;
    home_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(home_fd_, 0);
    const int fd = ::open(("/var/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    entered_ = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    ASSERT_TRUE(entered_) << "setns: " << std::strerror(errno);
    ASSERT_EQ(in_ns("ip link set lo up"), "");
    std::string error;
    auto sock = NftSocket::open(&error);
    ASSERT_TRUE(sock.has_value()) << error;
    sock_.emplace(std::move(*sock));
  }

  void TearDown() override {
    sock_.reset();  // the socket belongs to the namespace; close it first
    if (entered_) {
      EXPECT_EQ(::setns(home_fd_, CLONE_NEWNET), 0);
    }
    if (home_fd_ >= 0) ::close(home_fd_);
    if (created_) shell("ip netns del " + ns_);
  }

  std::string in_ns(const std::string& cmd) const {
    return shell("ip netns exec " + ns_ + " " + cmd);
  }
  std::string listing() const { return in_ns(std::string("nft list table inet ") + kTable); }

  void apply_ok(const Plan& p, std::optional<std::uint32_t> genid = std::nullopt) {
    const ApplyResult r = sock_->apply_plan(p, genid);
    ASSERT_FALSE(r.has_value()) << r->message;
  }

  NftSocket& sock() { return *sock_; }

  std::string ns_;
  bool created_ = false;
  bool entered_ = false;
  int home_fd_ = -1;
  std::optional<NftSocket> sock_;
};

TEST_F(NftNetlinkTest, AppliesEveryMatchAndActionAsNftWritesThem) {
  ApplyError err;
  const auto genid = sock().get_generation(&err);
  ASSERT_TRUE(genid.has_value()) << err.message;
  const Plan p = full_plan();
  apply_ok(p, genid);
  EXPECT_NE(sock().get_generation(), genid);

  const std::string text = listing();
  SCOPED_TRACE(text);
  EXPECT_THAT(text, HasSubstr("counter c16 {"));
  EXPECT_THAT(text, HasSubstr("elements = { 10.0.0.1, 10.0.0.2 }"));
  EXPECT_THAT(text, HasSubstr("elements = { fd00::1 }"));
  EXPECT_THAT(text, HasSubstr("elements = { 10.0.0.0/15, 192.168.1.0/24 }"));
  EXPECT_THAT(text, HasSubstr("elements = { fd00::/64 }"));
  EXPECT_THAT(text, HasSubstr("elements = { 255.255.255.0/24 }"));
  EXPECT_THAT(text, HasSubstr("type filter hook forward priority filter - 10; policy accept;"));
  EXPECT_THAT(text, HasSubstr("type filter hook input priority filter - 10; policy accept;"));
  EXPECT_THAT(text, HasSubstr("ct state established,related accept"));
  EXPECT_THAT(text, HasSubstr("icmpv6 type 133-137 accept"));
  EXPECT_THAT(text, HasSubstr("meta nfproto ipv4 jump fwd4"));
  EXPECT_THAT(text, HasSubstr("meta nfproto ipv6 goto fwd6"));
  EXPECT_THAT(text, HasSubstr("ip saddr @ep4 ip daddr != @cidr4 tcp dport 80 counter name \"c16\" "
                              "log prefix \"tw:a:16:7\" group 100 ct mark set"));
  EXPECT_THAT(text, HasSubstr("ip saddr @ep4 udp dport 1000-2000 counter name \"c17\" accept"));
  EXPECT_THAT(text, HasSubstr("icmp type echo-request drop"));
  EXPECT_THAT(text, HasSubstr("ip daddr @wtop4 drop"));
  EXPECT_THAT(text, HasSubstr("ip6 saddr @ep6 ip6 daddr @cidr6 accept"));
  EXPECT_THAT(text, HasSubstr("icmpv6 type 128-129 accept"));
  EXPECT_THAT(text, HasSubstr("counter name \"c17\" drop"));

  const auto counts = sock().kernel_counts(kTable, &err);
  ASSERT_TRUE(counts.has_value()) << err.message;
  EXPECT_EQ(*counts, expected_counts(p));
  EXPECT_EQ(counts->rules, p.rules.size());
}

TEST_F(NftNetlinkTest, ReapplyReplacesEverythingAtomically) {
  apply_ok(full_plan());
  apply_ok(other_plan());
  const std::string text = listing();
  SCOPED_TRACE(text);
  EXPECT_THAT(text, HasSubstr("set newset"));
  EXPECT_THAT(text, HasSubstr("ip daddr @newset counter name \"c99\" drop"));
  EXPECT_THAT(text, Not(HasSubstr("ep4")));
  EXPECT_THAT(text, Not(HasSubstr("fwd4")));
  EXPECT_THAT(text, Not(HasSubstr("c16")));
  const auto counts = sock().kernel_counts(kTable);
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ(*counts, expected_counts(other_plan()));
}

TEST_F(NftNetlinkTest, StaleGenerationIsRejectedAndChangesNothing) {
  apply_ok(full_plan());
  const auto genid = sock().get_generation();
  ASSERT_TRUE(genid.has_value());
  const std::string before = listing();
  ASSERT_EQ(in_ns("nft add table inet other"), "");  // a concurrent writer

  const ApplyResult r = sock().apply_plan(other_plan(), genid);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->err, ERESTART);
  EXPECT_THAT(r->message, HasSubstr("concurrent ruleset change detected"));
  EXPECT_EQ(listing(), before);

  // Re-reading the generation and retrying succeeds.
  apply_ok(other_plan(), sock().get_generation());
  EXPECT_THAT(listing(), HasSubstr("newset"));
}

TEST_F(NftNetlinkTest, KernelRejectionNamesTheRuleAndChangesNothing) {
  apply_ok(full_plan());
  const std::string before = listing();
  Plan bad = other_plan();
  bad.rules.push_back(rule("output", {l4proto(6)}, {jump("no_such_chain")}, 42));

  const ApplyResult r = sock().apply_plan(bad, sock().get_generation());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->err, ENOENT);
  EXPECT_EQ(r->rule, 42U);
  EXPECT_EQ(r->object, "rule output#2");
  EXPECT_THAT(r->message, HasSubstr("policy rule 42"));
  std::printf("[          ] kernel error as reported: %s\n", r->message.c_str());
  EXPECT_EQ(listing(), before);

  // A lookup in a set the plan lacks names the rule as well.
  bad = other_plan();
  bad.rules[0].matches[0].set = "missing";
  const ApplyResult r2 = sock().apply_plan(bad, std::nullopt);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->rule, 99U);
  EXPECT_EQ(listing(), before);
}

TEST_F(NftNetlinkTest, ApplyElementsAddsAndRemoves) {
  apply_ok(full_plan());
  auto genid = sock().get_generation();
  ApplyResult r = sock().apply_elements(kTable, {{"ep4", ip("10.0.0.3")}, {"ep6", ip("fd00::2")}},
                                        {{"ep4", ip("10.0.0.1")}}, genid);
  ASSERT_FALSE(r.has_value()) << r->message;
  std::string text = listing();
  EXPECT_THAT(text, HasSubstr("elements = { 10.0.0.2, 10.0.0.3 }")) << text;
  EXPECT_THAT(text, HasSubstr("elements = { fd00::1,")) << text;  // nft wraps IPv6 lists
  EXPECT_THAT(text, HasSubstr("fd00::2 }")) << text;

  // The generation we used is stale now.
  r = sock().apply_elements(kTable, {{"ep4", ip("10.0.0.4")}}, {}, genid);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->err, ERESTART);

  // Removing an absent element fails the whole batch and names the set.
  r = sock().apply_elements(kTable, {{"ep4", ip("10.0.0.5")}}, {{"ep4", ip("10.0.0.99")}},
                            sock().get_generation());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->err, ENOENT);
  EXPECT_THAT(r->object, HasSubstr("set ep4"));
  text = listing();
  EXPECT_THAT(text, HasSubstr("elements = { 10.0.0.2, 10.0.0.3 }")) << text;
}

TEST_F(NftNetlinkTest, LargeSetsApplyInOneBatch) {
  constexpr std::uint32_t kCount = 200'000;
  Plan p = other_plan();
  std::vector<IpAddress> addrs;
  for (std::uint32_t i = 0; i < kCount; ++i) addrs.push_back(IpAddress::v4(0x0a000000U + i));
  p.sets.push_back(plain_set("big4", Fam::V4, addrs));

  // A timed apply, reported as total (encode + kernel) and kernel time.
  auto timed_apply = [&](const Plan& plan, const char* what) {
    const auto start = Clock::now();
    apply_ok(plan, sock().get_generation());
    const BatchStats& st = sock().last_batch();
    std::printf("[          ] %s: %zu messages, %.1f MiB, %.0f ms (kernel %.0f ms)\n", what,
                st.messages, static_cast<double>(st.bytes) / (1024.0 * 1024.0), ms_since(start),
                st.send_ms);
  };
  timed_apply(p, "200k-element set, first apply");
  timed_apply(p, "200k-element set, replacing itself");

  std::vector<Cidr> spaced;  // not adjacent, so nothing merges: 2 keys each
  for (std::uint32_t i = 0; i < kCount / 4; ++i)
    spaced.push_back(Cidr{IpAddress::v4(0x0b000000U + 2 * i), 32});
  p.sets.push_back(interval_set("bigint4", Fam::V4, spaced));
  timed_apply(p, "plus a 50k-prefix interval set");

  const auto start = Clock::now();
  const auto counts = sock().kernel_counts(kTable);
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ(*counts, expected_counts(p));
  std::printf("[          ] kernel_counts: %zu keys dumped in %.0f ms\n", counts->elements,
              ms_since(start));
}

void send_udp(std::uint16_t sport, std::uint16_t dport) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(sport);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  a.sin_port = htons(dport);
  const char payload[] = "tierwall";
  EXPECT_EQ(::sendto(fd, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&a), sizeof a),
            static_cast<ssize_t>(sizeof payload));
  ::close(fd);
}

// Output chain: conntrack fast path, and udp/9999 counted and ct-marked.
Plan loopback_plan() {
  Plan p;
  p.table = kTable;
  p.counters = {"c16", "c17"};
  p.chains = {{"output", Hook::Output, -10}};
  p.rules = {
      rule("output", {ct_est()}, {accept()}),
      rule("output", {nfproto(Fam::V4), l4proto(17), dport(9999, 9999)},
           {counter("c16"), ct_mark(16), accept()}, 16),
  };
  return p;
}

TEST_F(NftNetlinkTest, ReadCountersSeesTraffic) {
  apply_ok(loopback_plan());
  send_udp(40001, 9999);
  send_udp(40002, 9999);
  ApplyError err;
  const CounterValues c = sock().read_counters(kTable, &err);
  ASSERT_EQ(err.err, 0) << err.message;
  ASSERT_EQ(c.size(), 2U);
  EXPECT_EQ(c.at("c16").first, 2U);
  EXPECT_GT(c.at("c16").second, 2U * 28U);
  EXPECT_EQ(c.at("c17"), std::make_pair(std::uint64_t{0}, std::uint64_t{0}));
}

TEST_F(NftNetlinkTest, FlushRemovesOnlyOurTable) {
  ASSERT_EQ(in_ns("nft add table inet other"), "");
  ASSERT_EQ(in_ns("nft add chain inet other keep"), "");
  apply_ok(full_plan());
  ASSERT_TRUE(sock().table_exists(kTable));

  ASSERT_FALSE(sock().flush(kTable).has_value());
  EXPECT_FALSE(sock().table_exists(kTable));
  EXPECT_TRUE(sock().table_exists("other"));
  EXPECT_THAT(in_ns("nft list tables"), HasSubstr("table inet other"));
  const auto counts = sock().kernel_counts(kTable);
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ(*counts, KernelCounts{});
  EXPECT_FALSE(sock().flush(kTable).has_value());  // already gone: still success
}

TEST_F(NftNetlinkTest, ConntrackDumpAndDelete) {
  apply_ok(loopback_plan());  // `ct state` hooks conntrack into this namespace
  send_udp(40001, 9999);
  send_udp(40002, 9999);

  auto ours = [](const CtEntry& e) { return e.proto == IPPROTO_UDP && e.dport == 9999; };
  std::string error;
  std::vector<CtEntry> entries = ct_dump(&error);
  ASSERT_EQ(error, "");
  std::erase_if(entries, [&](const CtEntry& e) { return !ours(e); });
  ASSERT_EQ(entries.size(), 2U);
  const CtEntry& e = entries[0];
  EXPECT_EQ(e.src, ip("127.0.0.1"));
  EXPECT_EQ(e.dst, ip("127.0.0.1"));
  EXPECT_TRUE(e.sport == 40001 || e.sport == 40002);
  EXPECT_EQ(e.mark & 0xffffU, 16U);  // set by the CtMark action

  EXPECT_EQ(ct_delete({entries[0]}, &error), 1U);
  EXPECT_EQ(error, "");
  EXPECT_EQ(ct_delete({entries[0]}, &error), 0U);  // already gone: not an error
  EXPECT_EQ(error, "");
  auto after = ct_dump();
  EXPECT_EQ(std::count_if(after.begin(), after.end(), ours), 1);

  EXPECT_EQ(
      ct_delete_if([&](const CtEntry& x) { return ours(x) && (x.mark & 0xffffU) == 16; }, &error),
      1U);
  after = ct_dump();
  EXPECT_EQ(std::count_if(after.begin(), after.end(), ours), 0);
}

}  // namespace
}  // namespace tierwall::dataplane::nft
