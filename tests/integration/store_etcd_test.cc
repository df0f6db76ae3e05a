// The cluster store against a real etcd (tests/support etcd_cluster.h): one
// or three members on loopback, TLS with certificates made by openssl,
// authentication with tierwall's roles. tierctl is run as users run it;
// the client library is driven directly for watches, leases and fail-over.
// Every test's etcd, temporary files and threads are gone when it ends,
// also when it fails.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/policy/loader.h"
#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"
#include "tierwall/store/policy_store.h"
#include "tierwall/testsupport/etcd_cluster.h"
#include "tierwall/testsupport/podman.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tierwall::testsupport::CommandResult;
using tierwall::testsupport::EtcdCluster;
using tierwall::testsupport::EtcdClusterOptions;
using tierwall::testsupport::Millis;
using tierwall::testsupport::run_argv;
using namespace tierwall::store;
using Clock = std::chrono::steady_clock;

const std::string kTierctl = TIERCTL_BINARY;
const std::string kSource = TIERWALL_SOURCE_DIR;

// Stops a watch thread and joins it when the test leaves its scope, also
// through a failed ASSERT (a joinable std::thread would abort the run).
class StopAndJoin {
 public:
  StopAndJoin(std::atomic<bool>& stop, std::thread& thread) : stop_(stop), thread_(thread) {}
  ~StopAndJoin() { join(); }
  StopAndJoin(const StopAndJoin&) = delete;
  StopAndJoin& operator=(const StopAndJoin&) = delete;
  void join() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool>& stop_;
  std::thread& thread_;
};

CommandResult tierctl(std::vector<std::string> args) {
  args.insert(args.begin(), kTierctl);
  return run_argv(args, Millis{60'000});
}

std::string describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

class StoreEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = EtcdCluster::unavailable_reason()) {
      // CI installs etcd (scripts/install-deps.sh): its absence is a failure.
      FAIL() << *why;
    }
  }

  static std::unique_ptr<EtcdCluster> cluster(EtcdClusterOptions options = {}) {
    return std::make_unique<EtcdCluster>(options);
  }

  static ClientOptions client_options(const EtcdCluster& etcd) {
    ClientOptions o;
    o.endpoints = etcd.client_urls();
    o.ca_file = etcd.ca_file();
    o.cert_file = etcd.client_cert();
    o.key_file = etcd.client_key();
    return o;
  }

  static std::string read(const std::string& path) {
    return tierwall::testsupport::read_text(path);
  }
};

TEST_F(StoreEtcdTest, PublishesAValidPolicyAndReadsItBack) {
  auto etcd = cluster();
  const std::string policy = kSource + "/policies/nist-800-190/policy";
  auto r = tierctl(
      {"apply", policy, "--store", etcd->endpoints(), "--author", "alice@ws1", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const json out = json::parse(r.out);
  EXPECT_EQ(out["published"], true);
  EXPECT_EQ(out["generation"], 1);
  EXPECT_EQ(out["policy"], "nist-800-190-baseline");
  const std::string digest = out["digest"];

  EtcdClient client(client_options(*etcd));
  const Layout layout("default");
  auto stored = read_policy(client, layout);
  ASSERT_TRUE(stored) << stored.error().message;
  ASSERT_TRUE(stored->has_value());
  const StoredPolicy& p = **stored;
  EXPECT_EQ(p.meta.digest, digest);
  EXPECT_EQ(p.meta.author, "alice@ws1");
  EXPECT_EQ(p.meta.generation, 1u);
  EXPECT_EQ(p.meta_mod_revision, out["revision"].get<std::int64_t>());
  EXPECT_TRUE(p.problems.empty());
  const std::vector<std::string> names{"10-tiers.yaml", "20-assignments.yaml", "30-denies.yaml",
                                       "40-flows.yaml"};
  ASSERT_EQ(p.meta.documents, names);
  std::vector<tierwall::policy::SourceFile> sources;
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(p.documents[i].content, read(policy + "/" + names[i])) << names[i];
    sources.push_back({p.documents[i].name, p.documents[i].content});
  }
  // What an agent will load from the store is valid and has the same digest.
  tierwall::policy::Diagnostics diags;
  auto loaded = tierwall::policy::load_policy_sources(sources, diags);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->digest, digest);

  // The same policy again: nothing is written.
  auto again = tierctl({"apply", policy, "--store", etcd->endpoints()});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_NE(again.out.find("unchanged"), std::string::npos) << again.out;

  // Another policy replaces the documents in one transaction.
  auto next = tierctl({"apply", kSource + "/policies/dev-test-prod/policy", "--store",
                       etcd->endpoints(), "-o", "json"});
  ASSERT_EQ(next.exit_code, 0) << describe(next);
  const json n = json::parse(next.out);
  EXPECT_EQ(n["generation"], 2);
  EXPECT_EQ(n["removed"].size(), 4u);
  auto keys = etcd->etcdctl({"get", "--prefix", "/tierwall/", "--keys-only"});
  ASSERT_TRUE(keys.ok()) << keys.err;
  EXPECT_EQ(tierwall::testsupport::split_lines(keys.out),
            (std::vector<std::string>{"/tierwall/default/policy/documents/separation.yaml",
                                      "/tierwall/default/policy/meta"}));

  auto show = tierctl({"store", "show", "--store", etcd->endpoints(), "-o", "json"});
  ASSERT_EQ(show.exit_code, 0) << describe(show);
  const json s = json::parse(show.out);
  EXPECT_EQ(s["policy"]["generation"], 2);
  EXPECT_EQ(s["policy"]["name"], "dev-test-prod");
  EXPECT_EQ(s["policy"]["documents"], json::array({"separation.yaml"}));
}

TEST_F(StoreEtcdTest, RefusesAnInvalidPolicyWithDiagnosticsAndWritesNothing) {
  auto etcd = cluster();
  auto ok =
      tierctl({"apply", kSource + "/policies/dev-test-prod/policy", "--store", etcd->endpoints()});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  EtcdClient client(client_options(*etcd));
  auto before = client.get_prefix("/");
  ASSERT_TRUE(before);

  const std::string bad = kSource + "/tests/data/bad/five-errors.yaml";
  auto r = tierctl({"apply", bad, "--store", etcd->endpoints()});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(bad + ":11:3: error: unknown key 'flws' in spec (did you mean 'flows'?)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(bad + ":26:11: error: invalid port 'tcp/70000'"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("nothing was published"), std::string::npos) << r.err;

  auto after = client.get_prefix("/");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->revision, before->revision) << "an invalid policy changed the store";
  ASSERT_EQ(after->kvs.size(), before->kvs.size());
  for (std::size_t i = 0; i < after->kvs.size(); ++i) {
    EXPECT_EQ(after->kvs[i].value, before->kvs[i].value);
  }

  // Validation comes first: an invalid policy is refused (exit 1) even when
  // no etcd could be reached.
  auto offline = tierctl({"apply", bad, "--store", "http://127.0.0.1:1"});
  EXPECT_EQ(offline.exit_code, 1) << describe(offline);
  // An empty --store (an unset variable) is a usage error, never a
  // fall-back to the local agent.
  auto empty = tierctl({"apply", kSource + "/policies/dev-test-prod/policy", "--store", "",
                        "--socket", "/nonexistent.sock"});
  EXPECT_EQ(empty.exit_code, 2) << describe(empty);

  // Two files with one base name cannot be stored side by side.
  const tierwall::testsupport::TempDir tmp("tw-store-test");
  const std::string doc = read(kSource + "/policies/dev-test-prod/policy/separation.yaml");
  const auto a = tmp.write("a/separation.yaml", doc);
  const auto b = tmp.write("b/separation.yaml", doc);
  auto dup = tierctl({"apply", a, b, "--store", etcd->endpoints()});
  EXPECT_EQ(dup.exit_code, 1) << describe(dup);
  auto last = client.get_prefix("/");
  ASSERT_TRUE(last);
  EXPECT_EQ(last->revision, before->revision);
}

// Publishers race; a watch records every revision of the policy prefix.
// After each revision the documents are exactly the ones the meta names
// and their digest is the meta's: no publish ever interleaved another.
TEST_F(StoreEtcdTest, ConcurrentPublishersNeverInterleave) {
  auto etcd = cluster();
  const Layout layout("default");
  const auto options = client_options(*etcd);
  EtcdClient probe(options);
  auto start = probe.get("/");
  ASSERT_TRUE(start);

  std::mutex mu;
  std::map<std::int64_t, std::vector<WatchEvent>> by_revision;
  std::atomic<bool> stop{false};
  std::atomic<bool> watching{false};
  Result<WatchEnd> watch_end = Error::make(Error::Kind::Cancelled, "not run");
  std::thread watcher([&] {
    EtcdClient client(options);
    WatchRequest w;
    w.key = layout.policy_prefix();
    w.range_end = prefix_end(w.key);
    w.start_revision = start->revision + 1;
    watching = true;
    watch_end = client.watch(
        w,
        [&](const WatchResponse& resp) {
          std::lock_guard lock(mu);
          for (const auto& ev : resp.events) by_revision[ev.kv.mod_revision].push_back(ev);
          return true;
        },
        &stop);
  });
  StopAndJoin watch_guard(stop, watcher);

  constexpr int kPublishers = 4;
  constexpr int kEach = 6;
  std::atomic<int> committed{0};
  std::atomic<int> conflicts{0};
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> publishers;
  for (int t = 0; t < kPublishers; ++t) {
    publishers.emplace_back([&, t] {
      EtcdClient client(options);
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kEach; ++i) {
        PublishRequest req;
        req.policy_name = "p" + std::to_string(t);
        req.author = "publisher-" + std::to_string(t);
        // Each publisher has its own document names (1 to 3 of them), so
        // an interleaving would leave a mix behind.
        std::vector<tierwall::policy::SourceFile> sources;
        for (int d = 0; d <= (i % 3); ++d) {
          PolicyDocument doc{"t" + std::to_string(t) + "-" + std::to_string(d) + ".yaml",
                             "# publisher " + std::to_string(t) + " round " + std::to_string(i) +
                                 " doc " + std::to_string(d) + "\n"};
          sources.push_back({doc.name, doc.content});
          req.documents.push_back(std::move(doc));
        }
        req.digest = tierwall::policy::digest_sources(sources);
        for (;;) {
          auto r = publish_policy(client, layout, req);
          if (r) {
            ++committed;
            break;
          }
          if (r.error().kind != Error::Kind::Conflict) {
            ++failures;
            ADD_FAILURE() << r.error().message;
            break;
          }
          ++conflicts;
        }
      }
    });
  }
  go = true;
  for (auto& th : publishers) th.join();
  // Let the watch deliver the last revision, then stop it.
  auto last = probe.get("/");
  ASSERT_TRUE(last);
  ASSERT_TRUE(tierwall::testsupport::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return !by_revision.empty() && by_revision.rbegin()->first >= last->revision;
      },
      Millis{10'000}));
  watch_guard.join();
  ASSERT_TRUE(watch_end) << watch_end.error().message;
  EXPECT_EQ(watch_end->reason, WatchEnd::Reason::Stopped);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(committed.load(), kPublishers * kEach);
  std::cout << "[ figures  ] " << committed.load() << " publishes, " << conflicts.load()
            << " lost a race and retried\n";

  std::map<std::string, std::string> state;  // key -> value, replayed
  std::uint64_t generation = 0;
  int revisions = 0;
  for (const auto& [rev, events] : by_revision) {
    for (const auto& ev : events) {
      if (ev.type == WatchEvent::Type::Put) {
        state[ev.kv.key] = ev.kv.value;
      } else {
        state.erase(ev.kv.key);
      }
    }
    ++revisions;
    auto meta_it = state.find(layout.policy_meta());
    ASSERT_NE(meta_it, state.end()) << "revision " << rev;
    auto meta = decode_meta(meta_it->second);
    ASSERT_TRUE(meta) << meta.error().message;
    EXPECT_EQ(meta->generation, generation + 1) << "revision " << rev;
    generation = meta->generation;
    std::vector<tierwall::policy::SourceFile> sources;
    std::set<std::string> present;
    for (const auto& [key, value] : state) {
      if (auto name = layout.document_name(key)) present.insert(*name);
    }
    for (const auto& name : meta->documents) {
      ASSERT_TRUE(present.count(name)) << "revision " << rev << ": missing " << name;
      sources.push_back({name, state[layout.document(name)]});
    }
    EXPECT_EQ(present.size(), meta->documents.size()) << "revision " << rev << ": stray documents";
    EXPECT_EQ(tierwall::policy::digest_sources(sources), meta->digest) << "revision " << rev;
  }
  EXPECT_EQ(revisions, kPublishers * kEach);
}

TEST_F(StoreEtcdTest, AuthorsPublishNodesWriteOnlyTheirOwnPrefix) {
  auto etcd = cluster();
  const tierwall::testsupport::TempDir tmp("tw-store-test");
  const auto root_pw = tmp.write("root.pw", "r00t-secret\n");
  const auto alice_pw = tmp.write("alice.pw", "alice-secret\n");
  const auto node_a_pw = tmp.write("node-a.pw", "node-a-secret\n");
  const auto node_b_pw = tmp.write("node-b.pw", "node-b-secret\n");
  auto init = tierctl({"store", "init-auth", "--store", etcd->endpoints(), "--root-password-file",
                       root_pw, "--author-user", "alice", "--author-password-file", alice_pw});
  ASSERT_EQ(init.exit_code, 0) << describe(init);
  for (const auto& [node, pw] : {std::pair{"node-a", node_a_pw}, std::pair{"node-b", node_b_pw}}) {
    auto add =
        tierctl({"store", "add-node", node, "--password-file", pw, "--store", etcd->endpoints(),
                 "--store-user", "root", "--store-password-file", root_pw});
    ASSERT_EQ(add.exit_code, 0) << describe(add);
  }
  const std::string policy = kSource + "/policies/dev-test-prod/policy";

  // No credentials, a wrong password, a node: refused, nothing written.
  auto anonymous = tierctl({"apply", policy, "--store", etcd->endpoints()});
  EXPECT_EQ(anonymous.exit_code, 1) << describe(anonymous);
  EXPECT_NE(anonymous.err.find("--store-user"), std::string::npos) << anonymous.err;
  const auto wrong_pw = tmp.write("wrong.pw", "nope\n");
  auto wrong = tierctl({"apply", policy, "--store", etcd->endpoints(), "--store-user", "alice",
                        "--store-password-file", wrong_pw});
  EXPECT_EQ(wrong.exit_code, 1) << describe(wrong);
  EXPECT_NE(wrong.err.find("authentication failed"), std::string::npos) << wrong.err;
  auto as_node = tierctl({"apply", policy, "--store", etcd->endpoints(), "--store-user",
                          "tierwall-node-node-a", "--store-password-file", node_a_pw});
  EXPECT_EQ(as_node.exit_code, 1) << describe(as_node);
  EXPECT_NE(as_node.err.find("permission denied"), std::string::npos) << as_node.err;
  auto none = etcd->etcdctl({"get", "--prefix", "/tierwall/", "--keys-only"}, "root:r00t-secret");
  ASSERT_TRUE(none.ok()) << none.err;
  EXPECT_TRUE(tierwall::testsupport::split_lines(none.out).empty()) << none.out;

  // The author may publish (password from the environment this time).
  ::setenv("TIERWALL_STORE_PASSWORD", "alice-secret", 1);
  auto as_author = tierctl(
      {"apply", policy, "--store", etcd->endpoints(), "--store-user", "alice", "-o", "json"});
  ::unsetenv("TIERWALL_STORE_PASSWORD");
  ASSERT_EQ(as_author.exit_code, 0) << describe(as_author);
  EXPECT_EQ(json::parse(as_author.out)["generation"], 1);

  // A node reads the policy, writes its own node key and endpoints under a
  // lease, and nothing of another node's.
  const Layout layout("default");
  ClientOptions o = client_options(*etcd);
  o.user = "tierwall-node-node-a";
  o.password = "node-a-secret";
  EtcdClient node_a(o);
  auto p = read_policy(node_a, layout);
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->meta.author.empty(), false);
  auto lease = node_a.lease_grant(30);
  ASSERT_TRUE(lease) << lease.error().message;
  NodeRecord rec{"node-a", {"192.0.2.10"}, "0.1.0", utc_now(), (*p)->meta.digest, 1};
  auto own = node_a.put(layout.node("node-a"), encode_node(rec), lease->id);
  EXPECT_TRUE(own) << own.error().message;
  EndpointRecord ep{"web-1", "web-1", "", {{"app", "web"}}, {"10.88.0.10"}};
  auto own_ep = node_a.put(layout.endpoint("node-a", "web-1"), encode_endpoint(ep), lease->id);
  EXPECT_TRUE(own_ep) << own_ep.error().message;
  for (const std::string& key : {layout.node("node-b"), layout.endpoint("node-b", "web-1"),
                                 layout.policy_meta(), layout.document("x.yaml")}) {
    auto other = node_a.put(key, "{}");
    ASSERT_FALSE(other) << key;
    EXPECT_EQ(other.error().kind, Error::Kind::Permission) << other.error().message;
    EXPECT_NE(other.error().message.find("permission denied"), std::string::npos);
  }
  // A watch through the gateway carries the token too.
  WatchRequest w;
  w.key = layout.policy_prefix();
  w.range_end = prefix_end(w.key);
  w.start_revision = (*p)->meta_mod_revision;
  int seen = 0;
  auto end = node_a.watch(w, [&](const WatchResponse& r) {
    seen += static_cast<int>(r.events.size());
    return false;
  });
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_GT(seen, 0);
  // ... and a watch on another node's prefix is canceled, not "no events".
  WatchRequest forbidden;
  forbidden.key = "/tierwall/other/";
  forbidden.range_end = prefix_end(forbidden.key);
  auto denied = node_a.watch(forbidden, [](const WatchResponse&) { return true; });
  ASSERT_TRUE(denied) << denied.error().message;
  EXPECT_EQ(denied->reason, WatchEnd::Reason::Canceled);
  EXPECT_NE(denied->cancel_reason.find("permission denied"), std::string::npos);

  auto show = tierctl({"store", "show", "--store", etcd->endpoints(), "--store-user", "alice",
                       "--store-password-file", alice_pw, "-o", "json"});
  ASSERT_EQ(show.exit_code, 0) << describe(show);
  const json s = json::parse(show.out);
  ASSERT_EQ(s["nodes"].size(), 1u);
  EXPECT_EQ(s["nodes"][0]["name"], "node-a");
  EXPECT_EQ(s["nodes"][0]["endpoints"], 1);
  EXPECT_EQ(s["nodes"][0]["registered"], true);
}

TEST_F(StoreEtcdTest, TlsWorksWithTheCaAndFailsWithoutIt) {
  EtcdClusterOptions opts;
  opts.tls = true;
  opts.client_cert_auth = true;
  auto etcd = cluster(opts);
  const std::string policy = kSource + "/policies/dev-test-prod/policy";
  auto ok = tierctl({"apply", policy, "--store", etcd->endpoints(), "--store-ca", etcd->ca_file(),
                     "--store-cert", etcd->client_cert(), "--store-key", etcd->client_key()});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);

  auto no_ca = tierctl({"apply", policy, "--store", etcd->endpoints(), "--store-cert",
                        etcd->client_cert(), "--store-key", etcd->client_key()});
  EXPECT_EQ(no_ca.exit_code, 3) << describe(no_ca);
  EXPECT_NE(no_ca.err.find("--store-ca"), std::string::npos) << no_ca.err;

  auto no_cert =
      tierctl({"store", "show", "--store", etcd->endpoints(), "--store-ca", etcd->ca_file()});
  EXPECT_EQ(no_cert.exit_code, 3) << describe(no_cert);

  auto plain =
      tierctl({"store", "show", "--store", "http://127.0.0.1:" + etcd->client_url(0).substr(18)});
  EXPECT_NE(plain.exit_code, 0) << describe(plain);

  auto show = tierctl({"store", "show", "--store", etcd->endpoints(), "--store-ca", etcd->ca_file(),
                       "--store-cert", etcd->client_cert(), "--store-key", etcd->client_key(), "-o",
                       "json"});
  ASSERT_EQ(show.exit_code, 0) << describe(show);
  EXPECT_EQ(json::parse(show.out)["policy"]["name"], "dev-test-prod");

  // Authentication over mutual TLS: the gateway does not take the
  // certificate's name for a user, so users still give a password. Auth was
  // turned on by hand (the fixture, as root); init-auth then runs as root.
  const tierwall::testsupport::TempDir tmp("tw-store-test");
  const auto root_pw = tmp.write("root.pw", "r00t-secret\n");
  const auto alice_pw = tmp.write("alice.pw", "alice-secret\n");
  etcd->enable_auth("r00t-secret");
  const std::vector<std::string> tls{"--store-ca",        etcd->ca_file(), "--store-cert",
                                     etcd->client_cert(), "--store-key",   etcd->client_key()};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), tls.begin(), tls.end());
    return tierctl(args);
  };
  auto init = with({"store", "init-auth", "--store", etcd->endpoints(), "--store-user", "root",
                    "--store-password-file", root_pw, "--root-password-file", root_pw,
                    "--author-user", "alice", "--author-password-file", alice_pw});
  ASSERT_EQ(init.exit_code, 0) << describe(init);
  auto anonymous =
      with({"apply", kSource + "/policies/nist-800-190/policy", "--store", etcd->endpoints()});
  EXPECT_EQ(anonymous.exit_code, 1) << describe(anonymous);
  auto as_alice =
      with({"apply", kSource + "/policies/nist-800-190/policy", "--store", etcd->endpoints(),
            "--store-user", "alice", "--store-password-file", alice_pw, "-o", "json"});
  ASSERT_EQ(as_alice.exit_code, 0) << describe(as_alice);
  EXPECT_EQ(json::parse(as_alice.out)["generation"], 2);
  auto keys = etcd->etcdctl({"get", "--prefix", "/tierwall/default/policy/", "--keys-only"},
                            "root:r00t-secret");
  ASSERT_TRUE(keys.ok()) << keys.err;
  EXPECT_EQ(tierwall::testsupport::split_lines(keys.out).size(), 5u) << keys.out;
}

// A member that accepts connections but answers nothing (frozen, or behind
// a partition): reads time out there and are answered by the next member;
// a write that was sent is not repeated elsewhere.
TEST_F(StoreEtcdTest, ReadsFailOverFromAnUnresponsiveMember) {
  EtcdClusterOptions opts;
  opts.members = 3;
  auto etcd = cluster(opts);
  ClientOptions o = client_options(*etcd);
  o.request_timeout = std::chrono::milliseconds(1500);
  EtcdClient client(o);
  ASSERT_TRUE(client.put("/u/k", "v"));
  ASSERT_EQ(client.current_endpoint(), etcd->client_url(0));
  etcd->pause(0);
  const auto t0 = Clock::now();
  auto got = client.get("/u/k");
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_NE(client.current_endpoint(), etcd->client_url(0));
  std::cout << "[ figures  ] read answered by the next member " << ms
            << " ms after the first stopped answering (request timeout 1500 ms)\n";

  ClientOptions only0 = o;
  only0.endpoints = {etcd->client_url(0), etcd->client_url(1)};
  EtcdClient writer(only0);
  auto put = writer.put("/u/k", "w");
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().kind, Error::Kind::Unavailable);
  EXPECT_NE(put.error().message.find("may or may not have been applied"), std::string::npos)
      << put.error().message;
  etcd->resume(0);
}

TEST_F(StoreEtcdTest, FailsOverToTheNextEndpointWhenAMemberDies) {
  EtcdClusterOptions opts;
  opts.members = 3;
  auto etcd = cluster(opts);
  // The hard case: the member the client talks to is the leader. Its URL
  // goes first, so the client uses it until it dies.
  int leader = -1;
  {
    EtcdClient probe(client_options(*etcd));
    const auto all = probe.status_all();
    for (int i = 0; i < 3; ++i) {
      const auto& st = all[static_cast<std::size_t>(i)];
      ASSERT_TRUE(st) << st.error().message;
      if (st->member_id == st->leader) leader = i;
    }
  }
  ASSERT_GE(leader, 0);
  ClientOptions leader_first = client_options(*etcd);
  std::rotate(leader_first.endpoints.begin(), leader_first.endpoints.begin() + leader,
              leader_first.endpoints.end());
  EtcdClient client(leader_first);
  ASSERT_TRUE(client.put("/t/k", "v1"));
  EXPECT_EQ(client.current_endpoint(), etcd->client_url(leader));

  etcd->kill(leader);
  const auto t0 = Clock::now();
  // Reads are retried on the next endpoint; a write waits for a leader.
  auto got = client.get("/t/k");
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].value, "v1");
  EXPECT_NE(client.current_endpoint(), etcd->client_url(leader));
  const auto read_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  Result<std::int64_t> put = Error::make(Error::Kind::Unavailable, "not tried");
  ASSERT_TRUE(tierwall::testsupport::wait_until(
      [&] {
        put = client.put("/t/k", "v2");
        return put.ok();
      },
      Millis{10'000}, Millis{50}))
      << put.error().message;
  const auto failover_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::cout << "[ figures  ] leader killed: read again after " << read_ms
            << " ms, write (new leader) after " << failover_ms << " ms\n";

  std::string leader_first_list;
  for (const auto& url : leader_first.endpoints) {
    leader_first_list += (leader_first_list.empty() ? "" : ",") + url;
  }
  auto r = tierctl({"apply", kSource + "/policies/dev-test-prod/policy", "--store",
                    leader_first_list, "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(json::parse(r.out)["endpoint"], etcd->client_url(leader));

  // A watch connects through the next endpoint as well.
  auto end = client.watch(WatchRequest{"/t/k", {}, 1, false, false},
                          [](const WatchResponse& resp) { return resp.events.empty(); });
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_EQ(end->reason, WatchEnd::Reason::Stopped);

  // The member comes back and has caught up.
  etcd->restart(leader);
  ClientOptions only0 = client_options(*etcd);
  only0.endpoints = {etcd->client_url(leader)};
  EtcdClient first(only0);
  ASSERT_TRUE(tierwall::testsupport::wait_until(
      [&] {
        auto v = first.get("/t/k");
        return v && v->kvs.size() == 1 && v->kvs[0].value == "v2";
      },
      Millis{10'000}));

  // Nothing answering is an error, never an empty answer.
  etcd->kill(0);
  etcd->kill(1);
  etcd->kill(2);
  auto dead = client.get("/t/k");
  ASSERT_FALSE(dead);
  EXPECT_EQ(dead.error().kind, Error::Kind::Unavailable);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(dead.error().message.find(etcd->client_url(i)), std::string::npos)
        << dead.error().message;
  }
  auto unreachable = tierctl({"store", "show", "--store", etcd->endpoints()});
  EXPECT_EQ(unreachable.exit_code, 3) << describe(unreachable);
}

TEST_F(StoreEtcdTest, AWatchSeesAPublish) {
  auto etcd = cluster();
  const auto options = client_options(*etcd);
  const Layout layout("default");
  EtcdClient client(options);
  auto now = client.get("/");
  ASSERT_TRUE(now);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<WatchEvent> events;
  Result<WatchEnd> end = Error::make(Error::Kind::Cancelled, "not run");
  std::thread watcher([&] {
    EtcdClient c(options);
    WatchRequest w;
    w.key = layout.policy_prefix();
    w.range_end = prefix_end(w.key);
    w.start_revision = now->revision + 1;
    end = c.watch(
        w,
        [&](const WatchResponse& r) {
          std::lock_guard lock(mu);
          events.insert(events.end(), r.events.begin(), r.events.end());
          return true;
        },
        &stop);
  });
  StopAndJoin watch_guard(stop, watcher);
  const auto t0 = Clock::now();
  auto r = tierctl({"apply", kSource + "/policies/nist-800-190/policy", "--store",
                    etcd->endpoints(), "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string digest = json::parse(r.out)["digest"];
  const bool seen = tierwall::testsupport::wait_until(
      [&] {
        std::lock_guard lock(mu);
        for (const auto& ev : events) {
          if (ev.kv.key == layout.policy_meta()) return true;
        }
        return false;
      },
      Millis{10'000}, Millis{10});
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  watch_guard.join();
  ASSERT_TRUE(seen);
  std::cout << "[ figures  ] tierctl apply --store to the watch seeing the meta: " << ms << " ms\n";
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_EQ(end->reason, WatchEnd::Reason::Stopped);
  std::lock_guard lock(mu);
  ASSERT_EQ(events.size(), 5u);  // four documents and the meta, one revision
  for (const auto& ev : events) EXPECT_EQ(ev.kv.mod_revision, events.front().kv.mod_revision);
  auto meta = decode_meta(events.back().kv.value);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->digest, digest);
}

TEST_F(StoreEtcdTest, AWatchFromACompactedRevisionReportsCompaction) {
  auto etcd = cluster();
  EtcdClient client(client_options(*etcd));
  std::int64_t rev = 0;
  for (int i = 0; i < 5; ++i) {
    auto p = client.put("/c/k", "v" + std::to_string(i));
    ASSERT_TRUE(p);
    rev = *p;
  }
  ASSERT_TRUE(client.compact(rev - 1));
  WatchRequest w;
  w.key = "/c/";
  w.range_end = prefix_end(w.key);
  w.start_revision = 2;
  int calls = 0;
  auto end = client.watch(w, [&](const WatchResponse&) {
    ++calls;
    return true;
  });
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_EQ(end->reason, WatchEnd::Reason::Compacted);
  EXPECT_EQ(end->compact_revision, rev - 1);
  EXPECT_EQ(calls, 0);

  RangeRequest old;
  old.key = "/c/k";
  old.revision = 2;
  auto r = client.range(old);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::Compacted);

  // From the compact revision on, the watch works and sees history.
  w.start_revision = rev - 1;
  std::vector<std::string> values;
  auto ok = client.watch(w, [&](const WatchResponse& resp) {
    for (const auto& ev : resp.events) values.push_back(ev.kv.value);
    return values.size() < 2;
  });
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->reason, WatchEnd::Reason::Stopped);
  EXPECT_EQ(values, (std::vector<std::string>{"v3", "v4"}));
}

TEST_F(StoreEtcdTest, ALeaseNotKeptAliveExpiresItsKeys) {
  auto etcd = cluster();
  EtcdClient client(client_options(*etcd));
  auto kept = client.lease_grant(2);
  auto dropped = client.lease_grant(2);
  ASSERT_TRUE(kept && dropped);
  ASSERT_TRUE(client.put("/l/kept/a", "1", kept->id));
  ASSERT_TRUE(client.put("/l/dropped/a", "1", dropped->id));
  ASSERT_TRUE(client.put("/l/dropped/b", "1", dropped->id));
  auto list = client.get_prefix("/l/dropped/");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->kvs.size(), 2u);
  EXPECT_EQ(list->kvs[0].lease, dropped->id);

  const auto t0 = Clock::now();
  bool expired = false;
  while (Clock::now() - t0 < std::chrono::seconds(8)) {
    auto ttl = client.lease_keepalive(kept->id);
    ASSERT_TRUE(ttl) << ttl.error().message;
    auto d = client.get_prefix("/l/dropped/");
    ASSERT_TRUE(d) << d.error().message;
    if (d->kvs.empty()) {
      expired = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  ASSERT_TRUE(expired) << "keys of a lease without keepalive outlived it";
  std::cout << "[ figures  ] TTL 2 s lease expired its keys after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()
            << " ms\n";
  auto k = client.get_prefix("/l/kept/");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->kvs.size(), 1u) << "a lease kept alive lost its key";

  auto gone = client.lease_keepalive(dropped->id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, Error::Kind::NotFound);

  ASSERT_TRUE(client.lease_revoke(kept->id));
  auto after = client.get_prefix("/l/");
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->kvs.empty());
}

// etcd forgets a simple token after --auth-token-ttl seconds of disuse;
// the client authenticates again by itself, for requests and watches.
TEST_F(StoreEtcdTest, RenewsAnExpiredTokenTransparently) {
  EtcdClusterOptions opts;
  opts.extra_args = {"--auth-token-ttl", "1"};
  auto etcd = cluster(opts);
  const tierwall::testsupport::TempDir tmp("tw-store-test");
  const auto root_pw = tmp.write("root.pw", "r00t-secret\n");
  const auto alice_pw = tmp.write("alice.pw", "alice-secret\n");
  auto init = tierctl({"store", "init-auth", "--store", etcd->endpoints(), "--root-password-file",
                       root_pw, "--author-user", "alice", "--author-password-file", alice_pw});
  ASSERT_EQ(init.exit_code, 0) << describe(init);
  ClientOptions o = client_options(*etcd);
  o.user = "alice";
  o.password = "alice-secret";
  EtcdClient alice(o);
  const Layout layout("default");
  auto first = alice.put(layout.document("a.yaml"), "x");
  ASSERT_TRUE(first) << first.error().message;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto second = alice.put(layout.document("a.yaml"), "y");
  ASSERT_TRUE(second) << second.error().message;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  std::string value;
  auto end = alice.watch(WatchRequest{layout.document("a.yaml"), {}, *second, false, false},
                         [&](const WatchResponse& r) {
                           if (!r.events.empty()) value = r.events.back().kv.value;
                           return false;
                         });
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_EQ(end->reason, WatchEnd::Reason::Stopped) << end->cancel_reason;
  EXPECT_EQ(value, "y");
}

}  // namespace
