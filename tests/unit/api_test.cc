// The agent's local API above its interfaces: role mapping from peer
// credentials, routing and role checks with a fake agent, the JSON shapes,
// where an apply puts the files, and the HttpServer on a real unix socket
// (peer credentials, request bodies, limits) driven by the real client.
#include "tierwall/agent/api.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/agent/http_server.h"
#include "tierwall/runtime/http.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace tierwall::agent;

PeerCredentials peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCredentials p;
  p.pid = 4242;
  p.uid = uid;
  p.gid = gid;
  p.groups = std::move(groups);
  return p;
}

RoleMap sample_roles() {
  RoleMap m;
  m.users[2] = {1000};       // admin: uid 1000
  m.groups[1] = {500};       // operator: gid 500
  m.groups[0] = {600, 601};  // auditor: gids 600, 601
  return m;
}

TEST(ApiRoles, MapsCredentialsToTheHighestRole) {
  const auto m = sample_roles();
  EXPECT_EQ(m.role_of(peer(0, 0)), Role::Admin);  // root always
  EXPECT_EQ(m.role_of(peer(1000, 1000)), Role::Admin);
  EXPECT_EQ(m.role_of(peer(2000, 500)), Role::Operator);
  EXPECT_EQ(m.role_of(peer(2000, 2000, {601})), Role::Auditor);  // supplementary group
  EXPECT_EQ(m.role_of(peer(2000, 600, {500})), Role::Operator);  // highest wins
  EXPECT_EQ(m.role_of(peer(1000, 600)), Role::Admin);
  EXPECT_EQ(m.role_of(peer(2000, 2000, {700, 800})), Role::None);
}

TEST(ApiRoles, ResolvesNamesAndNumbers) {
  AgentConfig::Api api;
  api.roles[2].users = {"root", "1234"};
  api.roles[0].groups = {"root", "77"};
  std::string error;
  auto m = resolve_roles(api, &error);
  ASSERT_TRUE(m) << error;
  EXPECT_EQ(m->users[2], (std::vector<uid_t>{0, 1234}));
  EXPECT_EQ(m->groups[0], (std::vector<gid_t>{0, 77}));
  api.roles[1].users = {"no-such-user-tierwall"};
  EXPECT_FALSE(resolve_roles(api, &error));
  EXPECT_NE(error.find("no-such-user-tierwall"), std::string::npos);
  EXPECT_FALSE(resolve_group("no-such-group-tierwall", &error));
  EXPECT_EQ(resolve_group("0", &error), gid_t{0});
}

class FakeAgent : public AgentControl {
 public:
  AgentState state() override {
    AgentState s;
    s.node = "node-a";
    s.table = "tierwall";
    s.reconciler.generation = 3;
    s.reconciler.applied_generation = 3;
    s.reconciler.policy_name = "p";
    s.reconciler.policy_digest = "abc";
    s.reconciler.endpoints = 2;
    s.reconciler.tier_counts = {{"web", 1}, {"quarantine", 1}};
    s.sources_configured[static_cast<std::size_t>(Source::Runtime)] = true;
    return s;
  }
  std::vector<EndpointView> endpoints() override {
    EndpointView e;
    e.id = 7;
    e.source = Source::Runtime;
    e.name = "web-1";
    e.runtime_id = "f00";
    e.tier = "web";
    e.addresses = {*tierwall::IpAddress::parse("10.88.0.5")};
    return {e};
  }
  ReloadResult reload(const Caller& caller) override {
    reloads.push_back(caller.peer.uid);
    ReloadResult r;
    r.policy.accepted = true;
    return r;
  }
  ApplyResult apply(const Caller& caller,
                    std::vector<tierwall::policy::SourceFile> files) override {
    applies.push_back(caller.peer.uid);
    submitted = std::move(files);
    ApplyResult r;
    if (submitted.front().content.find("bad") != std::string::npos) {
      r.status = 422;
      r.diagnostics.error(
          tierwall::policy::SourceLoc{std::make_shared<const std::string>("a.yaml"), 2, 3},
          "unknown key 'bad'");
    }
    return r;
  }
  bool flush(const Caller& caller, std::string*) override {
    flushes.push_back(caller.peer.uid);
    return true;
  }
  HttpResponse flows(const Caller&, const QueryParams& params) override {
    flow_params = params;
    return HttpResponse{200, "application/x-ndjson", "{}\n"};
  }
  QueryParams flow_params;
  std::vector<uid_t> reloads, applies, flushes;
  std::vector<tierwall::policy::SourceFile> submitted;
};

struct Refusal {
  uid_t uid;
  std::string action;
  Role required;
};

class ApiHandlerTest : public ::testing::Test {
 protected:
  ApiHandlerTest()
      : handler_(agent_, sample_roles(), [this](const Caller& c, std::string_view a, Role r) {
          refusals_.push_back({c.peer.uid, std::string(a), r});
        }) {}

  HttpResponse call(const std::string& method, const std::string& path,
                    std::optional<PeerCredentials> who, std::string body = {}) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = std::move(body);
    r.peer = std::move(who);
    return handler_.handle(r);
  }

  FakeAgent agent_;
  std::vector<Refusal> refusals_;
  ApiHandler handler_;
};

TEST_F(ApiHandlerTest, EachRoleGetsExactlyWhatItMay) {
  const auto admin = peer(1000, 1000);
  const auto op = peer(2000, 500);
  const auto auditor = peer(2001, 600);
  const auto nobody = peer(2002, 2002);
  struct Case {
    std::string method, path;
    int admin, op, auditor, nobody;
  };
  const std::string apply_body = R"({"files":[{"name":"a.yaml","content":"x"}]})";
  for (const auto& c : std::vector<Case>{{"GET", "/v1/status", 200, 200, 200, 403},
                                         {"GET", "/v1/endpoints", 200, 200, 403, 403},
                                         {"POST", "/v1/reload", 200, 200, 403, 403},
                                         {"POST", "/v1/policy", 200, 403, 403, 403},
                                         {"POST", "/v1/flush", 200, 403, 403, 403},
                                         {"GET", "/v1/flows", 200, 200, 200, 403},
                                         {"GET", "/v1/whoami", 200, 200, 200, 200}}) {
    const std::string body = c.path == "/v1/policy" ? apply_body : "";
    EXPECT_EQ(call(c.method, c.path, admin, body).status, c.admin) << c.path;
    EXPECT_EQ(call(c.method, c.path, op, body).status, c.op) << c.path;
    EXPECT_EQ(call(c.method, c.path, auditor, body).status, c.auditor) << c.path;
    EXPECT_EQ(call(c.method, c.path, nobody, body).status, c.nobody) << c.path;
  }
  // The fake saw only the permitted calls.
  EXPECT_EQ(agent_.applies, (std::vector<uid_t>{1000}));
  EXPECT_EQ(agent_.flushes, (std::vector<uid_t>{1000}));
  EXPECT_EQ(agent_.reloads, (std::vector<uid_t>{1000, 2000}));
  // Every refusal was reported with the caller and what was needed.
  ASSERT_EQ(refusals_.size(), 12U);  // 1 + 2 + 2 + 3 + 3 + 1 from the table above
  EXPECT_EQ(refusals_[0].uid, 2002U);
  EXPECT_EQ(refusals_[0].action, "status");
  bool saw_operator_apply = false;
  for (const auto& r : refusals_) {
    if (r.uid == 2000 && r.action == "apply" && r.required == Role::Admin)
      saw_operator_apply = true;
  }
  EXPECT_TRUE(saw_operator_apply);
}

TEST_F(ApiHandlerTest, RefusalNamesTheCallerAndTheRoles) {
  auto r = call("POST", "/v1/policy", peer(2000, 500), R"({"files":[]})");
  EXPECT_EQ(r.status, 403);
  const auto j = json::parse(r.body);
  EXPECT_EQ(j["role"], "operator");
  EXPECT_EQ(j["required"], "admin");
  EXPECT_NE(j["error"].get<std::string>().find("uid 2000"), std::string::npos);
  EXPECT_TRUE(agent_.applies.empty());
}

TEST_F(ApiHandlerTest, UnknownPathsMethodsAndCredentials) {
  EXPECT_EQ(call("GET", "/v1/nope", peer(0, 0)).status, 404);
  EXPECT_EQ(call("DELETE", "/v1/status", peer(0, 0)).status, 405);
  EXPECT_EQ(call("GET", "/v1/policy", peer(0, 0)).status, 405);
  EXPECT_EQ(call("GET", "/v1/status", std::nullopt).status, 403);
  EXPECT_EQ(call("HEAD", "/v1/status", peer(0, 0)).status, 200);
}

TEST_F(ApiHandlerTest, ApplyChecksTheBodyAndReturnsDiagnostics) {
  const auto root = peer(0, 0);
  EXPECT_EQ(call("POST", "/v1/policy", root, "not json").status, 400);
  EXPECT_EQ(call("POST", "/v1/policy", root, R"({"files":[]})").status, 400);
  EXPECT_EQ(call("POST", "/v1/policy", root, R"({"files":[{"name":1,"content":"x"}]})").status,
            400);
  EXPECT_TRUE(agent_.applies.empty());
  auto r = call("POST", "/v1/policy", root,
                R"({"files":[{"name":"a.yaml","content":"bad"},{"name":"b.yaml","content":"y"}]})");
  EXPECT_EQ(r.status, 422);
  const auto j = json::parse(r.body);
  EXPECT_FALSE(j["accepted"].get<bool>());
  ASSERT_EQ(j["diagnostics"].size(), 1U);
  EXPECT_EQ(j["diagnostics"][0]["file"], "a.yaml");
  EXPECT_EQ(j["diagnostics"][0]["line"], 2);
  EXPECT_EQ(j["diagnostics"][0]["column"], 3);
  ASSERT_EQ(agent_.submitted.size(), 2U);
  EXPECT_EQ(agent_.submitted[1].path, "b.yaml");
  EXPECT_EQ(agent_.submitted[1].content, "y");
}

TEST_F(ApiHandlerTest, FlowQueryParametersArriveDecoded) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/v1/flows";
  r.query = "verdict=deny&tier=db&endpoint=web%2A&since=15m&x=a+b&flag";
  r.peer = peer(2001, 600);  // auditor
  EXPECT_EQ(handler_.handle(r).status, 200);
  const QueryParams want = {{"verdict", "deny"}, {"tier", "db"}, {"endpoint", "web*"},
                            {"since", "15m"},    {"x", "a b"},   {"flag", ""}};
  EXPECT_EQ(agent_.flow_params, want);
  EXPECT_EQ(parse_query("a=%zz&b=%4"), (QueryParams{{"a", "%zz"}, {"b", "%4"}}));
}

TEST_F(ApiHandlerTest, StatusAndEndpointsJson) {
  auto st = json::parse(call("GET", "/v1/status", peer(2001, 600)).body);
  EXPECT_EQ(st["node"], "node-a");
  EXPECT_EQ(st["policy"]["generation"], 3);
  EXPECT_EQ(st["policy"]["digest"], "abc");
  EXPECT_EQ(st["tiers"]["web"], 1);
  EXPECT_TRUE(st["ready"].get<bool>());
  EXPECT_TRUE(st["sources"]["runtime"]["configured"].get<bool>());
  EXPECT_FALSE(st["sources"]["inventory"]["configured"].get<bool>());
  auto ep = json::parse(call("GET", "/v1/endpoints", peer(2000, 500)).body);
  ASSERT_EQ(ep["endpoints"].size(), 1U);
  EXPECT_EQ(ep["endpoints"][0]["name"], "web-1");
  EXPECT_EQ(ep["endpoints"][0]["tier"], "web");
  EXPECT_EQ(ep["endpoints"][0]["source"], "runtime");
  EXPECT_EQ(ep["endpoints"][0]["addresses"][0], "10.88.0.5");
  auto who = json::parse(call("GET", "/v1/whoami", peer(2002, 2002)).body);
  EXPECT_EQ(who["role"], "none");
  EXPECT_EQ(who["uid"], 2002);
}

using tierwall::testsupport::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(PolicyInstall, DirectoryGetsTheFilesByBaseNameAndLosesOtherYaml) {
  TempDir dir;
  std::ofstream(dir.path() / "old.yaml") << "old";
  std::ofstream(dir.path() / "README.md") << "keep";
  std::string error;
  auto plan = plan_policy_install(
      {dir.path().string()}, {{"/elsewhere/10-tiers.yaml", "a"}, {"x/20-flows.yml", "b"}}, &error);
  ASSERT_TRUE(plan) << error;
  ASSERT_EQ(plan->files.size(), 2U);
  EXPECT_EQ(plan->files[0].path, (dir.path() / "10-tiers.yaml").string());
  std::vector<std::string> written;
  ASSERT_TRUE(write_policy_install(*plan, &written, &error)) << error;
  EXPECT_EQ(written.size(), 2U);
  EXPECT_EQ(slurp(dir.path() / "10-tiers.yaml"), "a");
  EXPECT_EQ(slurp(dir.path() / "20-flows.yml"), "b");
  EXPECT_FALSE(fs::exists(dir.path() / "old.yaml"));
  EXPECT_TRUE(fs::exists(dir.path() / "README.md"));
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().string().find("tierwall-tmp"), std::string::npos) << e.path();
  }
}

TEST(PolicyInstall, FileGetsOneStreamOfDocuments) {
  TempDir dir;
  const auto target = dir.path() / "policy.yaml";
  std::string error;
  auto plan =
      plan_policy_install({target.string()}, {{"a.yaml", "k: 1"}, {"b.yaml", "k: 2\n"}}, &error);
  ASSERT_TRUE(plan) << error;
  ASSERT_TRUE(write_policy_install(*plan, nullptr, &error)) << error;
  EXPECT_EQ(slurp(target), "# a.yaml\nk: 1\n---\n# b.yaml\nk: 2\n");
  // One file is written as sent.
  plan = plan_policy_install({target.string()}, {{"c.yaml", "k: 3"}}, &error);
  ASSERT_TRUE(plan && write_policy_install(*plan, nullptr, &error)) << error;
  EXPECT_EQ(slurp(target), "k: 3");
}

TEST(PolicyInstall, RefusesWhatItCannotPlaceSafely) {
  TempDir dir;
  std::string error;
  EXPECT_FALSE(plan_policy_install({"a", "b"}, {{"a.yaml", ""}}, &error));
  EXPECT_NE(error.find("exactly one"), std::string::npos);
  EXPECT_FALSE(
      plan_policy_install({dir.path().string()}, {{"x/a.yaml", ""}, {"y/a.yaml", ""}}, &error));
  EXPECT_NE(error.find("a.yaml"), std::string::npos);
  EXPECT_FALSE(plan_policy_install({dir.path().string()}, {{"notes.txt", ""}}, &error));
  EXPECT_FALSE(plan_policy_install({dir.path().string()}, {{".hidden.yaml", ""}}, &error));
  EXPECT_FALSE(plan_policy_install({dir.path().string()}, {}, &error));
}

// The server on a real unix socket, served by a thread that plays the
// daemon's poll loop, and the real client.
class ServerLoop {
 public:
  explicit ServerLoop(std::unique_ptr<HttpServer> server) : server_(std::move(server)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        std::vector<pollfd> fds;
        server_->add_fds(fds);
        if (::poll(fds.data(), fds.size(), 20) >= 0) server_->serve(fds);
      }
    });
  }
  ~ServerLoop() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::unique_ptr<HttpServer> server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(HttpServer, UnixSocketCarriesPeerCredentialsAndBodies) {
  TempDir dir;
  const std::string path = (dir.path() / "sub" / "api.sock").string();
  std::vector<HttpRequest> seen;  // written by the server thread, read after it stopped
  std::string error;
  HttpServer::Options opts;
  opts.max_body = 1024;
  auto server = HttpServer::open_unix(
      path, HttpServer::UnixOptions{0660, std::nullopt}, opts,
      [&seen](const HttpRequest& r) {
        seen.push_back(r);
        return HttpResponse{200, "application/json",
                            "{\"n\":" + std::to_string(r.body.size()) + "}"};
      },
      &error);
  ASSERT_TRUE(server) << error;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660U);
  // A second server on the same live socket is refused.
  EXPECT_FALSE(HttpServer::open_unix(path, {}, opts, {}, &error));
  EXPECT_NE(error.find("in use"), std::string::npos);
  {
    ServerLoop loop(std::move(server));
    tierwall::runtime::UnixHttpClient client({path});
    auto r = client.request("POST", "/v1/policy?x=1", std::string(700, 'a'));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "{\"n\":700}");
    auto big = client.request("POST", "/v1/policy", std::string(4000, 'b'));
    ASSERT_TRUE(big) << big.error().message;
    EXPECT_EQ(big->status, 413);
    auto get = client.request("GET", "/v1/status");
    ASSERT_TRUE(get);
    EXPECT_EQ(get->status, 200);
  }
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].path, "/v1/policy");
  EXPECT_EQ(seen[0].query, "x=1");
  ASSERT_TRUE(seen[0].peer);
  EXPECT_EQ(seen[0].peer->uid, ::getuid());
  EXPECT_EQ(seen[0].peer->gid, ::getgid());
  EXPECT_EQ(seen[0].peer->pid, ::getpid());
  EXPECT_EQ(seen[1].method, "GET");
  EXPECT_TRUE(seen[1].body.empty());
  // The socket file is removed with the server.
  EXPECT_FALSE(fs::exists(path));
}

TEST(HttpServer, StaleSocketFileIsReplaced) {
  TempDir dir;
  const std::string path = (dir.path() / "api.sock").string();
  std::string error;
  {
    auto first = HttpServer::open_unix(path, {}, {}, {}, &error);
    ASSERT_TRUE(first) << error;
    // Simulate a crash: the file stays, nobody listens.
    ASSERT_EQ(::link(path.c_str(), (dir.path() / "keep.sock").c_str()), 0);
  }
  ASSERT_EQ(::rename((dir.path() / "keep.sock").c_str(), path.c_str()), 0);
  auto second = HttpServer::open_unix(path, {}, {}, {}, &error);
  EXPECT_TRUE(second) << error;
  std::ofstream(dir.path() / "plain") << "x";
  EXPECT_FALSE(HttpServer::open_unix((dir.path() / "plain").string(), {}, {}, {}, &error));
  EXPECT_NE(error.find("not a socket"), std::string::npos);
}

}  // namespace
