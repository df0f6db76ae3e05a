// tw_store without an etcd: the gateway's wire format (base64, int64 as
// strings, answers captured from etcd 3.4), the key layout, the value
// encodings and the role permissions.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"
#include "tierwall/store/wire.h"

namespace tierwall::store {
namespace {

using nlohmann::json;

TEST(StoreBase64, RoundTripsEveryByteAndKnownVectors) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t len = 0; len <= all.size(); len += 37) {
    const std::string s = all.substr(0, len);
    EXPECT_EQ(base64_decode(base64_encode(s)), s) << len;
  }
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm8"), "fo");                    // unpadded
  EXPECT_EQ(base64_decode("_-8="), base64_decode("/+8="));  // URL-safe alphabet
  EXPECT_FALSE(base64_decode("Zm9v!"));
  EXPECT_FALSE(base64_decode("Z"));
}

TEST(StoreWire, PrefixEndCoversExactlyThePrefix) {
  EXPECT_EQ(prefix_end("/tierwall/a/"), "/tierwall/a0");
  EXPECT_EQ(prefix_end(std::string("a\xff", 2)), "b");
  EXPECT_EQ(prefix_end(""), std::string(1, '\0'));
  EXPECT_EQ(prefix_end(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

TEST(StoreWire, RequestBodiesUseBase64AndDecimalStrings) {
  RangeRequest r;
  r.key = "/k";
  r.range_end = prefix_end("/k");
  r.revision = 42;
  r.keys_only = true;
  const json j = json::parse(encode_range(r));
  EXPECT_EQ(j["key"], base64_encode("/k"));
  EXPECT_EQ(j["range_end"], base64_encode("/l"));
  EXPECT_EQ(j["revision"], "42");
  EXPECT_EQ(j["keys_only"], true);
  EXPECT_FALSE(j.contains("limit"));

  const json p = json::parse(encode_put("k", "v", 7));
  EXPECT_EQ(p["lease"], "7");
  EXPECT_FALSE(json::parse(encode_put("k", "v", 0)).contains("lease"));

  TxnRequest t;
  Compare c;
  c.key = "meta";
  c.target = Compare::Target::Mod;
  c.number = 5;
  t.compare.push_back(c);
  c.target = Compare::Target::Version;
  c.number = 0;
  t.compare.push_back(c);
  t.success.push_back(TxnOp::put("a", "b", 3));
  t.success.push_back(TxnOp::erase("c"));
  t.failure.push_back(TxnOp::range("meta"));
  const json tj = json::parse(encode_txn(t));
  EXPECT_EQ(tj["compare"][0]["target"], "MOD");
  EXPECT_EQ(tj["compare"][0]["mod_revision"], "5");
  EXPECT_EQ(tj["compare"][0]["result"], "EQUAL");
  EXPECT_EQ(tj["compare"][1]["target"], "VERSION");
  EXPECT_EQ(tj["compare"][1]["version"], "0");
  EXPECT_EQ(tj["success"][0]["request_put"]["lease"], "3");
  EXPECT_EQ(tj["success"][1]["request_delete_range"]["key"], base64_encode("c"));
  EXPECT_EQ(tj["failure"][0]["request_range"]["key"], base64_encode("meta"));

  WatchRequest w;
  w.key = "/p/";
  w.range_end = prefix_end("/p/");
  w.start_revision = 9;
  w.prev_kv = true;
  const json wj = json::parse(encode_watch_create(w));
  EXPECT_EQ(wj["create_request"]["start_revision"], "9");
  EXPECT_EQ(wj["create_request"]["prev_kv"], true);
}

// Answers as etcd 3.4.23's gateway wrote them.
TEST(StoreWire, DecodesRangeAnswers) {
  auto r = decode_range(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"},)"
      R"("kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->revision, 2);
  EXPECT_EQ(r->count, 1);
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].key, "foo");
  EXPECT_EQ(r->kvs[0].value, "bar");
  EXPECT_EQ(r->kvs[0].mod_revision, 2);
  EXPECT_EQ(r->kvs[0].lease, 0);

  // No key: no kvs and no count at all — an empty answer, not an error.
  auto empty = decode_range(R"({"header":{"revision":"7"}})");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->revision, 7);
  EXPECT_TRUE(empty->kvs.empty());

  for (const char* bad : {"", "[]", "not json", R"({"kvs":[{"key":"!!"}]})",
                          R"({"kvs":[{"key":"Zm9v","mod_revision":"x"}]})", R"({"kvs":{}})"}) {
    auto e = decode_range(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().kind, Error::Kind::Protocol) << bad;
  }
}

TEST(StoreWire, DecodesTxnAnswers) {
  auto ok = decode_txn(
      R"({"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]})");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->succeeded);
  EXPECT_EQ(ok->revision, 3);
  ASSERT_EQ(ok->responses.size(), 1u);

  // A failed compare: "succeeded" is absent, the failure ops answer.
  auto failed = decode_txn(
      R"({"header":{"revision":"3"},"responses":[{"response_range":{"header":{"revision":"3"},)"
      R"("kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}}]})");
  ASSERT_TRUE(failed);
  EXPECT_FALSE(failed->succeeded);
  ASSERT_EQ(failed->responses.size(), 1u);
  ASSERT_EQ(failed->responses[0].kvs.size(), 1u);
  EXPECT_EQ(failed->responses[0].kvs[0].value, "baz");
}

TEST(StoreWire, DecodesWatchLines) {
  auto created = decode_watch_line(R"({"result":{"header":{"revision":"3"},"created":true}})");
  ASSERT_TRUE(created);
  EXPECT_TRUE(created->created);
  EXPECT_TRUE(created->events.empty());

  auto events = decode_watch_line(
      R"({"result":{"header":{"revision":"5"},"events":[)"
      R"({"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"4","version":"3","value":"cXV4"}},)"
      R"({"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"5"},"prev_kv":{"key":"Zm9v","mod_revision":"4","value":"cXV4"}}]}})");
  ASSERT_TRUE(events) << events.error().message;
  ASSERT_EQ(events->events.size(), 2u);
  EXPECT_EQ(events->events[0].type, WatchEvent::Type::Put);
  EXPECT_EQ(events->events[0].kv.value, "qux");
  EXPECT_EQ(events->events[1].type, WatchEvent::Type::Delete);
  ASSERT_TRUE(events->events[1].prev_kv);
  EXPECT_EQ(events->events[1].prev_kv->value, "qux");

  // Compaction: canceled with compact_revision, distinct from "no events".
  auto compacted = decode_watch_line(
      R"({"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}})");
  ASSERT_TRUE(compacted);
  EXPECT_TRUE(compacted->canceled);
  EXPECT_EQ(compacted->compact_revision, 3);

  auto denied = decode_watch_line(
      R"({"result":{"header":{"revision":"7"},"watch_id":"-1","created":true,"canceled":true,)"
      R"("cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}})");
  ASSERT_TRUE(denied);
  EXPECT_TRUE(denied->canceled);
  EXPECT_EQ(denied->compact_revision, 0);
  EXPECT_NE(denied->cancel_reason.find("permission denied"), std::string::npos);

  auto error = decode_watch_line(
      R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}})");
  ASSERT_FALSE(error);
  EXPECT_EQ(error.error().etcd_error, "etcdserver: no leader");

  EXPECT_FALSE(decode_watch_line(R"({"result":{"events":[{"type":"MOVE","kv":{}}]}})"));
}

TEST(StoreWire, DecodesLeasesAndTokens) {
  auto g =
      decode_lease_grant(R"({"header":{"revision":"3"},"ID":"4111120245689300747","TTL":"5"})");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->id, 4111120245689300747);
  EXPECT_EQ(g->ttl, 5);
  auto alive = decode_keepalive(R"({"result":{"header":{},"ID":"1","TTL":"5"}})");
  ASSERT_TRUE(alive);
  EXPECT_EQ(*alive, 5);
  auto gone = decode_keepalive(R"({"result":{"header":{},"ID":"1"}})");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, Error::Kind::NotFound);
  auto token = decode_token(R"({"header":{},"token":"dyIQeQzjLIFpSiDV.26"})");
  ASSERT_TRUE(token);
  EXPECT_EQ(*token, "dyIQeQzjLIFpSiDV.26");
  EXPECT_FALSE(decode_token(R"({"header":{}})"));
}

TEST(StoreWire, ClassifiesEtcdErrors) {
  const std::string ep = "http://127.0.0.1:2379";
  auto e = decode_error(
      403,
      R"({"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7})",
      ep);
  EXPECT_EQ(e.kind, Error::Kind::Permission);
  EXPECT_EQ(e.http_status, 403);
  EXPECT_EQ(e.etcd_code, 7);
  EXPECT_NE(e.message.find(ep), std::string::npos);
  EXPECT_NE(e.message.find("403"), std::string::npos);
  EXPECT_NE(e.message.find("etcdserver: permission denied"), std::string::npos);

  EXPECT_EQ(decode_error(401, R"({"error":"etcdserver: invalid auth token","code":16})", ep).kind,
            Error::Kind::Auth);
  EXPECT_EQ(decode_error(400, R"({"error":"etcdserver: user name is empty","code":3})", ep).kind,
            Error::Kind::Auth);
  EXPECT_EQ(
      decode_error(
          400, R"({"error":"etcdserver: mvcc: required revision has been compacted","code":11})",
          ep)
          .kind,
      Error::Kind::Compacted);
  EXPECT_EQ(
      decode_error(404, R"({"error":"etcdserver: requested lease not found","code":5})", ep).kind,
      Error::Kind::NotFound);
  EXPECT_EQ(decode_error(503, R"({"error":"etcdserver: no leader","code":14})", ep).kind,
            Error::Kind::Unavailable);
  const Error html = decode_error(502, "<html>bad gateway</html>\n", ep);
  EXPECT_EQ(html.kind, Error::Kind::Etcd);
  EXPECT_EQ(html.etcd_error, "<html>bad gateway</html>");
}

TEST(StoreClient, ParsesEndpointLists) {
  auto ok = parse_endpoints("http://127.0.0.1:2379, https://10.0.0.2:2379/");
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, (std::vector<std::string>{"http://127.0.0.1:2379", "https://10.0.0.2:2379"}));
  for (const char* bad : {"", ",", "127.0.0.1:2379", "ftp://x:1", "http://x:1/v3", "http://"}) {
    auto e = parse_endpoints(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().kind, Error::Kind::Invalid);
  }
}

TEST(StoreLayout, KeysAndTheirInverse) {
  const Layout l("prod");
  EXPECT_EQ(l.policy_meta(), "/tierwall/prod/policy/meta");
  EXPECT_EQ(l.document("10-tiers.yaml"), "/tierwall/prod/policy/documents/10-tiers.yaml");
  EXPECT_EQ(l.node("node-a"), "/tierwall/prod/nodes/node-a");
  EXPECT_EQ(l.endpoint("node-a", "3f2a9c"), "/tierwall/prod/endpoints/node-a/3f2a9c");
  EXPECT_EQ(l.document_name(l.document("a.yaml")), "a.yaml");
  EXPECT_EQ(l.node_name(l.node("node-a")), "node-a");
  EXPECT_EQ(l.endpoint_key(l.endpoint("node-a", "web-1")),
            std::make_pair(std::string("node-a"), std::string("web-1")));
  EXPECT_FALSE(l.node_name("/tierwall/other/nodes/node-a"));
  EXPECT_FALSE(l.endpoint_key("/tierwall/prod/endpoints/node-a"));
  EXPECT_FALSE(l.document_name(l.policy_meta()));
  // Node "a"'s endpoint prefix does not reach node "ab"'s endpoints.
  const std::string a = l.node_endpoints_prefix("a");
  const std::string ab_key = l.endpoint("ab", "x");
  EXPECT_FALSE(ab_key >= a && ab_key < prefix_end(a));
}

TEST(StoreLayout, NamesCannotEscapeTheirPrefix) {
  for (const char* ok : {"default", "prod-1", "node-a.example.com", "a"}) {
    EXPECT_TRUE(valid_node_name(ok)) << ok;
    EXPECT_TRUE(valid_cluster_name(ok)) << ok;
  }
  for (const char* bad : {"", "-a", "a-", "A", "a/b", "a b", "..", "a_b"}) {
    EXPECT_FALSE(valid_node_name(bad)) << bad;
  }
  EXPECT_FALSE(valid_node_name(std::string(64, 'a')));
  EXPECT_TRUE(valid_endpoint_id("3f2a9c"));
  EXPECT_TRUE(valid_endpoint_id("web-1.prod:8080_x"));
  for (const char* bad : {"", ".", "..", "a/b", "a b"}) EXPECT_FALSE(valid_endpoint_id(bad)) << bad;
  EXPECT_TRUE(valid_document_name("10-tiers.yaml"));
  EXPECT_TRUE(valid_document_name("flows.yml"));
  for (const char* bad : {"flows.json", ".hidden.yaml", "a/b.yaml", "", "a b.yaml"}) {
    EXPECT_FALSE(valid_document_name(bad)) << bad;
  }
}

TEST(StoreLayout, ValueEncodingsRoundTrip) {
  PolicyMeta m;
  m.name = "acme";
  m.digest = std::string(64, 'a');
  m.generation = 7;
  m.author = "alice@ws1";
  m.user = "alice";
  m.published_at = "2026-01-31T12:00:00Z";
  m.documents = {"10-tiers.yaml", "20-flows.yaml"};
  auto back = decode_meta(encode_meta(m));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->name, "acme");
  EXPECT_EQ(back->generation, 7u);
  EXPECT_EQ(back->documents, m.documents);
  EXPECT_EQ(back->user, "alice");
  const json j = json::parse(encode_meta(m));
  EXPECT_EQ(j["format"], 1);
  EXPECT_EQ(j["publishedAt"], "2026-01-31T12:00:00Z");

  json newer = j;
  newer["format"] = 2;
  auto e = decode_meta(newer.dump());
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("newer"), std::string::npos);
  json bad_digest = j;
  bad_digest["digest"] = "abc";
  EXPECT_FALSE(decode_meta(bad_digest.dump()));
  json bad_doc = j;
  bad_doc["documents"] = {"../x.yaml"};
  EXPECT_FALSE(decode_meta(bad_doc.dump()));
  EXPECT_FALSE(decode_meta("not json"));

  NodeRecord n{"node-a",
               {"192.0.2.10", "2001:db8::10"},
               "0.1.0",
               "2026-01-31T12:00:00Z",
               std::string(64, 'b'),
               3};
  auto nb = decode_node(encode_node(n));
  ASSERT_TRUE(nb);
  EXPECT_EQ(nb->addresses, n.addresses);
  EXPECT_EQ(nb->policy_generation, 3u);

  EndpointRecord ep{"3f2a9c", "web-1", "reg.example/web:1", {{"app", "shop"}}, {"10.88.0.10"}};
  auto eb = decode_endpoint(encode_endpoint(ep));
  ASSERT_TRUE(eb);
  EXPECT_EQ(eb->labels.at("app"), "shop");
  EXPECT_EQ(eb->addresses, ep.addresses);
  EXPECT_FALSE(decode_endpoint(R"({"id":"x","name":"x","addresses":[]})"));
  EXPECT_FALSE(decode_endpoint(R"({"id":"x","addresses":["10.0.0.1"],"labels":{"a":1}})"));
}

bool writable(const std::vector<Permission>& perms, const std::string& key) {
  for (const auto& p : perms) {
    if (p.type == Permission::Type::Read) continue;
    if (p.range_end.empty() ? key == p.key : (key >= p.key && key < p.range_end)) return true;
  }
  return false;
}

bool readable(const std::vector<Permission>& perms, const std::string& key) {
  for (const auto& p : perms) {
    if (p.type == Permission::Type::Write) continue;
    if (p.range_end.empty() ? key == p.key : (key >= p.key && key < p.range_end)) return true;
  }
  return false;
}

TEST(StoreLayout, RolesSeparateAuthorsFromNodes) {
  const Layout l("default");
  const auto author = author_permissions(l);
  EXPECT_TRUE(writable(author, l.policy_meta()));
  EXPECT_TRUE(writable(author, l.document("a.yaml")));
  EXPECT_FALSE(writable(author, l.node("node-a")));
  EXPECT_FALSE(writable(author, l.endpoint("node-a", "x")));
  EXPECT_TRUE(readable(author, l.endpoint("node-a", "x")));

  const auto node = node_permissions(l, "a");
  EXPECT_FALSE(writable(node, l.policy_meta()));
  EXPECT_FALSE(writable(node, l.document("a.yaml")));
  EXPECT_TRUE(readable(node, l.document("a.yaml")));
  EXPECT_TRUE(writable(node, l.node("a")));
  EXPECT_TRUE(writable(node, l.endpoint("a", "web-1")));
  EXPECT_FALSE(writable(node, l.node("ab")));
  EXPECT_FALSE(writable(node, l.node("b")));
  EXPECT_FALSE(writable(node, l.endpoint("ab", "web-1")));
  EXPECT_FALSE(writable(node, l.endpoint("b", "web-1")));
  EXPECT_TRUE(readable(node, l.endpoint("b", "web-1")));
  EXPECT_FALSE(writable(node, Layout("other").endpoint("a", "web-1")));
  EXPECT_EQ(node_role("node-a"), "tierwall-node-node-a");
}

}  // namespace
}  // namespace tierwall::store
