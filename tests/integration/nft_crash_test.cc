// Crash consistency of the nftables dataplane against the real kernel.
//
// A writer killed at any moment — before, during or after its batch — must
// leave the kernel holding exactly one complete generation: the batch
// commits all or nothing. Also: a concurrent writer between reading the
// generation id and applying is detected and changes nothing, and a batch the
// kernel rejects names the policy rule and leaves the old ruleset intact.
//
// Every test runs in a fresh network namespace it creates (and deletes,
// also on failure); the root namespace is never touched.
#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/dataplane/nft/netlink.h"
#include "tierwall/dataplane/nft/plan.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall::dataplane::nft {
namespace {

using ::testing::HasSubstr;
using testsupport::NetNs;
using Clock = std::chrono::steady_clock;

constexpr const char* kTable = "tierwall";
constexpr int kKills = 100;
constexpr int kMaxKillDelayUs = 20'000;
// Synthetic endpoints added to both generations so that each batch takes
// tens of milliseconds in the kernel (an endpoint lands in 2-4 sets): a
// kill 0-20 ms into a batch lands while the kernel is processing it.
constexpr std::uint32_t kBigEndpoints = 12'500;

std::vector<Cidr> container_cidrs() {
  return {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("fd00::/64")};
}

std::string example(const std::string& name) {
  return std::string(TIERWALL_SOURCE_DIR) + "/policies/" + name;
}

// An example policy and its inventory, compiled; `extra` synthetic prod/
// test/dev endpoints from `first_address` on appended to the inventory.
RuleSet compile_example(const std::string& name, std::uint32_t extra, std::uint32_t first_address,
                        std::uint64_t generation) {
  policy::Diagnostics diags;
  auto p = policy::load_policy({example(name) + "/policy"}, diags);
  auto inv = identity::load_inventory(example(name) + "/inventory.yaml", diags);
  if (!p || !inv || diags.has_errors()) {
    std::ostringstream out;
    diags.print(out);
    throw std::runtime_error("cannot load example " + name + ":\n" + out.str());
  }
  static constexpr std::array<const char*, 3> kEnvs{"prod", "test", "dev"};
  static constexpr std::array<const char*, 3> kRoles{"api", "web", "db"};
  for (std::uint32_t i = 0; i < extra; ++i) {
    identity::Endpoint e;
    e.name = "synthetic-" + std::to_string(i);
    e.id = e.name;
    e.image = "reg.example/shop/app:1";
    e.labels =
        identity::Labels({{"app", "shop"}, {"role", kRoles[i % 3]}, {"env", kEnvs[(i / 3) % 3]}});
    e.addresses = {IpAddress::v4(first_address + i)};
    inv->endpoints.push_back(std::move(e));
  }
  return compiler::compile(*p, *inv, generation, container_cidrs());
}

// ---------------------------------------------------------------------------
// What the kernel holds, read back with plain dumps (libnftnl parses).

using Dump = std::vector<nlmsghdr*>;

// Runs a dump of `type` for table inet kTable (plus `set` for elements),
// retrying when the kernel flags it as interrupted.
template <typename OnReply>
int dump(NftSocket& sock, int type, const std::string& set, OnReply&& on_reply) {
  int rc = EINTR;
  for (int attempt = 0; attempt < 5 && rc == EINTR; ++attempt) {
    std::array<char, 4096> buf{};
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), static_cast<std::uint16_t>(type),
                                          NFPROTO_INET, NLM_F_DUMP, 0);
    if (type == NFT_MSG_GETRULE) mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, kTable);
    if (type == NFT_MSG_GETSETELEM) {
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, kTable);
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
    }
    on_reply(nullptr);  // reset
    rc = sock.request(nlh, [&](const nlmsghdr* reply) { on_reply(reply); });
  }
  return rc;
}

// Rules per chain of table inet kTable.
std::map<std::string, std::size_t> kernel_rules_per_chain(NftSocket& sock) {
  std::map<std::string, std::size_t> out;
  const int rc = dump(sock, NFT_MSG_GETRULE, {}, [&](const nlmsghdr* nlh) {
    if (nlh == nullptr) {
      out.clear();
      return;
    }
    if (nlh->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE)) return;
    std::unique_ptr<nftnl_rule, decltype(&nftnl_rule_free)> r(nftnl_rule_alloc(), nftnl_rule_free);
    if (nftnl_rule_nlmsg_parse(nlh, r.get()) < 0) return;
    const char* table = nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE);
    const char* chain = nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN);
    if (table != nullptr && chain != nullptr && std::string(table) == kTable) ++out[chain];
  });
  EXPECT_EQ(rc, 0) << "rule dump: " << std::strerror(rc);
  return out;
}

// The addresses in plain set `set` of table inet kTable, sorted.
std::vector<IpAddress> kernel_set_addresses(NftSocket& sock, const std::string& set) {
  std::vector<IpAddress> out;
  const int rc = dump(sock, NFT_MSG_GETSETELEM, set, [&](const nlmsghdr* nlh) {
    if (nlh == nullptr) {
      out.clear();
      return;
    }
    if (nlh->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM)) return;
    std::unique_ptr<nftnl_set, decltype(&nftnl_set_free)> s(nftnl_set_alloc(), nftnl_set_free);
    if (nftnl_set_elems_nlmsg_parse(nlh, s.get()) < 0) return;
    nftnl_set_elem_foreach(
        s.get(),
        [](nftnl_set_elem* e, void* data) {
          std::uint32_t len = 0;
          const auto* key =
              static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
          IpAddress a;
          if (key != nullptr && (len == 4 || len == 16)) {
            a.family = len == 4 ? IpAddress::Family::V4 : IpAddress::Family::V6;
            std::copy(key, key + len, a.bytes.begin());
            static_cast<std::vector<IpAddress>*>(data)->push_back(a);
          }
          return 0;
        },
        &out);
  });
  EXPECT_EQ(rc, 0) << "element dump of " << set << ": " << std::strerror(rc);
  std::sort(out.begin(), out.end());
  return out;
}

// `ip netns exec NS nft list table inet tierwall`, read through a blocking
// pipe (popen). NetNs::run() is not used: its pipes are non-blocking on the
// child's side too, and nft drops output when a large listing fills one.
std::string listing(const NetNs& ns) {
  const std::string cmd = "ip netns exec " + ns.name() + " nft list table inet tierwall 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return "popen failed";
  std::string out;
  std::array<char, 65536> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(f);
  if (status != 0) out += "\n(exit status " + std::to_string(status) + ")";
  return out;
}

std::map<std::string, std::size_t> plan_rules_per_chain(const Plan& p) {
  std::map<std::string, std::size_t> out;
  for (const RuleDef& r : p.rules) ++out[r.chain];
  return out;
}

std::vector<IpAddress> plan_set_addresses(const Plan& p, const std::string& set) {
  const SetDef* s = p.find_set(set);
  std::vector<IpAddress> out = s != nullptr ? s->addresses : std::vector<IpAddress>{};
  std::sort(out.begin(), out.end());
  return out;
}

// One generation as the kernel should hold it after a complete apply.
struct Expected {
  const char* name;
  const Plan* plan;
  KernelCounts counts;
  std::map<std::string, std::size_t> per_chain;
  std::vector<IpAddress> ep4;
};

Expected expected_of(const char* name, const Plan& p) {
  return Expected{name, &p, expected_counts(p), plan_rules_per_chain(p),
                  plan_set_addresses(p, "ep4")};
}

std::string describe(const KernelCounts& c) {
  return std::to_string(c.tables) + " table(s), " + std::to_string(c.chains) + " chains, " +
         std::to_string(c.rules) + " rules, " + std::to_string(c.sets) + " sets, " +
         std::to_string(c.elements) + " elements";
}

// ---------------------------------------------------------------------------
// Fixture: the two generations, compiled once.
//   A: policies/nist-800-190, its inventory and kBigEndpoints more
//      (10.88.128.1 on);
//   B: policies/dev-test-prod, its inventory and kBigEndpoints more
//      (10.88.192.1 on).
// Different rules, chains, sets and set elements.

class NftCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testsupport::netns_unavailable_reason()) return;
    rules_a_ = new RuleSet(compile_example("nist-800-190", kBigEndpoints, 0x0a588001U, 1));
    rules_b_ = new RuleSet(compile_example("dev-test-prod", kBigEndpoints, 0x0a58c001U, 2));
    plan_a_ = new Plan(build_plan(*rules_a_));
    plan_b_ = new Plan(build_plan(*rules_b_));
  }
  static void TearDownTestSuite() {
    delete plan_a_;
    delete plan_b_;
    delete rules_a_;
    delete rules_b_;
    plan_a_ = plan_b_ = nullptr;
    rules_a_ = rules_b_ = nullptr;
  }

  void SetUp() override {
    if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    ASSERT_NE(plan_a_, nullptr);
  }

  static RuleSet* rules_a_;
  static RuleSet* rules_b_;
  static Plan* plan_a_;
  static Plan* plan_b_;
};

RuleSet* NftCrashTest::rules_a_ = nullptr;
RuleSet* NftCrashTest::rules_b_ = nullptr;
Plan* NftCrashTest::plan_a_ = nullptr;
Plan* NftCrashTest::plan_b_ = nullptr;

std::optional<NftSocket> open_socket() {
  std::string error;
  auto s = NftSocket::open(&error);
  EXPECT_TRUE(s.has_value()) << error;
  return s;
}

// Shared with the writer child: what it is doing right now.
struct WriterState {
  std::atomic<int> phase{0};  // 0 between batches, 1 sending A, 2 sending B
  std::atomic<int> batches_done{0};
};

// The child: alternates the two pre-encoded batches (the exact bytes
// apply_plan sends) until killed; bounded, and dies with its parent.
[[noreturn]] void writer(WriterState* state, const EncodedBatch* first, const EncodedBatch* second,
                         int first_phase, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(3);
  std::string error;
  auto sock = NftSocket::open(&error);
  if (!sock) ::_exit(2);
  const EncodedBatch* batches[2] = {first, second};
  const int phases[2] = {first_phase, 3 - first_phase};
  for (int i = 0; i < 2000; ++i) {  // far more than any kill delay allows
    state->phase.store(phases[i % 2]);
    if (sock->send_batch(*batches[i % 2])) ::_exit(4);
    state->phase.store(0);
    state->batches_done.fetch_add(1);
  }
  ::_exit(0);
}

TEST_F(NftCrashTest, KilledWriterLeavesExactlyOneCompleteGeneration) {
  const Expected a = expected_of("A", *plan_a_);
  const Expected b = expected_of("B", *plan_b_);
  ASSERT_NE(a.counts, b.counts);
  ASSERT_NE(a.counts.rules, b.counts.rules);
  ASSERT_NE(a.ep4, b.ep4);
  ASSERT_GE(a.counts.elements, 25'000U);
  ASSERT_GE(b.counts.elements, 50'000U);

  NetNs ns("crash");
  const NetNs::Guard guard = ns.enter();
  auto sock = open_socket();
  ASSERT_TRUE(sock);
  ASSERT_FALSE(sock->apply_plan(*plan_a_, std::nullopt));

  // Encoded once: the child only sends. Sequence numbers do not matter to
  // the kernel; each batch maps its own.
  const EncodedBatch batch_a = encode_plan(*plan_a_, 1'000'000, std::nullopt);
  const EncodedBatch batch_b = encode_plan(*plan_b_, 2'000'000, std::nullopt);
  // How long each batch takes in the kernel, for the record.
  for (const auto& [name, batch] : {std::pair{"B", &batch_b}, std::pair{"A", &batch_a}}) {
    const auto start = Clock::now();
    ASSERT_FALSE(sock->send_batch(*batch));
    std::printf("[          ] batch %s: %.2f MiB, %zu messages, %.1f ms\n", name,
                static_cast<double>(batch->bytes.size()) / (1024.0 * 1024.0), batch->objects.size(),
                std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }

  void* shared = ::mmap(nullptr, sizeof(WriterState), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* state = new (shared) WriterState;

  // The kill lands 0-20 ms after the writer completed `done` batches
  // (0-3): inside batch done+1, whichever generation that is.
  std::mt19937 rng(20240611);  // fixed: a failure replays
  std::uniform_int_distribution<int> delay_us(0, kMaxKillDelayUs);
  std::uniform_int_distribution<int> batches_first(0, 3);
  int seen_a = 0;
  int seen_b = 0;
  int killed_in_flight = 0;
  int killed_between = 0;
  bool holds_a = true;
  for (int kill = 0; kill < kKills; ++kill) {
    // Start with the generation the kernel does not hold, so every round
    // tries to switch.
    state->phase.store(0);
    state->batches_done.store(0);
    const pid_t parent = ::getpid();
    const pid_t child = ::fork();
    ASSERT_GE(child, 0) << std::strerror(errno);
    if (child == 0) {
      if (holds_a) writer(state, &batch_b, &batch_a, 2, parent);
      writer(state, &batch_a, &batch_b, 1, parent);
    }
    const int done = batches_first(rng);
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (state->batches_done.load() < done && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    const int phase_at_kill = state->phase.load();
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer ended by itself (status " << status << "): it failed before the kill";
    (phase_at_kill != 0 ? killed_in_flight : killed_between)++;

    // The kernel holds exactly A or exactly B: counts, rules per chain and
    // the endpoint set's elements.
    ApplyError err;
    const auto counts = sock->kernel_counts(kTable, &err);
    ASSERT_TRUE(counts) << err.message;
    const Expected* match = *counts == a.counts ? &a : *counts == b.counts ? &b : nullptr;
    ASSERT_NE(match, nullptr) << "after kill " << kill << " (phase " << phase_at_kill
                              << ") the kernel holds " << describe(*counts) << "; A is "
                              << describe(a.counts) << ", B is " << describe(b.counts);
    EXPECT_EQ(kernel_rules_per_chain(*sock), match->per_chain)
        << "kill " << kill << ", generation " << match->name;
    EXPECT_EQ(kernel_set_addresses(*sock, "ep4"), match->ep4)
        << "kill " << kill << ", generation " << match->name;
    holds_a = match == &a;
    (holds_a ? seen_a : seen_b)++;
  }
  ::munmap(shared, sizeof(WriterState));
  std::printf(
      "[          ] %d kills: kernel held A %d times, B %d times; %d kills landed while a batch "
      "was "
      "being sent, %d between batches\n",
      kKills, seen_a, seen_b, killed_in_flight, killed_between);
  EXPECT_GT(seen_a, 0);
  EXPECT_GT(seen_b, 0);
  EXPECT_GT(killed_in_flight, 0);
}

TEST_F(NftCrashTest, ConcurrentWriterIsDetectedAndChangesNothing) {
  NetNs ns("genid");
  const NetNs::Guard guard = ns.enter();
  auto sock = open_socket();
  auto other = open_socket();
  ASSERT_TRUE(sock && other);
  ASSERT_FALSE(sock->apply_plan(*plan_a_, std::nullopt));
  const std::string before = listing(ns);

  ApplyError err;
  const auto genid = sock->get_generation(&err);
  ASSERT_TRUE(genid) << err.message;
  // Another process commits in between: a table of its own.
  Plan theirs;
  theirs.table = "other";
  ASSERT_FALSE(other->apply_plan(theirs, std::nullopt));

  const ApplyResult r = sock->apply_plan(*plan_b_, genid);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->err, ERESTART);
  EXPECT_THAT(r->message, HasSubstr("concurrent ruleset change detected"));
  EXPECT_EQ(listing(ns), before);
  const auto counts = sock->kernel_counts(kTable);
  ASSERT_TRUE(counts);
  EXPECT_EQ(*counts, expected_counts(*plan_a_));
  EXPECT_TRUE(sock->table_exists("other"));

  // Element updates are guarded the same way.
  const auto genid2 = sock->get_generation();
  ASSERT_TRUE(genid2);
  ASSERT_FALSE(other->flush("other"));
  const ApplyResult r2 =
      sock->apply_elements(kTable, {{"ep4", *IpAddress::parse("10.88.200.1")}}, {}, genid2);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->err, ERESTART);
  EXPECT_EQ(listing(ns), before);

  // Re-reading the generation and retrying succeeds.
  ASSERT_FALSE(sock->apply_plan(*plan_b_, sock->get_generation()));
  const auto after = sock->kernel_counts(kTable);
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, expected_counts(*plan_b_));
}

TEST_F(NftCrashTest, RejectedRulesetNamesThePolicyRuleAndKeepsTheOldOne) {
  NetNs ns("reject");
  const NetNs::Guard guard = ns.enter();
  auto opened = NftBackend::open(NftBackend::Config{});
  ASSERT_TRUE(std::holds_alternative<std::unique_ptr<NftBackend>>(opened))
      << std::get<std::string>(opened);
  NftBackend& backend = *std::get<std::unique_ptr<NftBackend>>(opened);
  const auto applied = backend.apply(*rules_a_);
  ASSERT_FALSE(applied) << applied->message;
  const std::string before = listing(ns);

  // RuleSets always compile to valid plans; corrupt one rule of B's plan the
  // way a compiler bug would: a lookup in a set that does not exist.
  Plan bad = *plan_b_;
  std::map<std::string, std::size_t> position;
  RuleDef* victim = nullptr;
  std::size_t victim_index = 0;
  for (RuleDef& r : bad.rules) {
    const std::size_t index = ++position[r.chain];
    if (victim != nullptr || r.origin < kFirstPolicyRule) continue;
    for (Match& m : r.matches) {
      if (m.kind == Match::Kind::InSet) {
        m.set = "no_such_set";
        victim = &r;
        victim_index = index;
        break;
      }
    }
  }
  ASSERT_NE(victim, nullptr);
  ASSERT_FALSE(validate_plan(bad))
      << "the corruption must pass validation: only the kernel can refuse it";
  const Rule* rule = rules_b_->policy->find_rule(victim->origin);
  ASSERT_NE(rule, nullptr);

  const ApplyResult r = backend.socket().apply_plan(bad, backend.socket().get_generation());
  ASSERT_TRUE(r.has_value());
  std::printf("[          ] kernel error as reported: %s (policy rule %u is \"%s\")\n",
              r->message.c_str(), r->rule, rule->origin.name.c_str());
  EXPECT_EQ(r->err, ENOENT);
  EXPECT_EQ(r->rule, victim->origin);
  EXPECT_EQ(r->object, "rule " + victim->chain + "#" + std::to_string(victim_index));
  EXPECT_THAT(r->message, HasSubstr("policy rule " + std::to_string(victim->origin)));
  EXPECT_THAT(r->message, HasSubstr("nothing was applied"));
  EXPECT_FALSE(rule->origin.name.empty());

  // The old generation is intact, and the backend still works.
  EXPECT_EQ(listing(ns), before);
  const auto counts = backend.kernel_counts();
  ASSERT_TRUE(counts);
  EXPECT_EQ(*counts, expected_counts(*plan_a_));
  const auto reapplied = backend.apply(*rules_b_);
  ASSERT_FALSE(reapplied) << reapplied->message;
  const auto after = backend.kernel_counts();
  ASSERT_TRUE(after);
  EXPECT_EQ(*after, expected_counts(*plan_b_));
}

}  // namespace
}  // namespace tierwall::dataplane::nft
