// The cluster source's logic that needs no etcd: what a watch event on the
// endpoints prefix changes, the writes that bring this node's published
// endpoints to what it has, and the retry backoff. The source against real
// etcd is tested by tests/integration/cluster_agents_test.cc.
#include "tierwall/cluster/cluster_source.h"

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace tierwall::cluster {
namespace {

using std::chrono::milliseconds;

TEST(EndpointChange, PutsOfOtherNodesDecodeAndOwnKeysAreIgnored) {
  const store::Layout layout("default");
  std::string error;
  auto c = endpoint_change(layout, "node-a", false, layout.endpoint("node-b", "c1"),
                           R"({"id":"other","name":"web-1","labels":{"role":"web"},)"
                           R"("addresses":["10.88.1.10"]})",
                           &error);
  ASSERT_TRUE(c.has_value()) << error;
  EXPECT_FALSE(c->removed);
  EXPECT_EQ(c->endpoint.key, "node-b/c1");
  EXPECT_EQ(c->endpoint.node, "node-b");
  EXPECT_EQ(c->endpoint.record.id, "c1");  // the key decides, not the value
  EXPECT_EQ(c->endpoint.record.name, "web-1");
  EXPECT_EQ(c->endpoint.record.labels.at("role"), "web");

  // This node's own keys are not remote endpoints.
  EXPECT_FALSE(
      endpoint_change(layout, "node-b", false, layout.endpoint("node-b", "c1"), "{}", &error)
          .has_value());
  // Node "a" is not a prefix of node "ab".
  EXPECT_TRUE(
      endpoint_change(layout, "a", true, layout.endpoint("ab", "x"), "", &error).has_value());
  // Keys that are not endpoints.
  EXPECT_FALSE(
      endpoint_change(layout, "node-a", false, layout.node("node-b"), "{}", &error).has_value());
}

TEST(EndpointChange, DeletesNeedNoValueAndBadValuesSayWhy) {
  const store::Layout layout("default");
  std::string error;
  auto d = endpoint_change(layout, "node-a", true, layout.endpoint("node-b", "c1"), "", &error);
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->removed);
  EXPECT_EQ(d->endpoint.key, "node-b/c1");

  error.clear();
  EXPECT_FALSE(
      endpoint_change(layout, "node-a", false, layout.endpoint("node-b", "c2"), "not json", &error)
          .has_value());
  EXPECT_NE(error.find("/tierwall/default/endpoints/node-b/c2"), std::string::npos) << error;
}

TEST(DiffLocal, PutsNewAndChangedDeletesGone) {
  const std::map<std::string, std::string> published{{"a", "1"}, {"b", "2"}, {"c", "3"}};
  const std::map<std::string, std::string> wanted{{"a", "1"}, {"b", "20"}, {"d", "4"}};
  const auto d = diff_local(published, wanted);
  EXPECT_EQ(d.put, (std::vector<std::pair<std::string, std::string>>{{"b", "20"}, {"d", "4"}}));
  EXPECT_EQ(d.erase, std::vector<std::string>{"c"});
  const auto none = diff_local(wanted, wanted);
  EXPECT_TRUE(none.put.empty());
  EXPECT_TRUE(none.erase.empty());
  // After a lease was lost nothing is published: everything is written again.
  EXPECT_EQ(diff_local({}, wanted).put.size(), 3U);
}

TEST(Backoff, DoublesUpToTheCap) {
  EXPECT_EQ(backoff(milliseconds{250}, milliseconds{5000}, 1), milliseconds{250});
  EXPECT_EQ(backoff(milliseconds{250}, milliseconds{5000}, 2), milliseconds{500});
  EXPECT_EQ(backoff(milliseconds{250}, milliseconds{5000}, 4), milliseconds{2000});
  EXPECT_EQ(backoff(milliseconds{250}, milliseconds{5000}, 6), milliseconds{5000});
  EXPECT_EQ(backoff(milliseconds{250}, milliseconds{5000}, 1000), milliseconds{5000});
}

TEST(Demote, TheSilentMemberIsTriedLast) {
  const std::vector<std::string> urls{"http://a:1", "http://b:2", "http://c:3"};
  EXPECT_EQ(demote(urls, "http://a:1"),
            (std::vector<std::string>{"http://b:2", "http://c:3", "http://a:1"}));
  EXPECT_EQ(demote(urls, "http://b:2"),
            (std::vector<std::string>{"http://a:1", "http://c:3", "http://b:2"}));
  EXPECT_EQ(demote(urls, "http://x:9"), urls);
}

// An unreachable store: the source reports disconnected with the error,
// delivers nothing (no empty snapshot, no removal), and stops promptly.
TEST(ClusterSource, UnreachableStoreDeliversNothingAndSaysSo) {
  ClusterOptions o;
  o.client.endpoints = {"http://127.0.0.1:9"};  // discard port: refused
  o.client.connect_timeout = milliseconds{200};
  o.node = "node-a";
  o.retry_min = milliseconds{20};
  o.retry_max = milliseconds{50};
  int delivered = 0;
  ClusterCallbacks cb;
  cb.on_policy = [&](PublishedPolicy) { ++delivered; };
  cb.on_snapshot = [&](std::vector<RemoteEndpoint>) { ++delivered; };
  cb.on_remove = [&](std::string) { ++delivered; };
  ClusterSource source(o, cb);
  source.start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
  while (source.status().errors < 6 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds{20});
  }
  const auto t0 = std::chrono::steady_clock::now();
  source.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds{3});
  const auto st = source.status();
  EXPECT_FALSE(st.connected);
  EXPECT_GE(st.errors, 6U);
  EXPECT_NE(st.last_error.find("127.0.0.1:9"), std::string::npos) << st.last_error;
  EXPECT_EQ(delivered, 0);
  EXPECT_EQ(st.lease, 0);
}

}  // namespace
}  // namespace tierwall::cluster
